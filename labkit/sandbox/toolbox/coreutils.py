"""The small GNU coreutils every image has: true, false, echo, sleep, hostname, env, printenv, cat, head, ls, wc,
and for the loops of tutorials seq, sort, uniq, date and printf.

Each prints what GNU coreutils 9 prints for the options people type and returns its exit code; files are the
container's in-memory files (:mod:`.fs`). Inputs stream in chunks (``cat``, ``head -n 3`` and ``wc`` on an
endless stdin work as on a pipe), work is linear in the input, and a whole input held in memory is bounded
(:data:`~.context.INPUT_LIMIT`), so no tool here holds the event loop for long.
"""

from __future__ import annotations

import asyncio
import codecs
import copy
import posixpath
import re
import time
from collections.abc import AsyncIterator

from .context import ExecContext
from .fs import abspath, bad_option, dir_entries, err, is_dir, is_file, open_input, out, parse_uint, read_input
from .registry import BIN_DIRS, NOT_FOUND, has_command, run, tool

# ------------------------------------------------------------------------------------------------------------
# true, false, echo, sleep, hostname, env, printenv


@tool("true")
async def _true(argv: list[str], ctx: ExecContext) -> int:
    return 0


@tool("false")
async def _false(argv: list[str], ctx: ExecContext) -> int:
    return 1


_ECHO_ESCAPES = {
    ord("\\"): b"\\", ord("a"): b"\a", ord("b"): b"\b", ord("e"): b"\x1b", ord("f"): b"\f", ord("n"): b"\n",
    ord("r"): b"\r", ord("t"): b"\t", ord("v"): b"\v",
}


_OCTAL = re.compile(rb"[0-7]{0,3}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,2}")


def _echo_unescape(raw: bytes) -> tuple[bytes, bool]:
    """GNU ``echo -e`` escapes; the flag says ``\\c`` asked to stop all output there."""
    result = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte != 0x5C or i + 1 >= len(raw):  # not a backslash, or a trailing one
            result.append(byte)
            i += 1
            continue
        code = raw[i + 1]
        i += 2
        if code in _ECHO_ESCAPES:
            result += _ECHO_ESCAPES[code]
        elif code == ord("c"):
            return bytes(result), True
        elif code == ord("0"):
            octal = _OCTAL.match(raw, i)
            text = octal.group() if octal else b""
            result.append(int(text or b"0", 8) & 0xFF)
            i += len(text)
        elif code == ord("x") and (hexa := _HEX.match(raw, i)):
            result.append(int(hexa.group(), 16))
            i += len(hexa.group())
        else:
            result += bytes([0x5C, code])
    return bytes(result), False


@tool("echo")
async def _echo(argv: list[str], ctx: ExecContext) -> int:
    args = argv[1:]
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        for letter in args.pop(0)[1:]:
            if letter == "n":
                newline = False
            else:
                escapes = letter == "e"
    text = b" ".join(a.encode("utf-8", "surrogateescape") for a in args)
    if escapes:
        text, stop = _echo_unescape(text)
        if stop:
            newline = False
    await ctx.write_stdout(text + (b"\n" if newline else b""))
    return 0


_SLEEP_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@tool("sleep")
async def _sleep(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    if len(argv) < 2:
        await err(ctx, f"{prog}: missing operand\nTry '{prog} --help' for more information.\n")
        return 1
    total = 0.0
    for arg in argv[1:]:
        # One way to read each digit string, so a long bad argument fails in linear time.
        match = re.fullmatch(r"\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+|inf|infinity)([smhd]?)", arg, re.IGNORECASE)
        if match is None:
            await err(ctx, f"{prog}: invalid time interval '{arg}'\n"
                            f"Try '{prog} --help' for more information.\n")
            return 1
        total += float(match.group(1)) * _SLEEP_UNITS[match.group(2).lower()]
    if total == float("inf"):
        await asyncio.Event().wait()  # forever, until the exec is cancelled
    else:
        await asyncio.sleep(total)
    return 0


@tool("hostname")
async def _hostname(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    names = [a for a in args if not a.startswith("-")]
    if names:
        await err(ctx, f"{prog}: you must be root to change the host name\n")
        return 1
    if "i" in flags or "I" in flags:
        await out(ctx, f"{ctx.pod_ip or '127.0.0.1'}\n")
    elif "s" in flags:
        await out(ctx, ctx.hostname.split(".", 1)[0] + "\n")
    else:
        await out(ctx, ctx.hostname + "\n")
    return 0


@tool("env")
async def _env(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    env = dict(ctx.env)
    args = argv[1:]
    while args and args[0].startswith("-") and args[0] != "-":
        opt = args.pop(0)
        if opt == "--":
            break
        if opt in ("-i", "--ignore-environment"):
            env.clear()
        elif opt in ("-u", "--unset"):
            if not args:
                await err(ctx, f"{prog}: option requires an argument -- 'u'\n"
                                f"Try '{prog} --help' for more information.\n")
                return 125
            env.pop(args.pop(0), None)
        elif opt.startswith("-u"):
            env.pop(opt[2:], None)
        else:
            letter = opt[2:] if opt.startswith("--") else opt[1:2]
            text = f"unrecognized option '{opt}'" if opt.startswith("--") else f"invalid option -- '{letter}'"
            await err(ctx, f"{prog}: {text}\nTry '{prog} --help' for more information.\n")
            return 125
    while args and "=" in args[0]:
        key, _, value = args.pop(0).partition("=")
        env.pop(key, None)  # an assignment moves the variable to the end, as real env prints it
        env[key] = value
    if not args:
        await out(ctx, "".join(f"{k}={v}\n" for k, v in env.items()))
        return 0
    if not has_command(args[0]):
        await err(ctx, f"{prog}: '{args[0]}': No such file or directory\n")
        return NOT_FOUND
    child = copy.copy(ctx)
    child.env = env
    return await run(args, child)


@tool("printenv")
async def _printenv(argv: list[str], ctx: ExecContext) -> int:
    names = [a for a in argv[1:] if not a.startswith("-")]
    if not names:
        await out(ctx, "".join(f"{k}={v}\n" for k, v in ctx.env.items()))
        return 0
    code = 0
    for name in names:
        if name in ctx.env:
            await out(ctx, ctx.env[name] + "\n")
        else:
            code = 1
    return code


# ------------------------------------------------------------------------------------------------------------
# Files: cat, head, ls, wc


_CAT_LONG = {"--number": "n", "--show-ends": "E"}


@tool("cat")
async def _cat(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    number = show_ends = False
    names: list[str] = []
    for arg in argv[1:]:
        if arg == "-" or not arg.startswith("-"):
            names.append(arg)
            continue
        if arg.startswith("--") and arg not in _CAT_LONG:
            return await bad_option(ctx, prog, arg)
        letters = _CAT_LONG.get(arg, arg[1:])
        for letter in letters:
            if letter not in "nEu":  # -u (unbuffered) is accepted and changes nothing
                return await bad_option(ctx, prog, "-" + letter)
        number = number or "n" in letters
        show_ends = show_ends or "E" in letters
    code = 0
    lines = _LineDecorator(number, show_ends)
    for name in names or ["-"]:
        source = open_input(ctx, name)
        if isinstance(source, str):
            await err(ctx, f"{prog}: {name}: {source}\n")
            code = 1
            continue
        async for chunk in source:  # stdin streams: an interactive `cat` echoes as it reads
            await ctx.write_stdout(lines.render(chunk) if number or show_ends else chunk)
    return code


class _LineDecorator:
    """``cat -n``/``-E`` over chunks: line numbers and ``$`` ends, lines split anywhere between chunks."""

    def __init__(self, number: bool, show_ends: bool) -> None:
        self.number = number
        self.show_ends = show_ends
        self.count = 0
        self.at_line_start = True

    def render(self, chunk: bytes) -> bytes:
        pieces = chunk.split(b"\n")
        rendered = bytearray()
        for index, piece in enumerate(pieces):
            complete = index < len(pieces) - 1
            if self.number and self.at_line_start and (piece or complete):
                self.count += 1
                rendered += f"{self.count:>6}\t".encode()
            rendered += piece
            if complete:
                rendered += b"$\n" if self.show_ends else b"\n"
                self.at_line_start = True
            elif piece:
                self.at_line_start = False
        return bytes(rendered)


def _parse_count(text: str) -> int | None:
    match = re.fullmatch(r"(-?)([0-9]{1,18})([kKmM]?)", text)
    if match is None:
        return None
    value = int(match.group(2)) * {"": 1, "k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}[match.group(3)]
    return -value if match.group(1) else value


async def _head_lines(ctx: ExecContext, source: AsyncIterator[bytes], lines: int) -> None:
    """Copy the first ``lines`` lines, reading no more input than they need (as head does on a pipe)."""
    remaining = lines
    if not remaining:
        return
    async for chunk in source:
        end = -1
        while remaining and (end := chunk.find(b"\n", end + 1)) >= 0:
            remaining -= 1
        await ctx.write_stdout(chunk if remaining else chunk[: end + 1])
        if not remaining:
            return


async def _head_bytes(ctx: ExecContext, source: AsyncIterator[bytes], count: int) -> None:
    remaining = count
    if not remaining:
        return
    async for chunk in source:
        await ctx.write_stdout(chunk[:remaining])
        remaining -= min(len(chunk), remaining)
        if not remaining:
            return


def _all_but_last_lines(data: bytes, lines: int) -> bytes:
    """``data`` without its last ``lines`` lines (a last line without a newline counts)."""
    end = len(data)
    if data.endswith(b"\n"):
        end -= 1
    for _ in range(lines):
        if end < 0:
            return b""
        end = data.rfind(b"\n", 0, end)
    return data[: end + 1] if end >= 0 else b""


@tool("head")
async def _head(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    lines: int | None = 10
    count_bytes: int | None = None
    names: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        option = value = None
        if re.fullmatch(r"-\d+", arg):
            option, value = "n", arg[1:]
        elif arg in ("-n", "-c"):
            if i >= len(args):
                await err(ctx, f"{prog}: option requires an argument -- '{arg[1]}'\n"
                                f"Try '{prog} --help' for more information.\n")
                return 1
            option, value = arg[1], args[i]
            i += 1
        elif arg.startswith(("-n", "-c")) and not arg.startswith("--"):
            option, value = arg[1], arg[2:]
        elif arg.startswith(("--lines=", "--bytes=")):
            option, value = arg[2], arg.partition("=")[2]
        elif arg in ("-q", "--quiet", "--silent", "-v", "--verbose"):
            continue
        elif arg.startswith("-") and arg != "-":
            return await bad_option(ctx, prog, arg)
        else:
            names.append(arg)
            continue
        number = _parse_count(value)
        if number is None:
            await err(ctx, f"{prog}: invalid number of {'lines' if option == 'n' else 'bytes'}: '{value}'\n")
            return 1
        if option == "n":
            lines, count_bytes = number, None
        else:
            lines, count_bytes = None, number
    code = 0
    names = names or ["-"]
    for index, name in enumerate(names):
        if len(names) > 1:
            label = "standard input" if name == "-" else name
            await out(ctx, f"{'' if index == 0 else chr(10)}==> {label} <==\n")
        if (lines is not None and lines >= 0) or (count_bytes is not None and count_bytes >= 0):
            source = open_input(ctx, name)
            if isinstance(source, str):
                await err(ctx, f"{prog}: cannot open '{name}' for reading: {source}\n")
                code = 1
            elif lines is not None:
                await _head_lines(ctx, source, lines)
            else:
                await _head_bytes(ctx, source, count_bytes or 0)
            continue
        data = await read_input(ctx, name)  # all but the last N: the whole input, bounded by INPUT_LIMIT
        if isinstance(data, str):
            await err(ctx, f"{prog}: cannot open '{name}' for reading: {data}\n")
            code = 1
        elif count_bytes is not None:
            await ctx.write_stdout(data[: max(len(data) + count_bytes, 0)])
        else:
            await ctx.write_stdout(_all_but_last_lines(data, -(lines or 0)))
    return code


@tool("ls")
async def _ls(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    long = show_all = one_per_line = dir_only = False
    names: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and arg != "-" and not arg.startswith("--"):
            for letter in arg[1:]:
                if letter == "l":
                    long = True
                elif letter in "aA":
                    show_all = True
                elif letter == "1":
                    one_per_line = True
                elif letter == "d":
                    dir_only = True
                elif letter not in "hFp":
                    return await bad_option(ctx, prog, "-" + letter, code=2)
        elif arg.startswith("--"):
            if arg not in ("--all", "--almost-all"):
                return await bad_option(ctx, prog, arg, code=2)
            show_all = True
        else:
            names.append(arg)
    now = time.strftime("%b %e %H:%M")

    def describe(path: str, label: str) -> str:
        if not long:
            return label
        if is_dir(ctx, path):
            mode, size = "drwxr-xr-x", 4096
        else:
            executable = path.rpartition("/")[0] in BIN_DIRS
            mode, size = ("-rwxr-xr-x" if executable else "-rw-r--r--"), len(ctx.files.get(path, b""))
        return f"{mode} 1 root root {size:>5} {now} {label}"

    def render(items: list[str]) -> str:
        if not items:
            return ""
        sep = "\n" if long or one_per_line or not ctx.tty else "  "
        return sep.join(items) + "\n"

    code = 0
    files: list[str] = []
    folders: list[tuple[str, str]] = []
    for name in names or ["."]:
        path = abspath(name)
        if is_file(ctx, path) or (dir_only and is_dir(ctx, path)):
            files.append(describe(path, name))
        elif is_dir(ctx, path):
            folders.append((name, path))
        else:
            await err(ctx, f"{prog}: cannot access '{name}': No such file or directory\n")
            code = 2
    chunks: list[str] = []
    if files:
        chunks.append(render(files))
    for name, path in folders:
        entries = dir_entries(ctx, path)
        items = [describe(posixpath.join(path, e), e) for e in ([".", ".."] if show_all else []) + entries]
        header = f"{name}:\n" if len(folders) + len(files) > 1 else ""
        total = f"total {4 * len(entries)}\n" if long else ""
        chunks.append(header + total + render(items))
    await out(ctx, "\n".join(chunks))
    return code


class _Counts:
    """wc's counters, fed chunk by chunk so stdin of any length streams through."""

    def __init__(self) -> None:
        self.lines = self.words = self.chars = self.bytes = 0
        self.in_word = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        self.lines += data.count(b"\n")
        self.bytes += len(data)
        self.chars += len(self.decoder.decode(data, final))
        words = data.split()
        self.words += len(words)
        if words and self.in_word and not data[:1].isspace():
            self.words -= 1  # the first word here continues the last one of the previous chunk
        if data:
            self.in_word = not data[-1:].isspace()

    def column(self, letter: str) -> int:
        return {"l": self.lines, "w": self.words, "m": self.chars, "c": self.bytes}[letter]


@tool("wc")
async def _wc(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    wanted = ""
    names: list[str] = []
    long = {"--lines": "l", "--words": "w", "--bytes": "c", "--chars": "m"}
    for arg in argv[1:]:
        if arg in long:
            wanted += long[arg]
        elif arg.startswith("-") and arg != "-" and not arg.startswith("--"):
            for letter in arg[1:]:
                if letter not in "lwcm":
                    return await bad_option(ctx, prog, "-" + letter)
                wanted += letter
        elif arg.startswith("--"):
            return await bad_option(ctx, prog, arg)
        else:
            names.append(arg)
    columns = [c for c in "lwmc" if c in wanted] or ["l", "w", "c"]
    rows: list[tuple[list[int], str]] = []
    code = 0
    for name in names or ["-"]:
        counts = _Counts()
        source = open_input(ctx, name)
        if isinstance(source, str):
            await err(ctx, f"{prog}: {name}: {source}\n")
            code = 1
            continue
        async for chunk in source:
            counts.feed(chunk)
        counts.feed(b"", final=True)
        rows.append(([counts.column(c) for c in columns], "" if name == "-" else name))
    if len(names) > 1:
        rows.append(([sum(r[0][i] for r in rows) for i in range(len(columns))], "total"))
    if not rows:
        return code
    if len(columns) == 1 and len(rows) == 1:
        width = 1
    elif not names or "-" in names:
        width = 7
    else:
        width = max(len(str(n)) for r in rows for n in r[0])
    for counts_row, label in rows:
        text = " ".join(f"{n:>{width}}" for n in counts_row)
        await out(ctx, f"{text} {label}\n" if label else f"{text}\n")
    return code


# ------------------------------------------------------------------------------------------------------------
# Text in loops: seq, sort, uniq, date, printf


async def _bad_number(ctx: ExecContext, prog: str, text: str) -> int:
    await err(ctx, f"{prog}: invalid floating point argument: '{text}'\nTry '{prog} --help' for more information.\n")
    return 1


@tool("seq")
async def _seq(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    separator = "\n"
    if len(args) >= 2 and args[0] == "-s":
        separator, args = args[1], args[2:]
    if not 1 <= len(args) <= 3:
        text = "missing operand" if not args else f"extra operand '{args[3]}'"
        await err(ctx, f"{prog}: {text}\nTry '{prog} --help' for more information.\n")
        return 1
    numbers: list[int] = []
    for arg in args:
        if not re.fullmatch(r"[-+]?[0-9]{1,18}", arg):
            return await _bad_number(ctx, prog, arg)
        numbers.append(int(arg))
    first, step, last = (1, 1, numbers[0]) if len(numbers) == 1 else (
        (numbers[0], 1, numbers[1]) if len(numbers) == 2 else (numbers[0], numbers[1], numbers[2]))
    if step == 0:
        await err(ctx, f"{prog}: invalid Zero increment value: '{args[1]}'\n")
        return 1
    value, batch = first, []
    while (step > 0 and value <= last) or (step < 0 and value >= last):
        batch.append(str(value))
        value += step
        if len(batch) == 1000:  # stream a long sequence in pieces; a closed pipe stops it
            await out(ctx, separator.join(batch) + separator)
            batch = []
            await asyncio.sleep(0)
    if batch:
        await out(ctx, separator.join(batch) + "\n")
    elif separator != "\n" and value != first:
        await out(ctx, "\n")
    return 0


_SORT_LIMIT = 1 << 20


@tool("sort")
async def _sort(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    flags = ""
    names: list[str] = []
    for arg in argv[1:]:
        if arg.startswith("-") and arg != "-" and not arg.startswith("--"):
            for letter in arg[1:]:
                if letter not in "nrufb":
                    return await bad_option(ctx, prog, "-" + letter, code=2)
            flags += arg[1:]
        elif arg in ("--numeric-sort", "--reverse", "--unique"):
            flags += arg[2]
        elif arg.startswith("--"):
            return await bad_option(ctx, prog, arg, code=2)
        else:
            names.append(arg)
    lines: list[bytes] = []
    size = 0
    for name in names or ["-"]:
        data = await read_input(ctx, name)
        if isinstance(data, str):
            await err(ctx, f"{prog}: cannot read: {name}: {data}\n")
            return 2
        size += len(data)
        if size > _SORT_LIMIT:  # sorting runs on the event loop: keep it short
            await err(ctx, f"{prog}: {name}: input past {_SORT_LIMIT >> 20} MiB, the sandbox's limit for sort\n")
            return 2
        lines += data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n") if data else []

    def key(line: bytes) -> tuple[float, bytes]:
        text = line.strip() if "b" in flags else line
        if "f" in flags:
            text = text.lower()
        if "n" in flags:
            number = re.match(rb"\s*(-?[0-9]+(?:\.[0-9]*)?)", line)
            return (float(number.group(1)) if number else 0.0), line
        return 0.0, text

    lines.sort(key=key, reverse="r" in flags)
    if "u" in flags:
        unique: list[bytes] = []
        for line in lines:
            if not unique or key(unique[-1]) != key(line):
                unique.append(line)
        lines = unique
    await ctx.write_stdout(b"".join(line + b"\n" for line in lines))
    return 0


@tool("uniq")
async def _uniq(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    count = False
    names: list[str] = []
    for arg in argv[1:]:
        if arg in ("-c", "--count"):
            count = True
        elif arg.startswith("-") and arg != "-":
            return await bad_option(ctx, prog, arg)
        else:
            names.append(arg)
    if len(names) > 1:
        await err(ctx, f"{prog}: extra operand '{names[1]}'\nTry '{prog} --help' for more information.\n")
        return 1
    name = names[0] if names else "-"
    source = open_input(ctx, name)
    if isinstance(source, str):
        await err(ctx, f"{prog}: {name}: {source}\n")
        return 1
    previous: bytes | None = None
    seen = 0

    async def emit() -> None:
        if previous is not None:
            await ctx.write_stdout((f"{seen:>7} ".encode() if count else b"") + previous + b"\n")

    rest = b""
    async for chunk in source:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if line == previous:
                seen += 1
                continue
            await emit()
            previous, seen = line, 1
    if rest:
        if rest == previous:
            seen += 1
        else:
            await emit()
            previous, seen = rest, 1
    await emit()
    return 0


@tool("date")
async def _date(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    fmt = "%a %b %e %H:%M:%S UTC %Y"
    for arg in argv[1:]:
        if arg.startswith("+"):
            fmt = arg[1:]
        elif arg in ("-u", "--utc", "-R"):
            if arg == "-R":
                fmt = "%a, %d %b %Y %H:%M:%S +0000"
        else:
            await err(ctx, f"{prog}: invalid date '{arg}'\n")
            return 1
    try:
        text = time.strftime(fmt.replace("%N", "000000000"), time.gmtime())
    except ValueError:
        text = fmt
    await out(ctx, text + "\n")
    return 0


_PRINTF_SPEC = re.compile(r"%([-+ 0#]{0,5}[0-9]{0,4}(?:\.[0-9]{1,4})?)([sdiuxXc%])")


def _printf_once(fmt: str, args: list[str]) -> tuple[str, int, list[str]]:
    """One pass of ``fmt`` over ``args``: ``(text, arguments used, bad numbers)``."""
    used = 0
    bad: list[str] = []
    parts: list[str] = []
    position = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        parts.append(fmt[position : match.start()])
        position = match.end()
        flags, kind = match.groups()
        if kind == "%":
            parts.append("%")
            continue
        value = args[used] if used < len(args) else ""
        used += 1
        if kind == "s":
            parts.append(f"%{flags}s" % value)
        elif kind == "c":
            parts.append(value[:1])
        else:
            number = parse_uint(value.lstrip("+-")) if value else 0
            if number is None:
                bad.append(value)
                number = 0
            parts.append(f"%{flags}{'d' if kind in 'diu' else kind}" % (-number if value.startswith("-") else number))
    parts.append(fmt[position:])
    return "".join(parts), used, bad


@tool("printf")
async def _printf(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    if len(argv) < 2:
        await err(ctx, f"{prog}: missing operand\nTry '{prog} --help' for more information.\n")
        return 1
    fmt, args = argv[1], argv[2:]
    code = 0
    while True:  # the format is reused while arguments remain, as printf(1) does
        text, used, bad = _printf_once(fmt, args)
        unescaped, stop = _echo_unescape(text.encode("utf-8", "surrogateescape"))
        await ctx.write_stdout(unescaped)
        for value in bad:
            await err(ctx, f"{prog}: {value}: invalid number\n")
            code = 1
        args = args[used:]
        if stop or not args or not used:
            return code
