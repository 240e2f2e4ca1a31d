"""Regular expressions from the user, run where a runaway one cannot stop the sandbox.

``grep -E '(a+)+$'`` on a long line backtracks for hours, and Python's ``re`` holds the GIL while it does: run
on the API server's event loop it would freeze the API, the kubelet and every proxy. So a pattern with any
special character is evaluated in a small worker process (``_regex_worker.py``) with a CPU-time budget per
call (:data:`CPU_SECONDS`) and an address-space cap (:data:`MEMORY_BYTES`); the event loop only awaits the
answer. A plain word (``pkill ruby``, ``grep Details``) needs no worker: it is matched here, in linear time.

Workers start on first use, are reused, run at a low priority and die with the sandbox. A call the user
cancels (the client went away) kills its worker at once.

Example::

    matcher = Matcher.compile(b"Book (Details|Reviews)", re.IGNORECASE)
    await matcher.search([b"<h4>Book Details</h4>", b"<p>x</p>"])   # [True, False]
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import marshal
import os
import re
import select
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

CPU_SECONDS = 2.0
"""CPU time one evaluation (at most :data:`BATCH_BYTES` of input) may use before it is cut."""

MEMORY_BYTES = 512 << 20
"""Address space of a regex worker; a pattern that needs more fails with "memory exhausted"."""

BATCH_BYTES = 1 << 20
"""Input sent to a worker in one call."""

MAX_WORKERS = 4
"""Workers (and so evaluations) running at once; more calls wait their turn."""

_SPECIAL = frozenset(".^$*+?{}[]\\|()")
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_regex_worker.py")
_HEADER = struct.Struct("!I")
_WATCHDOG_SECONDS = 120.0  # wall-clock backstop for a worker that stops answering (never expected)


class RegexError(Exception):
    """The pattern cannot be compiled; the message is ``re``'s."""


class RegexLimitError(Exception):
    """Evaluation was cut by a limit.

    Attributes:
        kind: ``"cpu"`` (more than :data:`CPU_SECONDS` of CPU) or ``"memory"`` (past :data:`MEMORY_BYTES`).
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind

    def describe(self) -> str:
        """What the tools print after ``tool: ``."""
        if self.kind == "memory":
            return "memory exhausted"
        return (f"regular expression stopped after {CPU_SECONDS:g} s of CPU time (the sandbox's limit); it "
                "backtracks too much: simplify it, e.g. avoid nested repeats like (a+)+")


def is_plain(pattern: str | bytes) -> bool:
    """Whether ``pattern`` (Python syntax) has no special character, so it only matches itself."""
    text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
    return not any(char in _SPECIAL for char in text)


@dataclass
class Matcher:
    """A compiled pattern: evaluated in place when it is plain, else in a limited worker.

    Use :meth:`compile`; the methods take lines (bytes without newlines) and may raise
    :class:`RegexLimitError` (or :class:`OSError` when no worker can start).
    """

    pattern: bytes
    flags: int
    local: re.Pattern[bytes] | None = field(default=None, repr=False)

    @classmethod
    def compile(cls, pattern: bytes, flags: int = 0) -> Matcher:
        """Check and compile ``pattern``.

        Compiling is linear in the pattern's length (which a command line bounds), so it happens here and a
        syntax error is reported at once; only matching, which can backtrack without end, needs the worker.

        Raises:
            RegexError: The pattern is not a valid regular expression.
        """
        try:
            compiled = re.compile(pattern, flags)
        except re.error as exc:
            raise RegexError(str(exc)) from None
        except (RecursionError, OverflowError, MemoryError):
            raise RegexError("regular expression is too big") from None
        return cls(pattern, int(flags), compiled if is_plain(pattern) else None)

    async def search(self, lines: list[bytes]) -> list[bool]:
        """Whether the pattern occurs in each line."""
        if self.local is not None:
            return [self.local.search(line) is not None for line in lines]
        return [bool(hit) for hit in await self._batched("search", lines)]

    async def fullmatch(self, lines: list[bytes]) -> list[bool]:
        """Whether each whole line matches."""
        if self.local is not None:
            return [self.local.fullmatch(line) is not None for line in lines]
        return [bool(hit) for hit in await self._batched("fullmatch", lines)]

    async def spans(self, lines: list[bytes]) -> list[list[tuple[int, int]]]:
        """The ``(start, end)`` of every non-empty match in each line, as ``grep -o`` prints them."""
        if self.local is not None:
            return [[m.span() for m in self.local.finditer(line) if m.end() > m.start()] for line in lines]
        return [[(int(s), int(e)) for s, e in spans] for spans in await self._batched("finditer", lines)]

    async def _batched(self, mode: str, lines: list[bytes]) -> list[Any]:
        results: list[Any] = []
        start = size = 0
        for index, line in enumerate(lines):
            size += len(line) + 1
            if size >= BATCH_BYTES:
                results += await self._remote(mode, lines[start : index + 1])
                start, size = index + 1, 0
        if start < len(lines):
            results += await self._remote(mode, lines[start:])
        return results

    async def _remote(self, mode: str, lines: list[bytes]) -> list[Any]:
        request = marshal.dumps((self.pattern, self.flags, mode, lines, CPU_SECONDS))
        job = _Job(request)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(_executor(), job.run)
        except asyncio.CancelledError:
            job.cancel()
            raise
        if answer[0] == "ok":
            return list(answer[1])
        if answer[0] == "syntax":
            raise RegexError(str(answer[1]))
        raise RegexLimitError(str(answer[0]))


# -- the worker pool ----------------------------------------------------------------------------------------


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _WORKER_SCRIPT, str(MEMORY_BYTES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
        )

    def call(self, request: bytes) -> tuple[Any, ...] | None:
        """The worker's answer, or None when it died (killed by a limit, or by :meth:`kill`)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(request)) + request)
            self.proc.stdin.flush()
            header = self._read(_HEADER.size)
            if header is None:
                return None
            body = self._read(_HEADER.unpack(header)[0])
        except (BrokenPipeError, OSError, ValueError):
            return None
        if body is None:
            return None
        answer = marshal.loads(body)
        return answer if isinstance(answer, tuple) and answer else None

    def _read(self, n: int) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        data = b""
        while len(data) < n:
            ready, _, _ = select.select([fd], [], [], _WATCHDOG_SECONDS)
            if not ready:
                self.kill()
                return None
            chunk = os.read(fd, n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.everyone: set[_Worker] = set()

    def acquire(self) -> _Worker:
        with self.lock:
            while self.idle:
                worker = self.idle.pop()
                if worker.alive():
                    return worker
                self._forget(worker)
        worker = _Worker()
        with self.lock:
            self.everyone.add(worker)
        return worker

    def release(self, worker: _Worker, healthy: bool) -> None:
        if healthy and worker.alive():
            with self.lock:
                self.idle.append(worker)
            return
        worker.close()
        with self.lock:
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        self.everyone.discard(worker)
        worker.close()

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.everyone)
            self.everyone.clear()
            self.idle.clear()
        for worker in workers:
            worker.close()


class _Job:
    """One call to a worker, run in an executor thread; cancellable from the event loop."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.lock = threading.Lock()
        self.worker: _Worker | None = None
        self.cancelled = False

    def run(self) -> tuple[Any, ...]:
        worker = _POOL.acquire()
        with self.lock:
            self.worker = worker
            cancelled = self.cancelled
        if cancelled:
            _POOL.release(worker, healthy=True)
            return ("cancelled",)
        answer = worker.call(self.request)
        _POOL.release(worker, healthy=answer is not None)
        if answer is None:  # the worker died: the CPU limit's last resort (SIGKILL) or a cancel
            return ("cpu",)
        return answer

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.worker is not None:
                self.worker.kill()


_POOL = _Pool()
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="toolbox-regex")
        return _EXECUTOR


def shutdown() -> None:
    """Stop every regex worker (they also stop by themselves when this process ends)."""
    _POOL.shutdown()


def worker_pids() -> list[int]:
    """The pids of the running regex workers (for tests and benchmarks)."""
    with _POOL.lock:
        return sorted(w.proc.pid for w in _POOL.everyone if w.alive())


atexit.register(shutdown)
