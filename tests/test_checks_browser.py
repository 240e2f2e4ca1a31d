"""Steps that check themselves, as an attendee sees them in JupyterLab (a real browser): lesson 1 run from the
Run menu, each unanswered check red with its hint, the solution collapsed until asked for, and "Solve it" running
the solution in place. Chromium and `labkit lab` as in tests/test_browser.py (skipped without them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import chromium, eventually
from test_browser import Page, _labkit_lab, _prompts, _wait_for_server, screenshot_on_failure

from labkit import checks


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_solve_it_in_jupyterlab(browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv("LABKIT_PROGRESS", str(progress))  # the kernels inherit it through `labkit lab`
    monkeypatch.delenv("LABKIT_SOLVE", raising=False)
    with _labkit_lab(tmp_path) as info:
        _wait_for_server(info)
        page = Page(browser, 1280, 1400)
        p = page.page
        try:
            with screenshot_on_failure(p, "jupyterlab-01-solve-it"):
                p.goto(f"{info['url']}/lab/tree/01-connect-and-look-around.ipynb?token={info['token']}")
                p.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
                p.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
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
        finally:
            page.close()
    solved = [r for r in checks.read_results(progress) if (r.lesson, r.step) == ("01", "pod-count")]
    assert [(r.ok, r.solved, r.attempt) for r in solved] == [(False, False, 1), (True, True, 2)]
