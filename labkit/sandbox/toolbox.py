"""The image toolbox: the commands that ``kubectl exec`` runs inside a sandbox pod.

A sandbox container is a real local process, but ``kubectl exec POD -- CMD ...`` never starts a host shell.
The API server runs CMD here instead, as a coroutine on its own event loop, much as a busybox binary runs
inside a real image. Every image carries the same small set of tools::

    curl  pkill  pgrep  kill  ps  env  printenv  hostname  cat  echo  sleep  true  false  ls  head  grep  wc

A command may also be named by path (``/usr/bin/curl``, ``/bin/sleep``). There is no shell, so
``kubectl exec POD -- sh -c '...'`` fails the way it does against a distroless image, and pipes do not exist.

Each tool prints what the real one prints (curl 8, procps-ng, GNU coreutils) for the options the lessons use,
and returns the real exit code. A tool never raises because of a user mistake. Cancelling the task that runs a
tool (the client went away, or a deadline passed) stops it at once, even ``sleep infinity`` or a curl waiting
on a server that never answers.

The tools see the pod only through an :class:`ExecContext`: its environment, a small in-memory filesystem, the
cluster resolver, stdio and the pod's processes. Signals go through :meth:`ExecContext.send_signal`, so the
kubelet decides what a pid means and no tool can reach a process outside the pod.

Example, shaped like the lesson's first step::

    ctx = ExecContext(pod="sleep-88ddbcfdd-l9zq4", pod_ip="127.64.0.5", resolver=Resolver(hosts_file))
    code = await run(["curl", "-sS", "http://ratings:9080/ratings/7"], ctx)
    code, bytes(ctx.stdout)
    # (0, b'{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}')
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import json
import os
import posixpath
import re
import socket
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from .dns import Resolver

__all__ = [
    "CURL_VERSION",
    "UNKNOWN",
    "ExecContext",
    "PodProcess",
    "commands",
    "has_command",
    "not_found_message",
    "run",
]

UNKNOWN = -1
"""The exit code of a command that never finished (its task was cancelled), so it has none to report."""

CURL_VERSION = "8.16.0"
"""The curl the test pod's image (``curlimages/curl:8.16.0``) ships; curl's ``User-Agent`` names it."""

_NOT_FOUND = 127
_BIN_DIRS = frozenset({"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"})


# ------------------------------------------------------------------------------------------------------------
# The pod as a command sees it


@dataclass
class PodProcess:
    """One live process of a pod, as ``ps`` inside the pod shows it.

    Attributes:
        pid: The pid inside the pod: the first container's main process is 1, a second container's is 2, ...
        host_pid: The real pid on the host. Only the kubelet signals it.
        comm: The process name, e.g. ``"ruby"``; ``pkill`` matches it.
        args: The command line as the container sees it, e.g.
            ``["ruby", "/opt/microservices/details.rb", "9080"]``.
        container: The name of the container the process belongs to.
        started: When it started, in epoch seconds.
    """

    pid: int
    host_pid: int
    comm: str
    args: list[str]
    container: str
    started: float


StdinReader = Callable[[int], Awaitable[bytes]]
StreamWriter = Callable[[bytes], Awaitable[None]]


@dataclass
class ExecContext:
    """Everything one exec may touch: the container's environment, files, stdio and the pod's processes.

    The API server builds one per exec and passes callables for the live parts. Anything left out falls back
    to an in-memory stand-in, which is what tests use: stdin is read from ``stdin``, output collects in
    ``stdout`` and ``stderr``, the pod has no processes unless ``process_lister`` names some, and without a
    ``signaller`` a signal is delivered with ``os.kill``, but only to a process that ``processes()`` lists.

    Example::

        ctx = ExecContext(pod="details-v1-6d86fd9949-fr59p", stdin=b"hello\\n")
        await run(["cat"], ctx)  # 0
        bytes(ctx.stdout)        # b"hello\\n"

    Attributes:
        pod: The pod's name.
        namespace: The pod's namespace.
        container: The container the command runs in.
        pod_ip: The pod's address. When it is a loopback address, curl connects from it and ``localhost``
            means it.
        hostname: What ``hostname`` prints; the pod name when left empty.
        env: The container's environment, in the order ``env`` prints it.
        files: The container's filesystem: absolute path to content. The kubelet fills ``/etc/hosts``,
            ``/etc/hostname`` and ``/etc/resolv.conf``; ``curl -o FILE`` writes here. One dict per container,
            shared by all its execs.
        resolver: Cluster DNS, for names ``/etc/hosts`` does not know.
        tty: Whether the client asked for a terminal (``kubectl exec -t``). The server, not the tools, turns
            ``\\n`` into ``\\r\\n``.
        stdin: The whole of stdin, when no ``stdin_reader`` is given.
        stdin_reader: ``await reader(n)`` returns up to n bytes of stdin, ``b""`` at end of input.
        stdout_writer: ``await writer(data)`` sends data to the client's stdout.
        stderr_writer: Same for stderr.
        process_lister: Returns the pod's live processes, all containers.
        signaller: Delivers a signal to one of those processes.
        stdout: What was written to stdout, when no ``stdout_writer`` is given.
        stderr: What was written to stderr, when no ``stderr_writer`` is given.
    """

    pod: str = "pod"
    namespace: str = "default"
    container: str = ""
    pod_ip: str = ""
    hostname: str = ""
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    resolver: Resolver = field(default_factory=lambda: Resolver(None))
    tty: bool = False
    stdin: bytes = b""
    stdin_reader: StdinReader | None = None
    stdout_writer: StreamWriter | None = None
    stderr_writer: StreamWriter | None = None
    process_lister: Callable[[], list[PodProcess]] | None = None
    signaller: Callable[[PodProcess, int], None] | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    _stdin_offset: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.hostname:
            self.hostname = self.pod

    async def read_stdin(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of stdin; ``b""`` at end of input or when no stdin is attached."""
        if self.stdin_reader is not None:
            return await self.stdin_reader(n)
        chunk = self.stdin[self._stdin_offset : self._stdin_offset + n]
        self._stdin_offset += len(chunk)
        return chunk

    async def write_stdout(self, data: bytes) -> None:
        """Send bytes to the client's stdout."""
        if self.stdout_writer is not None:
            await self.stdout_writer(data)
        else:
            self.stdout += data

    async def write_stderr(self, data: bytes) -> None:
        """Send bytes to the client's stderr."""
        if self.stderr_writer is not None:
            await self.stderr_writer(data)
        else:
            self.stderr += data

    def processes(self) -> list[PodProcess]:
        """The pod's live processes, in all of its containers."""
        return list(self.process_lister()) if self.process_lister is not None else []

    def send_signal(self, proc: PodProcess, sig: int) -> None:
        """Deliver ``sig`` to one of the pod's processes.

        Raises:
            ProcessLookupError: The process is gone, or was never one of the pod's.
            PermissionError: The host refused the signal.
        """
        if self.signaller is not None:
            self.signaller(proc, sig)
            return
        # The stand-in signaller still refuses anything the pod does not own: a stale PodProcess must never
        # let a tool signal whatever process reused the pid.
        if not any(p.host_pid == proc.host_pid and p.pid == proc.pid for p in self.processes()):
            raise ProcessLookupError(proc.pid)
        os.kill(proc.host_pid, sig)


# ------------------------------------------------------------------------------------------------------------
# Dispatch

Tool = Callable[[list[str], ExecContext], Awaitable[int]]
_TOOLS: dict[str, Tool] = {}


def _tool(*names: str) -> Callable[[Tool], Tool]:
    def register(fn: Tool) -> Tool:
        for name in names:
            _TOOLS[name] = fn
        return fn

    return register


def _lookup(argv0: str) -> Tool | None:
    if "/" not in argv0:
        return _TOOLS.get(argv0)
    folder, _, name = argv0.rpartition("/")
    if posixpath.normpath(folder or "/") not in _BIN_DIRS:
        return None
    return _TOOLS.get(name)


def commands() -> list[str]:
    """The names of the commands every image has, sorted."""
    return sorted(_TOOLS)


def has_command(argv0: str) -> bool:
    """Whether ``argv0`` (a name like ``curl`` or a path like ``/bin/sleep``) names a toolbox command."""
    return _lookup(argv0) is not None


def not_found_message(argv0: str) -> str:
    """What the container runtime says when an exec names a command the image lacks (no trailing newline).

    Example::

        not_found_message("sh")
        # 'OCI runtime exec failed: exec failed: unable to start container process: exec: "sh":
        #  executable file not found in $PATH: unknown'
    """
    prefix = f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{argv0}": '
    if "/" in argv0:
        return f"{prefix}stat {argv0}: no such file or directory: unknown"
    return f"{prefix}executable file not found in $PATH: unknown"


async def run(argv: list[str], ctx: ExecContext) -> int:
    """Run one command in the pod and return its exit code.

    An unknown command writes :func:`not_found_message` to stderr and returns 127. User mistakes (bad options,
    missing files, unreachable hosts) are reported as the real tool reports them, never raised. Cancel the
    task to stop the command; it stops promptly.

    Args:
        argv: The command and its arguments, exactly as ``kubectl exec POD -- ...`` passed them.
        ctx: The pod, as the command sees it.

    Returns:
        The exit code.

    Example::

        await run(["pkill", "ruby"], ctx)  # 0 when a ruby process was signalled, 1 when none matched
    """
    name = argv[0] if argv else ""
    tool = _lookup(name)
    if tool is None:
        await ctx.write_stderr((not_found_message(name) + "\n").encode())
        return _NOT_FOUND
    return await tool(list(argv), ctx)


# ------------------------------------------------------------------------------------------------------------
# Small shared helpers


async def _out(ctx: ExecContext, text: str) -> None:
    await ctx.write_stdout(text.encode("utf-8", "surrogateescape"))


async def _err(ctx: ExecContext, text: str) -> None:
    await ctx.write_stderr(text.encode("utf-8", "surrogateescape"))


async def _read_all_stdin(ctx: ExecContext) -> bytes:
    data = bytearray()
    while chunk := await ctx.read_stdin(65536):
        data += chunk
    return bytes(data)


async def _stdin_chunks(ctx: ExecContext) -> AsyncIterator[bytes]:
    while chunk := await ctx.read_stdin(65536):
        yield chunk


def _abspath(path: str) -> str:
    """``path`` made absolute against the working directory ``/``."""
    full = posixpath.normpath(posixpath.join("/", path))
    return "/" + full.lstrip("/")


_STANDARD_DIRS = frozenset({
    "/", "/bin", "/dev", "/etc", "/home", "/proc", "/root", "/sbin", "/sys", "/tmp", "/usr", "/usr/bin",
    "/usr/local", "/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/var",
})
_DEVICES = {"/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr"}


def _is_dir(ctx: ExecContext, path: str) -> bool:
    if path in _STANDARD_DIRS:
        return True
    prefix = path.rstrip("/") + "/"
    return any(name.startswith(prefix) for name in ctx.files)


def _is_file(ctx: ExecContext, path: str) -> bool:
    if path in ctx.files or path in _DEVICES:
        return True
    folder, _, name = path.rpartition("/")
    return (folder or "/") in _BIN_DIRS and name in _TOOLS


def _dir_entries(ctx: ExecContext, path: str) -> list[str]:
    """Names directly inside directory ``path`` (files and subdirectories), sorted."""
    prefix = "/" if path == "/" else path + "/"
    names: set[str] = set()
    for full in [*ctx.files, *_STANDARD_DIRS, *_DEVICES]:
        if full.startswith(prefix) and len(full) > len(prefix):
            names.add(full[len(prefix) :].split("/", 1)[0])
    if path in _BIN_DIRS:
        names.update(_TOOLS)
    return sorted(names)


async def _read_input(ctx: ExecContext, name: str) -> bytes | str:
    """The content of file ``name`` (``-`` and ``/dev/stdin`` read stdin), or the reason it cannot be read."""
    if name in ("-", "/dev/stdin"):
        return await _read_all_stdin(ctx)
    path = _abspath(name)
    if path in ctx.files:
        return ctx.files[path]
    if path in _DEVICES or _is_file(ctx, path):
        return b""
    if _is_dir(ctx, path):
        return "Is a directory"
    return "No such file or directory"


def _split_short_options(args: list[str], with_value: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """A tiny getopt: ``(options, operands)``; the letters in ``with_value`` take an argument.

    Raises:
        _UsageError: An option that needs a value came last.
    """
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            operands.append(arg)
            continue
        letters = arg[1:]
        j = 0
        while j < len(letters):
            letter = letters[j]
            j += 1
            if letter in with_value:
                value = letters[j:]
                if not value:
                    if i >= len(args):
                        raise _UsageError(f"option requires an argument -- '{letter}'")
                    value = args[i]
                    i += 1
                opts.append((letter, value))
                break
            opts.append((letter, None))
    return opts, operands


class _UsageError(Exception):
    """A command line the tool refuses; the message is what it prints after ``tool: ``."""


# ------------------------------------------------------------------------------------------------------------
# true, false, echo, sleep, hostname, env, printenv


@_tool("true")
async def _true(argv: list[str], ctx: ExecContext) -> int:
    return 0


@_tool("false")
async def _false(argv: list[str], ctx: ExecContext) -> int:
    return 1


_ECHO_ESCAPES = {
    ord("\\"): b"\\", ord("a"): b"\a", ord("b"): b"\b", ord("e"): b"\x1b", ord("f"): b"\f", ord("n"): b"\n",
    ord("r"): b"\r", ord("t"): b"\t", ord("v"): b"\v",
}


def _echo_unescape(raw: bytes) -> tuple[bytes, bool]:
    """GNU ``echo -e`` escapes; the flag says ``\\c`` asked to stop all output there."""
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        if byte != 0x5C or i + 1 >= len(raw):  # not a backslash, or a trailing one
            out.append(byte)
            i += 1
            continue
        code = raw[i + 1]
        i += 2
        if code in _ECHO_ESCAPES:
            out += _ECHO_ESCAPES[code]
        elif code == ord("c"):
            return bytes(out), True
        elif code == ord("0"):
            digits = re.match(rb"[0-7]{0,3}", raw[i:])
            text = digits.group() if digits else b""
            out.append(int(text or b"0", 8) & 0xFF)
            i += len(text)
        elif code == ord("x") and re.match(rb"[0-9A-Fa-f]", raw[i : i + 1]):
            digits = re.match(rb"[0-9A-Fa-f]{1,2}", raw[i:])
            assert digits is not None
            out.append(int(digits.group(), 16))
            i += len(digits.group())
        else:
            out += bytes([0x5C, code])
    return bytes(out), False


@_tool("echo")
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


@_tool("sleep")
async def _sleep(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    if len(argv) < 2:
        await _err(ctx, f"{prog}: missing operand\nTry '{prog} --help' for more information.\n")
        return 1
    total = 0.0
    for arg in argv[1:]:
        match = re.fullmatch(r"\+?(\d+\.?\d*|\.\d+|inf|infinity)([smhd]?)", arg, re.IGNORECASE)
        if match is None:
            await _err(ctx, f"{prog}: invalid time interval '{arg}'\n"
                            f"Try '{prog} --help' for more information.\n")
            return 1
        total += float(match.group(1)) * _SLEEP_UNITS[match.group(2).lower()]
    if total == float("inf"):
        await asyncio.Event().wait()  # forever, until the exec is cancelled
    else:
        await asyncio.sleep(total)
    return 0


@_tool("hostname")
async def _hostname(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    names = [a for a in args if not a.startswith("-")]
    if names:
        await _err(ctx, f"{prog}: you must be root to change the host name\n")
        return 1
    if "i" in flags or "I" in flags:
        await _out(ctx, f"{ctx.pod_ip or '127.0.0.1'}\n")
    elif "s" in flags:
        await _out(ctx, ctx.hostname.split(".", 1)[0] + "\n")
    else:
        await _out(ctx, ctx.hostname + "\n")
    return 0


@_tool("env")
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
                await _err(ctx, f"{prog}: option requires an argument -- 'u'\n"
                                f"Try '{prog} --help' for more information.\n")
                return 125
            env.pop(args.pop(0), None)
        elif opt.startswith("-u"):
            env.pop(opt[2:], None)
        else:
            letter = opt[2:] if opt.startswith("--") else opt[1:2]
            text = f"unrecognized option '{opt}'" if opt.startswith("--") else f"invalid option -- '{letter}'"
            await _err(ctx, f"{prog}: {text}\nTry '{prog} --help' for more information.\n")
            return 125
    while args and "=" in args[0]:
        key, _, value = args.pop(0).partition("=")
        env.pop(key, None)  # an assignment moves the variable to the end, as real env prints it
        env[key] = value
    if not args:
        await _out(ctx, "".join(f"{k}={v}\n" for k, v in env.items()))
        return 0
    if not has_command(args[0]):
        await _err(ctx, f"{prog}: '{args[0]}': No such file or directory\n")
        return _NOT_FOUND
    child = copy.copy(ctx)
    child.env = env
    return await run(args, child)


@_tool("printenv")
async def _printenv(argv: list[str], ctx: ExecContext) -> int:
    names = [a for a in argv[1:] if not a.startswith("-")]
    if not names:
        await _out(ctx, "".join(f"{k}={v}\n" for k, v in ctx.env.items()))
        return 0
    code = 0
    for name in names:
        if name in ctx.env:
            await _out(ctx, ctx.env[name] + "\n")
        else:
            code = 1
    return code


# ------------------------------------------------------------------------------------------------------------
# Files: cat, head, ls, wc, grep


async def _bad_option(ctx: ExecContext, prog: str, arg: str, code: int = 1) -> int:
    text = f"unrecognized option '{arg}'" if arg.startswith("--") else f"invalid option -- '{arg[1:2]}'"
    await _err(ctx, f"{prog}: {text}\nTry '{prog} --help' for more information.\n")
    return code


def _split_lines(data: bytes) -> list[bytes]:
    """Lines with their ``\n`` kept; unlike ``bytes.splitlines`` a ``\r`` does not end a line."""
    return re.findall(rb"[^\n]*\n|[^\n]+$", data)


_CAT_LONG = {"--number": "n", "--show-ends": "E"}


@_tool("cat")
async def _cat(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    number = show_ends = False
    names: list[str] = []
    for arg in argv[1:]:
        if arg == "-" or not arg.startswith("-"):
            names.append(arg)
            continue
        if arg.startswith("--") and arg not in _CAT_LONG:
            return await _bad_option(ctx, prog, arg)
        letters = _CAT_LONG.get(arg, arg[1:])
        for letter in letters:
            if letter not in "nEu":  # -u (unbuffered) is accepted and changes nothing
                return await _bad_option(ctx, prog, "-" + letter)
        number = number or "n" in letters
        show_ends = show_ends or "E" in letters
    code = 0
    line_no = 0
    for name in names or ["-"]:
        if name in ("-", "/dev/stdin") and not (number or show_ends):
            async for chunk in _stdin_chunks(ctx):  # stream: an interactive `cat` echoes as it reads
                await ctx.write_stdout(chunk)
            continue
        data = await _read_input(ctx, name)
        if isinstance(data, str):
            await _err(ctx, f"{prog}: {name}: {data}\n")
            code = 1
            continue
        if number or show_ends:
            rendered = bytearray()
            for line in _split_lines(data):
                body = line.rstrip(b"\n")
                end = b"$\n" if show_ends and line.endswith(b"\n") else line[len(body) :]
                if number:
                    line_no += 1
                    rendered += f"{line_no:>6}\t".encode()
                rendered += body + end
            data = bytes(rendered)
        await ctx.write_stdout(data)
    return code


def _parse_count(text: str) -> int | None:
    match = re.fullmatch(r"(-?)(\d+)([kKmM]?)", text)
    if match is None:
        return None
    value = int(match.group(2)) * {"": 1, "k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}[match.group(3)]
    return -value if match.group(1) else value


@_tool("head")
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
                await _err(ctx, f"{prog}: option requires an argument -- '{arg[1]}'\n"
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
            return await _bad_option(ctx, prog, arg)
        else:
            names.append(arg)
            continue
        number = _parse_count(value)
        if number is None:
            await _err(ctx, f"{prog}: invalid number of {'lines' if option == 'n' else 'bytes'}: '{value}'\n")
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
            await _out(ctx, f"{'' if index == 0 else chr(10)}==> {label} <==\n")
        if name in ("-", "/dev/stdin") and lines is not None and lines >= 0:
            # Read only as much stdin as the answer needs, as head does on a pipe.
            taken = bytearray()
            async for chunk in _stdin_chunks(ctx):
                taken += chunk
                if taken.count(b"\n") >= lines:
                    break
            data: bytes | str = bytes(taken)
        else:
            data = await _read_input(ctx, name)
        if isinstance(data, str):
            await _err(ctx, f"{prog}: cannot open '{name}' for reading: {data}\n")
            code = 1
            continue
        if count_bytes is not None:
            out = data[:count_bytes] if count_bytes >= 0 else data[: max(len(data) + count_bytes, 0)]
        else:
            assert lines is not None
            parts = _split_lines(data)
            out = b"".join(parts[:lines] if lines >= 0 else parts[: max(len(parts) + lines, 0)])
        await ctx.write_stdout(out)
    return code


@_tool("ls")
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
                    return await _bad_option(ctx, prog, "-" + letter, code=2)
        elif arg.startswith("--"):
            if arg not in ("--all", "--almost-all"):
                return await _bad_option(ctx, prog, arg, code=2)
            show_all = True
        else:
            names.append(arg)
    now = time.strftime("%b %e %H:%M")

    def describe(path: str, label: str) -> str:
        if not long:
            return label
        if _is_dir(ctx, path):
            mode, size = "drwxr-xr-x", 4096
        else:
            executable = path.rpartition("/")[0] in _BIN_DIRS
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
        path = _abspath(name)
        if _is_file(ctx, path) or (dir_only and _is_dir(ctx, path)):
            files.append(describe(path, name))
        elif _is_dir(ctx, path):
            folders.append((name, path))
        else:
            await _err(ctx, f"{prog}: cannot access '{name}': No such file or directory\n")
            code = 2
    chunks: list[str] = []
    if files:
        chunks.append(render(files))
    for name, path in folders:
        entries = _dir_entries(ctx, path)
        items = [describe(posixpath.join(path, e), e) for e in ([".", ".."] if show_all else []) + entries]
        header = f"{name}:\n" if len(folders) + len(files) > 1 else ""
        total = f"total {4 * len(entries)}\n" if long else ""
        chunks.append(header + total + render(items))
    await _out(ctx, "\n".join(chunks))
    return code


@_tool("wc")
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
                    return await _bad_option(ctx, prog, "-" + letter)
                wanted += letter
        elif arg.startswith("--"):
            return await _bad_option(ctx, prog, arg)
        else:
            names.append(arg)
    columns = [c for c in "lwmc" if c in wanted] or ["l", "w", "c"]
    rows: list[tuple[list[int], str]] = []
    code = 0
    for name in names or ["-"]:
        data = await _read_input(ctx, name)
        if isinstance(data, str):
            await _err(ctx, f"{prog}: {name}: {data}\n")
            code = 1
            continue
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data),
                  "m": len(data.decode("utf-8", "replace"))}
        rows.append(([counts[c] for c in columns], "" if name == "-" else name))
    if len(rows) > 1:
        rows.append(([sum(r[0][i] for r in rows) for i in range(len(columns))], "total"))
    if len(columns) == 1 and len(rows) == 1:
        width = 1
    elif not names or "-" in names:
        width = 7
    else:
        width = max(len(str(n)) for r in rows for n in r[0])
    for counts_row, label in rows:
        text = " ".join(f"{n:>{width}}" for n in counts_row)
        await _out(ctx, f"{text} {label}\n" if label else f"{text}\n")
    return code


_GREP_USAGE = "Usage: grep [OPTION]... PATTERNS [FILE]...\nTry 'grep --help' for more information.\n"
_GREP_LONG = {
    "--only-matching": "o", "--count": "c", "--ignore-case": "i", "--invert-match": "v", "--quiet": "q",
    "--silent": "q", "--fixed-strings": "F", "--extended-regexp": "E", "--basic-regexp": "G",
    "--perl-regexp": "P", "--line-number": "n", "--with-filename": "H", "--no-filename": "h",
    "--files-with-matches": "l", "--word-regexp": "w", "--line-regexp": "x", "--no-messages": "s",
    "--text": "a",
}


def _bre_to_python(pattern: str) -> str:
    """A POSIX basic regular expression (grep's default) in Python's syntax.

    In a BRE ``+ ? | ( ) { }`` are plain characters and their backslashed forms are the operators; Python
    reads them the other way round.
    """
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            follower = pattern[i + 1]
            out.append(follower if follower in "+?|(){}" else char + follower)
            i += 2
        elif char == "[":
            j = i + 1 + (pattern[i + 1 : i + 2] == "^")
            j += pattern[j : j + 1] == "]"
            close = pattern.find("]", j)
            if close < 0:
                out.append("\\[")
                i += 1
            else:
                out.append(pattern[i : close + 1])
                i = close + 1
        else:
            out.append("\\" + char if char in "+?|(){}" else char)
            i += 1
    return "".join(out)


async def _lines(ctx: ExecContext, data: bytes | None) -> AsyncIterator[bytes]:
    """The lines of ``data`` without their newlines, or of stdin, as it arrives, when ``data`` is None."""
    if data is not None:
        parts = data.split(b"\n")
        if parts[-1] == b"":
            parts.pop()
        for line in parts:
            yield line
        return
    rest = b""
    async for chunk in _stdin_chunks(ctx):
        *complete, rest = (rest + chunk).split(b"\n")
        for line in complete:
            yield line
    if rest:
        yield rest


@_tool("grep")
async def _grep(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    try:
        opts, operands = _split_short_options(argv[1:], with_value="emABC")
    except _UsageError as exc:
        await _err(ctx, f"{prog}: {exc}\n{_GREP_USAGE}")
        return 2
    flags: set[str] = set()
    patterns: list[str] = []
    max_count: int | None = None
    for letter, value in opts:
        if letter == "e":
            assert value is not None
            patterns.append(value)
        elif letter == "m":
            if value is None or not value.isdigit():
                await _err(ctx, f"{prog}: invalid max count\n")
                return 2
            max_count = int(value)
        elif letter in "ABC":
            pass  # context lines: accepted, not shown
        elif letter in "ocivqFEGPnHhlwxsa":
            flags.add(letter)
        else:
            await _err(ctx, f"{prog}: invalid option -- '{letter}'\n{_GREP_USAGE}")
            return 2
    names: list[str] = []
    for operand in operands:
        if operand in _GREP_LONG:
            flags.add(_GREP_LONG[operand])
        elif operand.startswith(("--color", "--colour")):
            pass
        elif operand.startswith("--"):
            await _err(ctx, f"{prog}: unrecognized option '{operand}'\n{_GREP_USAGE}")
            return 2
        else:
            names.append(operand)
    if not patterns:
        if not names:
            await _err(ctx, _GREP_USAGE)
            return 2
        patterns = names.pop(0).split("\n")
    if "F" in flags:
        pieces = [re.escape(p) for p in patterns]
    elif "E" in flags or "P" in flags:
        pieces = patterns
    else:
        pieces = [_bre_to_python(p) for p in patterns]
    source = "|".join(f"(?:{p})" for p in pieces)
    if "w" in flags:
        source = rf"(?<!\w)(?:{source})(?!\w)"
    try:
        regex = re.compile(source.encode("utf-8", "surrogateescape"), re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        await _err(ctx, f"{prog}: {exc}\n")
        return 2

    def selects(line: bytes) -> bool:
        hit = regex.fullmatch(line) if "x" in flags else regex.search(line)
        return (hit is not None) != ("v" in flags)

    names = names or ["-"]
    show_name = ("H" in flags or len(names) > 1) and "h" not in flags
    selected_any = error = False
    for name in names:
        data: bytes | None = None
        if name not in ("-", "/dev/stdin"):
            content = await _read_input(ctx, name)
            if isinstance(content, str):
                if "s" not in flags:
                    await _err(ctx, f"{prog}: {name}: {content}\n")
                error = True
                continue
            data = content
        label = "(standard input)" if data is None else name
        prefix = f"{label}:".encode() if show_name else b""
        count = line_no = 0
        async for line in _lines(ctx, data):
            line_no += 1
            if not selects(line):
                continue
            count += 1
            selected_any = True
            if "q" in flags:
                return 0
            if "l" in flags:
                break
            if "c" not in flags:
                number = f"{line_no}:".encode() if "n" in flags else b""
                if "o" not in flags:
                    await ctx.write_stdout(prefix + number + line + b"\n")
                elif "v" not in flags:
                    for hit in regex.finditer(line):
                        if hit.group():
                            await ctx.write_stdout(prefix + number + hit.group() + b"\n")
            if max_count is not None and count >= max_count:
                break
        if "l" in flags and count:
            await _out(ctx, f"{label}\n")
        elif "c" in flags:
            await ctx.write_stdout(prefix + f"{count}\n".encode())
    if error:
        return 2
    return 0 if selected_any else 1


# ------------------------------------------------------------------------------------------------------------
# Signals: kill, pkill, pgrep

# Linux's numbering, which is also what procps prints for `kill -l`.
_SIGNALS = (
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
    "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF",
    "WINCH", "POLL", "PWR", "SYS",
)
_SIGNAL_ALIASES = {"IOT": 6, "CLD": 17, "IO": 29}
_SIGTERM = 15


def _signal_number(text: str) -> int | None:
    """The signal a name (``TERM``, ``SIGTERM``, ``term``) or number (``9``) means, or None."""
    if text.isdigit():
        number = int(text)
        return number if number <= 64 else None
    name = text.upper()
    name = name.removeprefix("SIG")
    if name in _SIGNALS:
        return _SIGNALS.index(name) + 1
    return _SIGNAL_ALIASES.get(name)


def _signal_name(number: int) -> str:
    return _SIGNALS[number - 1] if 1 <= number <= len(_SIGNALS) else str(number)


_KILL_USAGE = """
Usage:
 kill [options] <pid> [...]

Options:
 <pid> [...]            send signal to every <pid> listed
 -<signal>, -s, --signal <signal>
                        specify the <signal> to be sent
 -l, --list=[<signal>]  list all signal names, or convert one to a name
 -L, --table            list all signal names in a nice table

 -h, --help     display this help and exit

For more details see kill(1).
"""


def _signal_list() -> str:
    lines, line = [], ""
    for name in _SIGNALS:
        if line and len(line) + 1 + len(name) >= 80:
            lines.append(line)
            line = ""
        line = f"{line} {name}" if line else name
    return "\n".join([*lines, line]) + "\n"


def _signal_table() -> str:
    cells = [f"{n:>2} {name:<7}" for n, name in enumerate(_SIGNALS, 1)]
    rows = [" ".join(cells[i : i + 7]).rstrip() for i in range(0, len(cells), 7)]
    return "\n".join(rows) + "\n"


@_tool("kill")
async def _kill(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    sig = _SIGTERM
    if not args:
        await _err(ctx, _KILL_USAGE)
        return 1
    first = args[0]
    if first in ("-l", "--list") or first.startswith("--list="):
        value = first.partition("=")[2] or (args[1] if len(args) > 1 else "")
        if not value:
            await _out(ctx, _signal_list())
            return 0
        number = _signal_number(value)
        if value.isdigit() and number is not None and 1 <= number <= len(_SIGNALS):
            await _out(ctx, _signal_name(number) + "\n")
        elif not value.isdigit() and number is not None:
            await _out(ctx, f"{number}\n")
        else:
            await _err(ctx, f"{prog}: unknown signal name {value}\n")
        return 0
    if first in ("-L", "--table"):
        await _out(ctx, _signal_table())
        return 0
    bad_signal = False
    if first in ("-s", "--signal"):
        if len(args) < 2:
            await _err(ctx, _KILL_USAGE)
            return 1
        number = _signal_number(args[1])
        bad_signal = number is None
        sig = number if number is not None else -1
        args = args[2:]
    elif first.startswith("-") and first != "--":
        number = _signal_number(first[1:])
        if number is None:
            await _err(ctx, f"{prog}: invalid argument {first[1:2]}\n{_KILL_USAGE}")
            return 1
        sig = number
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        await _err(ctx, _KILL_USAGE)
        return 1
    code = 0
    procs = ctx.processes()
    for arg in args:
        if not re.fullmatch(r"-?\d+", arg):
            await _err(ctx, f"{prog}: failed to parse argument: '{arg}'\n")
            code = 1
            continue
        if bad_signal:
            await _err(ctx, f"{prog}: ({arg}): Invalid argument\n")
            code = 1
            continue
        pid = int(arg)
        if pid == 0:
            continue  # our own process group: nothing else in the pod is in it
        # -1 means every process but the pid namespace's init, as kill(2) does inside a container.
        targets = [p for p in procs if p.pid != 1] if pid == -1 else [p for p in procs if p.pid == abs(pid)]
        failure = "No such process" if not targets else ""
        delivered = False
        for proc in targets:
            try:
                ctx.send_signal(proc, sig)
                delivered = True
            except ProcessLookupError:
                failure = failure or "No such process"
            except PermissionError:
                failure = "Operation not permitted"
        if failure and not delivered:
            await _err(ctx, f"{prog}: ({arg}): {failure}\n")
            code = 1
    return code


_PGREP_USAGE = """
Usage:
 {prog} [options] <pattern>

Options:
 -<sig>, --signal <sig>    signal to send (either number or name)
 -e, --echo                display what is killed
 -c, --count               count of matching processes
 -f, --full                use full process name to match
 -i, --ignore-case         match case insensitively
 -n, --newest              select most recently started
 -o, --oldest              select least recently started
 -x, --exact               match exactly with the command name
 -l, --list-name           list PID and process name (pgrep)
 -a, --list-full           list PID and full command line (pgrep)

For more details see pgrep(1).
"""


async def _process_match(argv: list[str], ctx: ExecContext, kill: bool) -> int:
    """pkill and pgrep (procps-ng): select the pod's processes by name and signal or list them."""
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    sig = _SIGTERM
    if kill:
        # procps looks for -SIGNAL anywhere before parsing the other options.
        for index, arg in enumerate(args):
            if arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
                number = _signal_number(arg[1:])
                if number is not None:
                    sig = number
                    del args[index]
                    break
    long = {"--full": "f", "--exact": "x", "--ignore-case": "i", "--newest": "n", "--oldest": "o",
            "--count": "c", "--echo": "e", "--list-name": "l", "--list-full": "a", "--inverse": "v"}
    allowed = "fxinoce" + ("" if kill else "lav")
    flags: set[str] = set()
    patterns: list[str] = []
    delimiter = "\n"
    i = 0

    async def usage_error(text: str) -> int:
        await _err(ctx, f"{prog}: {text}\nTry `{prog} --help' for more information.\n")
        return 2

    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("--signal",) or arg.startswith("--signal="):
            value = arg.partition("=")[2]
            if not value:
                if i >= len(args):
                    return await usage_error("option '--signal' requires an argument")
                value = args[i]
                i += 1
            number = _signal_number(value)
            if number is None:
                return await usage_error(f'Unknown signal "{value}".')
            sig = number
        elif arg in ("-d", "--delimiter") and not kill:
            if i >= len(args):
                return await usage_error("option requires an argument -- 'd'")
            delimiter = args[i]
            i += 1
        elif arg in long and long[arg] in allowed:
            flags.add(long[arg])
        elif arg.startswith("--"):
            await _err(ctx, f"{prog}: unrecognized option '{arg}'\n{_PGREP_USAGE.format(prog=prog)}")
            return 2
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter not in allowed:
                    await _err(ctx, f"{prog}: invalid option -- '{letter}'\n{_PGREP_USAGE.format(prog=prog)}")
                    return 2
                flags.add(letter)
        else:
            patterns.append(arg)
    if not patterns:
        return await usage_error("no matching criteria specified")
    if len(patterns) > 1:
        return await usage_error("only one pattern can be provided")
    if {"n", "o"} <= flags:
        return await usage_error("-n and -o are mutually exclusive")
    try:
        regex = re.compile(patterns[0], re.IGNORECASE if "i" in flags else 0)
    except re.error as exc:
        await _err(ctx, f"{prog}: regex error: {exc}\n")
        return 2

    def target(proc: PodProcess) -> str:
        name = proc.comm[:15]
        return " ".join(proc.args) if "f" in flags and proc.args else name

    def matches(proc: PodProcess) -> bool:
        text = target(proc)
        hit = regex.fullmatch(text) if "x" in flags else regex.search(text)
        return (hit is not None) != ("v" in flags)

    chosen = [p for p in ctx.processes() if matches(p)]
    if chosen and ("n" in flags or "o" in flags):
        pick = max if "n" in flags else min
        chosen = [pick(chosen, key=lambda p: (p.started, p.pid))]
    if not kill:
        if "c" in flags:
            await _out(ctx, f"{len(chosen)}\n")
        elif chosen:
            if "a" in flags:
                lines = [f"{p.pid} {' '.join(p.args) or p.comm}" for p in chosen]
            elif "l" in flags:
                lines = [f"{p.pid} {p.comm}" for p in chosen]
            else:
                lines = [str(p.pid) for p in chosen]
            await _out(ctx, delimiter.join(lines) + "\n")
        return 0 if chosen else 1
    signalled = 0
    for proc in chosen:
        try:
            ctx.send_signal(proc, sig)
        except ProcessLookupError:
            continue  # it exited between listing and signalling; procps stays quiet about that too
        except PermissionError:
            await _err(ctx, f"{prog}: killing pid {proc.pid} failed: Operation not permitted\n")
            continue
        signalled += 1
        if "e" in flags:
            await _out(ctx, f"{proc.comm} killed (pid {proc.pid})\n")
    if "c" in flags:
        await _out(ctx, f"{signalled}\n")
    return 0 if signalled else 1


@_tool("pkill")
async def _pkill(argv: list[str], ctx: ExecContext) -> int:
    return await _process_match(argv, ctx, kill=True)


@_tool("pgrep")
async def _pgrep(argv: list[str], ctx: ExecContext) -> int:
    return await _process_match(argv, ctx, kill=False)


# ------------------------------------------------------------------------------------------------------------
# ps


@dataclass
class _ProcStat:
    """What /proc says about a process; zeros when the host has no /proc (or the process just exited)."""

    state: str = "S"
    session_leader: bool = False
    threads: int = 1
    nice: int = 0
    cpu_seconds: float = 0.0
    vsz_kib: int = 0
    rss_kib: int = 0


def _proc_stat(host_pid: int) -> _ProcStat:
    try:
        with open(f"/proc/{host_pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        fields = text[text.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        return _ProcStat(
            state=fields[0], session_leader=int(fields[3]) == host_pid, threads=int(fields[17]),
            nice=int(fields[16]), cpu_seconds=(int(fields[11]) + int(fields[12])) / ticks,
            vsz_kib=int(fields[20]) // 1024, rss_kib=int(fields[21]) * page_kib,
        )
    except (OSError, ValueError, IndexError):
        return _ProcStat()


def _mem_total_kib() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class _PsRow:
    pid: int
    comm: str
    args: list[str]
    started: float
    tty: str
    stat: _ProcStat

    def elapsed(self, now: float) -> float:
        return max(now - self.started, 0.0)


def _hms(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _bsdtime(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _etime(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    if days:
        return f"{days}-{hours:02d}:{text}"
    return f"{hours:02d}:{text}" if hours else text


def _start(started: float, now: float) -> str:
    stamp = time.localtime(started)
    if now - started < 86400:
        return time.strftime("%H:%M", stamp)
    if stamp.tm_year == time.localtime(now).tm_year:
        return time.strftime("%b%d", stamp)
    return time.strftime("%Y", stamp)


def _stat_text(row: _PsRow) -> str:
    s = row.stat
    text = s.state + ("<" if s.nice < 0 else "N" if s.nice > 0 else "")
    text += ("s" if s.session_leader else "") + ("l" if s.threads > 1 else "")
    return text + ("+" if row.tty != "?" else "")


def _pcpu(row: _PsRow, now: float) -> float:
    elapsed = row.elapsed(now)
    return min(row.stat.cpu_seconds * 100.0 / elapsed, 999.9) if elapsed > 0 else 0.0


# spec -> (header, width, right-aligned, value)
_PsField = tuple[str, int, bool, Callable[[_PsRow, float, int], str]]
_PS_FIELDS: dict[str, _PsField] = {
    "pid": ("PID", 7, True, lambda r, now, mem: str(r.pid)),
    "ppid": ("PPID", 7, True, lambda r, now, mem: "0"),
    "user": ("USER", 8, False, lambda r, now, mem: "root"),
    "uid": ("UID", 5, True, lambda r, now, mem: "0"),
    "comm": ("COMMAND", 15, False, lambda r, now, mem: r.comm[:15]),
    "args": ("COMMAND", 27, False, lambda r, now, mem: " ".join(r.args) or f"[{r.comm}]"),
    "cmd": ("CMD", 27, False, lambda r, now, mem: " ".join(r.args) or f"[{r.comm}]"),
    "stat": ("STAT", 4, False, lambda r, now, mem: _stat_text(r)),
    "s": ("S", 1, False, lambda r, now, mem: r.stat.state),
    "etime": ("ELAPSED", 11, True, lambda r, now, mem: _etime(r.elapsed(now))),
    "etimes": ("ELAPSED", 7, True, lambda r, now, mem: str(int(r.elapsed(now)))),
    "time": ("TIME", 8, True, lambda r, now, mem: _hms(r.stat.cpu_seconds)),
    "vsz": ("VSZ", 6, True, lambda r, now, mem: str(r.stat.vsz_kib)),
    "rss": ("RSS", 5, True, lambda r, now, mem: str(r.stat.rss_kib)),
    "tty": ("TT", 8, False, lambda r, now, mem: r.tty),
    "%cpu": ("%CPU", 4, True, lambda r, now, mem: f"{_pcpu(r, now):.1f}"),
    "%mem": ("%MEM", 4, True, lambda r, now, mem: f"{100.0 * r.stat.rss_kib / mem:.1f}" if mem else "0.0"),
    "lstart": ("STARTED", 24, True, lambda r, now, mem: time.strftime("%a %b %e %H:%M:%S %Y",
                                                                       time.localtime(r.started))),
    "start": ("STARTED", 8, True, lambda r, now, mem: _start(r.started, now)),
    "start_time": ("START", 5, True, lambda r, now, mem: _start(r.started, now)),
    "stime": ("STIME", 5, False, lambda r, now, mem: _start(r.started, now)),
    "bsdtime": ("TIME", 6, True, lambda r, now, mem: _bsdtime(r.stat.cpu_seconds)),
    "c": ("C", 2, True, lambda r, now, mem: str(min(int(_pcpu(r, now)), 99))),
    "nlwp": ("NLWP", 4, True, lambda r, now, mem: str(r.stat.threads)),
}
_PS_ALIASES = {
    "command": "args", "ucmd": "comm", "ucomm": "comm", "cputime": "time", "vsize": "vsz", "rssize": "rss",
    "tt": "tty", "tname": "tty", "pcpu": "%cpu", "pmem": "%mem", "state": "s",
    "euser": "user", "uname": "user", "thcount": "nlwp", "bsdstart": "start",
}
_PS_FORMATS = {
    "simple": "pid,tty=TTY,time,comm=CMD",
    "full": "user=UID,pid,ppid,c,stime,tty=TTY,time,cmd",
    "user": "user,pid,%cpu,%mem,vsz,rss,tty=TTY,stat,start_time,bsdtime,args",
}
_PS_USAGE = """
Usage:
 ps [options]

 Try 'ps --help <simple|list|output|threads|misc|all>'
  or 'ps --help <s|l|o|t|m|a>'
 for additional help text.

For more details see ps(1).
"""


def _ps_columns(spec: str) -> list[tuple[str, int, bool, Callable[[_PsRow, float, int], str]]]:
    """Columns for a ``-o`` list like ``pid,comm`` or ``pid=ID,args``.

    Raises:
        _UsageError: A field ps does not know.
    """
    columns = []
    for item in re.split(r"[,\s]+", spec.strip()):
        if not item:
            continue
        name, has_label, label = item.partition("=")
        key = _PS_ALIASES.get(name.lower(), name.lower())
        if key not in _PS_FIELDS:
            raise _UsageError(f'unknown user-defined format specifier "{name}"')
        header, width, right, value = _PS_FIELDS[key]
        columns.append((label if has_label else header, width, right, value))
    return columns


def _parse_ps_args(args: list[str]) -> tuple[str, bool, set[int] | None]:
    """``(format spec, show header, pid filter)`` from ps options, SysV (``-ef``) or BSD (``aux``).

    Raises:
        _UsageError: An option ps refuses; the message is ps's ``error:`` line.
    """
    fmt = ""
    style = "simple"
    header = True
    pids: set[int] | None = None
    i = 0

    def take(rest: str) -> str:
        nonlocal i
        if rest:
            return rest
        if i >= len(args):
            raise _UsageError("list of format specifiers must follow -o")
        i += 1
        return args[i - 1]

    def pid_list(text: str) -> set[int]:
        try:
            return {int(p) for p in re.split(r"[,\s]+", text.strip()) if p}
        except ValueError:
            raise _UsageError("process ID list syntax error") from None

    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if name in ("no-headers", "no-heading"):
                header = False
            elif name in ("format", "pid"):
                text = value or take("")
                if name == "format":
                    fmt = f"{fmt},{text}" if fmt else text
                else:
                    pids = (pids or set()) | pid_list(text)
            elif name not in ("cols", "columns", "width", "sort"):
                raise _UsageError("unknown gnu long option")
            continue
        if arg.isdigit():  # `ps 1`: a bare pid, BSD style
            pids = (pids or set()) | {int(arg)}
            continue
        sysv = arg.startswith("-")
        letters = arg[1:] if sysv else arg
        if arg in ("-aux", "-axu"):
            sysv, letters = False, "aux"
        for j, letter in enumerate(letters):
            if letter == "o":
                text = take(letters[j + 1 :])
                fmt = f"{fmt},{text}" if fmt else text
                break
            if letter == "p":
                pids = (pids or set()) | pid_list(take(letters[j + 1 :]))
                break
            if sysv:
                if letter in "fFl":
                    style = "full"
                elif letter not in "eAadNwHjy":
                    raise _UsageError("unsupported SysV option")
            elif letter == "u":
                style = "user"
            elif letter == "h":
                header = False
            elif letter not in "axwfeTrgc":
                raise _UsageError("unsupported option (BSD syntax)")
    return fmt or _PS_FORMATS[style], header, pids


@_tool("ps")
async def _ps(argv: list[str], ctx: ExecContext) -> int:
    try:
        spec, header, pids = _parse_ps_args(argv[1:])
        columns = _ps_columns(spec)
    except _UsageError as exc:
        await _err(ctx, f"error: {exc}\n{_PS_USAGE}")
        return 1
    now = time.time()
    procs = ctx.processes()
    rows = [_PsRow(p.pid, p.comm, p.args, p.started, "?", _proc_stat(p.host_pid))
            for p in sorted(procs, key=lambda p: p.pid)]
    # Real ps lists itself too; here it is the newest process in the pod.
    me = _PsRow(max((p.pid for p in procs), default=0) + 1, "ps", list(argv), now,
                "pts/0" if ctx.tty else "?", _ProcStat(state="R", session_leader=True))
    rows.append(me)
    if pids is not None:
        rows = [r for r in rows if r.pid in pids]
    mem = _mem_total_kib()
    lines = []
    table = [[h for h, _, _, _ in columns]] if header and any(h for h, _, _, _ in columns) else []
    table += [[value(r, now, mem) for _, _, _, value in columns] for r in rows]
    for cells in table:
        parts = []
        for index, (cell, (head, width, right, _)) in enumerate(zip(cells, columns, strict=True)):
            width = max(width, len(head))
            last = index == len(columns) - 1
            if right:
                parts.append(cell.rjust(width))
            else:
                parts.append(cell if last else cell.ljust(width))
        lines.append(" ".join(parts).rstrip())
    await _out(ctx, "".join(f"{line}\n" for line in lines))
    return 0 if rows else 1


# ------------------------------------------------------------------------------------------------------------
# curl


class _CurlError(Exception):
    """A failed transfer: curl's exit code and the text after ``curl: (N) ``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _CurlOptions:
    urls: list[str] = field(default_factory=list)
    silent: bool = False
    show_error: bool = False
    fail: bool = False
    fail_with_body: bool = False
    outputs: list[str] = field(default_factory=list)
    write_out: str | None = None
    head: bool = False
    include: bool = False
    max_time: float | None = None
    connect_timeout: float | None = None
    request: str | None = None
    headers: list[str] = field(default_factory=list)
    data: list[tuple[str, str]] = field(default_factory=list)
    get: bool = False
    location: bool = False
    max_redirs: int = 50
    verbose: bool = False
    user_agent: str | None = None
    user: str | None = None
    referer: str | None = None
    cookie: str | None = None
    compressed: bool = False
    path_as_is: bool = False
    no_progress: bool = False
    retry: int = 0
    retry_delay: float | None = None
    retry_max_time: float | None = None
    retry_connrefused: bool = False
    retry_all_errors: bool = False
    help: bool = False
    version: bool = False


# long option -> (attribute, kind); kinds: flag, str, list, float, int, data:<mode>, output, remote-name, url
_CURL_LONG: dict[str, tuple[str, str]] = {
    "silent": ("silent", "flag"), "show-error": ("show_error", "flag"), "fail": ("fail", "flag"),
    "fail-with-body": ("fail_with_body", "flag"), "output": ("outputs", "output"),
    "remote-name": ("outputs", "remote-name"), "write-out": ("write_out", "str"), "head": ("head", "flag"),
    "include": ("include", "flag"), "max-time": ("max_time", "float"),
    "connect-timeout": ("connect_timeout", "float"), "request": ("request", "str"),
    "header": ("headers", "list"), "data": ("data", "data:data"), "data-ascii": ("data", "data:data"),
    "data-raw": ("data", "data:raw"), "data-binary": ("data", "data:binary"),
    "data-urlencode": ("data", "data:urlencode"), "json": ("data", "data:json"), "get": ("get", "flag"),
    "location": ("location", "flag"), "max-redirs": ("max_redirs", "int"), "verbose": ("verbose", "flag"),
    "user-agent": ("user_agent", "str"), "user": ("user", "str"), "referer": ("referer", "str"),
    "cookie": ("cookie", "str"), "compressed": ("compressed", "flag"), "path-as-is": ("path_as_is", "flag"),
    "no-progress-meter": ("no_progress", "flag"), "progress-bar": ("no_progress", "flag"),
    "retry": ("retry", "int"), "retry-delay": ("retry_delay", "float"),
    "retry-max-time": ("retry_max_time", "float"), "retry-connrefused": ("retry_connrefused", "flag"),
    "retry-all-errors": ("retry_all_errors", "flag"), "url": ("urls", "url"), "help": ("help", "flag"),
    "version": ("version", "flag"),
    # Accepted and ignored: they change nothing a plain-HTTP, IPv4 sandbox could show.
    "insecure": ("", "flag"), "http1.1": ("", "flag"), "http1.0": ("", "flag"), "ipv4": ("", "flag"),
    "ipv6": ("", "flag"), "no-buffer": ("", "flag"), "tcp-nodelay": ("", "flag"), "globoff": ("", "flag"),
    "no-keepalive": ("", "flag"), "create-dirs": ("", "flag"), "fail-early": ("", "flag"),
    "raw": ("", "flag"), "disable": ("", "flag"), "noproxy": ("", "str"),
}
_CURL_SHORT = {
    "s": "silent", "S": "show-error", "f": "fail", "o": "output", "O": "remote-name", "w": "write-out",
    "I": "head", "i": "include", "m": "max-time", "X": "request", "H": "header", "d": "data", "G": "get",
    "L": "location", "v": "verbose", "A": "user-agent", "u": "user", "e": "referer", "b": "cookie",
    "k": "insecure", "4": "ipv4", "6": "ipv6", "N": "no-buffer", "g": "globoff", "#": "progress-bar",
    "h": "help", "V": "version", "q": "disable", "0": "http1.0",
}
_CURL_TAKES_VALUE = {name for name, (_, kind) in _CURL_LONG.items() if kind not in ("flag", "remote-name")}

_CURL_HELP = """Usage: curl [options...] <url>
 -d, --data <data>           HTTP POST data
 -f, --fail                  Fail fast with no output on HTTP errors
 -h, --help <category>       Get help for commands
 -H, --header <header/@file> Pass custom header(s) to server
 -i, --include               Include response headers in output
 -I, --head                  Show document info only
 -L, --location              Follow redirects
 -m, --max-time <seconds>    Maximum time allowed for transfer
 -o, --output <file>         Write to file instead of stdout
 -s, --silent                Silent mode
 -S, --show-error            Show error even when -s is used
 -v, --verbose               Make the operation more talkative
 -w, --write-out <format>    Use output FORMAT after completion
 -X, --request <method>      Specify request method to use

This is not the full help; this sandbox's curl speaks plain HTTP/1.1 only.
"""


def _curl_version() -> str:
    return (f"curl {CURL_VERSION} (x86_64-pc-linux-musl) libcurl/{CURL_VERSION}\n"
            "Release-Date: 2025-09-10\nProtocols: http\nFeatures: IPv6 Largefile libz\n")


def _parse_curl_args(args: list[str]) -> _CurlOptions:
    """curl's command line, the way curl 8 reads it (no ``--opt=value``; ``--no-`` turns a flag off).

    Raises:
        _CurlUsage: curl would exit 2; the message is its first line.
    """
    opts = _CurlOptions()
    i = 0

    def apply(name: str, shown: str, value: str | None, on: bool = True) -> None:
        attr, kind = _CURL_LONG[name]
        if not attr:
            return
        if kind == "flag":
            setattr(opts, attr, on)
        elif kind in ("str",):
            setattr(opts, attr, value)
        elif kind == "list":
            assert value is not None
            opts.headers.append(value)
        elif kind == "url":
            assert value is not None
            opts.urls.append(value)
        elif kind == "output":
            assert value is not None
            opts.outputs.append(value)
        elif kind == "remote-name":
            opts.outputs.append("\0remote-name")
        elif kind.startswith("data:"):
            assert value is not None
            opts.data.append((kind[5:], value))
        elif kind in ("float", "int"):
            assert value is not None
            try:
                number: float = float(value) if kind == "float" else int(value)
            except ValueError:
                raise _CurlUsage(f"option {shown}: expected a proper numerical parameter") from None
            if number < 0:
                raise _CurlUsage(f"option {shown}: expected a proper numerical parameter")
            setattr(opts, attr, number)

    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:]
            on = True
            negated = name.startswith("no-") and _CURL_LONG.get(name[3:], ("", ""))[1] == "flag"
            if name not in _CURL_LONG and negated:
                name, on = name[3:], False
            if name not in _CURL_LONG:
                raise _CurlUsage(f"option {arg}: is unknown")
            value = None
            if name in _CURL_TAKES_VALUE:
                if i >= len(args):
                    raise _CurlUsage(f"option {arg}: requires parameter")
                value = args[i]
                i += 1
            apply(name, arg, value, on)
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            j = 0
            while j < len(letters):
                letter = letters[j]
                j += 1
                name = _CURL_SHORT.get(letter, "")
                if not name:
                    raise _CurlUsage(f"option {arg}: is unknown")
                if name in _CURL_TAKES_VALUE:
                    value = letters[j:]
                    if not value:
                        if i >= len(args):
                            raise _CurlUsage(f"option -{letter}: requires parameter")
                        value = args[i]
                        i += 1
                    apply(name, f"-{letter}", value)
                    break
                apply(name, f"-{letter}", None)
        else:
            opts.urls.append(arg)
    return opts


class _CurlUsage(Exception):
    """A command line curl refuses with exit code 2."""


@dataclass
class _Url:
    scheme: str
    userinfo: str
    host: str
    port: int
    explicit_port: bool
    target: str  # path and query, as sent on the request line

    def __str__(self) -> str:
        user = f"{self.userinfo}@" if self.userinfo else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{user}{host}{port}{self.target}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail


def _parse_url(raw: str, path_as_is: bool = False) -> _Url:
    """A URL as curl 8 reads it: no scheme means http, the port defaults to 80, the fragment is dropped.

    Raises:
        _CurlError: Codes 1 (a scheme other than http) and 3 (malformed).
    """
    if not raw or re.search(r"[\x00-\x20\x7f]", raw):
        raise _CurlError(3, "URL rejected: Malformed input to a URL function")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", raw)
    scheme, rest = (match.group(1).lower(), raw[match.end() :]) if match else ("http", raw)
    if scheme != "http":
        raise _CurlError(1, f'Protocol "{match.group(1) if match else scheme}" not supported')
    rest = rest.split("#", 1)[0]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if target.startswith("?") or not target:
        target = "/" + target
    userinfo, _, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise _CurlError(3, "URL rejected: Bad IPv6 address")
        port_text = after[1:] if after.startswith(":") else after
        if after and not after.startswith(":"):
            raise _CurlError(3, "URL rejected: Bad IPv6 address")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise _CurlError(3, "URL rejected: No host part in the URL")
    if not hostport.startswith("[") and not re.fullmatch(r"[A-Za-z0-9._~%!$&'()*+,;=-]+", host):
        raise _CurlError(3, "URL rejected: Bad hostname")
    port = 80
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise _CurlError(3, "URL rejected: Port number was not a decimal number between 0 and 65535")
        port = int(port_text)
    path, question, query = target.partition("?")
    if not path_as_is:
        path = _remove_dot_segments(path)
    return _Url(scheme, userinfo, host.lower(), port, bool(port_text), path + question + query)


def _resolve(ctx: ExecContext, host: str) -> str | None:
    """The address a pod would reach for ``host``: IP literal, then /etc/hosts, then cluster DNS."""
    name = host.strip("[]").rstrip(".").lower()
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    hosts = ctx.files.get("/etc/hosts")
    if hosts:
        found: list[str] = []
        for line in hosts.decode("utf-8", "replace").splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) > 1 and name in (p.lower() for p in parts[1:]):
                found.append(parts[0])
        found.sort(key=lambda ip: ":" in ip)  # IPv4 first, as curl's default resolver order tends to be
        if found:
            return found[0]
    if name in (ctx.hostname.lower(), ctx.pod.lower()) and ctx.pod_ip:
        return ctx.pod_ip
    return ctx.resolver.resolve(name)


def _dial_plan(ctx: ExecContext, ip: str) -> tuple[str, str | None]:
    """``(address to connect to, source address to bind)`` for a resolved address.

    In the sandbox every pod owns a loopback address and serves there, so inside a pod ``localhost`` is the
    pod's own address, and the source of a connection is the pod's address, as a server would see on a
    cluster.
    """
    try:
        target = ipaddress.ip_address(ip)
        own = ipaddress.ip_address(ctx.pod_ip) if ctx.pod_ip else None
    except ValueError:
        return ip, None
    if own is None or not own.is_loopback or own.version != 4 or not target.is_loopback:
        return ip, None
    if str(target) in ("127.0.0.1", "::1"):
        return ctx.pod_ip, ctx.pod_ip
    return ip, (ctx.pod_ip if target.version == 4 else None)


async def _open_connection(ip: str, port: int, bind: str | None) -> tuple[asyncio.StreamReader,
                                                                          asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if bind:
            with contextlib.suppress(OSError):  # the address may not exist on this host: connect without it
                sock.bind((bind, 0))
        await loop.sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


@dataclass
class _Stats:
    """What one transfer learned; ``--write-out`` and the error messages read it."""

    url: str = ""
    method: str = "GET"
    t_start: float = 0.0
    t_single: float = 0.0
    t_namelookup: float = 0.0
    t_connect: float = 0.0
    t_pretransfer: float = 0.0
    t_starttransfer: float = 0.0
    t_redirect: float = 0.0
    t_total: float = 0.0
    http_code: int = 0
    http_version: str = "0"
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = ""
    redirect_url: str = ""
    remote_ip: str = ""
    remote_port: int = 0
    local_ip: str = ""
    local_port: int = 0
    size_download: int = 0
    size_upload: int = 0
    size_header: int = 0
    size_request: int = 0
    expected: int | None = None
    num_connects: int = 0
    num_redirects: int = 0
    phase: str = "resolve"
    host: str = ""
    port: int = 0
    exitcode: int = 0
    errormsg: str = ""
    filename: str = ""


class _Sink:
    """Where a transfer's output goes: stdout, a file in the pod, /dev/null or stderr."""

    def __init__(self, ctx: ExecContext, target: str | None) -> None:
        self.ctx = ctx
        self.path = None if target is None or target in ("-", "/dev/stdout") else _abspath(target)
        self.to_terminal = self.path is None and ctx.tty
        self.buffer: bytearray | None = None
        self.wrote = False

    @property
    def is_stdout(self) -> bool:
        return self.path is None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.wrote = True
        if self.path is None:
            await self.ctx.write_stdout(data)
        elif self.path == "/dev/stderr":
            await self.ctx.write_stderr(data)
        elif self.path == "/dev/null":
            return
        else:
            if self.buffer is None:
                self._check_folder()
                self.buffer = bytearray()
            self.buffer += data
            self.ctx.files[self.path] = bytes(self.buffer)

    def _check_folder(self) -> None:
        assert self.path is not None
        folder = self.path.rpartition("/")[0] or "/"
        if not _is_dir(self.ctx, folder) or _is_dir(self.ctx, self.path):
            raise _CurlError(23, "Failure writing output to destination")

    def finish(self, ok: bool) -> None:
        """Create the output file for an empty but successful transfer, as curl does."""
        if ok and self.path is not None and self.buffer is None and self.path not in _DEVICES:
            self._check_folder()
            self.ctx.files[self.path] = b""


def _max5(value: int) -> str:
    kib, mib = 1024, 1024 * 1024
    if value < 100000:
        return f"{value:5d}"
    if value < 10000 * kib:
        return f"{value // kib:4d}k"
    if value < 100 * mib:
        return f"{value // mib:2d}.{(value % mib) // (mib // 10)}M"
    if value < 10000 * mib:
        return f"{value // mib:4d}M"
    return f"{value // (1024 * mib):4d}G"


def _meter_time(seconds: float) -> str:
    total = int(seconds)
    if total <= 0:
        return "--:--:--"
    hours, rest = divmod(total, 3600)
    if hours > 99:
        return f"{hours // 24:3d}d {hours % 24:02d}h"
    return f"{hours:2d}:{rest // 60:02d}:{rest % 60:02d}"


_METER_HEADER = (
    "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n"
    "                                 Dload  Upload   Total   Spent    Left  Speed\n"
)


def _meter_line(stats: _Stats, now: float) -> str:
    spent = max(now - stats.t_start, 0.0)
    down, up = stats.size_download, stats.size_upload
    expected_down = stats.expected if stats.expected is not None else down
    total = expected_down + up
    millis = max(int(spent * 1000), 1)  # curl's own guard against dividing by a zero-length transfer
    speed_down, speed_up = down * 1000 // millis, up * 1000 // millis
    pct_total = (down + up) * 100 // total if total else 0
    pct_down = down * 100 // stats.expected if stats.expected else 0
    pct_up = 100 if up else 0
    est_total = expected_down / speed_down if stats.expected and speed_down else 0.0
    left = est_total - spent if est_total else 0.0
    return (f"{pct_total:3d} {_max5(total)}  {pct_down:3d} {_max5(down)}  {pct_up:3d} {_max5(up)}  "
            f"{_max5(speed_down)}  {_max5(speed_up)} {_meter_time(est_total)} {_meter_time(spent)} "
            f"{_meter_time(left)} {_max5(max(speed_down, speed_up))}")


class _Curl:
    """One ``curl`` command: its options, the pod and the transfers it makes."""

    def __init__(self, ctx: ExecContext, opts: _CurlOptions) -> None:
        self.ctx = ctx
        self.opts = opts
        self.show_meter = not opts.silent and not opts.no_progress

    async def warn(self, text: str) -> None:
        if not self.opts.silent:
            await _err(self.ctx, f"{text}\n")

    async def verbose(self, text: str) -> None:
        if self.opts.verbose:
            await _err(self.ctx, text if text.endswith("\n") else text + "\n")

    async def main(self) -> int:
        opts = self.opts
        if opts.help:
            await _out(self.ctx, _CURL_HELP)
            return 0
        if opts.version:
            await _out(self.ctx, _curl_version())
            return 0
        if not opts.urls:
            await _err(self.ctx, "curl: no URL specified\n"
                                 "curl: try 'curl --help' or 'curl --manual' for more information\n")
            return 2
        inferred = "HEAD" if opts.head else "POST" if opts.data and not opts.get else "GET"
        if opts.request and opts.request.upper() == inferred and inferred != "HEAD":
            await self.warn(f"Note: Unnecessary use of -X or --request, {inferred} is already inferred.")
        body = await self.request_body()
        code = 0
        for index, raw in enumerate(opts.urls):
            target = opts.outputs[index] if index < len(opts.outputs) else None
            code = await self.with_retries(raw, target, body)
        return code

    async def request_body(self) -> bytes | None:
        """The body ``-d``/``--data-*``/``--json`` ask for, or None for none."""
        if not self.opts.data:
            return None
        pieces: list[tuple[str, bytes]] = []
        for mode, value in self.opts.data:
            if mode == "urlencode":
                name, sep, content = value.partition("=")
                if not sep:
                    name, at, path = value.partition("@")
                    if at:
                        raw = await self.read_data_file(path)
                        text = urllib.parse.quote_plus(raw.decode("utf-8", "surrogateescape"))
                        pieces.append((mode, f"{name}={text}".encode() if name else text.encode()))
                        continue
                    name, content = "", value
                encoded = urllib.parse.quote_plus(content)
                pieces.append((mode, f"{name}={encoded}".encode() if name else encoded.encode()))
            elif mode != "raw" and value.startswith("@"):
                raw = await self.read_data_file(value[1:])
                pieces.append((mode, raw.replace(b"\r", b"").replace(b"\n", b"") if mode == "data" else raw))
            else:
                pieces.append((mode, value.encode("utf-8", "surrogateescape")))
        body = b""
        for index, (mode, piece) in enumerate(pieces):
            glue = b"" if index == 0 or mode == "json" else b"&"
            body += glue + piece
        return body

    async def read_data_file(self, name: str) -> bytes:
        data = await _read_input(self.ctx, name)
        if isinstance(data, str):
            await self.warn(f'Warning: Couldn\'t read data from file "{name}", this makes an empty POST.')
            return b""
        return data

    async def with_retries(self, raw: str, target: str | None, body: bytes | None) -> int:
        opts = self.opts
        left = opts.retry
        delay = opts.retry_delay
        started = time.monotonic()
        while True:
            code, stats = await self.transfer(raw, target, body)
            transient = (code == 28 or stats.http_code in (408, 429, 500, 502, 503, 504)
                         or (code == 7 and opts.retry_connrefused) or (code != 0 and opts.retry_all_errors))
            out_of_time = opts.retry_max_time and time.monotonic() - started >= opts.retry_max_time
            if left <= 0 or not transient or out_of_time:
                return code
            wait = delay if delay is not None else min(2 ** (opts.retry - left), 600)
            what = "timeout" if code == 28 else "HTTP error" if stats.http_code >= 400 else "error"
            plural = "retries" if left > 1 else "retry"
            await self.warn(f"Warning: Problem : {what}. Will retry in {wait:g} seconds. "
                            f"{left} {plural} left.")
            left -= 1
            await asyncio.sleep(wait)

    async def transfer(self, raw: str, target: str | None, body: bytes | None) -> tuple[int, _Stats]:
        """One URL, redirects included; prints the meter, the error line and ``--write-out``."""
        opts = self.opts
        loop = asyncio.get_running_loop()
        stats = _Stats(url=raw, t_start=loop.time())
        stats.t_single = stats.t_start
        if target == "\0remote-name":
            name = urllib.parse.urlsplit(raw if "://" in raw else f"http://{raw}").path.rpartition("/")[2]
            target = name or None
            if not name:
                return await self.finish(stats, False, 23, "Remote file name has no length")
        sink = _Sink(self.ctx, target)
        stats.filename = target or ""
        meter = self.show_meter and not sink.to_terminal
        if meter:
            await _err(self.ctx, _METER_HEADER + "\r" + _meter_line(stats, loop.time()))
        code, message = 0, ""
        try:
            async with asyncio.timeout(opts.max_time):
                await self.follow(raw, body, stats, sink)
            sink.finish(ok=True)
        except _CurlError as exc:
            code, message = exc.code, exc.message
        except TimeoutError:  # --max-time ran out (or, rarely, the kernel gave up on the socket)
            code, message = 28, self.timeout_message(stats, loop.time())
        return await self.finish(stats, meter, code, message)

    def timeout_message(self, stats: _Stats, now: float) -> str:
        spent = int((now - stats.t_start) * 1000)
        if stats.phase in ("resolve", "connect"):
            single = int((now - stats.t_single) * 1000)
            return (f"Failed to connect to {stats.host} port {stats.port} after {single} ms: "
                    "Timeout was reached")
        if stats.expected is not None:
            return (f"Operation timed out after {spent} milliseconds with {stats.size_download} out of "
                    f"{stats.expected} bytes received")
        return f"Operation timed out after {spent} milliseconds with {stats.size_download} bytes received"

    async def finish(self, stats: _Stats, meter: bool, code: int, message: str) -> tuple[int, _Stats]:
        loop = asyncio.get_running_loop()
        stats.t_total = loop.time() - stats.t_start
        stats.exitcode, stats.errormsg = code, message
        if meter:
            await _err(self.ctx, "\r" + _meter_line(stats, loop.time()) + "\n")
        if code and (not self.opts.silent or self.opts.show_error):
            await _err(self.ctx, f"curl: ({code}) {message}\n")
        if self.opts.write_out is not None:
            await self.write_out(stats)
        return code, stats

    async def follow(self, raw: str, body: bytes | None, stats: _Stats, sink: _Sink) -> None:
        opts = self.opts
        url = _parse_url(raw, opts.path_as_is)
        if opts.get and body is not None:
            url.target += ("&" if "?" in url.target else "?") + body.decode("utf-8", "surrogateescape")
            body = None
        method = opts.request or ("HEAD" if opts.head else "POST" if body is not None else "GET")
        while True:
            stats.url = str(url)
            stats.method = method
            location = await self.exchange(url, method, body, stats, sink)
            if location is None:
                return
            if stats.num_redirects >= opts.max_redirs:
                raise _CurlError(47, f"Maximum ({opts.max_redirs}) redirects followed")
            stats.num_redirects += 1
            await self.verbose(f"* Issue another request to this URL: '{location}'")
            code = stats.http_code
            # curl turns a POST into a GET after 301/302/303, and keeps a method set with -X.
            becomes_get = (code == 303 and method != "HEAD") or (code in (301, 302) and method == "POST")
            if becomes_get and not opts.request:
                method, body = "GET", None
            url = _parse_url(location, opts.path_as_is)
            stats.t_redirect = asyncio.get_running_loop().time() - stats.t_start

    def request_head(self, url: _Url, method: str, body: bytes | None) -> bytes:
        opts = self.opts
        json_body = any(mode == "json" for mode, _ in opts.data)
        defaults: list[tuple[str, str]] = [("Host", url.host_header)]
        credentials = opts.user if opts.user is not None else urllib.parse.unquote(url.userinfo) or None
        if credentials is not None:
            user, _, password = credentials.partition(":")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            defaults.append(("Authorization", f"Basic {token}"))
        agent = opts.user_agent if opts.user_agent is not None else f"curl/{CURL_VERSION}"
        defaults.append(("User-Agent", agent))
        defaults.append(("Accept", "application/json" if json_body else "*/*"))
        if opts.referer:
            defaults.append(("Referer", opts.referer))
        if opts.compressed:
            defaults.append(("Accept-Encoding", "deflate, gzip"))
        if opts.cookie and "=" in opts.cookie:
            defaults.append(("Cookie", opts.cookie))
        custom: list[tuple[str, str]] = []
        removed: set[str] = set()
        for line in opts.headers:
            if ":" in line:
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                if value:
                    custom.append((name, value))
                else:
                    removed.add(name.lower())
            elif line.rstrip().endswith(";"):
                custom.append((line.rstrip()[:-1].strip(), ""))
        overridden = removed | {name.lower() for name, _ in custom}
        if opts.user_agent == "":
            overridden.add("user-agent")
        headers = [(n, v) for n, v in defaults if n.lower() not in overridden] + custom
        if body is not None:
            if "content-length" not in overridden:
                headers.append(("Content-Length", str(len(body))))
            if "content-type" not in overridden:
                ctype = "application/json" if json_body else "application/x-www-form-urlencoded"
                headers.append(("Content-Type", ctype))
        lines = [f"{method} {url.target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    async def exchange(self, url: _Url, method: str, body: bytes | None, stats: _Stats,
                       sink: _Sink) -> str | None:
        """One request and its response; returns the Location to follow, or None when done."""
        opts = self.opts
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        stats.t_single = loop.time()
        stats.host, stats.port, stats.phase = url.host, url.port, "resolve"
        stats.expected = None
        ip = _resolve(ctx, url.host)
        if ip is None:
            raise _CurlError(6, f"Could not resolve host: {url.host}")
        stats.t_namelookup = loop.time() - stats.t_start
        family = "IPv6" if ":" in ip else "IPv4"
        other = "IPv4" if family == "IPv6" else "IPv6"
        await self.verbose(f"* Host {url.host}:{url.port} was resolved.\n"
                           f"* {other}: (none)\n* {family}: {ip}\n*   Trying {ip}:{url.port}...")
        stats.phase = "connect"
        dial, bind = _dial_plan(ctx, ip)
        if not ctx.resolver.reachable(dial):  # the host's loopback, another sandbox, outside: routed nowhere
            spent = int((loop.time() - stats.t_single) * 1000)
            await self.verbose(f"* connect to {ip} port {url.port} from 0.0.0.0 port 0 failed: Connection refused")
            raise _CurlError(7, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                "Couldn't connect to server")
        try:
            async with asyncio.timeout(opts.connect_timeout):
                reader, writer = await _open_connection(dial, url.port, bind)
        except TimeoutError:  # --connect-timeout, or the kernel's own connect timeout
            spent = int((loop.time() - stats.t_single) * 1000)
            raise _CurlError(28, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                 "Timeout was reached") from None
        except OSError as exc:
            spent = int((loop.time() - stats.t_single) * 1000)
            reason = os.strerror(exc.errno) if exc.errno else "Connection refused"
            await self.verbose(f"* connect to {ip} port {url.port} from 0.0.0.0 port 0 failed: {reason}")
            raise _CurlError(7, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                "Couldn't connect to server") from None
        try:
            return await self.converse(url, method, body, stats, sink, ip, reader, writer)
        finally:
            writer.transport.abort()

    async def converse(self, url: _Url, method: str, body: bytes | None, stats: _Stats, sink: _Sink, ip: str,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        opts = self.opts
        loop = asyncio.get_running_loop()
        stats.num_connects += 1
        stats.t_connect = stats.t_pretransfer = loop.time() - stats.t_start
        stats.remote_ip, stats.remote_port = ip, url.port
        local = writer.get_extra_info("sockname") or ("", 0)
        stats.local_ip, stats.local_port = str(local[0]), int(local[1])
        stats.phase = "transfer"
        await self.verbose(f"* Connected to {url.host} ({ip}) port {url.port}\n* using HTTP/1.x")
        head = self.request_head(url, method, body)
        stats.size_request += len(head) + len(body or b"")
        if opts.verbose:
            shown = head.decode("utf-8", "replace").split("\r\n")[:-1]
            await _err(self.ctx, "".join(f"> {line}\n" for line in shown))
        try:
            writer.write(head + (body or b""))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _CurlError(55, f"Send failure: {exc.strerror or 'Connection reset by peer'}") from None
        stats.size_upload += len(body or b"")
        await self.verbose("* Request completely sent off")
        try:
            return await self.receive(url, method, stats, sink, reader)
        except ConnectionResetError:
            raise _CurlError(56, "Recv failure: Connection reset by peer") from None
        except ValueError:  # a header line longer than the reader's limit
            raise _CurlError(56, "Too large response headers") from None
        except TimeoutError:
            raise
        except OSError as exc:
            raise _CurlError(56, f"Recv failure: {exc.strerror or exc}") from None

    async def receive(self, url: _Url, method: str, stats: _Stats, sink: _Sink,
                      reader: asyncio.StreamReader) -> str | None:
        opts = self.opts
        loop = asyncio.get_running_loop()
        while True:  # skip interim 1xx responses
            raw_head, status_line = await self.read_head(reader, stats)
            match = re.match(r"HTTP/(\d(?:\.\d)?) (\d{3})", status_line)
            if match is None:
                raise _CurlError(8, "Invalid status line")
            code = int(match.group(2))
            if not (100 <= code < 200) or code == 101:
                break
        stats.t_starttransfer = loop.time() - stats.t_start
        stats.http_code, stats.http_version = code, match.group(1)
        stats.headers = []
        for line in raw_head.decode("latin-1").split("\n")[1:]:
            name, sep, value = line.rstrip("\r").partition(":")
            if sep and name.strip():
                stats.headers.append((name.strip(), value.strip()))
        header = {n.lower(): v for n, v in stats.headers}
        stats.content_type = header.get("content-type", "")
        stats.size_header += len(raw_head)
        if opts.verbose:
            shown = raw_head.decode("latin-1").replace("\r\n", "\n").split("\n")[:-1]
            await _err(self.ctx, "".join(f"< {line}\n" for line in shown))
        if code >= 400 and opts.fail and not opts.fail_with_body:
            raise _CurlError(22, f"The requested URL returned error: {code}")
        location = header.get("location")
        resolved = urllib.parse.urljoin(str(url), location) if location else ""
        stats.redirect_url = resolved if 300 <= code < 400 else ""
        if opts.include or opts.head:
            await sink.write(raw_head)
        if opts.location and resolved and code in (301, 302, 303, 307, 308):
            return resolved  # the redirect's own body is not shown
        no_body = method.upper() == "HEAD" or opts.head or code in (204, 304)
        if not no_body:
            await self.read_body(reader, header, stats, sink)
        if code >= 400 and opts.fail_with_body:
            raise _CurlError(22, f"The requested URL returned error: {code}")
        await self.verbose(f"* Connection #0 to host {url.host} left intact")
        return None

    async def read_head(self, reader: asyncio.StreamReader, stats: _Stats) -> tuple[bytes, str]:
        first = await reader.readline()
        if not first:
            raise _CurlError(52, "Empty reply from server")
        if not first.startswith(b"HTTP/"):
            raise _CurlError(1, "Received HTTP/0.9 when not allowed")
        raw = bytearray(first)
        while True:
            line = await reader.readline()
            if not line:
                raise _CurlError(56, "Recv failure: Connection was closed before the response headers ended")
            raw += line
            if line in (b"\r\n", b"\n"):
                return bytes(raw), first.decode("latin-1").strip()

    async def read_body(self, reader: asyncio.StreamReader, header: dict[str, str], stats: _Stats,
                        sink: _Sink) -> None:
        decoder = None
        encoding = header.get("content-encoding", "").lower()
        if self.opts.compressed and encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, told apart by the header

        async def deliver(data: bytes) -> None:
            stats.size_download += len(data)
            if decoder is not None:
                try:
                    data = decoder.decompress(data)
                except zlib.error as exc:
                    raise _CurlError(61, f"Error while processing content unencoding: {exc}") from None
            await sink.write(data)

        if "chunked" in header.get("transfer-encoding", "").lower():
            await self.read_chunked(reader, deliver)
        elif "content-length" in header:
            text = header["content-length"].split(",")[0].strip()
            if not text.isdigit():
                raise _CurlError(8, f"Invalid Content-Length: {header['content-length']}")
            remaining = int(text)
            stats.expected = remaining
            while remaining > 0:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise _CurlError(18, f"end of response with {remaining} bytes missing")
                remaining -= len(chunk)
                await deliver(chunk)
        else:
            while chunk := await reader.read(65536):
                await deliver(chunk)
        if decoder is not None:
            await sink.write(decoder.flush())

    async def read_chunked(self, reader: asyncio.StreamReader,
                           deliver: Callable[[bytes], Awaitable[None]]) -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise _CurlError(18, "transfer closed with outstanding read data remaining")
            size_text = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                raise _CurlError(56, "chunk hex-length char not a hex digit")
            size = int(size_text, 16)
            if size == 0:
                while (trailer := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    del trailer
                return
            while size > 0:
                chunk = await reader.read(min(size, 65536))
                if not chunk:
                    raise _CurlError(18, "transfer closed with outstanding read data remaining")
                size -= len(chunk)
                await deliver(chunk)
            await reader.readline()  # the CRLF after the chunk's data

    async def write_out(self, stats: _Stats) -> None:
        fmt = self.opts.write_out or ""
        if fmt.startswith("@"):
            data = await _read_input(self.ctx, fmt[1:])
            fmt = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else ""
        to_stderr = False
        out: list[tuple[bool, str]] = []
        i = 0
        escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
        while i < len(fmt):
            char = fmt[i]
            if char == "\\" and i + 1 < len(fmt) and fmt[i + 1] in escapes:
                out.append((to_stderr, escapes[fmt[i + 1]]))
                i += 2
                continue
            if fmt.startswith("%%", i):
                out.append((to_stderr, "%"))
                i += 2
                continue
            var = re.match(r"%(\{|header\{)([^}]*)\}", fmt[i:])
            if var is None:
                out.append((to_stderr, char))
                i += 1
                continue
            i += var.end()
            name = var.group(2)
            if var.group(1) == "header{":
                values = [v for n, v in stats.headers if n.lower() == name.lower()]
                out.append((to_stderr, ", ".join(values)))
            elif name in ("stdout", "stderr"):
                to_stderr = name == "stderr"
            else:
                value = _write_out_value(stats, name)
                if value is None:
                    await _err(self.ctx, f"curl: unknown --write-out variable: '{name}'\n")
                else:
                    out.append((to_stderr, value))
        for err, text in out:
            if err:
                await _err(self.ctx, text)
            else:
                await _out(self.ctx, text)


def _write_out_vars(stats: _Stats) -> dict[str, str | int | float]:
    total = stats.t_total
    return {
        "content_type": stats.content_type,
        "errormsg": stats.errormsg,
        "exitcode": stats.exitcode,
        "filename_effective": stats.filename,
        "http_code": f"{stats.http_code:03d}",
        "http_connect": "000",
        "http_version": stats.http_version,
        "local_ip": stats.local_ip,
        "local_port": stats.local_port,
        "method": stats.method,
        "num_connects": stats.num_connects,
        "num_headers": len(stats.headers),
        "num_redirects": stats.num_redirects,
        "redirect_url": stats.redirect_url,
        "remote_ip": stats.remote_ip,
        "remote_port": stats.remote_port,
        "response_code": f"{stats.http_code:03d}",
        "scheme": "http" if stats.http_code else "",
        "size_download": stats.size_download,
        "size_header": stats.size_header,
        "size_request": stats.size_request,
        "size_upload": stats.size_upload,
        "speed_download": int(stats.size_download / total) if total > 0 else 0,
        "speed_upload": int(stats.size_upload / total) if total > 0 else 0,
        "time_appconnect": 0.0,
        "time_connect": stats.t_connect,
        "time_namelookup": stats.t_namelookup,
        "time_pretransfer": stats.t_pretransfer,
        "time_redirect": stats.t_redirect,
        "time_starttransfer": stats.t_starttransfer,
        "time_total": total,
        "url": stats.url,
        "url_effective": stats.url,
        "urlnum": 0,
    }


def _write_out_value(stats: _Stats, name: str) -> str | None:
    if name == "json":
        values = _write_out_vars(stats)
        return json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()})
    if name == "header_json":
        grouped: dict[str, list[str]] = {}
        for key, value in stats.headers:
            grouped.setdefault(key.lower(), []).append(value)
        return json.dumps(grouped)
    values = _write_out_vars(stats)
    if name not in values:
        return None
    value = values[name]
    return f"{value:.6f}" if isinstance(value, float) else str(value)


@_tool("curl")
async def _curl(argv: list[str], ctx: ExecContext) -> int:
    try:
        opts = _parse_curl_args(argv[1:])
    except _CurlUsage as exc:
        await _err(ctx, f"curl: {exc}\ncurl: try 'curl --help' for more information\n")
        return 2
    return await _Curl(ctx, opts).main()
