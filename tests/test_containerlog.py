"""The CRI log format the kubelet writes and the API server reads, and the API server's boolean query parameters."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import pytest

from labkit.sandbox import containerlog, params
from labkit.sandbox.containerlog import MAX_LINE, LineWriter, parse, parse_stamp, split_complete


def test_lines_are_stamped_when_they_arrive_and_joined_when_read() -> None:
    w = LineWriter()
    first = w.feed(b"GET /a\nGET /b\npart", "2026-11-29T16:50:00.000000001Z")
    later = w.feed(b"ial line\n", "2026-11-29T16:50:02.500000000Z")
    assert first == (b"2026-11-29T16:50:00.000000001Z stdout F GET /a\n"
                     b"2026-11-29T16:50:00.000000001Z stdout F GET /b\n")
    assert later == b"2026-11-29T16:50:02.500000000Z stdout F partial line\n"
    records = parse(first + later)
    assert [(r.time, r.text) for r in records] == [
        ("2026-11-29T16:50:00.000000001Z", b"GET /a\n"), ("2026-11-29T16:50:00.000000001Z", b"GET /b\n"),
        ("2026-11-29T16:50:02.500000000Z", b"partial line\n")]


def test_long_lines_are_written_in_pieces_and_read_whole() -> None:
    w = LineWriter()
    long = b"x" * (MAX_LINE + 10)
    data = w.feed(long, "2026-11-29T16:50:00.000000000Z") + w.feed(b"\n", "2026-11-29T16:50:01.000000000Z")
    assert [line.split(b" ")[2] for line in data.splitlines()] == [b"P", b"F"]
    [record] = parse(data)
    assert record.text == long + b"\n" and record.time == "2026-11-29T16:50:00.000000000Z"


def test_a_last_line_without_newline_is_flushed_when_the_process_ends() -> None:
    w = LineWriter()
    assert w.feed(b"no newline", "2026-11-29T16:50:00.000000000Z") == b""
    assert w.flush("2026-11-29T16:50:00.000000000Z") == b"2026-11-29T16:50:00.000000000Z stdout F no newline\n"
    assert w.flush() == b""


def test_a_record_being_written_is_left_for_the_next_read() -> None:
    assert split_complete(b"a F x\nb F y") == (b"a F x\n", b"b F y")
    assert split_complete(b"half") == (b"", b"half")


def test_stamps_parse_with_nanoseconds_offsets_or_no_fraction() -> None:
    assert parse_stamp("2026-11-29T16:50:00.123456789Z") == datetime(2026, 11, 29, 16, 50, 0, 123456, tzinfo=UTC)
    assert parse_stamp("2026-11-29T16:50:00Z") == datetime(2026, 11, 29, 16, 50, tzinfo=UTC)
    assert parse_stamp("2026-11-29T17:50:00+01:00") == datetime(2026, 11, 29, 16, 50, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_stamp("yesterday")


def test_booleans_are_false_only_for_0_and_false() -> None:
    """apimachinery's Convert_Slice_string_To_bool: kubernetes_asyncio's ``True`` is true, and nothing is refused."""
    assert params.query_bool({}, "watch") is False
    assert all(params.query_bool({"watch": v}, "watch") for v in ("true", "True", "1", "t", "yes", ""))
    assert not any(params.query_bool({"watch": v}, "watch") for v in ("0", "false", "False", "FALSE", "fAlSe"))


@pytest.mark.parametrize("module", [containerlog, params])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
