"""``grep`` (GNU grep 3): basic, extended and fixed-string patterns over files and stdin.

The pattern runs through :mod:`.regex`, so a pattern that backtracks without end is cut after its CPU budget
and reported (exit code 2), while the rest of the sandbox carries on. Stdin is read and matched as it arrives,
so ``grep`` in a pipeline or an interactive exec prints lines as they come.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from .context import ExecContext
from .fs import STDIN_NAMES, UsageError, err, open_input, out, parse_uint, split_short_options
from .regex import Matcher, RegexError, RegexLimitError
from .registry import tool

_USAGE = "Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n"
_LONG = {
    "--only-matching": "o", "--count": "c", "--ignore-case": "i", "--invert-match": "v", "--quiet": "q",
    "--silent": "q", "--fixed-strings": "F", "--extended-regexp": "E", "--basic-regexp": "G",
    "--perl-regexp": "P", "--line-number": "n", "--with-filename": "H", "--no-filename": "h",
    "--files-with-matches": "l", "--word-regexp": "w", "--line-regexp": "x", "--no-messages": "s",
    "--text": "a",
}
_TROUBLE = 2


def bre_to_python(pattern: str) -> str:
    """A POSIX basic regular expression (grep's default) in Python's syntax.

    In a BRE ``+ ? | ( ) { }`` are plain characters and their backslashed forms are the operators; Python
    reads them the other way round.
    """
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            follower = pattern[i + 1]
            parts.append(follower if follower in "+?|(){}" else char + follower)
            i += 2
        elif char == "[":
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            close = pattern.find("]", j)
            if close < 0:
                parts.append("\\[")
                i += 1
            else:
                parts.append(pattern[i : close + 1])
                i = close + 1
        else:
            parts.append("\\" + char if char in "+?|(){}" else char)
            i += 1
    return "".join(parts)


async def _batches(source: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """The lines of an input without their newlines, in the batches its chunks bring."""
    rest = b""
    async for chunk in source:
        *complete, rest = (rest + chunk).split(b"\n")
        if complete:
            yield complete
    if rest:
        yield [rest]


@tool("grep")
async def grep(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    try:
        opts, operands = split_short_options(argv[1:], with_value="emABC")
    except UsageError as exc:
        await err(ctx, f"{prog}: {exc}\n{_USAGE}")
        return _TROUBLE
    flags: set[str] = set()
    patterns: list[str] = []
    max_count: int | None = None
    for letter, value in opts:
        if letter == "e":
            assert value is not None
            patterns.append(value)
        elif letter == "m":
            max_count = parse_uint(value or "")
            if max_count is None:
                await err(ctx, f"{prog}: invalid max count\n")
                return _TROUBLE
        elif letter in "ABC":
            pass  # context lines: accepted, not shown
        elif letter in "ocivqFEGPnHhlwxsa":
            flags.add(letter)
        else:
            await err(ctx, f"{prog}: invalid option -- '{letter}'\n{_USAGE}")
            return _TROUBLE
    names: list[str] = []
    for operand in operands:
        if operand in _LONG:
            flags.add(_LONG[operand])
        elif operand.startswith(("--color", "--colour")):
            pass
        elif operand.startswith("--"):
            await err(ctx, f"{prog}: unrecognized option '{operand}'\n{_USAGE}")
            return _TROUBLE
        else:
            names.append(operand)
    if not patterns:
        if not names:
            await err(ctx, _USAGE)
            return _TROUBLE
        patterns = names.pop(0).split("\n")
    if "F" in flags:
        pieces = [re.escape(p) for p in patterns]
    elif "E" in flags or "P" in flags:
        pieces = patterns
    else:
        pieces = [bre_to_python(p) for p in patterns]
    source = pieces[0] if len(pieces) == 1 else "|".join(f"(?:{p})" for p in pieces)
    if "w" in flags:
        source = rf"(?<!\w)(?:{source})(?!\w)"
    try:
        matcher = Matcher.compile(source.encode("utf-8", "surrogateescape"),
                                  re.IGNORECASE if "i" in flags else 0)
        return await _search(prog, ctx, matcher, flags, names or ["-"], max_count)
    except RegexError as exc:
        await err(ctx, f"{prog}: {exc}\n")
    except RegexLimitError as exc:
        await err(ctx, f"{prog}: {exc.describe()}\n")
    except OSError as exc:
        await err(ctx, f"{prog}: cannot run the regular expression: {exc.strerror or exc}\n")
    return _TROUBLE


async def _search(prog: str, ctx: ExecContext, matcher: Matcher, flags: set[str], names: list[str],
                  max_count: int | None) -> int:
    show_name = ("H" in flags or len(names) > 1) and "h" not in flags
    invert = "v" in flags
    selected_any = error = False
    for name in names:
        source = open_input(ctx, name)
        if isinstance(source, str):
            if "s" not in flags:
                await err(ctx, f"{prog}: {name}: {source}\n")
            error = True
            continue
        label = "(standard input)" if name in STDIN_NAMES else name
        prefix = f"{label}:".encode() if show_name else b""
        count = line_no = 0
        done = False
        async for lines in _batches(source):
            hits = await (matcher.fullmatch(lines) if "x" in flags else matcher.search(lines))
            chosen = [(line_no + i + 1, line) for i, (line, hit) in enumerate(zip(lines, hits, strict=True))
                      if hit != invert]
            line_no += len(lines)
            if max_count is not None:
                chosen = chosen[: max(max_count - count, 0)]
            count += len(chosen)
            selected_any = selected_any or bool(chosen)
            if chosen and "q" in flags:
                return 0
            if chosen and "c" not in flags and "l" not in flags:
                await ctx.write_stdout(await _render(matcher, flags, prefix, chosen))
            done = ("l" in flags and count > 0) or (max_count is not None and count >= max_count)
            if done:
                break
        if "l" in flags and count:
            await out(ctx, f"{label}\n")
        elif "c" in flags:
            await ctx.write_stdout(prefix + f"{count}\n".encode())
    if error:
        return _TROUBLE
    return 0 if selected_any else 1


async def _render(matcher: Matcher, flags: set[str], prefix: bytes, chosen: list[tuple[int, bytes]]) -> bytes:
    """The output lines for the selected ``(line number, line)`` pairs."""
    def head(number: int) -> bytes:
        return prefix + (f"{number}:".encode() if "n" in flags else b"")

    if "o" not in flags:
        return b"".join(head(number) + line + b"\n" for number, line in chosen)
    if "v" in flags:
        return b""
    spans = await matcher.spans([line for _, line in chosen])
    return b"".join(head(number) + line[start:end] + b"\n"
                    for (number, line), found in zip(chosen, spans, strict=True) for start, end in found)
