"""Container logs on disk in the CRI format, with the write time of every line.

The kubelet does not let a container write its log file: it reads the container's output from a pipe and writes
each line as the container runtime does (containerd's CRI log format)::

    2026-11-29T16:50:00.123456789Z stdout F GET /ratings/0
    2026-11-29T16:50:00.124000000Z stdout P a long line's first part...
    2026-11-29T16:50:00.124000000Z stdout F ...and its end

``F`` ends a line, ``P`` is a partial line continued by the next record. The API server parses this when it serves
``pods/log``: ``timestamps=true`` shows each line's write time, and ``sinceSeconds``/``sinceTime`` filter on it.

Examples:
    >>> w = LineWriter()
    >>> w.feed(b"one\\ntw", "2026-11-29T16:50:00.000000001Z")
    b'2026-11-29T16:50:00.000000001Z stdout F one\\n'
    >>> w.feed(b"o\\n", "2026-11-29T16:50:01.000000000Z")
    b'2026-11-29T16:50:01.000000000Z stdout F two\\n'
    >>> [(r.time, r.text) for r in parse(b"2026-11-29T16:50:01.000000000Z stdout F two\\n")]
    [('2026-11-29T16:50:01.000000000Z', b'two\\n')]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["LineWriter", "Record", "now_stamp", "parse", "parse_stamp", "split_complete"]

MAX_LINE = 16 * 1024
"""A line longer than this is written in ``P`` pieces, as containerd does."""


def now_stamp() -> str:
    """The current time in the log's RFC 3339 format with nanoseconds."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def parse_stamp(stamp: str) -> datetime:
    """A log time (or an RFC 3339 ``sinceTime``, with or without fraction) as an aware datetime."""
    text = stamp.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, sep, rest = text.partition(".")
    if sep:  # Python takes at most 6 fraction digits
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One whole log line: when it was written, on which stream, and its text (with its newline)."""

    time: str
    stream: str
    text: bytes


class LineWriter:
    """Turns a container's raw output into CRI log records, stamping each line when it arrives."""

    def __init__(self, stream: str = "stdout") -> None:
        self.stream = stream
        self._pending = bytearray()

    def feed(self, data: bytes, stamp: str | None = None) -> bytes:
        """The records for ``data``'s complete lines; an unfinished line waits for its end (or MAX_LINE)."""
        stamp = stamp or now_stamp()
        self._pending.extend(data)
        out = bytearray()
        while True:
            nl = self._pending.find(b"\n")
            if nl < 0:
                break
            out += self._record(stamp, "F", bytes(self._pending[:nl]))
            del self._pending[: nl + 1]
        while len(self._pending) >= MAX_LINE:
            out += self._record(stamp, "P", bytes(self._pending[:MAX_LINE]))
            del self._pending[:MAX_LINE]
        return bytes(out)

    def flush(self, stamp: str | None = None) -> bytes:
        """The record of a last line left without its newline (the process ended)."""
        if not self._pending:
            return b""
        out = self._record(stamp or now_stamp(), "F", bytes(self._pending))
        self._pending.clear()
        return out

    def _record(self, stamp: str, tag: str, text: bytes) -> bytes:
        return f"{stamp} {self.stream} {tag} ".encode() + text + b"\n"


def split_complete(data: bytes) -> tuple[bytes, bytes]:
    """``data`` cut after its last newline: the complete records, and the rest (a record still being written)."""
    nl = data.rfind(b"\n")
    return (data[: nl + 1], data[nl + 1:]) if nl >= 0 else (b"", data)


def parse(data: bytes) -> list[Record]:
    """The whole lines of a CRI log, ``P`` pieces joined. A line that is not a record is kept as text."""
    records: list[Record] = []
    partial = bytearray()
    first = ""
    for raw in data.splitlines():
        parts = raw.split(b" ", 3)
        if len(parts) < 3 or parts[2] not in (b"P", b"F"):
            records.append(Record(first or "", "stdout", raw + b"\n"))
            continue
        stamp, stream, tag = parts[0].decode(), parts[1].decode(), parts[2]
        text = parts[3] if len(parts) > 3 else b""
        if tag == b"P":
            first = first or stamp
            partial += text
            continue
        records.append(Record(first or stamp, stream, bytes(partial) + text + b"\n"))
        partial.clear()
        first = ""
    if partial:
        records.append(Record(first, "stdout", bytes(partial)))
    return records
