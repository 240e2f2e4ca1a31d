"""Connecting to a cluster, and kubectl's verbs on one explicit object: the :class:`Lab`.

One code path serves the embedded sandbox and a real cluster: the official ``kubernetes`` client, with an
``ApiClient`` per Lab (never the client's process-wide default configuration) and a second one for exec, because
``kubernetes.stream`` swaps the request function of the client it is given while it runs.
"""

from __future__ import annotations

import html
import json
import os
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import kubestatus
from .errors import (
    BadSelector,
    ClusterUnreachable,
    ExecError,
    ExecTimeout,
    LabkitError,
    NoPodsMatch,
    NotFound,
    translate,
)

if TYPE_CHECKING:
    from kubernetes import client as k8s

    from .chaos import ChaosAction
    from .observe import Recorder
    from .page import ProductPage
    from .sandbox import Sandbox
    from .traffic import Traffic

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
TESTER_SELECTORS = ("app=sleep", "app=curl")

POD_COLUMNS: dict[str, str] = {
    "name": "string",
    "ready": "string",
    "status": "string",
    "restarts": "int64",
    "age": "string",
    "app": "string",
    "version": "string",
    "ip": "string",
    "node": "string",
    "namespace": "string",
    "containers": "int64",
    "ready_containers": "int64",
    "created": "datetime64[ns, UTC]",
}
"""The columns of :meth:`Lab.pods`, in order, with their dtypes (fixed even when no pod matches)."""


def selector_text(selector: str | dict[str, str] | None) -> str:
    """A label selector string from ``"app=details"``, ``{"app": "details"}`` or None (everything)."""
    if selector is None:
        return ""
    if isinstance(selector, dict):
        return ",".join(f"{k}={v}" for k, v in selector.items())
    if not isinstance(selector, str):
        raise BadSelector(f"a selector is a string like 'app=details' or a dict like {{'app': 'details'}}, "
                          f"not {type(selector).__name__}")
    return selector.strip()


def pods_frame(items: list[dict[str, Any]], now: datetime | None = None) -> pd.DataFrame:
    """Pods (API JSON) as a DataFrame with :data:`POD_COLUMNS`, like ``kubectl get pods`` plus labels and IPs."""
    now = now or datetime.now(UTC)
    rows = []
    for p in items:
        meta = p.get("metadata", {})
        labels = meta.get("labels") or {}
        ready, total = kubestatus.pod_ready(p)
        restarts, _ = kubestatus.pod_restarts(p, now)
        created = meta.get("creationTimestamp")
        rows.append({
            "name": meta.get("name", ""),
            "ready": f"{ready}/{total}",
            "status": kubestatus.pod_status(p),
            "restarts": restarts,
            "age": kubestatus.human_age(created, now),
            "app": labels.get("app", ""),
            "version": labels.get("version", ""),
            "ip": (p.get("status") or {}).get("podIP", "") or "",
            "node": (p.get("spec") or {}).get("nodeName", "") or "",
            "namespace": meta.get("namespace", ""),
            "containers": total,
            "ready_containers": ready,
            "created": pd.Timestamp(created) if created else pd.NaT,
        })
    frame = pd.DataFrame(rows, columns=list(POD_COLUMNS))
    frame = frame.astype(POD_COLUMNS)
    return frame.sort_values("name", ignore_index=True) if len(frame) else frame


@dataclass
class ExecResult:
    """What a command in a pod did, shaped like :class:`subprocess.CompletedProcess`."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    pod: str
    container: str
    duration: float = 0.0
    namespace: str = "default"

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check_returncode(self) -> ExecResult:
        """Raise :class:`~labkit.errors.ExecError` if the command failed; return self otherwise."""
        if self.returncode != 0:
            raise ExecError(
                f"`{shlex.join(self.args)}` in pod {self.pod} (container {self.container}) exited with code "
                f"{self.returncode}" + (f": {self.stderr.strip()}" if self.stderr.strip() else ""), self)
        return self

    def __str__(self) -> str:
        return self.stdout

    def _repr_html_(self) -> str:
        color = "#2e7d32" if self.ok else "#c62828"
        out = html.escape(self.stdout) if self.stdout else "<i>(no output)</i>"
        err = f"<pre style='color:#c62828;margin:0'>{html.escape(self.stderr)}</pre>" if self.stderr else ""
        return (f"<div><code>$ {html.escape(shlex.join(self.args))}</code> "
                f"<span style='color:{color}'>exit {self.returncode}</span> "
                f"<small>in {html.escape(self.pod)} · {self.duration * 1000:.0f} ms</small>"
                f"<pre style='margin:0'>{out}</pre>{err}</div>")


@dataclass
class Lab:
    """A connection to one cluster and one lab namespace. Create it with :func:`connect`.

    Example:
        >>> lab = labkit.connect()
        >>> lab.pods("app=details")
        >>> lab.request("http://ratings:9080/ratings/7").stdout
        '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    """

    api_client: k8s.ApiClient
    exec_client: k8s.ApiClient
    namespace: str = "default"
    context: str = ""
    kubeconfig: str = ""
    sandbox: Sandbox | None = None
    server: str = ""
    productpage_url: str | None = None
    _exec_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _containers: dict[tuple[str, str], tuple[str, list[str]]] = field(default_factory=dict, repr=False)
    _tester: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self._exec_core = client.CoreV1Api(self.exec_client)

    # -- description
    @property
    def is_sandbox(self) -> bool:
        return self.sandbox is not None

    def describe(self) -> dict[str, Any]:
        return {"cluster": self.server, "context": self.context, "namespace": self.namespace,
                "sandbox": self.is_sandbox, "kubeconfig": self.kubeconfig,
                "productpage_url": self.productpage_url}

    def __repr__(self) -> str:
        kind = "embedded sandbox" if self.is_sandbox else "cluster"
        return f"<Lab {kind} {self.server} context={self.context!r} namespace={self.namespace!r}>"

    def _repr_html_(self) -> str:
        kind = "embedded sandbox" if self.is_sandbox else "Kubernetes cluster"
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td><code>{html.escape(str(v))}</code></td></tr>"
                       for k, v in self.describe().items() if v not in (None, ""))
        return f"<div><b>labkit Lab</b> · {kind}<table>{rows}</table></div>"

    # -- reads
    def _list_pods_raw(self, selector: str = "", namespace: str | None = None) -> list[dict[str, Any]]:
        ns = namespace or self.namespace
        try:
            resp = self.core.list_namespaced_pod(ns, label_selector=selector or None, _preload_content=False)
        except Exception as exc:
            translate(exc, f"listing pods{f' matching {selector!r}' if selector else ''} in namespace {ns}")
        return list(json.loads(resp.data)["items"])

    def pods(self, selector: str | dict[str, str] | None = None, *, namespace: str | None = None) -> pd.DataFrame:
        """The pods matching ``selector`` as a DataFrame with the columns of ``kubectl get pods`` and more.

        Columns (:data:`POD_COLUMNS`): name, ready ("1/1"), status (as kubectl computes it, e.g.
        CrashLoopBackOff, Error, Terminating), restarts, age, app, version, ip, node, namespace, containers,
        ready_containers, created. An empty frame keeps these columns.

        Example:
            >>> lab.pods("app=details")[["name", "status", "restarts"]]
        """
        return pods_frame(self._list_pods_raw(selector_text(selector), namespace))

    def pod_names(self, selector: str | dict[str, str] | None = None, *, namespace: str | None = None,
                  require: bool = False) -> list[str]:
        """Names of the matching pods, sorted like kubectl sorts them (by name)."""
        text = selector_text(selector)
        names = sorted(p["metadata"]["name"] for p in self._list_pods_raw(text, namespace))
        if require and not names:
            raise self.no_match(text, namespace)
        return names

    def no_match(self, selector: str, namespace: str | None = None) -> NoPodsMatch:
        """The error for a selector that matches nothing, listing the labels that do exist."""
        ns = namespace or self.namespace
        present: set[str] = set()
        for p in self._list_pods_raw("", ns):
            for k, v in (p["metadata"].get("labels") or {}).items():
                if k != "pod-template-hash":
                    present.add(f"{k}={v}")
        listed = ", ".join(sorted(present)) or "none (the namespace has no pods)"
        return NoPodsMatch(f"No pods match {selector!r} in namespace {ns}. Labels present: {listed}.")

    def _pod(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        try:
            resp = self.core.read_namespaced_pod(name, ns, _preload_content=False)
        except Exception as exc:
            from kubernetes.client.exceptions import ApiException

            if isinstance(exc, ApiException) and exc.status == 404:
                names = [p["metadata"]["name"] for p in self._list_pods_raw("", ns)]
                hint = f"Pods there: {', '.join(names[:15])}" if names else "The namespace has no pods."
                raise NotFound(f'pod "{name}" not found in namespace {ns}. {hint}', status=404,
                               reason="NotFound", body=exc.body) from exc
            translate(exc, f'pod "{name}" in namespace {ns}')
        return dict(json.loads(resp.data))

    def container_for(self, pod: str, container: str | None = None, *, namespace: str | None = None) -> str:
        """The container an exec should use: the given one, the pod's default-container annotation, or the only one.

        Raises:
            LabkitError: the pod has several containers and no default: name one.
        """
        ns = namespace or self.namespace
        key = (ns, pod)
        if key not in self._containers:
            obj = self._pod(pod, ns)
            names = [c["name"] for c in obj["spec"]["containers"]]
            default = (obj["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER, "")
            self._containers[key] = (default, names)
        default, names = self._containers[key]
        if container:
            if container not in names:
                raise LabkitError(f'pod "{pod}" has no container "{container}"; its containers: {", ".join(names)}')
            return container
        if default in names:
            return default
        if len(names) == 1:
            return names[0]
        raise LabkitError(f'pod "{pod}" has containers {", ".join(names)} and no '
                          f"{DEFAULT_CONTAINER} annotation; pass container=... to choose one")

    # -- exec
    def exec(self, pod: str, command: str | Sequence[str], *, container: str | None = None,
             namespace: str | None = None, check: bool = False, timeout: float = 30.0,
             stdin: str | bytes | None = None) -> ExecResult:
        """Run ``command`` in ``pod`` (``kubectl exec``) and return an :class:`ExecResult`.

        Args:
            pod: the pod's name.
            command: a list of arguments, or a string split like a shell would (no shell runs it).
            container: which container; by default the pod's default container.
            check: raise :class:`~labkit.errors.ExecError` on a non-zero exit code.
            timeout: seconds before :class:`~labkit.errors.ExecTimeout`.
            stdin: data to feed the command's standard input (then closed).

        Example:
            >>> lab.exec(pod, ["pkill", "ruby"]).returncode
            0
        """
        from kubernetes.stream import stream

        args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
        if not args:
            raise LabkitError("exec needs a command, e.g. ['curl', '-sS', 'http://ratings:9080/ratings/7']")
        ns = namespace or self.namespace
        cname = self.container_for(pod, container, namespace=ns)
        started = time.perf_counter()
        with self._exec_lock:
            try:
                ws = stream(self._exec_core.connect_get_namespaced_pod_exec, pod, ns, command=args,
                            container=cname, stderr=True, stdout=True, stdin=stdin is not None, tty=False,
                            _preload_content=False, _request_timeout=timeout)
            except Exception as exc:
                self._containers.pop((ns, pod), None)
                self._exec_error(exc, pod, ns, cname, args)
            try:
                if stdin is not None:
                    ws.write_stdin(stdin.decode() if isinstance(stdin, bytes) else stdin)
                    ws.close_channel(0)
                ws.run_forever(timeout=timeout)
                still_open = ws.is_open()
                out = ws.read_channel(1)
                err = ws.read_channel(2)
                if still_open:
                    ws.close()
                    result = ExecResult(args, -1, out, err, pod, cname, time.perf_counter() - started, ns)
                    raise ExecTimeout(f"`{shlex.join(args)}` in pod {pod} did not finish within {timeout} s",
                                      result)
                code = ws.returncode
            finally:
                if ws.is_open():
                    ws.close()
        result = ExecResult(args, int(code if code is not None else -1), out, err, pod, cname,
                            time.perf_counter() - started, ns)
        return result.check_returncode() if check else result

    def _exec_error(self, exc: Exception, pod: str, ns: str, container: str, args: list[str]) -> None:
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException):
            message = _status_text(exc)
            if "container not found" in message:
                raise ExecError(f"cannot exec in pod {pod}: container {container} is not running right now "
                                f"({message}); it may be restarting. Wait with lab.wait_ready() and retry.") from exc
            if exc.status == 0 or str(exc.reason).startswith("Handshake status"):
                # The websocket client puts the whole handshake dump in the exception; keep the Status message.
                exc = ApiException(status=exc.status or _handshake_code(str(exc.reason)), reason=message)
                exc.body = json.dumps({"message": message})
        translate(exc, f'exec `{shlex.join(args)}` in pod "{pod}" (namespace {ns})')

    # -- the tester pod
    def tester_pod(self, *, refresh: bool = False) -> str:
        """The name of the lesson's tester pod (label ``app=sleep``, or ``app=curl`` in newer Istio releases)."""
        if self._tester and not refresh:
            return self._tester
        for sel in TESTER_SELECTORS:
            items = [p for p in self._list_pods_raw(sel) if kubestatus.is_pod_ready(p)]
            if items:
                self._tester = sorted(p["metadata"]["name"] for p in items)[0]
                return self._tester
        raise NoPodsMatch(f"No running tester pod (app=sleep or app=curl) in namespace {self.namespace}. Deploy one "
                          "with `kubectl apply -f` of labkit's sleep.yaml (labkit.manifest_path('sleep.yaml')).")

    def curl(self, *args: str, timeout: float = 30.0, check: bool = False) -> ExecResult:
        """Run ``curl ARGS`` in the tester pod, e.g. ``lab.curl("-sS", "http://ratings:9080/ratings/7")``."""
        try:
            return self.exec(self.tester_pod(), ["curl", *args], timeout=timeout, check=check)
        except NotFound:
            return self.exec(self.tester_pod(refresh=True), ["curl", *args], timeout=timeout, check=check)

    def request(self, url: str, *, timeout: float = 10.0, check: bool = False) -> ExecResult:
        """A request from the tester pod, as in the lesson: ``curl -sS URL`` (stdout is the body).

        Example:
            >>> lab.request("http://ratings:9080/ratings/7").stdout
            '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
        """
        return self.curl("-sS", "-m", f"{timeout:g}", url, timeout=timeout + 5, check=check)

    def status_code(self, url: str, *, timeout: float = 10.0) -> int:
        """The HTTP status of ``url`` seen from the tester pod; 0 when no response came (see curl's exit code)."""
        r = self.curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", f"{timeout:g}", url, timeout=timeout + 5)
        try:
            return int(r.stdout.strip() or 0)
        except ValueError:
            return 0

    # -- other verbs
    def logs(self, pod: str, *, container: str | None = None, tail: int | None = None, previous: bool = False,
             namespace: str | None = None) -> str:
        """A container's log (``kubectl logs``); ``previous=True`` for the run before the last restart."""
        ns = namespace or self.namespace
        cname = self.container_for(pod, container, namespace=ns)
        try:
            resp = self.core.read_namespaced_pod_log(pod, ns, container=cname, tail_lines=tail, previous=previous,
                                                     _preload_content=False)
        except Exception as exc:
            translate(exc, f'logs of pod "{pod}" container {cname}')
        return str(resp.data.decode("utf-8", "replace"))

    def scale(self, deployment: str, replicas: int, *, namespace: str | None = None) -> dict[str, Any]:
        """Scale a deployment (``kubectl scale deploy NAME --replicas N``); returns the before/after counts."""
        if replicas < 0:
            raise LabkitError(f"replicas must be 0 or more, not {replicas}")
        ns = namespace or self.namespace
        try:
            before = self.apps.read_namespaced_deployment_scale(deployment, ns).spec.replicas
            self.apps.patch_namespaced_deployment_scale(deployment, ns, {"spec": {"replicas": replicas}})
        except Exception as exc:
            translate(exc, f'deployment "{deployment}" in namespace {ns}',
                      hint="List them with `kubectl get deploy`.")
        return {"deployment": deployment, "namespace": ns, "before": before, "after": replicas}

    def rollout_restart(self, deployment: str, *, namespace: str | None = None, wait: bool = True,
                        timeout: float = 120.0) -> dict[str, Any]:
        """``kubectl rollout restart deploy/NAME`` then ``rollout status``: new pods, one batch at a time.

        New pods start with no restart history, so the kubelet's back-off (CrashLoopBackOff delays) starts over.

        Example:
            >>> lab.rollout_restart("details-v1")
        """
        from kubernetes import watch

        ns = namespace or self.namespace
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": stamp}}}}}
        started = time.monotonic()
        try:
            dep = self.apps.patch_namespaced_deployment(deployment, ns, patch)
        except Exception as exc:
            translate(exc, f'deployment "{deployment}" in namespace {ns}', hint="List them with lab.deployments().")
        generation = dep.metadata.generation
        if wait:
            w = watch.Watch()
            done = False
            try:
                for ev in w.stream(self.apps.list_namespaced_deployment, ns,
                                   field_selector=f"metadata.name={deployment}",
                                   timeout_seconds=max(1, int(timeout))):
                    d = ev["object"]
                    st, want = d.status, d.spec.replicas or 0
                    if ((st.observed_generation or 0) >= generation and (st.updated_replicas or 0) == want
                            and (st.replicas or 0) == want and (st.available_replicas or 0) == want):
                        done = True
                        w.stop()
            except Exception as exc:
                translate(exc, f'watching the rollout of deployment "{deployment}"')
            if not done:
                from .errors import WaitTimeout

                raise WaitTimeout(f'deployment "{deployment}" did not finish rolling out within {timeout:g} s; '
                                  "see lab.pods() and `kubectl rollout status`")
        return {"deployment": deployment, "namespace": ns, "restartedAt": stamp,
                "seconds": round(time.monotonic() - started, 2)}

    def deployments(self, *, namespace: str | None = None) -> pd.DataFrame:
        """Deployments with desired, ready and available replicas."""
        ns = namespace or self.namespace
        try:
            items = json.loads(self.apps.list_namespaced_deployment(ns, _preload_content=False).data)["items"]
        except Exception as exc:
            translate(exc, f"listing deployments in namespace {ns}")
        rows = [{"name": d["metadata"]["name"], "desired": int(d["spec"].get("replicas", 0)),
                 "ready": int(d.get("status", {}).get("readyReplicas", 0)),
                 "available": int(d.get("status", {}).get("availableReplicas", 0)),
                 "app": (d["metadata"].get("labels") or {}).get("app", "")} for d in items]
        return pd.DataFrame(rows, columns=["name", "desired", "ready", "available", "app"])

    # -- the rest of the library, as verbs on the Lab (each delegates to its module)
    def kill(self, selector: str | dict[str, str], process: str = "ruby", **options: Any) -> ChaosAction:
        """Kill a process in one, all or some pods (the lesson's ``pkill ruby``); see :func:`labkit.chaos.kill`.

        Example:
            >>> lab.kill("app=details", "ruby", mode="one")
        """
        from .chaos import kill

        return kill(self, selector, process, **options)

    def delete_pods(self, selector: str | dict[str, str], **options: Any) -> ChaosAction:
        """Delete pods (their ReplicaSet makes new ones); see :func:`labkit.chaos.delete_pods`."""
        from .chaos import delete_pods

        return delete_pods(self, selector, **options)

    def record(self, selector: str | dict[str, str] | None = None, **options: Any) -> Recorder:
        """A started :class:`labkit.observe.Recorder` of the pods' changes (use it as a context manager)."""
        from .observe import Recorder

        return Recorder(self, selector, **options).start()

    def wait_ready(self, selector: str | dict[str, str] | None = None, **options: Any) -> pd.DataFrame:
        """Wait until the matching pods are Ready, watching, with progress; see :func:`labkit.observe.wait_ready`."""
        from .observe import wait_ready

        return wait_ready(self, selector, **options)

    def live_pods(self, selector: str | dict[str, str] | None = None, **options: Any) -> Any:
        """A pods table widget that updates live; see :func:`labkit.observe.live_pods`."""
        from .observe import live_pods

        return live_pods(self, selector, **options)

    def page(self, **options: Any) -> ProductPage:
        """Fetch the productpage and tell which sections are healthy; see :func:`labkit.page.fetch_page`."""
        from .page import fetch_page

        return fetch_page(self, **options)

    def traffic(self, rate: float = 5.0, **options: Any) -> Traffic:
        """A (not yet started) traffic generator against the productpage; see :class:`labkit.traffic.Traffic`."""
        from .traffic import Traffic

        return Traffic(self, rate=rate, **options)

    def close(self) -> None:
        self.api_client.close()
        self.exec_client.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status_text(exc: Any) -> str:
    """The API server's Status message from a client exception, even inside a websocket handshake dump."""
    import re

    for text in (exc.body, exc.reason, str(exc)):
        if not text:
            continue
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        try:
            return str(json.loads(text).get("message", ""))
        except (ValueError, AttributeError):
            pass
        m = re.search(r'"message":\s*"((?:[^"\\]|\\.)*)"', str(text))
        if m:
            return str(json.loads(f'"{m.group(1)}"'))
    return str(exc.reason or "")


def _handshake_code(reason: str) -> int:
    import re

    m = re.match(r"Handshake status (\d+)", reason)
    return int(m.group(1)) if m else 0


def _resolve(doc: dict[str, Any], context: str | None = None) -> tuple[str, dict[str, Any], str]:
    name = context or doc.get("current-context", "")
    ctxs = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if name not in ctxs:
        raise LabkitError(f"context {name!r} is not in the kubeconfig; contexts there: {', '.join(ctxs) or 'none'}")
    ctx = ctxs[name]
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    return name, ctx, str(clusters.get(ctx.get("cluster", ""), {}).get("server", ""))


def connect(*, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
            namespace: str | None = None, sandbox_dir: str | os.PathLike[str] | None = None,
            start: bool = True, productpage_url: str | None = None) -> Lab:
    """Connect to the embedded sandbox (the default) or to a cluster you name.

    A real cluster is used only when named: ``kubeconfig=``/``context=`` or the environment variables
    ``LABKIT_KUBECONFIG``/``LABKIT_CONTEXT`` (never silently the current context of ``~/.kube/config``).
    Otherwise the sandbox in ``sandbox_dir`` (``LABKIT_SANDBOX_DIR``, ``~/.labkit/sandbox``) is attached,
    or started in the background when none runs and ``start`` is true.

    Args:
        kubeconfig: a kubeconfig file of a real cluster (kind, minikube, a cloud cluster).
        context: a context in that kubeconfig (default: its current context).
        namespace: the lab namespace, where chaos is allowed (default: the context's namespace, or ``default``;
            also ``LABKIT_NAMESPACE``).
        sandbox_dir: the sandbox's state folder.
        start: start the sandbox if it is not running.
        productpage_url: where the host reaches productpage on a real cluster (the lesson's Ingress URL).

    Raises:
        ClusterUnreachable: no sandbox runs and ``start`` is false, or the cluster does not answer.
    """
    from kubernetes import config

    from .sandbox import Sandbox, SandboxError

    kubeconfig = kubeconfig or os.environ.get("LABKIT_KUBECONFIG") or None
    context = context or os.environ.get("LABKIT_CONTEXT") or None
    namespace = namespace or os.environ.get("LABKIT_NAMESPACE") or None
    sb: Sandbox | None = None
    if kubeconfig is None and context is not None:
        kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube" / "config")
    if kubeconfig is None:
        try:
            sb = Sandbox.attach(sandbox_dir)
        except SandboxError:
            if not start:
                raise ClusterUnreachable(
                    "No sandbox is running and no cluster was named. Start the sandbox with `labkit sandbox up` "
                    "(or connect(start=True)), or name a cluster: connect(kubeconfig=..., context=...) or "
                    "LABKIT_KUBECONFIG.") from None
            sb = Sandbox(sandbox_dir, tie_to_process=False).start()
        kubeconfig = str(sb.kubeconfig)
        productpage_url = productpage_url or sb.productpage_url
    kubeconfig = str(Path(kubeconfig).expanduser())
    if not Path(kubeconfig).exists():
        raise ClusterUnreachable(f"the kubeconfig {kubeconfig} does not exist; pass the path of your cluster's "
                                 "kubeconfig, or leave kubeconfig unset to use the embedded sandbox")
    import yaml

    try:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
    except yaml.YAMLError as exc:
        raise LabkitError(f"{kubeconfig} is not a kubeconfig (it does not parse as one YAML document: "
                          f"{str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or doc.get("kind", "Config") != "Config" or "clusters" not in doc:
        raise LabkitError(f"{kubeconfig} is not a kubeconfig (no clusters and contexts in it)")
    ctx_name, ctx, server = _resolve(doc, context)
    ns = namespace or ctx.get("namespace") or "default"
    api_client = config.new_client_from_config(config_file=kubeconfig, context=ctx_name)
    exec_client = config.new_client_from_config(config_file=kubeconfig, context=ctx_name)
    lab = Lab(api_client, exec_client, namespace=ns, context=ctx_name, kubeconfig=kubeconfig, sandbox=sb,
              server=server, productpage_url=productpage_url or os.environ.get("LABKIT_PRODUCTPAGE_URL"))
    try:
        lab.core.read_namespace(ns, _request_timeout=10)
    except Exception as exc:
        lab.close()
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException) and exc.status == 404:
            raise NotFound(f"namespace {ns} does not exist on {server}; create it (kubectl create namespace {ns}) "
                           "or pass namespace=...", status=404, reason="NotFound") from exc
        translate(exc, f"connecting to {server} (context {ctx_name})")
    return lab
