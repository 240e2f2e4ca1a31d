"""What a kit reports to the instructor's room (``LABKIT_ROOM``): posted in the background, in order, never
blocking the lesson and never failing it.

Two kinds of record go to the room: check results (:class:`labkit.checks.Result`, posted to ``ROOM/results``)
and measured outcomes (:class:`Outcome`, posted to ``ROOM/outcomes``): a recovery time when a lesson waits for
pods to come back (:func:`labkit.lessons.wait_recovered`), a traffic verdict when traffic stops
(:meth:`labkit.traffic.Traffic.stop`), an experiment's status when it ends (:meth:`labkit.experiment.Experiment.run`).
This module sits in the client core so that those features can report without importing the faces.

The room is ``LABKIT_ROOM`` (``http://host:port/JOINCODE``) or, when that is unset, the first line of
``~/.labkit/room`` (what ``labkit join URL`` writes: a browser-only hosted start such as Binder has no other
place to set it). The attendee's name is ``LABKIT_LEARNER``, the second line of that file, the hub's user
(``JUPYTERHUB_USER``), or user@host. The lesson an outcome belongs to is ``LABKIT_LESSON`` (set by
:func:`labkit.lessons.run_notebook`) or the notebook's file name, which Jupyter gives the kernel as
``JPY_SESSION_NAME`` ("05-measure-it.ipynb" is lesson "05").
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import re
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

__all__ = ["Kind", "Outcome", "current_lesson", "flush", "learner_name", "outcome", "post", "room_file", "room_url"]

Kind = Literal["recovery", "traffic", "experiment"]


@dataclass(frozen=True)
class Outcome:
    """A figure a lesson measured, as the room receives it.

    Attributes:
        lesson: "05" (empty when no lesson is known).
        kind: "recovery" (kill or delete -> Ready again), "traffic" (a traffic run's verdict) or "experiment".
        target: what was broken: the chaos action's selector ("app=details"); for traffic, the sections that
            dipped ("details"), empty when none did; for an experiment, its title.
        verdict: "healthy" / "gradual degradation" / "cascading failure" (traffic), "completed" / "deviated" /
            "aborted" (experiment); empty for a recovery.
        recovery_s: seconds from the action to Ready again, the slowest pod (None when not measured).
        availability: the share of page requests answered 200 (traffic, experiment), None otherwise.
        time: UTC, ISO 8601.
        learner: who measured it.
    """

    lesson: str
    kind: Kind
    target: str
    verdict: str = ""
    recovery_s: float | None = None
    availability: float | None = None
    time: str = ""
    learner: str = ""


def room_file() -> Path:
    """Where ``labkit join`` keeps the room's address (and the attendee's name): ``~/.labkit/room``."""
    return Path(os.environ.get("LABKIT_ROOM_FILE") or Path.home() / ".labkit" / "room").expanduser()


def _joined() -> list[str]:
    try:
        return [line.strip() for line in room_file().read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError):
        return []


def room_url() -> str | None:
    """The room results go to: ``$LABKIT_ROOM``, else the first line of :func:`room_file`; None: no room."""
    chosen = os.environ.get("LABKIT_ROOM")
    if chosen is not None:
        return chosen.strip() or None  # LABKIT_ROOM= (empty) turns a joined room off
    lines = _joined()
    return lines[0] if lines and lines[0] else None


def learner_name() -> str:
    """Who the results are from: ``$LABKIT_LEARNER``, the name given to ``labkit join``, ``$JUPYTERHUB_USER``,
    else user@host."""
    import getpass
    import socket

    if os.environ.get("LABKIT_LEARNER"):
        return os.environ["LABKIT_LEARNER"]
    lines = _joined()
    if len(lines) > 1 and lines[1]:
        return lines[1]
    if os.environ.get("JUPYTERHUB_USER"):
        return os.environ["JUPYTERHUB_USER"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "learner"
    return f"{user}@{socket.gethostname()}"


def current_lesson() -> str:
    """The lesson this kernel runs: ``$LABKIT_LESSON``, else the two digits that start the notebook's file name
    (``$JPY_SESSION_NAME``, set by Jupyter); empty when neither says."""
    if os.environ.get("LABKIT_LESSON"):
        return os.environ["LABKIT_LESSON"]
    name = Path(os.environ.get("JPY_SESSION_NAME", "")).name
    match = re.match(r"(\d\d)-", name)
    return match.group(1) if match else ""


def _finite(value: float | None, digits: int) -> float | None:
    """A number JSON can carry (NaN and infinities are None)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), digits)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ the outbox

_outbox: queue.Queue[tuple[str, str, dict[str, Any]]] = queue.Queue()
_sender: list[threading.Thread] = []  # the one thread that posts, in order
_lock = threading.Lock()


def _send_forever() -> None:
    while True:
        room, path, doc = _outbox.get()
        try:
            _send(room, path, doc)
        finally:
            _outbox.task_done()


def _send(room: str, path: str, doc: dict[str, Any]) -> None:
    """One POST to the room; any failure is ignored (the kit keeps working without its room)."""
    try:
        req = urllib.request.Request(f"{room.rstrip('/')}/{path}", data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=2).close()
    except Exception:
        pass


def flush(timeout: float = 5.0) -> None:
    """Wait (a little) for posts still on their way to the room: at exit, and in tests."""
    deadline = time.monotonic() + timeout
    while _outbox.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.02)


def post(path: str, doc: dict[str, Any], *, room: str | None = None) -> bool:
    """Queue ``doc`` for ``ROOM/path`` (``room`` or :func:`room_url`); returns at once, False when there is no
    room. One background thread posts everything in order; pending posts get a few seconds at exit."""
    room = room or room_url()
    if not room:
        return False
    with _lock:
        if not _sender:
            thread = threading.Thread(target=_send_forever, name="labkit-room-post", daemon=True)
            thread.start()
            _sender.append(thread)
            atexit.register(flush)
        _outbox.put((room, path, doc))
    return True


def outcome(kind: Kind, target: str, *, verdict: str = "", recovery_s: float | None = None,
            availability: float | None = None, lesson: str | None = None, room: str | None = None) -> Outcome | None:
    """Report a measured outcome to the room, if there is one (else do nothing and return None).

    Never raises: a figure that cannot be reported is not worth breaking a lesson for.
    """
    try:
        room = room or room_url()
        if not room:
            return None
        record = Outcome(current_lesson() if lesson is None else lesson, kind, target, verdict,
                         _finite(recovery_s, 3), _finite(availability, 4), now(), learner_name())
        post("outcomes", asdict(record), room=room)
        return record
    except Exception:
        return None
