"""The instructor's room (labkit.room): a simulated room of 20 learners, each a process of its own with its own
progress file, whose kits post their check results to the room; the page and its data show the right grid."""

from __future__ import annotations

import json
import os
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

from labkit import checks, room

LEARNERS = 20

# Each learner answers lesson 4's question: learner i fails (i % 4) times, then passes, except the last three, who
# never get it right (they are stuck); the first five also ask for the solution of lesson 3's ready-count.
LEARNER = """
import sys
from labkit import checks
i = int(sys.argv[1])
for _ in range(i % 4):
    checks.check("04", "waiting-status", "Error")
if i < 17:
    checks.check("04", "waiting-status", "CrashLoopBackOff")
if i < 5:
    checks.record("03", "ready-count", checks.Check(True, "3 of the 3 details pods are Ready now.", solved=True))
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


def test_a_room_of_twenty(running: room.RunningRoom, tmp_path: Path) -> None:
    procs = []
    for i in range(LEARNERS):
        env = {**os.environ, "LABKIT_ROOM": running.join_url, "LABKIT_LEARNER": f"learner-{i:02d}",
               "LABKIT_PROGRESS": str(tmp_path / f"learner-{i:02d}.jsonl")}
        env.pop("LABKIT_SOLVE", None)
        procs.append(subprocess.Popen([sys.executable, "-c", LEARNER, str(i)], env=env))
    assert [p.wait(timeout=120) for p in procs] == [0] * LEARNERS

    def complete() -> dict[str, object]:
        state = json.loads(_get(running.url + "/state.json"))
        rows = state["attendees"]
        done = len(rows) == LEARNERS and all(
            "04/waiting-status" in row["steps"] for row in rows.values()) and sum(
            "03/ready-count" in row["steps"] for row in rows.values()) == 5
        return dict(state) if done else {}

    state = eventually(complete, timeout=30, what="every learner's results in the room")
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

    page = _get(running.url + "/")
    assert "20 attendees" in page and "<meta http-equiv='refresh'" in page
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


# ------------------------------------------------------------------------------------------------ in a browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium through Playwright, as tests/test_browser.py; skipped without it, except in CI."""
    with chromium() as launched:
        yield launched


def test_the_page_follows_the_room_live_in_a_browser(browser: Any, running: room.RunningRoom,
                                                     tmp_path: Path) -> None:
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
