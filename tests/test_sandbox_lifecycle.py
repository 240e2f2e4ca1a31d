"""Starting and stopping the sandbox: the CLI, no orphans, loopback only, stale state, kubelet behaviours."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, Kubectl
from helpers import alive, eventually, processes_mentioning

from labkit.sandbox import Sandbox, SandboxError
from labkit.sandbox.state import descendants


def listening_addresses(pids: set[int]) -> list[str]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr = parts[1].split(":")[0]
            raw = bytes.fromhex(hexaddr)
            if v6:
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                out.append(str(ipaddress.IPv6Address(words)))
            else:
                out.append(str(ipaddress.IPv4Address(raw[::-1])))
    return out


def test_cli_up_status_down(tmp_path: Path) -> None:
    d = str(tmp_path / "sb")
    env = {**os.environ, "LABKIT_SANDBOX_DIR": d}
    up = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "up", "--time-scale", str(FAST)], env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "13/13 pods Ready" in up.stderr
    assert "productpage" in up.stdout and "kubeconfig" in up.stdout
    try:
        status = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "status", "--json"], env=env,
                                capture_output=True, text=True, timeout=60)
        info = json.loads(status.stdout)
        assert info["running"] and info["api"].startswith("https://127.0.0.1:")
        assert info["kubeconfig"] == str(Path(d) / "kubeconfig")
        assert len(info["pods"]) == 13 and all(p["status"] == "Running" for p in info["pods"])
        assert stat.S_IMODE(os.stat(info["kubeconfig"]).st_mode) == 0o600
        pid = info["pid"]
        procs = descendants(pid)
        assert len(procs) >= 13
        addrs = listening_addresses(procs | {pid})
        assert addrs and all(ipaddress.ip_address(a).is_loopback for a in addrs), addrs
        again = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "up"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        down = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "down"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    eventually(lambda: not [p for p in procs | {pid} if alive(p)], timeout=15,
               what="every process of the sandbox to be gone after `labkit sandbox down`")
    gone = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "status"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert gone.returncode == 3 and "no sandbox is running" in gone.stdout


def test_sigkill_leaves_no_orphans_and_the_next_up_recovers(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", time_scale=FAST).start()
    pid = sb.pid
    procs = descendants(pid)
    assert len(procs) >= 13
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not [p for p in procs if alive(p)], timeout=15,
               what="every container to die with the SIGKILLed sandbox")
    # The folder still has the dead run's state.json; the next start takes over cleanly.
    assert (tmp_path / "sb" / "state.json").exists()
    sb2 = Sandbox(tmp_path / "sb", time_scale=FAST).start()
    try:
        assert sb2.pid != pid and len(sb2.pods()) == 13
        with pytest.raises(SandboxError, match="already running"):
            Sandbox(tmp_path / "sb").start()
    finally:
        sb2.stop()


def test_a_certificate_that_cannot_be_made_is_a_clear_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    """The certificate is made in a child process (the daemon does not keep ``cryptography`` loaded): its failure
    is reported with its cause, and the daemon, the zygote and the child are gone."""
    folder = tmp_path / "sb"
    folder.mkdir(mode=0o700)
    (folder / "pki").write_text("a file where the pki folder should be")
    sb = Sandbox(folder, time_scale=FAST)
    with pytest.raises(SandboxError, match=r"certificate.*(NotADirectoryError|FileExistsError|Not a directory)"):
        sb.start()
    eventually(lambda: not processes_mentioning(str(folder)), timeout=15,
               what="no process of the failed start to be left")


def test_attach_to_nothing_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="labkit sandbox up"):
        Sandbox.attach(tmp_path / "none")


def test_unknown_image_and_a_two_container_pod(ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "pods.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Pod
metadata:
  name: not-an-image
spec:
  containers:
  - name: app
    image: registry.example.com/team/nothing:1.0
---
apiVersion: v1
kind: Pod
metadata:
  name: details-with-sidecar
  labels: {app: details-sidecar}
  annotations:
    kubectl.kubernetes.io/default-container: details
spec:
  containers:
  - name: istio-proxy
    image: docker.io/curlimages/curl:8.16.0
    command: ["sleep", "infinity"]
  - name: details
    image: docker.io/istio/examples-bookinfo-details-v1:1.20.3
    ports: [{containerPort: 9080}]
""")
    kubectl("apply", "-f", str(manifest))
    try:
        kubectl("wait", "--for=condition=Ready", "pod/details-with-sidecar", "--timeout=30s")
        row = kubectl("get", "pod", "details-with-sidecar", "--no-headers").stdout.split()
        assert row[1:3] == ["2/2", "Running"]
        # kubectl picks the default container from the annotation; -c picks another.
        assert kubectl("exec", "details-with-sidecar", "--", "ps").stdout.count("ruby") == 1
        assert "sleep" in kubectl("exec", "details-with-sidecar", "-c", "istio-proxy", "--", "ps", "aux").stdout
        eventually(lambda: kubectl("get", "pod", "not-an-image", "--no-headers").stdout.split()[2]
                   in ("ErrImagePull", "ImagePullBackOff"), timeout=20, what="not-an-image in ErrImagePull")
        events = kubectl("get", "events", "--field-selector", "involvedObject.name=not-an-image").stdout
        assert "Failed" in events and "registry.example.com/team/nothing:1.0" in events
    finally:
        kubectl("delete", "-f", str(manifest), "--wait=true", "--timeout=30s")


def test_ctrl_c_stops_the_sandbox_and_its_processes(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", time_scale=FAST).start()
    pid = sb.pid
    procs = descendants(pid)
    assert len(procs) >= 13
    os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C delivers
    eventually(lambda: not alive(pid) and not [p for p in procs if alive(p)], timeout=15,
               what="the sandbox and every container to stop after Ctrl-C")
    assert not sb.running() and not (tmp_path / "sb" / "state.json").exists()
    sb.stop()  # nothing left to stop: says so without error


def test_the_context_manager_stops_on_an_exception(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Sandbox(tmp_path / "sb", time_scale=FAST) as sb:
        pid = sb.pid
        procs = descendants(pid)
        raise KeyboardInterrupt
    assert not alive(pid) and not [p for p in procs if alive(p)]
