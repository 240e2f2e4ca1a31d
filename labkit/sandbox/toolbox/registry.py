"""Which command a name means: every tool module registers its commands here with :func:`tool`."""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Awaitable, Callable

from .context import ExecContext

NOT_FOUND = 127
"""The exit code of a command the image does not have."""

BIN_DIRS = frozenset({"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"})
"""Where the image's commands live: ``/usr/bin/curl`` and ``/bin/sleep`` name tools, ``/opt/curl`` does not."""

Tool = Callable[[list[str], ExecContext], Awaitable[int]]
_TOOLS: dict[str, Tool] = {}


def tool(*names: str) -> Callable[[Tool], Tool]:
    """Register the decorated coroutine as the command(s) ``names``."""

    def register(fn: Tool) -> Tool:
        for name in names:
            _TOOLS[name] = fn
        return fn

    return register


def lookup(argv0: str) -> Tool | None:
    """The tool ``argv0`` names (``curl`` or a path like ``/bin/sleep``), or None."""
    if "/" not in argv0:
        return _TOOLS.get(argv0)
    folder, _, name = argv0.rpartition("/")
    if posixpath.normpath(folder or "/") not in BIN_DIRS:
        return None
    return _TOOLS.get(name)


def commands() -> list[str]:
    """The names of the commands every image has, sorted."""
    return sorted(_TOOLS)


def has_command(argv0: str) -> bool:
    """Whether ``argv0`` (a name like ``curl`` or a path like ``/bin/sleep``) names a toolbox command."""
    return lookup(argv0) is not None


def not_found_message(argv0: str) -> str:
    """What the container runtime says when an exec names a command the image lacks (no trailing newline).

    Example::

        not_found_message("bash")
        # 'OCI runtime exec failed: exec failed: unable to start container process: exec: "bash":
        #  executable file not found in $PATH: unknown'
    """
    prefix = f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{argv0}": '
    if "/" in argv0:
        return f"{prefix}stat {argv0}: no such file or directory: unknown"
    return f"{prefix}executable file not found in $PATH: unknown"


async def run(argv: list[str], ctx: ExecContext) -> int:
    """Run one command in the pod and return its exit code.

    An unknown command writes :func:`not_found_message` to stderr and returns 127. User mistakes (bad options,
    missing files, unreachable hosts, a regular expression that never ends) are reported as the real tool
    reports them, never raised. Cancel the task to stop the command; it stops promptly.

    Args:
        argv: The command and its arguments, exactly as ``kubectl exec POD -- ...`` passed them.
        ctx: The pod, as the command sees it.

    Returns:
        The exit code.

    Example::

        await run(["pkill", "ruby"], ctx)  # 0 when a ruby process was signalled, 1 when none matched
    """
    name = argv[0] if argv else ""
    if ctx.tty and ctx.stdout_writer is not None and ctx.stderr_writer is not ctx.stdout_writer:
        # A terminal is one device for both streams: kubectl shows only stdout under -t, as a pty would.
        ctx = copy.copy(ctx)
        ctx.stderr_writer = ctx.stdout_writer
    found = lookup(name)
    if found is None:
        await ctx.write_stderr((not_found_message(name) + "\n").encode("utf-8", "surrogateescape"))
        return NOT_FOUND
    return await found(list(argv), ctx)
