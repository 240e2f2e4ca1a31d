"""The one way tests wait: poll a condition until it holds, or fail saying what never happened.

Tests never assert how long something took (speed is measured in benchmarks/), and never `sleep` to let state
settle: they wait for the state itself, with a deadline generous enough for a busy 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout: float = 30.0, what: str = "the condition",
               interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` until it returns something truthy, and return that; fail after ``timeout`` seconds.

    Args:
        predicate: what to check; its truthy result is returned.
        timeout: the deadline, in seconds (a bound against hanging, not a speed claim).
        what: what is awaited, for the failure message ("the 13 pods Ready").
        interval: seconds between two checks.
        ignore: exceptions that mean "not yet" (a server still starting: ``ConnectionError``...).

    Raises:
        AssertionError: the deadline passed; the message names ``what`` and the last result or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def never(predicate: Callable[[], object], during: float, what: str = "the condition",
          interval: float = 0.05) -> None:
    """Check that ``predicate`` stays falsy for ``during`` seconds (absence, proved by looking the whole time).

    Raises:
        AssertionError: it became truthy; the message names ``what`` and the value.
    """
    deadline = time.monotonic() + during
    while True:
        result = predicate()
        if result:
            raise AssertionError(f"{what} happened: {result!r}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
