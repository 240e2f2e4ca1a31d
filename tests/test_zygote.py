"""The container runtime's zygote: containers forked from one pre-imported process, with today's semantics.

Judged from the outside: /proc (who is whose parent, comm, cmdline), the real kubectl and the official client
(exit codes 143/137 in lastState, restartCount, Ready again), and the runtime's own API for the fallback path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import FAST, Kubectl
from helpers import alive, eventually

from labkit.sandbox import Sandbox
from labkit.sandbox.state import descendants
from labkit.sandbox.zygote import ContainerRuntime, LaunchSpec, ZygoteProcess, zygote_wanted

T = TypeVar("T")
LESSON_PROGRAMS = Counter({"ruby": 3, "node": 3, "java": 3, "gunicorn": 3, "sleep": 1})


def stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parent(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()


def zygotes(sb: Sandbox) -> list[int]:
    return [p for p in descendants(sb.pid) if alive(p) and comm(p) == "labkit-zygote"]


def containers(sb: Sandbox) -> dict[int, str]:
    """Live container processes of the sandbox (every descendant but the zygote) by pid, with their comm."""
    return {p: comm(p) for p in descendants(sb.pid) if alive(p) and comm(p) != "labkit-zygote"}


def container_status(core: Any, name: str, namespace: str = "default") -> Any:
    pod = core.read_namespaced_pod(name, namespace)
    return pod.status.container_statuses[0]


def restarted_with(core: Any, name: str, restarts: int, code: int) -> Any:
    cs = container_status(core, name)
    term = cs.last_state.terminated if cs.last_state else None
    if cs.restart_count >= restarts and term is not None and term.exit_code == code and cs.ready:
        return cs
    return None


# --- on a sandbox, through kubectl and the official client ------------------------------------------


def test_every_container_is_forked_by_the_zygote_and_shows_its_image_program(ready_sandbox: Sandbox) -> None:
    [zygote] = zygotes(ready_sandbox)
    assert parent(zygote) == ready_sandbox.pid
    procs = containers(ready_sandbox)
    assert Counter(procs.values()) == LESSON_PROGRAMS
    assert all(parent(p) == zygote for p in procs)
    ruby = [p for p, name in procs.items() if name == "ruby"]
    for p in procs:  # its own session and process group, in the sandbox's folder, as a spawned container was
        assert os.getsid(p) == p and os.getpgid(p) == p
        assert os.readlink(f"/proc/{p}/cwd") == str(ready_sandbox.dir)
    environ = Path(f"/proc/{ruby[0]}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    assert b"LABKIT_PROCESS_NAME=ruby" in environ and b"SERVICE_VERSION=v1" in environ
    assert b"DETAILS_SERVICE_HOST=" in b" ".join(environ) and b"LABKIT_ENV_ROOM" not in b" ".join(environ)
    # The command line a spawned container had, rewritten in place over the zygote's.
    assert all(cmdline(p).endswith("-S -m labkit.sandbox.images.run details ruby /opt/microservices/details.rb "
                                   "9080") for p in ruby), [cmdline(p) for p in ruby]
    # The host's own procps sees the image's program name (pgrep -x matches comm).
    found = subprocess.run(["pgrep", "-x", "ruby"], capture_output=True, text=True).stdout.split()
    assert set(ruby) <= {int(p) for p in found}
    ps = subprocess.run(["ps", "-o", "comm=", "-p", ",".join(map(str, ruby))], capture_output=True, text=True)
    assert ps.stdout.split() == ["ruby"] * 3


def test_pkill_by_image_name_restarts_the_container_with_exit_code_143(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                                     core: Any) -> None:
    pod = kubectl("get", "pods", "-l", "app=details", "-o", "jsonpath={.items[0].metadata.name}").stdout
    before = container_status(core, pod).restart_count
    old = {p for p, name in containers(ready_sandbox).items() if name == "ruby"}
    kubectl("exec", pod, "--", "pkill", "ruby")
    cs = eventually(lambda: restarted_with(core, pod, before + 1, 143), what=f"{pod} back with lastState 143")
    assert cs.last_state.terminated.reason == "Error"
    [zygote] = zygotes(ready_sandbox)
    new = {p for p, name in containers(ready_sandbox).items() if name == "ruby"}
    assert len(new) == 3 and len(new - old) == 1 and all(parent(p) == zygote for p in new)


def test_kill_9_of_the_main_process_is_exit_code_137(ready_sandbox: Sandbox, kubectl: Kubectl, core: Any) -> None:
    pod = kubectl("get", "pods", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout
    before = container_status(core, pod).restart_count
    kubectl("exec", pod, "--", "kill", "-9", "1")
    cs = eventually(lambda: restarted_with(core, pod, before + 1, 137), what=f"{pod} back with lastState 137")
    assert cs.restart_count == before + 1
    described = kubectl("describe", "pod", pod).stdout
    assert "Exit Code:    137" in described


def test_a_killed_zygote_takes_its_containers_along_and_a_new_one_restarts_them(tmp_path: Path) -> None:
    from kubernetes import client, config

    with Sandbox(tmp_path / "sb", replicas=1, time_scale=FAST) as sb:
        [zygote] = zygotes(sb)
        old = containers(sb)
        assert len(old) == 5
        os.kill(zygote, signal.SIGKILL)
        eventually(lambda: not any(alive(p) for p in old), timeout=10, what="the zygote's children to die with it")
        api = config.new_client_from_config(config_file=str(sb.kubeconfig))  # type: ignore[no-untyped-call]
        core: Any = client.CoreV1Api(api)
        try:
            names = [str(p.metadata.name) for p in core.list_namespaced_pod("default").items]
            for name in names:
                eventually(partial(restarted_with, core, name, 1, 137), what=f"{name} restarted after SIGKILL")
        finally:
            api.close()
        [again] = zygotes(sb)
        assert again != zygote
        now = containers(sb)
        assert Counter(now.values()) == Counter({"ruby": 1, "node": 1, "java": 1, "gunicorn": 1, "sleep": 1})
        assert all(parent(p) == again for p in now)


def test_sigkill_of_the_sandbox_takes_the_zygote_and_every_container(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", replicas=1, time_scale=FAST).start()
    try:
        procs = descendants(sb.pid)
        assert len(zygotes(sb)) == 1 and len(procs) == 6
        os.kill(sb.pid, signal.SIGKILL)
        eventually(lambda: not any(alive(p) for p in procs), timeout=10, what="no process left behind")
    finally:
        sb.stop()


@pytest.fixture()
def no_zygote(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LABKIT_ZYGOTE", "0")  # the sandbox process inherits it
    yield


def test_labkit_zygote_0_spawns_containers_as_before(no_zygote: None, tmp_path: Path) -> None:
    from kubernetes import client, config

    with Sandbox(tmp_path / "sb", replicas=1, time_scale=FAST) as sb:
        assert zygotes(sb) == []
        procs = containers(sb)
        assert Counter(procs.values()) == Counter({"ruby": 1, "node": 1, "java": 1, "gunicorn": 1, "sleep": 1})
        assert all(parent(p) == sb.pid for p in procs)
        ruby = next(p for p, name in procs.items() if name == "ruby")
        os.kill(ruby, signal.SIGTERM)
        api = config.new_client_from_config(config_file=str(sb.kubeconfig))  # type: ignore[no-untyped-call]
        try:
            core: Any = client.CoreV1Api(api)
            pod = str(core.list_namespaced_pod("default", label_selector="app=details").items[0].metadata.name)
            eventually(lambda: restarted_with(core, pod, 1, 143), what="details back with lastState 143")
        finally:
            api.close()


# --- the runtime on its own ------------------------------------------------------------------------


def launch(tmp_path: Path, argv: list[str], name: str) -> LaunchSpec:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "LABKIT_POD_IP": "127.0.0.1", "LABKIT_PROCESS_NAME": name, "HOSTNAME": "t"}
    return LaunchSpec("curl", argv, env, str(tmp_path))


async def run_and_wait(runtime: ContainerRuntime, spec: LaunchSpec, log: Path,
                       then: Callable[[Any], None] | None = None) -> tuple[Any, int, bytes]:
    """Start ``spec``, wait until it reports ready (or exits), apply ``then`` to it, return its exit status."""
    r, w = os.pipe()
    try:
        with open(log, "ab") as f:
            proc = await runtime.run(spec, f.fileno(), w)
    finally:
        os.close(w)
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, os.read, r, 1)
    os.close(r)
    if then is not None:
        then(proc)
    return proc, await asyncio.wait_for(proc.wait(), 20), ready


def test_the_runtime_reports_exit_statuses_of_forked_children(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = ContainerRuntime(str(tmp_path), use_zygote=True)
        runtime.start()
        try:
            log = tmp_path / "c.log"
            proc, code, _ = await run_and_wait(runtime, launch(tmp_path, ["sleep", "infinity"], "sleep"), log,
                                               lambda p: p.send_signal(signal.SIGTERM))
            assert isinstance(proc, ZygoteProcess) and code == -signal.SIGTERM and proc.returncode == code
            _, code, _ = await run_and_wait(runtime, launch(tmp_path, ["sleep", "infinity"], "sleep"), log,
                                            lambda p: p.kill())
            assert code == -signal.SIGKILL
            # Children that end at once (before the kubelet has their pid) report their own exit codes.
            _, code, ready = await run_and_wait(runtime, launch(tmp_path, ["no-such-program"], "x"), log)
            assert (code, ready) == (127, b"")
            _, code, _ = await run_and_wait(runtime, launch(tmp_path, ["sleep", "soon"], "sleep"), log)
            assert code == 1
            assert (runtime.forked, runtime.spawned) == (4, 0)
            text = log.read_text()
            assert 'exec: "no-such-program": executable file not found in $PATH' in text
            assert "sleep: invalid time interval 'soon'" in text
        finally:
            await runtime.close()

    asyncio.run(main())


def test_the_runtime_spawns_when_the_zygote_cannot_start(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = ContainerRuntime(str(tmp_path), python_path=str(tmp_path / "nowhere"), use_zygote=True)
        runtime.start()
        try:
            proc, code, ready = await run_and_wait(runtime, launch(tmp_path, ["sleep", "infinity"], "sleep"),
                                                   tmp_path / "c.log", lambda p: p.send_signal(signal.SIGTERM))
            assert ready == b"R" and code == -signal.SIGTERM
            assert not isinstance(proc, ZygoteProcess) and (runtime.forked, runtime.spawned) == (0, 1)
        finally:
            await runtime.close()
        assert "No module named 'labkit'" in (tmp_path / "zygote.log").read_text()

    asyncio.run(main())


def test_a_request_too_big_for_the_socket_is_spawned_and_the_zygote_stays(tmp_path: Path) -> None:
    async def main() -> None:
        runtime = ContainerRuntime(str(tmp_path), use_zygote=True)
        runtime.start()
        try:
            big = launch(tmp_path, ["env"], "env")
            big.env.update({f"BIG_{i}": str(i) * 40_000 for i in range(8)})  # 320 kB: over the socket's limit
            proc, code, _ = await run_and_wait(runtime, big, tmp_path / "big.log")
            assert code == 0 and not isinstance(proc, ZygoteProcess)
            assert "BIG_7=" + "7" * 40_000 in (tmp_path / "big.log").read_text()
            proc, code, _ = await run_and_wait(runtime, launch(tmp_path, ["env"], "env"), tmp_path / "small.log")
            assert code == 0 and isinstance(proc, ZygoteProcess)
            assert "HOSTNAME=t" in (tmp_path / "small.log").read_text()
            assert (runtime.forked, runtime.spawned) == (1, 1)
        finally:
            await runtime.close()

    asyncio.run(main())


def test_zygote_mode_from_the_environment() -> None:
    linux = sys.platform == "linux"
    assert zygote_wanted({}) is linux
    assert zygote_wanted({"LABKIT_ZYGOTE": "1"}) is linux
    for off in ("0", "off", "spawn", "false"):
        assert zygote_wanted({"LABKIT_ZYGOTE": off}) is False
