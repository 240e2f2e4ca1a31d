"""`labkit lab` as a user starts it: the user's copy of the lessons, the URL with its token, kernels and terminals
that reach the sandbox with the kit's kubectl, and nothing left serving when it is killed, even by SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from helpers import alive, eventually, free_port, processes_mentioning

from labkit import lessons
from labkit.sandbox import Sandbox

FAST = os.environ.get("LABKIT_TEST_TIME_SCALE", "0.25")
SHIPPED = sorted(p.name for p in lessons.find_notebooks())


# ------------------------------------------------------------------------------------------------ the user's copy


def test_copy_lessons_copies_then_keeps_edits_and_gives_fresh_copies(tmp_path: Path) -> None:
    source = tmp_path / "shipped"
    source.mkdir()
    for name in ("01-a.ipynb", "02-b.ipynb", "03-c.ipynb"):
        (source / name).write_text(f'{{"lesson": "{name}", "version": 1}}')
    mine = tmp_path / "mine"

    first = lessons.copy_lessons(mine, source=source)
    assert (first.copied, first.kept) == (["01-a.ipynb", "02-b.ipynb", "03-c.ipynb"], [])
    assert (mine / "02-b.ipynb").read_text() == (source / "02-b.ipynb").read_text()

    (mine / "01-a.ipynb").write_text('{"my": "answers"}')          # the user edits lesson 1
    (mine / "03-c.ipynb").unlink()                                  # ... and deletes lesson 3 for a fresh copy
    (mine / "notes.ipynb").write_text("mine")                       # ... and adds a notebook of their own
    for name in ("01-a.ipynb", "02-b.ipynb"):                       # the kit ships new versions of 1 and 2
        (source / name).write_text(f'{{"lesson": "{name}", "version": 2}}')

    second = lessons.copy_lessons(mine, source=source)
    assert second.kept == ["01-a.ipynb"]
    assert second.updated == ["02-b.ipynb"]
    assert second.copied == ["03-c.ipynb"]
    assert (mine / "01-a.ipynb").read_text() == '{"my": "answers"}'
    assert '"version": 2' in (mine / "02-b.ipynb").read_text()
    assert (mine / "notes.ipynb").read_text() == "mine"
    assert "kept as you edited them" in second.summary()

    third = lessons.copy_lessons(mine, source=source)               # nothing changed since: nothing to do
    assert (third.copied, third.updated, third.kept) == ([], [], ["01-a.ipynb"])
    assert third.unchanged == ["02-b.ipynb", "03-c.ipynb"]


def test_copy_lessons_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "labkit-lessons").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"labkit-lessons is not a folder.*--lessons DIR"):
        lessons.copy_lessons(tmp_path / "labkit-lessons")


def test_lab_environment_points_kernels_at_the_sandbox(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin:/bin", "KUBECONFIG": "/elsewhere", "LABKIT_KUBECONFIG": "/real", "HOME": "/h"}
    env = lessons.lab_environment(tmp_path / "kubeconfig", tmp_path, base=base)
    assert env["KUBECONFIG"] == str(tmp_path / "kubeconfig")
    assert env["LABKIT_SANDBOX_DIR"] == str(tmp_path)
    assert "LABKIT_KUBECONFIG" not in env and env["HOME"] == "/h"
    first = env["PATH"].split(os.pathsep)[0]
    assert Path(first, "kubectl").exists(), env["PATH"]
    assert env["PATH"].endswith("/usr/bin:/bin")


# ------------------------------------------------------------------------------------------------ a running lab


@dataclass
class RunningLab:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    base: str
    token: str
    jupyter_pid: int
    state: Path
    cwd: Path

    def output(self) -> str:
        return self.log.read_text()


def start_lab(tmp_path: Path, *args: str) -> RunningLab:
    """`labkit lab` from an empty folder, with a PATH and KUBECONFIG that know nothing of the kit or the sandbox:
    whatever its kernels and terminals reach, they got from `labkit lab`."""
    port, state, cwd = free_port(), tmp_path / "sandbox", tmp_path / "work"
    cwd.mkdir()
    log = tmp_path / "lab.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "JUPYTER"))}
    env.update(PATH="/usr/bin:/bin", KUBECONFIG=str(tmp_path / "no-such-kubeconfig"), HOME=str(tmp_path / "home"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), SHELL="/bin/bash")
    (tmp_path / "home").mkdir()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "lab", "--port", str(port), "--no-browser",
                                 "--dir", str(state), "--time-scale", FAST, *args],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)

    def url() -> str:
        assert proc.poll() is None, log.read_text()
        found = re.search(r"http://127\.0\.0\.1:\d+/lab\?token=\w+", log.read_text())
        return found.group(0) if found else ""

    link = eventually(url, timeout=120, what="labkit lab to print its URL")
    token = link.split("token=")[1]
    pid = int(re.search(r"JupyterLab \(pid (\d+)\)", log.read_text()).group(1))  # type: ignore[union-attr]
    return RunningLab(proc=proc, log=log, url=link, base=f"http://127.0.0.1:{port}", token=token, jupyter_pid=pid,
                      state=state, cwd=cwd)


def stop_lab(running: RunningLab) -> None:
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(timeout=60)


@pytest.fixture()
def running_lab(tmp_path: Path) -> Iterator[RunningLab]:
    running = start_lab(tmp_path)
    try:
        yield running
    finally:
        stop_lab(running)


async def _get(http: aiohttp.ClientSession, running: RunningLab, path: str) -> object:
    async with http.get(f"{running.base}{path}", params={"token": running.token}) as resp:
        resp.raise_for_status()
        return await resp.json()


def wait_serving(running: RunningLab) -> object:
    """JupyterLab's contents API, once it answers with the printed token."""
    async def contents() -> object:
        async with aiohttp.ClientSession() as http:
            return await _get(http, running, "/api/contents/")

    def ask() -> object:
        assert running.proc.poll() is None, running.output()
        return asyncio.run(contents())

    return eventually(ask, timeout=120, what="JupyterLab to answer",
                      ignore=(aiohttp.ClientConnectionError, aiohttp.ClientResponseError))


async def _run_in_kernel(running: RunningLab, code: str, timeout: float = 120) -> str:
    """Start a kernel through JupyterLab's REST API and run ``code`` over its websocket: what it printed."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{running.base}/api/kernels", params={"token": running.token},
                             json={"name": "python3"}) as resp:
            resp.raise_for_status()
            kernel_id = (await resp.json())["id"]
        ws_url = f"{running.base.replace('http', 'ws')}/api/kernels/{kernel_id}/channels"
        async with http.ws_connect(ws_url, params={"token": running.token}) as ws:
            msg_id = uuid.uuid4().hex
            await ws.send_json({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            })
            out: list[str] = []

            async def read() -> None:
                async for frame in ws:
                    message = json.loads(frame.data)
                    if message.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind, content = message["msg_type"], message["content"]
                    if kind == "stream":
                        out.append(content["text"])
                    elif kind == "error":
                        out.append("\n".join(content["traceback"]))
                    elif kind == "status" and content["execution_state"] == "idle":
                        return

            await asyncio.wait_for(read(), timeout)
            return "".join(out)


async def _run_in_terminal(running: RunningLab, line: str, until: str, timeout: float = 60) -> str:
    """Open a JupyterLab Terminal, type ``line`` and read its screen until ``until`` appears."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{running.base}/api/terminals", params={"token": running.token}) as resp:
            resp.raise_for_status()
            name = (await resp.json())["name"]
        ws_url = f"{running.base.replace('http', 'ws')}/terminals/websocket/{name}"
        async with http.ws_connect(ws_url, params={"token": running.token}) as ws:
            await ws.send_json(["stdin", line + "\r"])
            screen: list[str] = []

            async def read() -> None:
                async for frame in ws:
                    message = json.loads(frame.data)
                    if message[0] == "stdout":
                        screen.append(message[1])
                        if until in "".join(screen):
                            return

            try:
                await asyncio.wait_for(read(), timeout)
            except TimeoutError:
                raise AssertionError(f"the terminal never showed {until!r}:\n{''.join(screen)}") from None
            return "".join(screen)


def test_lab_copies_the_lessons_and_prints_a_url_that_works(running_lab: RunningLab) -> None:
    listing = wait_serving(running_lab)
    assert isinstance(listing, dict)
    assert sorted(i["name"] for i in listing["content"] if i["name"].endswith(".ipynb")) == SHIPPED
    folder = running_lab.cwd / lessons.LESSONS_FOLDER
    assert sorted(p.name for p in folder.glob("*.ipynb")) == SHIPPED
    assert f"lessons in {folder}: {len(SHIPPED)} copied" in running_lab.output()


def test_a_kernel_of_the_lab_runs_kubectl_against_the_sandbox(running_lab: RunningLab) -> None:
    wait_serving(running_lab)
    pods = sorted(p["name"] for p in Sandbox.attach(running_lab.state).pods())
    assert len(pods) == 13
    printed = asyncio.run(_run_in_kernel(
        running_lab, "import os, shutil\nprint('KUBECONFIG', os.environ['KUBECONFIG'])\n"
                     "print('KUBECTL', shutil.which('kubectl'))\n!kubectl get pods --no-headers"))
    assert f"KUBECONFIG {running_lab.state / 'kubeconfig'}" in printed
    assert f"KUBECTL {Path(sys.executable).parent / 'kubectl'}" in printed
    listed = sorted(line.split()[0] for line in printed.splitlines() if line.split()[:1] and
                    line.split()[0] in pods)
    assert listed == pods, printed


def test_a_terminal_of_the_lab_runs_kubectl_against_the_sandbox(running_lab: RunningLab) -> None:
    wait_serving(running_lab)
    pods = sorted(p["name"] for p in Sandbox.attach(running_lab.state).pods())
    # the lesson's command verbatim, then a marker once it is done (this machine may have another kubectl on PATH)
    screen = asyncio.run(_run_in_terminal(
        running_lab, "echo KUBECTL=$(command -v kubectl); kubectl get pods; echo END-OF-$((6*7))", until="END-OF-42"))
    assert f"KUBECTL={Path(sys.executable).parent / 'kubectl'}" in screen, screen
    missing = [p for p in pods if p not in screen]
    assert not missing, screen


def test_sigkill_of_labkit_lab_leaves_nothing_serving(tmp_path: Path) -> None:
    running = start_lab(tmp_path)
    try:
        wait_serving(running)
        kernel_output = asyncio.run(_run_in_kernel(running, "import os; print('KERNEL', os.getpid())"))
        kernel_pid = int(re.search(r"KERNEL (\d+)", kernel_output).group(1))  # type: ignore[union-attr]
        assert Sandbox(running.state).running()
    finally:
        running.proc.send_signal(signal.SIGKILL)
        running.proc.wait(timeout=30)
    eventually(lambda: not alive(running.jupyter_pid), timeout=60, what="JupyterLab to exit after SIGKILL")
    eventually(lambda: not alive(kernel_pid), timeout=60, what="the kernel to exit")
    eventually(lambda: not Sandbox(running.state).running(), timeout=60, what="the sandbox to stop")
    # JupyterLab's root folder, the kernel's connection file and the sandbox's folder are all under tmp_path
    assert processes_mentioning(str(tmp_path)) == []
