"""Steps that check themselves (labkit.checks): ✓/✗ with hints, the solution shown and run, every result in the
progress file, ``labkit progress``, and results posted to a room that may be unreachable."""

from __future__ import annotations

import json
import os
import re
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
    # a right answer keeps its solution, collapsed, to compare with; the hint goes
    assert right and "#2e7d32" in right._repr_html_() and "<details class='labkit-solution'" in right._repr_html_()
    assert "Hint" not in right._repr_html_() and "<details open" not in right._repr_html_()
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


# ------------------------------------------------------------------------------------------------ lessons 1, 2, 5, 7


def test_lessons_1_to_7_have_exercises_each_with_a_question_a_hint_and_a_solution() -> None:
    """Lessons 1 to 7 each check themselves; every exercise has a question, a hint and a solution."""
    lessons_with = {lesson for lesson, _ in checks.EXERCISES}
    assert {"01", "02", "03", "04", "05", "06", "07"} <= lessons_with
    for (lesson, step), ex in checks.EXERCISES.items():
        assert (ex.lesson, ex.step) == (lesson, step) and ex.question and ex.hint and ex.solution
        compile(ex.solution, f"{lesson}/{step}", "eval")  # a solution is one expression


def test_question_exercises_of_lessons_1_2_5_7(progress: Path) -> None:
    cases = [("01", "page-builder", "productpage", "reviews", "answers one part of the page"),
             ("02", "all-pods-down", 7, "6", "for something else"),
             ("05", "details-verdict", "gradual degradation", "cascading failure", "not cascading failure"),
             ("05", "reviews-process", "java", "ruby", "not the main process"),
             ("05", "ratings-verdict", "Healthy", "gradual degradation", "not gradual degradation"),
             ("07", "share", "25%", 0.5, "not 50%"),
             ("07", "release", "nobody", "the ReplicaSet", "no longer owns")]
    for lesson, step, right, wrong, why in cases:
        assert checks.check(lesson, step, right).ok, (lesson, step)
        got = checks.check(lesson, step, wrong)
        assert not got.ok and why in got.message and got.hint, (lesson, step, got)
        assert checks.solve(lesson, step).ok, (lesson, step)
    assert [(r.lesson, r.step, r.ok, r.solved, r.attempt) for r in checks.read_results(progress)][:3] == [
        ("01", "page-builder", True, False, 1), ("01", "page-builder", False, False, 2),
        ("01", "page-builder", True, True, 3)]


def test_cluster_exercises_of_lessons_1_2_7(progress: Path, lab: labkit.Lab) -> None:
    assert checks.check("01", "pod-count", 13, lab=lab).ok
    assert "not 12" in checks.check("01", "pod-count", 12, lab=lab).message
    assert checks.check("01", "selector", "app=reviews", lab=lab).ok
    assert not checks.check("01", "selector", "app=details", lab=lab).ok
    tester = lab.tester_pod()
    assert checks.check("01", "tester-pod", tester, lab=lab).ok
    assert "not the tester" in checks.check("01", "tester-pod", lab.pod_names("app=ratings")[0], lab=lab).message
    # lesson 2: a number read from an answer, and a request the learner sends
    assert checks.check("02", "stars", 4, lab=lab).ok and not checks.check("02", "stars", 5, lab=lab).ok
    mine = lab.request("http://details:9080/details/7")
    assert checks.check("02", "details-request", mine, lab=lab).ok
    book0 = checks.check("02", "details-request", lab.request("http://details:9080/details/0"), lab=lab)
    assert not book0.ok and "ask for book 7" in book0.message
    ratings = checks.check("02", "details-request", lab.request("http://ratings:9080/ratings/7"), lab=lab)
    assert not ratings.ok and "did not come from details" in ratings.message
    failed = checks.check("02", "details-request", lab.request("http://detailz:9080/details/7"), lab=lab)
    assert not failed.ok and "exit code 6" in failed.message
    text = checks.check("02", "details-request", "7", lab=lab)
    assert not text.ok and "wants the result of lab.request(...), not str" in text.message
    # lesson 7: the Service's selector, read from the cluster
    assert checks.check("07", "service-selector", "app=reviews", lab=lab).ok
    more = checks.check("07", "service-selector", "app=reviews,version=v1", lab=lab)
    assert not more.ok and "asks for more than the Service does" in more.message
    for lesson, step in (("01", "pod-count"), ("01", "selector"), ("01", "tester-pod"), ("02", "stars"),
                         ("02", "details-request"), ("07", "service-selector")):
        solved = checks.solve(lesson, step, lab=lab)
        assert solved.ok and solved.solved, (lesson, step, solved)


def test_solve_it_button_runs_the_solution_and_shows_its_check(progress: Path) -> None:
    stuck = checks.check("05", "reviews-process", "ruby")
    box = checks.solve_button(stuck)
    shown, button = box.children
    assert "✗" in shown.value and "Show solution" in shown.value and button.description == "Solve it"
    assert "labkit-solve" in button._dom_classes
    button.click()
    assert "✓" in shown.value and "solved by the solution" in shown.value and button.layout.display == "none"
    last = checks.read_results(progress)[-1]
    assert (last.lesson, last.step, last.ok, last.solved, last.attempt) == ("05", "reviews-process", True, True, 2)
    with pytest.raises(ValueError, match="only an exercise's check"):
        checks.solve_button(checks.check_process("details", "x"))


def test_a_check_shows_plain_html_outside_a_kernel_and_its_solution_stays_collapsed_in_a_page(
        progress: Path, tmp_path: Path) -> None:
    """No kernel: no widget in the display bundle. An exported page keeps the solution in a closed <details>."""
    import nbformat

    from labkit import export

    wrong = checks.check("01", "page-builder", "details")
    bundle = wrong._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"} and bundle["text/plain"].startswith("✗")
    solved = checks.solve("01", "page-builder")
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('checks.check("01", "page-builder", ...)')
    cell.outputs = [nbformat.v4.new_output("execute_result", data=solved._repr_mimebundle_(), execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# A lesson"), cell]
    page = export.to_html(nb, index=None, name="99-checks")
    details = re.search(r"<details class=.labkit-solution.[^>]*>(.*?)</details>", page, re.DOTALL)
    assert details and "<summary>Show solution</summary>" in details.group(1), page[-2000:]
    assert "productpage" in details.group(1) and not re.search(r"<details[^>]*\bopen\b", page)


def test_the_room_and_the_name_from_a_joined_room_file(progress: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit import report, room

    monkeypatch.setenv("LABKIT_ROOM_FILE", str(tmp_path / "joined"))
    monkeypatch.delenv("LABKIT_LEARNER", raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    assert report.room_url() is None and report.learner_name() == "hubuser"
    with pytest.raises(ValueError, match="is not a room"):
        room.join("localhost:8765")
    room.join("https://room.example.org/JOIN42", "ada")
    assert report.room_url() == "https://room.example.org/JOIN42" and report.learner_name() == "ada"
    monkeypatch.setenv("LABKIT_ROOM", "")  # an empty LABKIT_ROOM turns the joined room off
    assert report.room_url() is None
    monkeypatch.setenv("LABKIT_LESSON", "")
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/jovyan/notebooks/05-measure-it.ipynb")
    assert report.current_lesson() == "05"
    monkeypatch.setenv("LABKIT_LESSON", "06")
    assert report.current_lesson() == "06"
    out = subprocess.run([sys.executable, "-m", "labkit.cli", "join", "http://127.0.0.1:9/ROOM7", "--name", "bo"],
                         env={**os.environ}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "joined http://127.0.0.1:9/ROOM7 as bo" in out.stdout, out.stderr
    assert (tmp_path / "joined").read_text() == "http://127.0.0.1:9/ROOM7\nbo\n"
    bad = subprocess.run([sys.executable, "-m", "labkit.cli", "join", "ROOM7"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "is not a room" in bad.stderr
