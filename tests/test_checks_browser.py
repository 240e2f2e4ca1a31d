"""Steps that check themselves, as an attendee sees them in JupyterLab (a real browser): lesson 1 run from the
Run menu, each unanswered check red with its hint, the solution collapsed until asked for, and "Solve it" running
the solution in place; the kit reporting to the instructor's room from JupyterLab, each figure under the lesson
the notebook is (Jupyter names it to the kernel). Chromium and `labkit lab` as in tests/test_browser.py (skipped
without them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium, eventually
from test_browser import Page, _labkit_lab, _prompts, _wait_for_server, screenshot_on_failure

from labkit import checks, room


def _run_all(p: Any, url: str) -> None:
    """Open a notebook (alone: ``reset`` drops the workspace's other tabs) and Run All from the Run menu once its
    kernel is idle, until its cells start. On a busy machine JupyterLab may ask which kernel to use though the
    notebook names one: accept its choice (Python 3)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    p.goto(url)
    p.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)

    def started() -> bool:
        try:
            p.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True).click(timeout=2_000)
        except PlaywrightTimeout:
            pass  # no dialog: the usual case
        p.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:
            p.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                                ".some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))", timeout=10_000)
            return True
        except PlaywrightTimeout:
            p.keyboard.press("Escape")  # a menu or dialog left open: try again
            return False

    eventually(started, 60, f"Run All to start the cells of {url.split('?')[0]}", interval=0.5)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_solve_it_in_jupyterlab(browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv("LABKIT_PROGRESS", str(progress))  # the kernels inherit it through `labkit lab`
    monkeypatch.delenv("LABKIT_SOLVE", raising=False)
    monkeypatch.delenv("LABKIT_LESSON", raising=False)
    running = room.serve("JOIN42")
    monkeypatch.setenv("LABKIT_ROOM", running.join_url)
    monkeypatch.setenv("LABKIT_LEARNER", "ada")
    with _labkit_lab(tmp_path) as info:
        _wait_for_server(info)
        page = Page(browser, 1280, 1400)
        p = page.page
        try:
            with screenshot_on_failure(p, "jupyterlab-01-solve-it"):
                _run_all(p, f"{info['url']}/lab/tree/01-connect-and-look-around.ipynb?token={info['token']}")
                count = len(_prompts(p))
                eventually(lambda: len(_prompts(p)) == count and all(re.fullmatch(r"\[\d+\]:", t)
                                                                        for t in _prompts(p)),
                           120, "every cell of lesson 1 to run", interval=1)
                cell = p.locator(".jp-CodeCell", has=p.locator(".jp-InputArea", has_text="my_count = ...")).first
                out = cell.locator(".jp-OutputArea-output")
                eventually(lambda: "Solve it" in out.inner_text(), 30, "the Solve it button")
                shown = out.inner_text()
                assert "✗ not answered yet" in shown and "Hint:" in shown, shown
                solution = out.locator("details.labkit-solution")
                assert solution.count() == 1 and solution.get_attribute("open") is None  # collapsed
                assert not solution.locator("code").is_visible()
                solution.locator("summary").click()
                assert solution.locator("code").inner_text() == "len(lab.pods())"
                out.locator("button", has_text="Solve it").click()
                eventually(lambda: "✓ 13 pods" in out.inner_text(), 30, "the solved check in place")
                assert "(solved by the solution)" in out.inner_text()
                assert not out.locator("button", has_text="Solve it").is_visible()
                # the three other checks are still red: one click solves one step
                others = p.locator(".jp-OutputArea-output", has_text="✗ not answered yet")
                assert others.count() == 3

                # lesson 3 in the same JupyterLab: its recovery reaches the room as lesson 3's
                _run_all(p, f"{info['url']}/lab/tree/03-chaos-one-pod.ipynb?reset&token={info['token']}")
                figures = eventually(lambda: running.room.outcomes.get("ada"), 180, "lesson 3's recovery in the room",
                                     interval=1)
                assert set(figures) == {("03", "recovery", "app=details")}, figures
                assert figures[("03", "recovery", "app=details")].recovery_s
                eventually(lambda: ("03", "ready-count") in running.room.attendees.get("ada", {}), 180,
                           "lesson 3's last check in the room", interval=1)
        finally:
            page.close()
            running.stop()
    cells = running.room.attendees["ada"]  # the check results, posted from the kernels as they ran
    pod_count = cells[("01", "pod-count")]
    assert pod_count.ok and pod_count.solved and pod_count.attempts == 2
    assert not cells[("01", "selector")].ok and cells[("03", "restarted-pod")].attempts == 1
    solved = [r for r in checks.read_results(progress) if (r.lesson, r.step) == ("01", "pod-count")]
    assert [(r.ok, r.solved, r.attempt) for r in solved] == [(False, False, 1), (True, True, 2)]


def test_an_exported_lesson_keeps_each_solution_collapsed(browser: Any, ready_sandbox: Any, tmp_path: Path) -> None:
    """Lesson 1 run headless as the tour runs it (its checks solved), exported as a page: in the browser each
    check is green with its solution closed until its summary is clicked, and no Solve it button."""
    import os

    from labkit import export, lessons

    env = {k: v for k, v in os.environ.items() if k != "LABKIT_KUBECONFIG"}
    env.update({"LABKIT_SANDBOX_DIR": str(ready_sandbox.dir), "LABKIT_SOLVE": "1",
                "LABKIT_PROGRESS": str(tmp_path / "progress.jsonl")})
    run = lessons.run_notebook(Path(__file__).resolve().parent.parent / "notebooks" /
                               "01-connect-and-look-around.ipynb", cwd=tmp_path, env=env, timeout=300, progress=None)
    assert run.ok, str(run.failure)
    page_file = export.write_html(run.nb, tmp_path, index=None)
    page = Page(browser)
    p = page.page
    try:
        p.goto(page_file.as_uri())
        solutions = p.locator("details.labkit-solution")
        assert solutions.count() == 4
        for i in range(4):
            one = solutions.nth(i)
            assert one.get_attribute("open") is None and not one.locator("code").is_visible()
        assert p.locator(".labkit-check", has_text="✓").count() == 4
        assert p.get_by_role("button", name="Solve it").count() == 0
        solutions.first.locator("summary").click()
        assert solutions.first.locator("code").is_visible()
        assert solutions.first.locator("code").inner_text() == "len(lab.pods())"
        assert page.errors == [], page.errors
    finally:
        page.close()
