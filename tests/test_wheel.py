"""The kit as a user installs it: build the wheel, install it into a fresh virtual environment (no system site
packages, nothing from this checkout), and from an empty folder run one lesson with `labkit tour` and open the
lessons with `labkit lab`.

Select it alone with `pytest -m wheel`; it also runs in `make test`. The dependencies come from the package index
(pip's cache makes the second run faster); the slow part is installing them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import eventually

from labkit import lessons

REPO = Path(__file__).resolve().parent.parent
FAST = os.environ.get("LABKIT_TEST_TIME_SCALE", "0.25")
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "labkit", "notebooks")
"""What the build reads; copied to a scratch folder so that parallel runs never share build/ or *.egg-info."""

pytestmark = pytest.mark.wheel


def run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh venv with the wheel installed, and an environment that knows nothing of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABKIT_", "JUPYTER", "PYTHON", "VIRTUAL_ENV", "KUBECONFIG"))}
    env.update(HOME=str(home), JUPYTER_DATA_DIR=str(root / "jupyter-data"),
               JUPYTER_CONFIG_DIR=str(root / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(root / "jupyter-runtime"))
    if "XDG_CACHE_HOME" not in env and "PIP_CACHE_DIR" not in env:
        env["PIP_CACHE_DIR"] = str(Path.home() / ".cache" / "pip")  # HOME moved: keep pip's cache
    dist = root / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)], cwd=root,
        env=env)
    (wheel,) = dist.glob("labkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(Path(n).name for n in archive.namelist() if n.startswith("labkit/notebooks/"))
    assert shipped == [p.name for p in lessons.find_notebooks()], "the wheel holds every lesson, once"

    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=root, env=env)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=root, env=env)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/bin", "/bin"])
    return venv, env


def test_the_installed_package_is_not_this_checkout(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    probe = ("import json, sys, labkit, labkit.lessons as l\n"
             "print(json.dumps({'labkit': labkit.__file__, 'lessons': str(l.notebooks_dir()),"
             " 'no_user_site': sys.flags.no_user_site, 'path': sys.path}))")
    found = json.loads(run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env).stdout)
    assert Path(found["labkit"]).is_relative_to(venv), found
    assert Path(found["lessons"]).is_relative_to(venv) and found["lessons"].endswith("labkit/notebooks"), found
    assert not any(p and Path(p).resolve().is_relative_to(REPO) for p in found["path"]), found


def test_one_lesson_runs_from_an_empty_folder(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run([str(venv / "bin" / "labkit"), "tour", "--out", "site", "--notebooks", "01-*", "--time-scale", FAST,
                "--dir", str(tmp_path / "sandbox")], cwd=empty, env=env, timeout=600)
    first = lessons.find_notebooks("01-*")[0].stem
    assert f"✓ {first} passed" in done.stderr
    assert "1/1 lessons passed" in done.stderr
    assert (empty / "site" / "index.html").is_file()
    assert (empty / "site" / f"{first}.html").is_file()
    assert f"sandbox in {tmp_path / 'sandbox'} stopped" in done.stderr


def test_labkit_lab_copies_the_lessons_from_an_empty_folder(installed: tuple[Path, dict[str, str]],
                                                             tmp_path: Path) -> None:
    venv, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(venv / "bin" / "labkit"), "lab", "--no-browser", "--dir",
                                 str(tmp_path / "sandbox"), "--time-scale", FAST], cwd=empty, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def url() -> str:
            assert proc.poll() is None, log.read_text()
            found = re.search(r"http://127\.0\.0\.1:\d+/lab\?token=\w+", log.read_text())
            return found.group(0) if found else ""

        eventually(url, timeout=120, what="labkit lab to print its URL")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()
    copied = sorted(p.name for p in (empty / lessons.LESSONS_FOLDER).glob("*.ipynb"))
    assert copied == [p.name for p in lessons.find_notebooks()]
