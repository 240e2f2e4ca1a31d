"""The regex worker: runs regular expressions for the toolbox under CPU-time and memory limits.

Started by :mod:`labkit.sandbox.toolbox.regex` as ``python -I -S _regex_worker.py MEMORY_BYTES``; it imports
the standard library only. Requests and answers are length-prefixed :mod:`marshal` frames on stdin/stdout:

    request  (pattern: bytes, flags: int, mode: "search" | "fullmatch" | "finditer", lines: list[bytes],
              cpu_seconds: float)
    answer   ("ok", results) | ("syntax", message) | ("cpu",) | ("memory",)

``search``/``fullmatch`` answer one bool per line; ``finditer`` answers, per line, the ``(start, end)`` spans of
its non-empty matches. Each request gets ``cpu_seconds`` of CPU time (``ITIMER_PROF``); the address space is
capped with ``RLIMIT_AS``. The worker runs at a low priority, dies with its parent (``PR_SET_PDEATHSIG``) and
exits at the end of its input.
"""

from __future__ import annotations

import marshal
import os
import re
import resource
import signal
import struct
import sys
from typing import Any

_HEADER = struct.Struct("!I")


class _CpuExceeded(Exception):
    pass


def _on_cpu_timer(signum: int, frame: object) -> None:
    raise _CpuExceeded


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_exactly(n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _answer(value: Any) -> None:
    payload = marshal.dumps(value)
    data = _HEADER.pack(len(payload)) + payload
    while data:
        data = data[os.write(1, data) :]


def _evaluate(pattern: bytes, flags: int, mode: str, lines: list[bytes]) -> Any:
    regex = re.compile(pattern, flags)
    if mode == "search":
        return [regex.search(line) is not None for line in lines]
    if mode == "fullmatch":
        return [regex.fullmatch(line) is not None for line in lines]
    return [[m.span() for m in regex.finditer(line) if m.end() > m.start()] for line in lines]


def main() -> None:
    _die_with_parent()
    if os.getppid() == 1:
        return
    memory = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    os.nice(10)
    signal.signal(signal.SIGPROF, _on_cpu_timer)
    while True:
        header = _read_exactly(_HEADER.size)
        if header is None:
            return
        body = _read_exactly(_HEADER.unpack(header)[0])
        if body is None:
            return
        try:
            pattern, flags, mode, lines, cpu = marshal.loads(body)
            signal.setitimer(signal.ITIMER_PROF, cpu)
            try:
                answer: Any = ("ok", _evaluate(pattern, flags, mode, lines))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _CpuExceeded:
            answer = ("cpu",)
        except MemoryError:
            answer = ("memory",)
        except (re.error, OverflowError, RecursionError) as exc:
            answer = ("syntax", str(exc))
        del body
        try:
            _answer(answer)
        except MemoryError:
            _answer(("memory",))


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        pass
