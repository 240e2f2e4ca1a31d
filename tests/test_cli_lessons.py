"""`labkit tour`, `labkit lab` and the lessons' plumbing, run as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import eventually, free_port, processes_mentioning
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from labkit import lessons
from labkit.sandbox import Sandbox

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FAST = os.environ.get("LABKIT_TEST_TIME_SCALE", "0.25")


def labkit_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ.copy(), stdin=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------------------ plumbing


@pytest.mark.parametrize(("text", "expected"), [
    ("RATE=10", ("RATE", 10)), ("KUBECONFIG=None", ("KUBECONFIG", None)), ("TARGET_APP=reviews", ("TARGET_APP",
     "reviews")), ("NAMESPACE='lab 1'", ("NAMESPACE", "lab 1")), ("X=a=b", ("X", "a=b")),
])
def test_parse_param(text: str, expected: tuple[str, object]) -> None:
    assert lessons.parse_param(text) == expected


@pytest.mark.parametrize("text", ["RATE", "2X=1", "=5"])
def test_parse_param_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--param wants KEY=VALUE"):
        lessons.parse_param(text)


def test_find_notebooks() -> None:
    everything = lessons.find_notebooks()
    assert [p.name[:2] for p in everything] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]
    assert [p.name[:2] for p in lessons.find_notebooks(str(NOTEBOOKS / "0[35]-*.ipynb"))] == ["03", "05"]
    assert [p.name[:2] for p in lessons.find_notebooks("04-*")] == ["04"]
    assert lessons.find_notebooks(NOTEBOOKS) == everything
    with pytest.raises(FileNotFoundError, match="no notebooks match 'nothing-\\*'"):
        lessons.find_notebooks("nothing-*")


def test_inject_parameters_goes_after_the_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOKS / "05-measure-it.ipynb", as_version=4)
    lessons.inject_parameters(nb, {"RATE": 20, "TARGET_APP": "reviews"})
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nb.cells[index + 1]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert "RATE = 20\nTARGET_APP = 'reviews'" in injected.source


def test_cli_has_the_lesson_commands() -> None:
    result = labkit_cli("--help")
    assert result.returncode == 0
    for command in ("tour", "lab", "export"):
        assert command in result.stdout
    assert "--IdentityProvider.token" in labkit_cli("lab", "--help").stdout


# ------------------------------------------------------------------------------------------------ the tour


def test_tour_writes_the_site(sandbox: Sandbox, tmp_path: Path) -> None:
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    out = tmp_path / "site"
    result = labkit_cli("tour", "--out", str(out), "--notebooks", str(NOTEBOOKS / "0[13]-*.ipynb"),
                        "--dir", str(sandbox.dir), "--timeout", "300")
    assert result.returncode == 0, result.stderr
    # progress per notebook and per cell, on stderr
    assert f"using the sandbox running in {sandbox.dir}" in result.stderr
    assert "▶ 03-chaos-one-pod: Chaos in one pod" in result.stderr
    assert re.search(r"✓ 03-chaos-one-pod cell \d+ \(\d+/\d+\) +[\d.]+ s  action = lab.kill", result.stderr)
    assert "2/2 lessons passed" in result.stderr
    index = (out / "index.html").read_text()
    assert "Connect and look around" in index and "Chaos in one pod" in index
    assert index.count("✓ passed") == 2 and "failed" not in index
    assert "href='03-chaos-one-pod.html'" in index
    page = (out / "03-chaos-one-pod.html").read_text()
    assert re.search(r"<img [^>]*src=\"data:image/png;base64,", page)       # the timeline plot
    assert re.search(r"<iframe sandbox[^>]*srcdoc=", page)                   # the product page, inline
    assert not re.search(r"<script[^>]+src=\"https?://", page)
    executed = nbformat.read(out / "03-chaos-one-pod.ipynb", as_version=4)
    assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    assert sandbox.running()  # an attached sandbox is left running
    wait_all_ready(sandbox)


def _lesson(path: Path, title: str, *codes: tuple[str, list[str]]) -> None:
    cells = [new_markdown_cell(f"# {title}\n\nA test lesson."),
             new_code_cell("X = 1", metadata={"tags": ["parameters"]})]
    cells += [new_code_cell(src, metadata={"tags": tags}) for src, tags in codes]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_tour_fails_naming_the_notebook_and_the_cell(tmp_path: Path) -> None:
    lessons_dir = tmp_path / "lessons"
    lessons_dir.mkdir()
    _lesson(lessons_dir / "01-fine.ipynb", "Fine",
            ("import labkit\nlab = labkit.connect(start=False)\nassert len(lab.pods()) == 13", []),
            ("assert X == 5, X", []),
            ("1 / 0", ["raises-exception"]))
    _lesson(lessons_dir / "02-broken.ipynb", "Broken",
            ("y = 2", []),
            ("# a comment first\nraise RuntimeError('the sandbox is fine, this cell is not')", []),
            ("never = True", []))
    _lesson(lessons_dir / "03-after.ipynb", "After", ("z = 3", []))
    state = tmp_path / "sandbox"
    result = labkit_cli("tour", "--out", str(tmp_path / "site"), "--notebooks", str(lessons_dir), "--dir",
                        str(state), "--time-scale", FAST, "--param", "X=5", timeout=300)
    assert result.returncode == 1, result.stderr
    # the failure names the notebook, the cell (index, first line of code) and the error
    assert ("FAILED 02-broken: cell 4 (\"raise RuntimeError('the sandbox is fine, this cell is not')\") failed: "
            "RuntimeError: the sandbox is fine, this cell is not") in result.stderr
    assert "✓ 01-fine passed" in result.stderr and "✓ 03-after passed" in result.stderr  # the tour went on
    assert "! 01-fine cell 5" in result.stderr  # raises-exception: allowed to fail
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count("✓ passed") == 2 and index.count("✗ failed") == 1 and "RuntimeError" in index
    broken = nbformat.read(tmp_path / "site" / "02-broken.ipynb", as_version=4)
    assert broken.cells[-1].get("execution_count") is None  # nothing ran after the failure
    # the sandbox the tour started is gone with it
    assert f"starting a sandbox in {state}" in result.stderr
    assert not Sandbox(state).running()


def test_tour_exits_2_without_notebooks(tmp_path: Path) -> None:
    result = labkit_cli("tour", "--out", str(tmp_path / "site"), "--notebooks", str(tmp_path / "none-*.ipynb"))
    assert result.returncode == 2 and "no notebooks match" in result.stderr


# ------------------------------------------------------------------------------------------------ labkit lab


def _get(url: str, method: str = "GET") -> Any:
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_lab_serves_the_lessons_and_stops_what_it_started(tmp_path: Path, stop_with: signal.Signals) -> None:
    port, token, state = free_port(), "labkit-test-token", tmp_path / "sandbox"
    log = (tmp_path / "lab.log").open("w+")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "lab", "--port", str(port), "--no-browser",
                             f"--IdentityProvider.token={token}", "--dir", str(state), "--time-scale", FAST],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path)
    kernel_id = ""
    try:
        base = f"http://127.0.0.1:{port}"

        def contents() -> Any:
            assert proc.poll() is None, Path(log.name).read_text()
            return _get(f"{base}/api/contents/?token={token}")

        # the server starts after the sandbox: nothing to watch but its port
        listing = eventually(contents, timeout=120, what="JupyterLab to answer",
                             ignore=(urllib.error.URLError, ConnectionError))
        assert isinstance(listing, dict), Path(log.name).read_text()
        names = sorted(item["name"] for item in listing["content"])
        shipped = sorted(NOTEBOOKS.glob(lessons.NOTEBOOK_PATTERN))
        assert [n for n in names if n.endswith(".ipynb")] == [p.name for p in shipped]
        with pytest.raises(urllib.error.HTTPError, match="403"):
            _get(f"{base}/api/contents/?token=wrong")
        assert Sandbox(state).running(), "labkit lab starts the sandbox"
        kernel = _get(f"{base}/api/kernels?token={token}", method="POST")
        kernel_id = str(kernel["id"])
        jupyter_pid = int(re.search(r"\(pid (\d+)\)", Path(log.name).read_text()).group(1))  # type: ignore[union-attr]
    finally:
        proc.send_signal(stop_with)
        code = proc.wait(timeout=60)
    output = Path(log.name).read_text()
    assert code == 0, output
    assert f"sandbox in {state} stopped" in output
    assert not Sandbox(state).running()
    with pytest.raises(ProcessLookupError):
        os.kill(jupyter_pid, 0)
    assert kernel_id and processes_mentioning(kernel_id) == [], "the kernel outlived JupyterLab"
