"""Hosted starts (Binder, a JupyterHub single-user server): what can be tested here without Docker or a hub.

Binder's build (repo2docker) reads ``binder/``: the install files must name what labkit needs and nothing that
does not resolve; ``binder/start`` must hand every kernel and Terminal the sandbox's ``KUBECONFIG`` and start the
sandbox with no privileges. A hosted server may have a home that cannot be written and runs the lessons from
another working folder: lesson 1 still runs, its checks included.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from helpers import eventually
from packaging.requirements import Requirement

from labkit import lessons

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
BIN = Path(sys.executable).parent


def _requirements(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_binder_installs_what_labkit_needs_and_each_name_resolves() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _requirements(BINDER / "requirements.txt")
    assert wanted == project["dependencies"], "binder/requirements.txt drifted from pyproject's dependencies"
    for line in wanted:
        req = Requirement(line)
        installed = metadata.version(req.name)  # raises PackageNotFoundError for a name that does not resolve
        assert req.specifier.contains(installed, prereleases=True), f"{req} but {installed} is installed"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-3\.(\d+)", runtime)
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert match and minimum and int(match.group(1)) >= int(minimum.group(1)), runtime
    for script in ("postBuild", "start"):
        path = BINDER / script
        assert os.access(path, os.X_OK) and path.read_text().startswith("#!/bin/bash\n"), script
        subprocess.run(["bash", "-n", str(path)], check=True)  # parses
    post = (BINDER / "postBuild").read_text()
    assert "pip install --no-cache-dir --no-deps ." in post and "kubectl version --client" in post
    assert 'exec "$@"' in (BINDER / "start").read_text()


def test_binder_start_gives_kernels_and_terminals_the_sandbox(tmp_path: Path) -> None:
    """binder/start with a fresh home: it exports the sandbox's KUBECONFIG and starts the sandbox in the
    background; the real kubectl then reaches it, as a Terminal would."""
    home = tmp_path / "jovyan"
    home.mkdir()
    env = {"HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    shown = subprocess.run(["bash", str(BINDER / "start"), sys.executable, "-c",
                            "import json, os; print(json.dumps(dict(os.environ)))"],
                           env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    exported = json.loads(shown.stdout)
    sandbox_dir = home / ".labkit" / "sandbox"
    assert exported["KUBECONFIG"] == str(sandbox_dir / "kubeconfig")
    assert exported["LABKIT_SANDBOX_DIR"] == str(sandbox_dir)
    kube_env = {**env, "KUBECONFIG": exported["KUBECONFIG"]}
    try:
        pods = eventually(lambda: _ready_pods(kube_env), timeout=90, what="13 pods Ready after binder/start",
                          ignore=(subprocess.SubprocessError, OSError))
        assert len(pods) == 13
        assert oct(sandbox_dir.stat().st_mode & 0o777) == "0o700"  # the sandbox made its folder, private
    finally:
        subprocess.run([str(BIN / "labkit"), "sandbox", "down", "--dir", str(sandbox_dir)], env=env,
                       capture_output=True, timeout=60)
    log = (tmp_path / "labkit-binder-start.log").read_text()
    assert "Ready" in log or "ready" in log, log


def _ready_pods(env: dict[str, str]) -> list[str] | None:
    out = subprocess.run([str(BIN / "kubectl"), "get", "pods", "--no-headers"], env=env, capture_output=True,
                         text=True, timeout=30)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    ready = [line for line in lines if line.split()[1] == "1/1" and line.split()[2] == "Running"]
    return ready if out.returncode == 0 and len(ready) == 13 else None


@pytest.mark.parametrize("lesson", ["01-connect-and-look-around"])
def test_a_lesson_runs_with_a_home_it_cannot_write_from_another_folder(ready_sandbox: object, tmp_path: Path,
                                                                       lesson: str) -> None:
    """A hosted server whose home cannot be written (here: HOME is a file, which even root cannot write into)
    and whose lessons run from elsewhere: the sandbox named by LABKIT_SANDBOX_DIR, the lesson's checks solved
    (their progress file cannot be written: the lesson carries on)."""
    from labkit.sandbox import Sandbox

    assert isinstance(ready_sandbox, Sandbox)
    home = tmp_path / "home"
    home.write_text("not a folder")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LABKIT_KUBECONFIG", "LABKIT_PROGRESS")}
    env.update({"HOME": str(home), "LABKIT_SANDBOX_DIR": str(ready_sandbox.dir), "LABKIT_SOLVE": "1",
                "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
                "MPLCONFIGDIR": str(tmp_path / "mpl")})
    run = lessons.run_notebook(ROOT / "notebooks" / f"{lesson}.ipynb", cwd=work, env=env, timeout=300,
                               progress=None)
    assert run.ok, str(run.failure)
    shown = [o["data"]["text/plain"] for c in run.nb.cells if c.cell_type == "code" and "checks.check(" in c.source
             for o in c.outputs if "data" in o]
    assert len(shown) == 4 and all(s.startswith("✓") and "(solved by the solution)" in s for s in shown), shown
