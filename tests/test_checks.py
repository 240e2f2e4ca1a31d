"""Steps that check themselves (labkit.checks): ✓/✗ with hints, the solution shown and run, every result in the
progress file, ``labkit progress``, and results posted to a room that may be unreachable."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import eventually

import labkit
from labkit import checks, lessons


@pytest.fixture()
def progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "lab" / "progress.jsonl"
    monkeypatch.setenv("LABKIT_PROGRESS", str(path))
    monkeypatch.delenv("LABKIT_SOLVE", raising=False)
    monkeypatch.delenv("LABKIT_ROOM", raising=False)
    return path


def test_a_question_check_records_every_attempt(progress: Path) -> None:
    unanswered = checks.check("04", "waiting-status", ...)
    assert not unanswered and str(unanswered).startswith("✗ not answered yet") and "Hint:" in str(unanswered)
    shown = unanswered._repr_html_()
    assert "<details" in shown and "Show solution" in shown and "&quot;CrashLoopBackOff&quot;" in shown
    close = checks.check("04", "waiting-status", "crashloopbackoff")
    assert not close and "with capitals" in close.message
    right = checks.check("04", "waiting-status", "CrashLoopBackOff")
    assert right and "#2e7d32" in right._repr_html_() and "Show solution" not in right._repr_html_()
    results = checks.read_results(progress)
    assert [(r.lesson, r.step, r.ok, r.attempt) for r in results] == [
        ("04", "waiting-status", False, 1), ("04", "waiting-status", False, 2), ("04", "waiting-status", True, 3)]
    assert all(r.time.endswith("+00:00") and not r.solved for r in results)
    table = checks.progress_table(results)
    assert table.splitlines()[0].split() == ["LESSON", "STEP", "RESULT", "ATTEMPTS", "TIME", "SOLVED"]
    assert table.splitlines()[1].split()[:4] == ["04", "waiting-status", "pass", "3"]


def test_unknown_exercise_names_the_known_ones(progress: Path) -> None:
    with pytest.raises(KeyError, match="no exercise 04/nope; exercises: 03/restarted-pod"):
        checks.check("04", "nope", "x")
    assert not progress.exists()


def test_the_tour_mode_solves_unanswered_checks(progress: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_SOLVE", "1")
    solved = checks.check("04", "waiting-status", ...)
    assert solved.ok and solved.solved and "(solved by the solution)" in str(solved)
    answered = checks.check("04", "waiting-status", "Error")  # an answer is checked, never replaced
    assert not answered.ok
    assert [(r.ok, r.solved) for r in checks.read_results(progress)] == [(True, True), (False, False)]


def test_checks_against_the_cluster_and_solve_it(progress: Path, lab: labkit.Lab) -> None:
    rec = lab.record("app=details")
    try:
        action = lab.kill("app=details", "ruby", mode="one")
        lessons.wait_recovered(rec, action, progress=False)
    finally:
        rec.stop()
    victim = action.pods[0]
    others = [p for p in lab.pod_names("app=details") if p != victim]
    assert checks.check("03", "restarted-pod", victim, lab=lab).ok
    wrong = checks.check("03", "restarted-pod", others[0], lab=lab)
    assert not wrong.ok and "never restarted" in wrong.message and "restarts column" in wrong.hint
    assert "not a details pod" in checks.check("03", "restarted-pod", "ratings-v1", lab=lab).message
    assert checks.check("03", "ready-count", 3, lab=lab).ok
    assert not checks.check("03", "ready-count", "three", lab=lab).ok
    solved = checks.solve("03", "restarted-pod", lab=lab)
    assert solved.ok and solved.solved and victim in solved.message
    with pytest.raises(ValueError, match="call it with lab=lab"):
        checks.check("03", "restarted-pod", victim)
    last = checks.read_results(progress)[-1]
    assert (last.lesson, last.step, last.ok, last.solved, last.attempt) == ("03", "restarted-pod", True, True, 4)


def test_lesson_6_checks_are_the_same_record() -> None:
    assert lessons.Check is checks.Check
    assert lessons.check_selector is checks.check_selector
    assert isinstance(lessons.check_process("details", "ruby"), checks.Check)


def test_lesson_6_exercises_are_recorded_with_their_own_hints(progress: Path, lab: labkit.Lab) -> None:
    assert checks.check("06", "selector", "app=details", lab=lab).ok
    wrong = checks.check("06", "selector", "version=v1", lab=lab)
    assert not wrong.ok and "including ones that are not details" in wrong.message and "app=<service>" in wrong.hint
    assert "Java" in checks.check("06", "process", "ruby").hint
    assert checks.check("06", "verdict", "Cascading failure").ok
    assert checks.solve("06", "restarts", lab=lab).ok
    assert [(r.step, r.ok, r.attempt) for r in checks.read_results(progress)] == [
        ("selector", True, 1), ("selector", False, 2), ("process", False, 1), ("verdict", True, 1),
        ("restarts", True, 1)]


def test_labkit_progress_prints_the_table(progress: Path) -> None:
    env = {**os.environ, "LABKIT_PROGRESS": str(progress)}
    empty = subprocess.run([sys.executable, "-m", "labkit.cli", "progress"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert empty.returncode == 0 and "no check results yet" in empty.stdout
    checks.check("04", "waiting-status", "Running")
    checks.check("03", "ready-count", ...)
    progress.open("a").write("not json\n")  # a damaged line is skipped, not fatal
    out = subprocess.run([sys.executable, "-m", "labkit.cli", "progress"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [r[:4] for r in rows] == [["03", "ready-count", "fail", "1"], ["04", "waiting-status", "fail", "1"]]


class _Room(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Room.received.append({"path": self.path, **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_results_go_to_the_room_and_an_unreachable_room_changes_nothing(progress: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Room)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("LABKIT_ROOM", f"http://127.0.0.1:{server.server_port}/JOIN42")
        monkeypatch.setenv("LABKIT_LEARNER", "ada")
        checks.check("04", "waiting-status", "CrashLoopBackOff")
        got = eventually(lambda: _Room.received, what="the result posted to the room")
        assert got[0]["path"] == "/JOIN42/results" and got[0]["learner"] == "ada" and got[0]["ok"] is True
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("LABKIT_ROOM", f"http://127.0.0.1:{dead}/JOIN42")
    assert checks.check("04", "waiting-status", "CrashLoopBackOff").ok
    assert len(checks.read_results(progress)) == 2
