"""Starting, finding and stopping the embedded sandbox: the :class:`Sandbox` handle.

Start it from Python (tests, notebooks)::

    from labkit.sandbox import Sandbox
    with Sandbox(time_scale=0.2) as sb:
        print(sb.kubeconfig, sb.productpage_url)

or from the shell with ``labkit sandbox up`` / ``status`` / ``down``. The real ``kubectl`` and the official
``kubernetes`` client work against it through the kubeconfig it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from . import state as st

__all__ = ["Sandbox", "SandboxError"]


class SandboxError(RuntimeError):
    """The sandbox could not be started, reached or stopped; the message says what to do next."""


ProgressFn = Callable[[int, int], None]
MAX_PODS = 500
"""Pod addresses in one sandbox's pod network (two /24 blocks of loopback addresses)."""
MAX_COPIES = 100
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_NAME = "istio-ingressgateway"
"""Istio's ingress gateway, as the sandbox's mesh creates it (see :mod:`.mesh`)."""


class Sandbox:
    """A handle on one sandbox (running or not) in a state folder.

    Args:
        dir: the state folder; default ``$LABKIT_SANDBOX_DIR`` or ``~/.labkit/sandbox``.
        replicas: replicas of each Bookinfo deployment (the lesson uses 3).
        copies: copies of the lesson, each in its own namespace (``default``, then ``bookinfo-2`` ...
            ``bookinfo-N``), each with its own Bookinfo and tester: ``copies * (4 * replicas + 1)`` pods.
        time_scale: multiplies the kubelet's back-off and delays (0.1 makes CrashLoopBackOff ten times shorter).
        tie_to_process: stop the sandbox when this Python process dies (what tests and notebooks want);
            ``labkit sandbox up`` starts an untied one that outlives the shell.
    """

    def __init__(self, dir: str | os.PathLike[str] | None = None, *, replicas: int = 3, time_scale: float = 1.0,
                 tie_to_process: bool = True, boot_timeout: float = 60.0, copies: int = 1) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {replicas}")
        if not 1 <= copies <= MAX_COPIES:
            raise ValueError(f"copies must be between 1 and {MAX_COPIES} (one pod network holds "
                             f"{MAX_PODS} pods), not {copies}")
        if copies * (4 * replicas + 1) > MAX_PODS:
            raise ValueError(f"{copies} copies of {replicas} replicas make {copies * (4 * replicas + 1)} pods; "
                             f"the sandbox's pod network holds {MAX_PODS}: lower --copies or --replicas")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, not {time_scale}")
        self.paths = st.StatePaths(Path(dir).expanduser() if dir else st.default_dir())
        self.replicas = replicas
        self.copies = copies
        self.time_scale = time_scale
        self.tie_to_process = tie_to_process
        self.boot_timeout = boot_timeout
        self.info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._owned = False

    # -- properties
    @property
    def dir(self) -> Path:
        return self.paths.root

    @property
    def kubeconfig(self) -> Path:
        return self.paths.kubeconfig

    @property
    def api_url(self) -> str:
        return str(self._info()["api"])

    @property
    def productpage_url(self) -> str:
        return str(self._info()["productpage_url"])

    @property
    def pid(self) -> int:
        return int(self._info()["pid"])

    def _info(self) -> dict[str, Any]:
        if not self.info:
            self.info = st.read_state(self.paths) or {}
        if not self.info:
            raise SandboxError(f"no sandbox is running in {self.dir}; start one with `labkit sandbox up` "
                               "or `Sandbox().start()`")
        return self.info

    def running(self) -> bool:
        return st.is_running(self.paths)

    # -- lifecycle
    def start(self, progress: ProgressFn | None = None) -> Sandbox:
        """Start the sandbox and return once every pod is Ready.

        Raises:
            SandboxError: one is already running in this folder, or it failed to boot (the message quotes the
                reason and names the log file).
        """
        if self.running():
            raise SandboxError(f"a sandbox is already running in {self.dir} (pid {self._pid_or_unknown()}); "
                               "use `Sandbox.attach()` or stop it with `labkit sandbox down`")
        st.make_private_dirs(self.dir)
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-m", "labkit.sandbox.daemon", "--dir", str(self.dir),
               "--replicas", str(self.replicas), "--copies", str(self.copies), "--time-scale", str(self.time_scale),
               "--ready-fd", str(write_fd), "--boot-timeout", str(self.boot_timeout)]
        if self.tie_to_process:
            cmd += ["--parent-pid", str(os.getpid())]
        with open(self.paths.root / "daemon.out", "ab") as out:
            self._proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=out, start_new_session=True, close_fds=True)
        os.close(write_fd)
        try:
            result = self._await_boot(read_fd, progress)
        finally:
            os.close(read_fd)
        if not result.get("ok"):
            self._reap()
            raise SandboxError(f"the sandbox failed to start: {result.get('error', 'no reason given')}. "
                               f"See {self.paths.log} and {self.paths.root / 'daemon.out'}")
        self.info = {k: v for k, v in result.items() if k != "ok"}
        self._owned = True
        return self

    def _await_boot(self, fd: int, progress: ProgressFn | None) -> dict[str, Any]:
        deadline = time.monotonic() + self.boot_timeout + 15
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                if self._proc is not None and self._proc.poll() is not None:
                    return {"ok": False, "error": f"the sandbox process exited with code {self._proc.returncode}"}
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return {"ok": False, "error": "the sandbox process ended during start-up"}
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "progress" in msg:
                    if progress is not None:
                        progress(msg["progress"]["ready"], msg["progress"]["total"])
                    continue
                return dict(msg)
        return {"ok": False, "error": f"no answer within {self.boot_timeout + 15:.0f} s"}

    @classmethod
    def attach(cls, dir: str | os.PathLike[str] | None = None) -> Sandbox:
        """A handle on the sandbox already running in ``dir``.

        Raises:
            SandboxError: none is running there.
        """
        sb = cls(dir, tie_to_process=False)
        if not sb.running():
            raise SandboxError(f"no sandbox is running in {sb.dir}; start one with `labkit sandbox up`")
        sb.info = st.read_state(sb.paths) or {}
        if not sb.info:
            raise SandboxError(f"the sandbox in {sb.dir} is still starting; try again in a moment")
        sb.replicas = int(sb.info.get("replicas", 3))
        sb.copies = int(sb.info.get("copies", 1))
        sb.time_scale = float(sb.info.get("time_scale", 1.0))
        return sb

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the sandbox in this folder and every process it started. False if none was running."""
        if not self.running():
            self._reap()
            return False
        pid = self._pid_or_unknown()
        if not isinstance(pid, int):
            raise SandboxError(f"a sandbox holds {self.paths.lock} but its pid is unknown; stop it by hand")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.05)
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # its containers follow through PDEATHSIG
            time.sleep(0.2)
        self._reap()
        # The lock is released just before the process exits; return once it has (the interpreter's own
        # teardown can take a moment on a busy machine), so "stopped" means every process is gone.
        while time.monotonic() < deadline + 5 and _alive(pid):
            time.sleep(0.02)
        self.info = {}
        return True

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)

    def _pid_or_unknown(self) -> int | str:
        info = st.read_state(self.paths) or {}
        return int(info["pid"]) if "pid" in info else "unknown"

    def status(self) -> dict[str, Any]:
        """What ``labkit sandbox status --json`` prints: addresses, files, pods, and ``gateway_url`` when Istio's
        ingress gateway runs."""
        if not self.running():
            return {"running": False, "dir": str(self.dir)}
        info = dict(st.read_state(self.paths) or {})
        info["running"] = True
        info["pods"] = self.pods()
        if "gateway_url" not in info and any(p["namespace"] == GATEWAY_NAMESPACE and p["name"].startswith(GATEWAY_NAME)
                                             for p in info["pods"]):
            url = self.gateway_url()
            if url:
                info["gateway_url"] = url
        return info

    def gateway_url(self) -> str | None:
        """Istio's ingress gateway on the host, ``http://127.0.0.1:<nodePort>``; None when it was never started.

        A sandbox started meshed (``LABKIT_SANDBOX_MESH=1``) records it at boot; one meshed later (a namespace
        labelled ``istio-injection=enabled``, a Gateway applied) has it in the gateway Service's ``http2``
        nodePort, read through the API, as istio.io's instructions read ``INGRESS_PORT``.
        """
        info = self._info()
        if info.get("gateway_url"):
            return str(info["gateway_url"])
        import urllib.error

        try:
            svc = self._get(f"/api/v1/namespaces/{GATEWAY_NAMESPACE}/services/{GATEWAY_NAME}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        port = next((p.get("nodePort") for p in svc.get("spec", {}).get("ports") or [] if p.get("name") == "http2"),
                    None)
        return f"http://127.0.0.1:{port}" if port else None

    def _get(self, path: str) -> dict[str, Any]:
        """One GET on the API server with the kubeconfig's token."""
        import ssl
        import urllib.request

        info = self._info()
        kc = _read_kubeconfig(self.kubeconfig)
        ctx = ssl.create_default_context(cadata=kc["ca"])
        req = urllib.request.Request(f"{info['api']}{path}", headers={"Authorization": f"Bearer {kc['token']}"})
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            out: dict[str, Any] = json.loads(resp.read())
        return out

    def pods(self) -> list[dict[str, Any]]:
        """The pods as name, ready, status, restarts, ip (through the API, with the kubeconfig's token)."""
        from labkit.kubestatus import human_age, pod_ready, pod_restarts, pod_status

        items = self._get("/api/v1/pods")["items"]
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        out = []
        for p in items:
            r, t = pod_ready(p)
            out.append({"namespace": p["metadata"]["namespace"], "name": p["metadata"]["name"],
                        "ready": f"{r}/{t}", "status": pod_status(p), "restarts": pod_restarts(p, now)[1],
                        "age": human_age(p["metadata"].get("creationTimestamp"), now),
                        "ip": p.get("status", {}).get("podIP", "")})
        return out

    # -- context manager
    def __enter__(self) -> Sandbox:
        return self.start() if not self.info else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._owned:
            self.stop()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, already dead, does not count)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (not Linux): ask the kernel
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return text.rsplit(")", 1)[1].split()[0] != "Z"


def _read_kubeconfig(path: Path) -> dict[str, str]:
    import base64

    import yaml

    doc = yaml.safe_load(path.read_text())
    cluster = doc["clusters"][0]["cluster"]
    return {"server": cluster["server"], "ca": base64.b64decode(cluster["certificate-authority-data"]).decode(),
            "token": doc["users"][0]["user"]["token"]}
