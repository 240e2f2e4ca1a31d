"""The pod as a command sees it: :class:`ExecContext` and :class:`PodProcess`."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..dns import Resolver

FILES_LIMIT = 16 << 20
"""Bytes of files one container may hold in memory (``curl -o`` writes there); a write past it fails."""

INPUT_LIMIT = 16 << 20
"""Bytes a tool holds in memory when it must read a whole input (``cat -n -``, ``curl -d @-``, ...)."""


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
            shared by all its execs. Nothing on the host is ever read: a path not in this dict does not exist.
        files_limit: The most bytes ``files`` may hold; a write that would pass it fails ("File too large").
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
        shell_depth: How many ``sh`` levels this command runs under (a shell refuses to nest without end).
    """

    pod: str = "pod"
    namespace: str = "default"
    container: str = ""
    pod_ip: str = ""
    hostname: str = ""
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    files_limit: int = FILES_LIMIT
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
    shell_depth: int = 0
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
