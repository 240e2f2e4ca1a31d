"""The instructor's room (labkit.room): a simulated room of 20 learners, each a process of its own with its own
progress file, whose kits post their check results to the room; the page and its data show the right grid."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium, eventually

import labkit
from labkit import checks, experiment, lessons, report, room

LEARNERS = 20

# Each learner answers lesson 4's question: learner i fails (i % 4) times, then passes, except the last three, who
# never get it right (they are stuck); the first five also ask for the solution of lesson 3's ready-count.
# Their kits report lesson 5's figures (as lessons.wait_recovered and Traffic.stop do): details recovered in
# 1.0 + i/10 s, twice for the first four (the room keeps the latest), and the verdict "gradual degradation", but
# "cascading failure" for learner 19; the first fifteen finish lesson 6's experiment: "completed" except learners
# 13 and 14 ("deviated"). Outcomes in lesson 4 are not lesson 5's figures and stay off the page.
LEARNER = """
import sys
from labkit import checks, report
i = int(sys.argv[1])
for _ in range(i % 4):
    checks.check("04", "waiting-status", "Error")
if i < 17:
    checks.check("04", "waiting-status", "CrashLoopBackOff")
if i < 5:
    checks.record("03", "ready-count", checks.Check(True, "3 of the 3 details pods are Ready now.", solved=True))
if i < 4:
    report.outcome("recovery", "app=details", recovery_s=30.0)
report.outcome("recovery", "app=details", recovery_s=1.0 + i / 10)
report.outcome("recovery", "app=details", recovery_s=99.0, lesson="04")
report.outcome("traffic", "details", verdict="cascading failure" if i == 19 else "gradual degradation",
               availability=0.5 if i == 19 else 1.0)
if i < 15:
    report.outcome("experiment", "Lose every details pod", verdict="deviated" if i in (13, 14) else "completed",
                   recovery_s=2.0, availability=1.0, lesson="06")
"""


@pytest.fixture()
def running() -> Iterator[room.RunningRoom]:
    r = room.serve("JOIN42", stuck_after=0)
    try:
        yield r
    finally:
        r.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def _room_of_twenty(running: room.RunningRoom, tmp_path: Path) -> dict[str, object]:
    """Run the 20 learner processes against the room; return its state once every result has arrived."""
    procs = []
    for i in range(LEARNERS):
        env = {**os.environ, "LABKIT_ROOM": running.join_url, "LABKIT_LEARNER": f"learner-{i:02d}",
               "LABKIT_PROGRESS": str(tmp_path / f"learner-{i:02d}.jsonl"), "LABKIT_LESSON": "05"}
        env.pop("LABKIT_SOLVE", None)
        procs.append(subprocess.Popen([sys.executable, "-c", LEARNER, str(i)], env=env))
    assert [p.wait(timeout=120) for p in procs] == [0] * LEARNERS

    def complete() -> dict[str, object]:
        state = json.loads(_get(running.url + "/state.json"))
        rows = state["attendees"]
        done = len(rows) == LEARNERS and all(
            "04/waiting-status" in row["steps"] and row["verdicts"] for row in rows.values()) and sum(
            "03/ready-count" in row["steps"] for row in rows.values()) == 5 and sum(
            row["experiment"] is not None for row in rows.values()) == 15
        return dict(state) if done else {}

    return eventually(complete, timeout=30, what="every learner's results in the room")


def test_a_room_of_twenty(running: room.RunningRoom, tmp_path: Path) -> None:
    state = _room_of_twenty(running, tmp_path)
    rows = state["attendees"]
    assert isinstance(rows, dict)
    for i in range(LEARNERS):
        cell = rows[f"learner-{i:02d}"]["steps"]["04/waiting-status"]
        passed = i < 17
        assert cell["ok"] is passed, (i, cell)
        assert cell["attempts"] == i % 4 + (1 if passed else 0), (i, cell)
        assert rows[f"learner-{i:02d}"]["stuck"] == ([] if passed else ["04/waiting-status"])
    # each learner's own progress file holds its own results only
    own = [json.loads(line) for line in (tmp_path / "learner-18.jsonl").read_text().splitlines()]
    assert [(r["learner"], r["ok"], r["attempt"]) for r in own] == [("learner-18", False, 1), ("learner-18", False, 2)]

    # the figures: per attendee, and the room's summary
    for i in range(LEARNERS):
        row = rows[f"learner-{i:02d}"]
        assert row["recovery"] == {"app=details": pytest.approx(1.0 + i / 10)}, (i, row)
        assert row["verdicts"] == {"details": "cascading failure" if i == 19 else "gradual degradation"}
        exp = row["experiment"]
        assert (exp and exp["verdict"]) == (None if i >= 15 else "deviated" if i in (13, 14) else "completed")
        stuck_s = row["steps"]["04/waiting-status"]["stuck_s"]
        assert row["stuck_for"] == ({} if i < 17 else {"04/waiting-status": stuck_s})
    summary = state["summary"]
    assert isinstance(summary, dict)
    assert summary["median_recovery_s"] == {"app=details": pytest.approx(1.95)}  # the median of 1.0 ... 2.9
    assert summary["recoveries"] == {"app=details": 20}
    assert summary["verdicts"] == {"gradual degradation": 19, "cascading failure": 1}
    assert summary["experiments"] == {"completed": 13, "deviated": 2}
    assert sorted(s["learner"] for s in summary["stuck"]) == ["learner-17", "learner-18", "learner-19"]
    assert all(s["step"] == "04/waiting-status" for s in summary["stuck"])

    page = _get(running.url + "/")
    assert "20 attendees" in page and "<meta http-equiv='refresh'" in page
    assert "<b>Median recovery</b> (lesson 5, attendees): app=details 1.9 s (20)" in page or \
        "<b>Median recovery</b> (lesson 5, attendees): app=details 2.0 s (20)" in page
    assert "gradual degradation 19, cascading failure 1" in page and "completed 13, deviated 2" in page
    assert "<b>Stuck</b> (3): learner-1" in page
    assert page.count("<td data-figure='recovery'>app=details ") == LEARNERS
    assert page.count("<td data-figure='verdicts' class='bad'>details: cascading failure</td>") == 1
    assert page.count("<td data-figure='experiment' class='bad'>deviated, recovered in 2.0 s</td>") == 2
    assert page.count("<td data-figure='stuck' class='stuck'>04/waiting-status for ") == 3
    assert page.count("<tr data-learner=") == LEARNERS
    assert page.count("class='stuck' data-step='04/waiting-status'") == 3
    assert page.count("class='pass' data-step='04/waiting-status'") == 17
    assert page.count("class='pass' data-step='03/ready-count'>✓ (solution)") == 5


def test_a_wrong_join_code_is_refused(running: room.RunningRoom) -> None:
    req = urllib.request.Request(running.url + "/OTHER/results", data=b'{"lesson":"04","step":"x","ok":true}',
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    bad = urllib.request.Request(running.join_url + "/results", data=b'{"nothing": 1}',
                                 headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=10)
    assert err.value.code == 400
    assert json.loads(_get(running.url + "/state.json"))["attendees"] == {}
    for body, why in ((b'{"kind": "speed", "target": "x"}', "kind must be one of recovery, traffic, experiment"),
                      (b'{"kind": "recovery", "recovery_s": "fast"}', "recovery_s must be a number"),
                      (b'[1, 2]', "an outcome is a JSON object")):
        req = urllib.request.Request(running.join_url + "/outcomes", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 400 and why in err.value.read().decode()
    assert json.loads(_get(running.url + "/state.json"))["attendees"] == {}


def test_duration_reads_like_an_instructor_says_it() -> None:
    assert [room.duration(s) for s in (0, 59.4, 60, 75, 3600)] == ["0 s", "59 s", "1 min", "1 min 15 s", "60 min"]


# ------------------------------------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, as tests/test_browser.py; skipped without it, except in CI."""
    with chromium() as launched:
        yield launched


def test_the_page_follows_the_room_live_in_a_browser(browser: Any, running: room.RunningRoom, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(running.url + "/")
        assert page.locator("h1").inner_text() == "labkit room JOIN42"
        assert page.locator("tr[data-learner]").count() == 0
        for i, answers in enumerate((["CrashLoopBackOff"], ["Error", "Error"], ["Error", "CrashLoopBackOff"])):
            for answer in answers:
                checks.record("04", "waiting-status", checks.Check(answer == "CrashLoopBackOff", answer),
                              path=tmp_path / f"{i}.jsonl", room=running.join_url, learner=f"learner-{i}")
        monkeypatch.setenv("LABKIT_LEARNER", "learner-0")  # learner-0's kit reports its figures
        report.outcome("recovery", "app=details", recovery_s=1.25, lesson="05", room=running.join_url)
        report.outcome("traffic", "details", verdict="gradual degradation", availability=1.0, lesson="05",
                       room=running.join_url)
        report.outcome("experiment", "Lose every details pod", verdict="deviated", recovery_s=3.0, lesson="06",
                       room=running.join_url)
        # the page reloads itself: no click, no script
        page.wait_for_selector("tr[data-learner='learner-2']", timeout=20_000)
        cell = "td[data-step='04/waiting-status']"
        assert page.locator(f"tr[data-learner='learner-0'] {cell}").get_attribute("class") == "pass"
        stuck = page.locator(f"tr[data-learner='learner-1'] {cell}")
        assert stuck.get_attribute("class") == "stuck" and stuck.inner_text().startswith("✗ 2×")
        assert page.locator(f"tr[data-learner='learner-2'] {cell}").get_attribute("class") == "pass"
        background = page.locator(f"tr[data-learner='learner-1'] {cell}").evaluate(
            "el => getComputedStyle(el).backgroundColor")
        assert background == "rgb(229, 57, 53)"  # stuck is red, seen by the browser
        assert "3 attendees" in page.locator("p").first.inner_text()
        # the new columns, right after the attendee's name, then the steps in the lessons' order
        header = page.locator("#grid tr").first.locator("th").all_inner_texts()
        assert header[:5] == ["attendee", "stuck at", "05 recovery", "05 verdicts", "06 experiment"]
        assert header[5:9] == ["01/pod-count", "01/selector", "01/tester-pod", "01/page-builder"]
        assert header.index("04/waiting-status") < header.index("05/details-verdict")
        page.wait_for_selector("tr[data-learner='learner-0'] td[data-figure='experiment'].bad", timeout=20_000)
        mine = page.locator("tr[data-learner='learner-0']")
        assert mine.locator("td[data-figure='recovery']").inner_text() == "app=details 1.2 s"
        assert mine.locator("td[data-figure='verdicts']").inner_text() == "details: gradual degradation"
        assert mine.locator("td[data-figure='experiment']").inner_text() == "deviated, recovered in 3.0 s"
        assert mine.locator("td[data-figure='experiment']").evaluate(
            "el => getComputedStyle(el).color") == "rgb(198, 40, 40)"  # a deviated experiment is red
        assert page.locator("tr[data-learner='learner-1'] td[data-figure='stuck']").inner_text().startswith(
            "04/waiting-status for ")
        summary = page.locator("#summary").inner_text()
        assert "Median recovery (lesson 5, attendees): app=details 1.2 s (1)" in summary, summary
        assert "Verdicts (lesson 5): gradual degradation 1" in summary
        assert "Experiments (lesson 6): deviated 1" in summary
        assert "Stuck (1): learner-1 at 04/waiting-status" in summary
        assert page.locator("#grid tr[data-learner]").count() == 3
        assert errors == []
        if os.environ.get("LABKIT_SCREENSHOTS"):  # the README's picture of the room
            page.screenshot(path=str(Path(os.environ["LABKIT_SCREENSHOTS"]) / "room.png"), full_page=True)
    finally:
        context.close()


def test_the_room_of_twenty_in_a_browser(browser: Any, running: room.RunningRoom, tmp_path: Path) -> None:
    """The instructor's view of the simulated room, as Chromium draws it: 20 rows, the three stuck attendees red
    in their step and in "stuck at", the one cascading verdict and the two deviated experiments in red, the
    summary's figures."""
    _room_of_twenty(running, tmp_path)
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(running.url + "/")
        rows = page.locator("#grid tr[data-learner]")
        assert rows.count() == LEARNERS
        assert rows.nth(0).get_attribute("data-learner") == "learner-00"
        assert page.locator("td.stuck[data-step='04/waiting-status']").count() == 3
        stuck = page.locator("td[data-figure='stuck'].stuck")
        assert stuck.count() == 3 and all(t.startswith("04/waiting-status for ") for t in stuck.all_inner_texts())
        assert [r.get_attribute("data-learner") for r in page.locator("tr[data-learner]:has(td.stuck)").all()] == [
            "learner-17", "learner-18", "learner-19"]
        red = "rgb(198, 40, 40)"
        bad = page.locator("td[data-figure='verdicts'].bad")
        assert bad.count() == 1 and bad.inner_text() == "details: cascading failure"
        assert bad.evaluate("el => getComputedStyle(el).color") == red
        deviated = page.locator("td[data-figure='experiment'].bad")
        assert deviated.all_inner_texts() == ["deviated, recovered in 2.0 s"] * 2
        assert page.locator("tr[data-learner='learner-19'] td[data-figure='recovery']").inner_text() == \
            "app=details 2.9 s"
        assert page.locator("tr[data-learner='learner-16'] td[data-figure='experiment']").inner_text() == "·"
        summary = page.locator("#summary").inner_text()
        assert "Verdicts (lesson 5): gradual degradation 19, cascading failure 1" in summary
        assert "Experiments (lesson 6): completed 13, deviated 2" in summary and "Stuck (3): " in summary
        assert re.search(r"Median recovery \(lesson 5, attendees\): app=details (1\.9|2\.0) s \(20\)", summary)
        assert errors == []
    finally:
        context.close()

def test_labkit_room_command_serves_the_page() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "room", "--host", "127.0.0.1", "--port", str(port),
                             "--code", "ROOM7"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"LABKIT_ROOM=http://<this host>:{port}/ROOM7" in proc.stdout.readline()
        page = eventually(lambda: _get(f"http://127.0.0.1:{port}/"), timeout=30, what="the room's page",
                          ignore=(OSError,))
        assert "labkit room ROOM7" in page and "0 attendees" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------------------ the kits' hooks


def test_the_kits_report_what_lessons_5_and_6_measure(lab: labkit.Lab, running: room.RunningRoom,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The real hooks, on a sandbox: lessons.wait_recovered reports the recovery, Traffic.stop the verdict,
    Experiment.run the experiment's status; the room shows what the kit itself computed."""
    monkeypatch.setenv("LABKIT_ROOM", running.join_url)
    monkeypatch.setenv("LABKIT_LEARNER", "kit")
    monkeypatch.setenv("LABKIT_LESSON", "05")
    rec = lab.record("app=details")
    traffic = lab.traffic(rate=20).start()
    try:
        lessons.pause(0.5)
        action = lab.kill("app=details", "ruby", mode="all")
        recovered = lessons.wait_recovered(rec, action, progress=False)
        lessons.pause(0.5)
    finally:
        traffic.stop()
        rec.stop()
    monkeypatch.setenv("LABKIT_LESSON", "06")
    hypothesis = experiment.Hypothesis("page up", [experiment.http_ok(), experiment.section_healthy("reviews")])
    journal = experiment.Experiment(
        lab, "Lose every details pod", hypothesis,
        [experiment.Step("delete every details pod", lambda: lab.delete_pods("app=details", mode="all"))],
        traffic_rate=10, settle=2, progress=False).run()

    def reported() -> dict[str, Any]:
        row = json.loads(_get(running.url + "/state.json"))["attendees"].get("kit", {})
        return row if row.get("recovery") and row.get("verdicts") and row.get("experiment") else {}

    row = eventually(reported, timeout=30, what="the kit's figures in the room")
    assert row["recovery"] == {"app=details": pytest.approx(float(recovered["recovery_s"].max()), abs=1e-3)}
    summary = traffic.summary()
    assert row["verdicts"] == {"details" if summary["details"] < 1 else "none": traffic.verdict()}
    assert row["verdicts"] in ({"details": "gradual degradation"}, {"none": "healthy"})  # never a cascade
    exp = row["experiment"]
    assert exp["title"] == "Lose every details pod" and exp["verdict"] == journal.status
    assert exp["recovery_s"] == pytest.approx(float(journal.recovery["recovery_s"].max()), abs=1e-3)
    # the experiment's own traffic is lesson 6's: lesson 5's verdicts stay the one run above
    assert len(row["verdicts"]) == 1 and row["steps"] == {}


def test_an_unreachable_room_costs_the_kit_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("LABKIT_ROOM", f"http://127.0.0.1:{dead}/JOIN42")
    sent = report.outcome("recovery", "app=details", recovery_s=float("nan"), lesson="05")
    assert sent is not None and sent.recovery_s is None  # NaN is no JSON number: sent as null
    report.flush()
    assert report.outcome("traffic", "", verdict="healthy") is not None


def test_a_tour_reports_to_no_room_even_a_joined_one(ready_sandbox: Any, running: room.RunningRoom, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The headless tour solves every check: an instructor running it while joined to a room must not fill the
    room with a fake attendee. Lesson 3 (checks and a recovery), toured with a joined room file."""
    monkeypatch.setenv("LABKIT_ROOM_FILE", str(tmp_path / "joined"))
    monkeypatch.delenv("LABKIT_ROOM", raising=False)
    room.join(running.join_url, "instructor")
    assert report.room_url() == running.join_url
    root = Path(__file__).resolve().parent.parent
    result = lessons.tour(tmp_path / "site", notebooks=root / "notebooks" / "03-chaos-one-pod.ipynb",
                          sandbox_dir=ready_sandbox.dir, timeout=300, progress=None)
    assert result.ok, result.failures
    # a kit that did report (this process, joined) reaches the room: the room was there to receive
    checks.record("03", "ready-count", checks.Check(True, "x"))
    eventually(lambda: running.room.attendees.get("instructor"), 30, "this process's result in the room")
    assert list(running.room.attendees) == ["instructor"] and running.room.outcomes == {}
    assert list(running.room.attendees["instructor"]) == [("03", "ready-count")]
