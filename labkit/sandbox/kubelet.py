"""The kubelet: runs each container of each pod as a real OS process and reports pod status.

Restart policy and back-off follow the real kubelet, with one deliberate change: the first restart waits about a
second instead of happening at once, so the degraded page of the lesson can be seen. After that the delay is 10 s,
doubling up to 300 s, and it resets once a container has run for 10 minutes. While it waits the container shows
``CrashLoopBackOff``. All these delays are multiplied by the sandbox's time scale.

A container is Ready once its server listens (the image tells the kubelet through an inherited pipe); a pod is
Ready when all its containers are. The kubelet learns of pods from the store's changes and writes their status
back through the registry, where watches pick it up. It is also the container runtime that ``kubectl exec``,
``logs`` and ``port-forward`` reach through the API server (:meth:`Kubelet.runtime_for`, :meth:`pod_processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from . import containerlog, dns, envfrom
from .events import EventRecorder
from .images import ImageSpec, match_image, process_name_for
from .images.environ import process_environ
from .mesh import intercepted_ports
from .registry import Registry
from .resources import BY_PLURAL
from .store import Obj, Store, WatchEvent, now_rfc3339
from .zygote import ContainerProcess, ContainerRuntime, LaunchSpec

if TYPE_CHECKING:  # the exec toolbox is imported at the first exec, not at start-up
    from . import toolbox

log = logging.getLogger("labkit.sandbox.kubelet")
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
CONFIG_SOURCES = {"ConfigMap": BY_PLURAL[("", "configmaps")], "Secret": BY_PLURAL[("", "secrets")]}

FIRST_RESTART_DELAY = 1.0
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET_AFTER = 600.0
IMAGE_PULL_BACKOFF_INITIAL = 10.0


def exit_code_of(returncode: int) -> int:
    """A process's return code as the container runtime reports it: 128 + signal for a signal death."""
    return 128 - returncode if returncode < 0 else returncode


def service_env(services: list[Obj]) -> dict[str, str]:
    """The ``*_SERVICE_HOST`` / ``*_PORT_*`` variables Kubernetes injects for the Services of a namespace."""
    env: dict[str, str] = {}
    for svc in services:
        ip = svc.get("spec", {}).get("clusterIP")
        ports = svc.get("spec", {}).get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = svc["metadata"]["name"].upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            proto = p.get("protocol", "TCP")
            if p.get("name"):
                env[f"{prefix}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            base = f"{prefix}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(p["port"])
            env[f"{base}_ADDR"] = ip
        env[f"{prefix}_PORT"] = f"{ports[0].get('protocol', 'TCP').lower()}://{ip}:{ports[0]['port']}"
    return env


class AddressPool(Protocol):
    def take(self) -> str: ...

    def give_back(self, ip: str) -> None: ...


class PodNetwork(Protocol):
    """What the kubelet needs of the network: pod addresses, the cluster DNS hosts file and the block pods may
    reach (see :mod:`.network`)."""

    @property
    def pods(self) -> AddressPool: ...

    @property
    def hosts_file(self) -> str: ...

    @property
    def pod_network(self) -> str: ...

    def app_address(self, pod_ip: str) -> str | None: ...

    def release_app_address(self, pod_ip: str) -> None: ...


@dataclass(frozen=True)
class NodeConfig:
    """Where and how fast this node runs its containers."""

    state_dir: str
    """Logs and the containers' working directory live under it."""
    time_scale: float = 1.0
    """Multiplies every restart delay and back-off (tests use 0.25)."""
    python_path: str = ""
    """``PYTHONPATH`` of the containers: where this process imports ``labkit`` from."""


class ContainerLogCopier:
    """Copies a container's output pipe into its CRI log file, stamping each line as it arrives."""

    def __init__(self, fd: int, path: str, stream: str) -> None:
        self.fd = fd
        self.writer = containerlog.LineWriter(stream)
        # Unbuffered and O_APPEND: each record is one write, so stdout's and stderr's never interleave mid-line.
        self.file = open(path, "ab", buffering=0)  # noqa: SIM115 - open as long as the container runs
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self.open = True
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        while self.open:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self._write(self.writer.feed(data))

    def _write(self, records: bytes) -> None:
        if records:
            with contextlib.suppress(OSError):
                self.file.write(records)

    def close(self) -> None:
        """Copy what is left, then stop (the process ended; a child it left may still hold the pipe)."""
        if not self.open:
            return
        self.open = False
        self.loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            while data := os.read(self.fd, 65536):
                self._write(self.writer.feed(data))
        self._write(self.writer.flush())
        os.close(self.fd)
        self.file.close()


@dataclass
class Container:
    """One container of a pod: its spec, its current process and the status the kubelet reports for it."""

    pod: PodRuntime
    spec: Obj
    index: int
    image: ImageSpec | None = None
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    process: ContainerProcess | None = None
    argv: list[str] = field(default_factory=list)
    comm: str = ""
    started_at: float = 0.0
    container_id: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    backoff_level: int = 0
    stopping: bool = False
    process_env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def log_path(self, restart: int | None = None) -> str:
        n = self.restart_count if restart is None else restart
        return os.path.join(self.pod.log_dir, self.name, f"{n}.log")

    def status(self) -> Obj:
        image = self.spec.get("image", "")
        digest = hashlib.sha256(image.encode()).hexdigest()
        out: Obj = {
            "name": self.name,
            "image": image,
            "imageID": f"{image.split(':')[0]}@sha256:{digest}" if self.image else "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class PodRuntime:
    """A pod on this node: its address, containers and the status derived from them."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        meta = pod["metadata"]
        self.namespace: str = meta.get("namespace", "default")
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.ip = kubelet.network.pods.take()
        # A pod with Istio's sidecar: its app listens on a private address, the network redirects its pod address.
        self.app_ports = intercepted_ports(pod)
        self.app_ip = (kubelet.network.app_address(self.ip) or "") if self.app_ports else ""
        self.start_time = now_rfc3339()
        self.log_dir = os.path.join(kubelet.state_dir, "logs", f"{self.namespace}_{self.name}_{self.uid}")
        self.containers = [Container(self, c, i) for i, c in enumerate(pod["spec"].get("containers") or [])]
        self.grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        self.terminating = False
        self.ever_started = False  # phase stays Running once a container ran, even while the pod is deleted
        self.conditions: dict[str, tuple[str, str]] = {}
        self._status_dirty = False

    # -- status
    def _condition(self, ctype: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        prev = self.conditions.get(ctype)
        if prev is None or prev[0] != status:
            self.conditions[ctype] = (status, now_rfc3339())
        status, since = self.conditions[ctype]
        return {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": since}

    def status(self) -> Obj:
        all_ready = bool(self.containers) and all(c.ready for c in self.containers)
        phase = "Running" if self.ever_started else "Pending"
        conditions = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", True),
            self._condition("Ready", all_ready and not self.terminating),
            self._condition("ContainersReady", all_ready),
            self._condition("PodScheduled", True),
        ]
        for c in conditions:
            if c["type"] in ("Ready", "ContainersReady") and c["status"] == "False":
                not_ready = [x.name for x in self.containers if not x.ready]
                c["reason"] = "ContainersNotReady"
                c["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
        return {
            "phase": phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "containerStatuses": [c.status() for c in self.containers],
        }

    def publish(self) -> None:
        """Write the current status to the store (at once: watchers must see changes promptly)."""
        status = self.status()

        def apply(pod: Obj) -> None:
            pod["status"] = status

        self.kubelet.registry.mutate(PODS, self.namespace, self.name, apply)

    def processes(self) -> list[tuple[int, Container]]:
        """Running containers with their in-pod pid (1 for the first container's process, 2 for the next...)."""
        return [(c.index + 1, c) for c in self.containers
                if c.process is not None and c.process.returncode is None]


class Kubelet:
    """Starts, restarts and stops the containers of every pod in the store."""

    def __init__(self, store: Store, registry: Registry, events: EventRecorder, network: PodNetwork,
                 config: NodeConfig) -> None:
        self.store = store
        self.registry = registry
        self.events = events
        self.network = network
        self.state_dir = config.state_dir
        self.python_path = config.python_path
        self.scale = config.time_scale
        self.pods: dict[str, PodRuntime] = {}
        self._by_name: dict[tuple[str, str], PodRuntime] = {}  # the newest runtime of each pod name
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

        # Container processes: forked from a pre-imported zygote, or spawned (LABKIT_ZYGOTE=0, non-Linux).
        self.runtime = ContainerRuntime(self.state_dir)

    def start(self) -> None:
        self.runtime.start()
        self.store.subscribe((PODS,), self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._work())

    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.object["metadata"]
        self._queue.put_nowait((meta.get("namespace", "default"), meta["name"]))

    async def _work(self) -> None:
        while True:
            ns, name = await self._queue.get()
            try:
                self._sync(ns, name)
            except Exception:  # a bug in one pod's sync must not stop the node
                log.exception("kubelet sync of %s/%s failed", ns, name)

    def _sync(self, ns: str, name: str) -> None:
        pod = self.store.get(PODS, ns, name)
        runtime = self._by_name.get((ns, name))
        if pod is None:
            if runtime is not None:
                self._begin_termination(runtime, 0)
            return
        uid = pod["metadata"]["uid"]
        if runtime is not None and runtime.uid != uid:
            self._begin_termination(runtime, 0)
            runtime = None
        if runtime is None:
            runtime = self.pods.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            if runtime is not None:
                grace = pod["metadata"].get("deletionGracePeriodSeconds", runtime.grace)
                self._begin_termination(runtime, int(grace))
            else:
                self.registry.finalize_pod(ns, name, uid)
            return
        if runtime is None:
            self._admit(pod)

    # -- pod start
    def _admit(self, pod: Obj) -> None:
        runtime = PodRuntime(self, pod)
        self.pods[runtime.uid] = runtime
        self._by_name[(runtime.namespace, runtime.name)] = runtime

        def schedule(p: Obj) -> None:
            p["spec"]["nodeName"] = "sandbox"
            p["status"] = runtime.status()

        fresh = self.registry.mutate(PODS, runtime.namespace, runtime.name, schedule) or pod
        self.events.record(fresh, "Normal", "Scheduled",
                                   f"Successfully assigned {runtime.namespace}/{runtime.name} to sandbox",
                                   component="default-scheduler")
        env = self._pod_env(fresh)
        for c in runtime.containers:
            c.files = self._pod_files(runtime)
            c.task = asyncio.get_running_loop().create_task(self._run_container(c, fresh, env))

    def _pod_env(self, pod: Obj) -> dict[str, str]:
        ns = pod["metadata"].get("namespace", "default")
        env = service_env(self.store.list(SERVICES, ns))
        env.update({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
        return env

    def _pod_files(self, runtime: PodRuntime) -> dict[str, bytes]:
        return {
            "/etc/hostname": f"{runtime.name}\n".encode(),
            "/etc/hosts": (f"# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost\n"
                           f"{runtime.ip}\t{runtime.name}\n").encode(),
            "/etc/resolv.conf": dns.resolv_conf(runtime.namespace).encode(),
        }

    def _container_env(self, c: Container, base: dict[str, str], pod: Obj) -> dict[str, str]:
        env = dict(c.image.env) if c.image else {}
        env.update(base)
        env.update(envfrom.resolve(c.spec, c.pod.namespace,
                                   lambda kind, name: self.store.get(CONFIG_SOURCES[kind], c.pod.namespace, name)))
        for item in c.spec.get("env") or []:
            if (item.get("valueFrom") or {}).get("fieldRef"):
                path = item["valueFrom"]["fieldRef"].get("fieldPath", "")
                value = {"metadata.name": c.pod.name, "metadata.namespace": c.pod.namespace,
                         "status.podIP": c.pod.ip, "spec.nodeName": "sandbox",
                         "status.hostIP": "127.0.0.1"}.get(path, "")
                env[item["name"]] = value
        env["HOSTNAME"] = c.pod.name
        return env

    def _record(self, c: Container, etype: str, reason: str, message: str) -> None:
        pod = self.store.get(PODS, c.pod.namespace, c.pod.name)
        if pod is not None and pod["metadata"]["uid"] == c.pod.uid:
            self.events.record(pod, etype, reason, message, component="kubelet",
                               field_path=f"spec.containers{{{c.name}}}")

    def _delay(self, seconds: float) -> float:
        return seconds * self.scale

    async def _run_container(self, c: Container, pod: Obj, base_env: dict[str, str]) -> None:
        """The life of one container: pull, start, wait, restart with back-off, until the pod goes away."""
        image = c.spec.get("image", "")
        c.image = match_image(image)
        pull_backoff = IMAGE_PULL_BACKOFF_INITIAL
        while c.image is None and not c.stopping:
            self._record(c, "Normal", "Pulling", f'Pulling image "{image}"')
            msg = (f'failed to pull and unpack image "{image}": failed to resolve reference "{image}": '
                   f"{image}: not found (the sandbox runs only the Bookinfo, curl, busybox and nginx images)")
            c.state = {"waiting": {"reason": "ErrImagePull", "message": msg}}
            self._record(c, "Warning", "Failed", f'Failed to pull image "{image}": {msg}')
            self._record(c, "Warning", "Failed", "Error: ErrImagePull")
            c.pod.publish()
            await asyncio.sleep(self._delay(1.0))
            c.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            self._record(c, "Normal", "BackOff", f'Back-off pulling image "{image}"')
            self._record(c, "Warning", "Failed", "Error: ImagePullBackOff")
            c.pod.publish()
            await asyncio.sleep(self._delay(pull_backoff))
            pull_backoff = min(pull_backoff * 2, BACKOFF_MAX)
        if c.stopping:
            return
        self._record(c, "Normal", "Pulled", f'Container image "{image}" already present on machine')
        while True:
            try:
                env = self._container_env(c, base_env, pod)
                break
            except envfrom.ConfigError as exc:  # retried on the kubelet's next sync, as a real one does
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                self._record(c, "Warning", "Failed", f"Error: {exc}")
                c.pod.publish()
                await asyncio.sleep(self._delay(2.0))
                if c.stopping:
                    return
        c.process_env = env
        while not c.stopping:
            run_started = time.monotonic()
            code = await self._start_and_wait(c, env)
            if code is None or c.stopping:
                break
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                break
            if time.monotonic() - run_started >= self._delay(BACKOFF_RESET_AFTER):
                c.backoff_level = 0
            if c.backoff_level == 0:
                await asyncio.sleep(self._delay(FIRST_RESTART_DELAY))
            else:
                wait = min(BACKOFF_INITIAL * 2 ** (c.backoff_level - 1), BACKOFF_MAX)
                # Show the terminated state briefly (STATUS "Error"), then CrashLoopBackOff until the restart.
                shown = min(self._delay(FIRST_RESTART_DELAY), self._delay(wait))
                await asyncio.sleep(shown)
                if c.stopping:
                    break
                c.state = {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {int(wait)}s restarting failed container={c.name} "
                               f"pod={c.pod.name}_{c.pod.namespace}({c.pod.uid})"}}
                self._record(c, "Warning", "BackOff", "Back-off restarting failed container "
                             f"{c.name} in pod {c.pod.name}_{c.pod.namespace}({c.pod.uid})")
                c.pod.publish()
                await asyncio.sleep(max(0.0, self._delay(wait) - shown))
            c.backoff_level += 1
            if not c.stopping:
                c.restart_count += 1

    async def _start_and_wait(self, c: Container, env: dict[str, str]) -> int | None:
        """Start the process, mark it ready when it says so, and return its exit code when it ends."""
        assert c.image is not None
        c.argv = c.image.command_line(list(c.spec.get("command") or []), list(c.spec.get("args") or []))
        c.comm = process_name_for(c.image, c.argv)
        os.makedirs(os.path.dirname(c.log_path()), exist_ok=True)
        ready_r, ready_w = os.pipe()
        full_env = process_environ(env, {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": self.python_path,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LABKIT_POD_IP": c.pod.ip,
            "LABKIT_NAMESPACE": c.pod.namespace,
            "LABKIT_HOSTS_FILE": self.network.hosts_file,
            "LABKIT_READY_FD": str(ready_w),
            "LABKIT_PARENT_PID": str(os.getpid()),
            "LABKIT_PROCESS_NAME": c.comm,
            "LABKIT_POD_NETWORK": self.network.pod_network,
            **({"LABKIT_APP_IP": c.pod.app_ip, "LABKIT_APP_PORTS": ",".join(map(str, c.pod.app_ports))}
               if c.pod.app_ip else {}),
        })
        self._record(c, "Normal", "Created", f"Created container: {c.name}")
        # The container writes to a pipe; the kubelet stamps each line with its write time into the log file.
        log_r, log_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            c.process = await self.runtime.run(
                LaunchSpec(c.image.name, list(c.argv), full_env, self.state_dir), log_w, ready_w, err_w)
        except OSError as exc:
            os.close(ready_r)
            os.close(log_r)
            os.close(err_r)
            c.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
            self._record(c, "Warning", "Failed", f"Error: {exc}")
            c.pod.publish()
            return 128
        finally:
            os.close(ready_w)  # the child has its copy; ours must go so EOF reaches the reader
            os.close(log_w)
            os.close(err_w)
        log_copies = (ContainerLogCopier(log_r, c.log_path(), "stdout"),
                      ContainerLogCopier(err_r, c.log_path(), "stderr"))
        c.container_id = "labkit://" + hashlib.sha256(f"{c.pod.uid}/{c.name}/{c.restart_count}".encode()
                                                      ).hexdigest()
        c.started_at = time.time()
        started = now_rfc3339()
        c.state = {"running": {"startedAt": started}}
        c.started, c.ready = True, False
        c.pod.ever_started = True
        self._record(c, "Normal", "Started", f"Started container {c.name}")
        c.pod.publish()
        loop = asyncio.get_running_loop()
        pipe_open = [True]  # the fd number is reused once closed: close and unregister it exactly once

        def close_pipe() -> None:
            if pipe_open[0]:
                pipe_open[0] = False
                loop.remove_reader(ready_r)
                os.close(ready_r)

        def on_ready() -> None:
            try:
                data = os.read(ready_r, 16)
            except OSError:
                data = b""
            close_pipe()
            if data and c.process is not None and c.process.returncode is None:
                c.ready = True
                c.pod.publish()

        loop.add_reader(ready_r, on_ready)
        proc = c.process
        returncode = await proc.wait()
        close_pipe()
        for copier in log_copies:
            copier.close()
        code = exit_code_of(returncode)
        c.ready, c.started = False, False
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "containerID": c.container_id,
        }
        # lastState always carries the latest death (kubectl's "RESTARTS 1 (5s ago)" reads it).
        if not c.stopping:
            c.last_state = {"terminated": terminated}
        c.state = {"terminated": terminated}
        if c.stopping:
            c.pod.publish()
            return None
        c.pod.publish()
        return code

    # -- pod stop
    def _begin_termination(self, runtime: PodRuntime, grace: int) -> None:
        if runtime.terminating:
            return
        runtime.terminating = True
        asyncio.get_running_loop().create_task(self._terminate(runtime, grace))

    async def _terminate(self, runtime: PodRuntime, grace: int) -> None:
        for c in runtime.containers:
            c.stopping = True
            if c.process is not None and c.process.returncode is None:
                self._record(c, "Normal", "Killing", f"Stopping container {c.name}")
        runtime.publish()
        await self.stop_containers(runtime, grace)
        for c in runtime.containers:
            if c.task is not None:
                c.task.cancel()
        self.pods.pop(runtime.uid, None)
        if self._by_name.get((runtime.namespace, runtime.name)) is runtime:
            del self._by_name[(runtime.namespace, runtime.name)]
        self.network.release_app_address(runtime.ip)
        self.network.pods.give_back(runtime.ip)
        self.registry.finalize_pod(runtime.namespace, runtime.name, runtime.uid)

    async def stop_containers(self, runtime: PodRuntime, grace: float) -> None:
        procs = [c.process for c in runtime.containers if c.process is not None and c.process.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        if procs:
            _, pending = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs],
                                            timeout=max(0.0, float(grace)))
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=2)

    async def shutdown(self) -> None:
        """Stop every container (SIGTERM, then SIGKILL after a short grace): the sandbox is going away."""
        if self._task is not None:
            self._task.cancel()
        runtimes = list(self.pods.values())
        for r in runtimes:
            for c in r.containers:
                c.stopping = True
        await asyncio.gather(*(self.stop_containers(r, 1.0) for r in runtimes), return_exceptions=True)
        for r in runtimes:
            for c in r.containers:
                if c.task is not None:
                    c.task.cancel()
        await self.runtime.close()

    def signal_container(self, c: Container, sig: int) -> None:
        if c.process is not None and c.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(c.process.pid, sig)

    def runtime_for(self, namespace: str, name: str) -> PodRuntime | None:
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            return None
        return self.pods.get(pod["metadata"]["uid"])

    def pod_processes(self, namespace: str, name: str) -> list[toolbox.PodProcess]:
        """The live processes of a pod as ``ps`` inside it shows them (main processes are pids 1, 2, ...)."""
        from . import toolbox

        runtime = self.runtime_for(namespace, name)
        if runtime is None:
            return []
        return [toolbox.PodProcess(pid=pid, host_pid=c.process.pid, comm=c.comm, args=list(c.argv),
                                   container=c.name, started=c.started_at)
                for pid, c in runtime.processes() if c.process is not None]

    def signal_pod_process(self, namespace: str, name: str, proc: toolbox.PodProcess, sig: int) -> None:
        """Deliver a signal to one of the pod's own processes (never anything else on the host)."""
        for p in self.pod_processes(namespace, name):
            if p.host_pid == proc.host_pid:
                os.kill(p.host_pid, sig)
                return
        raise ProcessLookupError(proc.pid)

