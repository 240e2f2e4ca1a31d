"""The container's files and stdio as the tools see them: an in-memory filesystem with a size cap.

Paths are resolved against ``/`` and looked up in :attr:`ExecContext.files` only; nothing on the host is
ever opened. The standard folders of an image exist (empty), ``/dev/null`` and ``/dev/std*`` are devices,
and every tool is a file in the ``bin`` folders.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from collections.abc import AsyncIterator

from .context import INPUT_LIMIT, ExecContext
from .registry import BIN_DIRS, commands

STANDARD_DIRS = frozenset({
    "/", "/bin", "/dev", "/etc", "/home", "/proc", "/root", "/sbin", "/sys", "/tmp", "/usr", "/usr/bin",
    "/usr/local", "/usr/local/bin", "/usr/local/sbin", "/usr/sbin", "/var",
})
DEVICES = frozenset({"/dev/null", "/dev/stdin", "/dev/stdout", "/dev/stderr"})
STDIN_NAMES = ("-", "/dev/stdin")

TOO_LARGE = "File too large"
"""The error (EFBIG's text) for a write past the container's file cap or an input past :data:`INPUT_LIMIT`."""


class FileTooLarge(Exception):
    """A write would take the container's files past :attr:`ExecContext.files_limit`."""


# -- stdio --------------------------------------------------------------------------------------------------


async def out(ctx: ExecContext, text: str) -> None:
    """Write text to stdout (undecodable bytes from arguments pass through unchanged)."""
    await ctx.write_stdout(text.encode("utf-8", "surrogateescape"))


async def err(ctx: ExecContext, text: str) -> None:
    """Write text to stderr."""
    await ctx.write_stderr(text.encode("utf-8", "surrogateescape"))


async def stdin_chunks(ctx: ExecContext) -> AsyncIterator[bytes]:
    """Stdin as it arrives, until end of input."""
    while chunk := await ctx.read_stdin(65536):
        yield chunk


async def read_all_stdin(ctx: ExecContext) -> bytes | str:
    """All of stdin, or :data:`TOO_LARGE` when it is longer than :data:`INPUT_LIMIT`."""
    data = bytearray()
    async for chunk in stdin_chunks(ctx):
        data += chunk
        if len(data) > INPUT_LIMIT:
            return TOO_LARGE
    return bytes(data)


# -- paths and files ----------------------------------------------------------------------------------------


def abspath(path: str) -> str:
    """``path`` made absolute against the working directory ``/``."""
    full = posixpath.normpath(posixpath.join("/", path))
    return "/" + full.lstrip("/")


def is_dir(ctx: ExecContext, path: str) -> bool:
    if path in STANDARD_DIRS:
        return True
    prefix = path.rstrip("/") + "/"
    return any(name.startswith(prefix) for name in ctx.files)


def is_file(ctx: ExecContext, path: str) -> bool:
    if path in ctx.files or path in DEVICES:
        return True
    folder, _, name = path.rpartition("/")
    return (folder or "/") in BIN_DIRS and name in commands()


def dir_entries(ctx: ExecContext, path: str) -> list[str]:
    """Names directly inside directory ``path`` (files and subdirectories), sorted."""
    prefix = "/" if path == "/" else path + "/"
    names: set[str] = set()
    for full in [*ctx.files, *STANDARD_DIRS, *DEVICES]:
        if full.startswith(prefix) and len(full) > len(prefix):
            names.add(full[len(prefix) :].split("/", 1)[0])
    if path in BIN_DIRS:
        names.update(commands())
    return sorted(names)


async def read_input(ctx: ExecContext, name: str) -> bytes | str:
    """The content of file ``name`` (``-`` and ``/dev/stdin`` read stdin), or the reason it cannot be read."""
    if name in STDIN_NAMES:
        return await read_all_stdin(ctx)
    return ctx.files.get(abspath(name), b"") or read_error(ctx, name) or b""


CHUNK = 64 << 10
"""How much of an input a tool handles before it lets the event loop run others."""


def open_input(ctx: ExecContext, name: str) -> AsyncIterator[bytes] | str:
    """File ``name`` (``-`` and ``/dev/stdin``: stdin) as chunks, or the reason it cannot be read.

    Files come in :data:`CHUNK`-sized pieces with a pause for the event loop between them, so a tool that
    works through a big file never holds the loop for long.
    """
    if name in STDIN_NAMES:
        return stdin_chunks(ctx)
    data = ctx.files.get(abspath(name))
    if data is None:
        found = read_error(ctx, name)
        if found:
            return found
        data = b""
    return _pieces(data)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
        await asyncio.sleep(0)


def read_error(ctx: ExecContext, name: str) -> str:
    """Why file ``name`` cannot be read (``""`` when it can)."""
    path = abspath(name)
    if name in STDIN_NAMES or is_file(ctx, path):
        return ""
    return "Is a directory" if is_dir(ctx, path) else "No such file or directory"


def files_room(ctx: ExecContext, path: str) -> int:
    """How many bytes the file ``path`` may grow to before the container's cap is reached."""
    return ctx.files_limit - sum(len(content) for name, content in ctx.files.items() if name != path)


# -- option parsing shared by the small tools ---------------------------------------------------------------


class UsageError(Exception):
    """A command line the tool refuses; the message is what it prints after ``tool: ``."""


_DIGITS = re.compile(r"[0-9]{1,18}")


def parse_uint(text: str) -> int | None:
    """A decimal number of ASCII digits (at most 18 of them), or None."""
    return int(text) if _DIGITS.fullmatch(text) else None


async def bad_option(ctx: ExecContext, prog: str, arg: str, code: int = 1) -> int:
    """GNU's message for an unknown option; returns ``code``."""
    text = f"unrecognized option '{arg}'" if arg.startswith("--") else f"invalid option -- '{arg[1:2]}'"
    await err(ctx, f"{prog}: {text}\nTry '{prog} --help' for more information.\n")
    return code


def split_short_options(args: list[str], with_value: str) -> tuple[list[tuple[str, str | None]], list[str]]:
    """A tiny getopt: ``(options, operands)``; the letters in ``with_value`` take an argument.

    Raises:
        UsageError: An option that needs a value came last.
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
                        raise UsageError(f"option requires an argument -- '{letter}'")
                    value = args[i]
                    i += 1
                opts.append((letter, value))
                break
            opts.append((letter, None))
    return opts, operands
