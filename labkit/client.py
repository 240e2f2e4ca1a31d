"""The client core: one connection to a cluster, its pods, exec, the one pod watch, and the one error boundary.

Every feature module (chaos, observe, traffic, page) talks to the cluster through a :class:`Client`; the
:class:`~labkit.lab.Lab` that notebooks use is a ``Client`` with the features' verbs on top. Nothing here imports
a feature.

- Connection: an ``ApiClient`` per Client (never the official client's process-wide default configuration) and a
  second one for exec, because ``kubernetes.stream`` swaps the request function of the client it is given while it
  runs. :meth:`Client.fresh` makes another Client on the same cluster for a thread of its own (a watch, a worker).
- :class:`PodWatch` (:meth:`Client.watch_pods`): list, then watch from the list's resourceVersion, resume when the
  server ends the stream, list again after ``410 Gone``. Every wait and recorder in labkit uses it.
- Errors: the official client's exceptions become labkit's (:func:`labkit.errors.translate`) here and only here.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import pandas as pd

from . import kubestatus
from .bookinfo import TESTER_APPS, TESTER_SELECTORS
from .errors import (
    BadSelector,
    ClusterUnreachable,
    ExecError,
    ExecTimeout,
    LabkitError,
    NoPodsMatch,
    NotFound,
    WaitTimeout,
    translate,
)
from .records import ExecResult

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from .sandbox import Sandbox

__all__ = [
    "DEFAULT_CONTAINER",
    "POD_COLUMNS",
    "Client",
    "PodEvent",
    "PodList",
    "PodWatch",
    "connect",
    "pods_frame",
    "selector_text",
]

Pod = dict[str, Any]
"""A pod as the API returns it (JSON): wire data, hence a dict."""

DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

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
"""The columns of :meth:`Client.pods`, in order, with their dtypes (fixed even when no pod matches)."""

CONNECT_TIMEOUT = 10
WATCH_SECONDS = 240
"""How long one watch request lasts before the server ends it and :class:`PodWatch` resumes it."""


def exec_exit_status(error_channel: str) -> tuple[int | None, str]:
    """The exit code an exec's error channel reports, and the text of a failure that is no exit code.

    A command that ran ends with ``Success`` or ``NonZeroExitCode`` (its code in ``details.causes``). An exec the
    container runtime could not start at all (the image has no such command) ends with an ``InternalError``
    whose message kubectl prints; it is reported here as exit code 127 with that message, as a shell would.

    Examples:
        >>> exec_exit_status('{"status":"Success"}')
        (0, '')
        >>> exec_exit_status('{"status":"Failure","reason":"InternalError","message":"exec: no bash"}')
        (127, 'exec: no bash\\n')
    """
    if not error_channel.strip():
        return None, ""
    try:
        status = json.loads(error_channel)
    except ValueError:
        return None, error_channel
    if status.get("status") == "Success":
        return 0, ""
    causes = (status.get("details") or {}).get("causes") or []
    for cause in causes:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).lstrip("-").isdigit():
            return int(cause["message"]), ""
    return 127, f"{status.get('message', 'exec failed')}\n"


def selector_text(selector: str | Mapping[str, str] | None) -> str:
    """A label selector string from ``"app=details"``, ``{"app": "details"}`` or None (everything)."""
    if selector is None:
        return ""
    if isinstance(selector, Mapping):
        return ",".join(f"{k}={v}" for k, v in selector.items())
    if not isinstance(selector, str):
        raise BadSelector(f"a selector is a string like 'app=details' or a dict like {{'app': 'details'}}, "
                          f"not {type(selector).__name__}")
    return selector.strip()


def pods_frame(items: Sequence[Pod], now: datetime | None = None) -> pd.DataFrame:
    """Pods (API JSON) as a DataFrame with :data:`POD_COLUMNS`, like ``kubectl get pods`` plus labels and IPs."""
    now = now or datetime.now(UTC)
    rows = []
    for p in items:
        meta = p.get("metadata", {})
        labels = meta.get("labels") or {}
        summary = kubestatus.summarize_pod(p)
        created = meta.get("creationTimestamp")
        rows.append({
            "name": meta.get("name", ""),
            "ready": f"{summary.ready}/{summary.total}",
            "status": summary.status,
            "restarts": summary.restarts,
            "age": kubestatus.human_age(created, now),
            "app": labels.get("app", ""),
            "version": labels.get("version", ""),
            "ip": (p.get("status") or {}).get("podIP", "") or "",
            "node": (p.get("spec") or {}).get("nodeName", "") or "",
            "namespace": meta.get("namespace", ""),
            "containers": summary.total,
            "ready_containers": summary.ready,
            "created": pd.Timestamp(created) if created else pd.NaT,
        })
    frame = pd.DataFrame(rows, columns=list(POD_COLUMNS))
    frame = frame.astype(POD_COLUMNS)
    return frame.sort_values("name", ignore_index=True) if len(frame) else frame


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


# ------------------------------------------------------------------------------------------------ the pod watch


@dataclass(frozen=True)
class PodList:
    """A list of pods and the resourceVersion to watch from."""

    items: list[Pod]
    resource_version: str


@dataclass(frozen=True)
class PodEvent:
    """One thing a :class:`PodWatch` saw.

    Attributes:
        type: ``LIST`` (a full list: ``pods`` is everything that matches now), or a watch event: ``ADDED``,
            ``MODIFIED``, ``DELETED`` (``pod`` is the pod).
        pods: the listed pods (LIST only).
        pod: the pod (watch events only).
        resource_version: the version the watch resumes from after this event.
        relist: a LIST after ``410 Gone`` (not the first one).
    """

    type: Literal["LIST", "ADDED", "MODIFIED", "DELETED"]
    resource_version: str
    pods: list[Pod] = field(default_factory=list)
    pod: Pod = field(default_factory=dict)
    relist: bool = False


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class PodWatch:
    """The one "list, then watch from the list's resourceVersion, relist on 410 Gone" loop of labkit.

    Iterate over it for :class:`PodEvent` objects: first a ``LIST`` (unless started from ``resource_version``),
    then every ``ADDED``/``MODIFIED``/``DELETED``. When the server ends the stream (its ``timeoutSeconds``, a
    restart) it resumes from the last resourceVersion seen; after ``410 Gone`` it yields a new ``LIST``
    (``relist=True``). It ends at the ``deadline`` (a :func:`time.monotonic` value), when :meth:`stop` is called
    from another thread, or when the consumer stops iterating.

    Args:
        client: the connection (a watch that runs in a thread of its own should get a :meth:`Client.fresh` one).
        selector: a label selector.
        namespace: where.
        deadline: when to end (None: never).
        resource_version: start watching from here without a first list.
        retry: keep going after a broken connection or a failed relist (recorded in :attr:`error`, with back-off);
            otherwise the error is raised, translated.
        watch_seconds: the server-side length of one watch request.
        read_timeout: seconds without a byte before the connection counts as dead (default: a little more than
            ``watch_seconds``, or the time left before the deadline).

    Attributes:
        relists: lists after ``410 Gone``.
        reconnects: watch requests after the first.
        error: the last error met in ``retry`` mode, or None.
        resource_version: the version it resumes from.
    """

    def __init__(self, client: Client, selector: str = "", namespace: str | None = None, *,
                 deadline: float | None = None, resource_version: str = "", retry: bool = False,
                 watch_seconds: int = WATCH_SECONDS, read_timeout: float | None = None) -> None:
        self.client = client
        self.selector = selector
        self.namespace = namespace or client.namespace
        self.deadline = deadline
        self.retry = retry
        self.watch_seconds = watch_seconds
        self.read_timeout = read_timeout if read_timeout is not None else watch_seconds + 30
        self.resource_version = resource_version
        self.relists = 0
        self.reconnects = 0
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._watch: Any = None
        self._dropping = False
        self._resume_from: str | None = None

    @property
    def what(self) -> str:
        return f"pods{f' matching {self.selector!r}' if self.selector else ''} in namespace {self.namespace}"

    def stop(self) -> None:
        """End the iteration (from another thread); the blocked read is interrupted."""
        self._stopping.set()
        w = self._watch
        if w is not None:
            w.stop()

    def reconnect(self, resource_version: str | None = None) -> None:
        """Drop the current connection; the watch resumes (from ``resource_version`` if given). For tests."""
        if resource_version is not None:
            self._resume_from = resource_version
        w = self._watch
        if w is not None:
            self._dropping = True
            w.stop()

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def __iter__(self) -> Iterator[PodEvent]:
        need_list = not self.resource_version
        gone = False
        failures = 0
        while not self._stopping.is_set():
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            try:
                if need_list:
                    listed = self.client.list_pods(self.selector, namespace=self.namespace)
                    self.resource_version = listed.resource_version
                    need_list = False
                    yield PodEvent("LIST", listed.resource_version, pods=listed.items, relist=gone)
                    gone = False
                    continue
                if self._resume_from is not None:
                    self.resource_version, self._resume_from = self._resume_from, None
                yield from self._stream(remaining)
                failures = 0
            except _Gone:
                self.relists += 1
                need_list = gone = True
                continue
            except Exception as exc:
                if self._stopping.is_set():
                    return
                if self._dropping:
                    self._dropping = False  # a connection dropped on purpose (reconnect()): not an error
                elif "timed out" in str(exc).lower() and self.deadline is not None:
                    pass  # the read timeout at the deadline: the loop checks the deadline
                elif self.retry:
                    self.error = exc
                    failures += 1
                elif isinstance(exc, LabkitError):
                    raise
                else:
                    translate(exc, f"watching {self.what}")
            if self._stopping.is_set():
                return
            self.reconnects += 1
            if failures:
                # A broken connection: back off a little (the sandbox may be restarting), never busy-loop.
                self._stopping.wait(min(0.1 * 2 ** (failures - 1), 5.0))

    def _stream(self, remaining: float | None) -> Iterator[PodEvent]:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        if remaining is None:
            server_seconds, read = self.watch_seconds, self.read_timeout
        else:
            # Server-side timeout ends the stream at the deadline; the read timeout covers sub-second rests.
            server_seconds = max(1, min(self.watch_seconds, math.ceil(remaining)))
            read = max(min(remaining, self.read_timeout), 0.05)
        w = watch.Watch()
        self._dropping = False
        self._watch = w
        try:
            # With timeout_seconds the official Watch raises 410 itself (no silent internal retry).
            for ev in w.stream(self.client.core.list_namespaced_pod, self.namespace,
                               label_selector=self.selector or None, resource_version=self.resource_version,
                               timeout_seconds=server_seconds, allow_watch_bookmarks=True,
                               _request_timeout=(CONNECT_TIMEOUT, read)):
                if self._stopping.is_set():
                    return
                # raw_object: the pod as JSON (the Watch turns an ERROR event, e.g. 410, into an ApiException)
                obj = ev.get("raw_object") or {}
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if rv:
                    self.resource_version = rv
                kind = ev.get("type")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield PodEvent(kind, self.resource_version, pod=obj)
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    return
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone(str(exc.reason)) from exc
            raise
        finally:
            self._watch = None
            w.stop()


def pods_by_name(events: Iterable[PodEvent]) -> Iterator[dict[str, Pod]]:
    """The matching pods by name after each event of a :class:`PodWatch` (a ``LIST`` replaces them all, a
    ``DELETED`` removes one); one dict, updated in place.

    Example:
        >>> for pods in pods_by_name(lab.watch_pods("app=details", timeout=30)):
        ...     if len(pods) == 3 and all(is_pod_ready(p) for p in pods.values()):
        ...         break
    """
    pods: dict[str, Pod] = {}
    for event in events:
        if event.type == "LIST":
            pods.clear()
            pods.update((str(p["metadata"]["name"]), p) for p in event.pods)
        elif event.type == "DELETED":
            pods.pop(str(event.pod["metadata"]["name"]), None)
        else:
            pods[str(event.pod["metadata"]["name"])] = event.pod
        yield pods


# ------------------------------------------------------------------------------------------------ the client


T = TypeVar("T")


def _unless_missing(call: Callable[[], T], what: str) -> tuple[bool, T | None]:
    """``(True, call())``, or ``(False, None)`` when the API answers 404 (it does not exist, or is already gone);
    any other failure becomes a labkit error about ``what``."""
    from kubernetes.client.exceptions import ApiException

    try:
        return True, call()
    except ApiException as exc:
        if exc.status == 404:
            return False, None
        translate(exc, what)
    except Exception as exc:
        translate(exc, what)


@dataclass
class Client:
    """A connection to one cluster and one lab namespace, with kubectl's basic verbs.

    Build one with :func:`connect` (or :func:`labkit.connect`, which builds a :class:`~labkit.lab.Lab`).
    """

    api_client: ApiClient
    exec_client: ApiClient
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

        # Any: labkit reads most answers raw (_preload_content=False), which the client's own types do not describe.
        self.core: Any = client.CoreV1Api(self.api_client)
        self.apps: Any = client.AppsV1Api(self.api_client)
        self._exec_core: Any = client.CoreV1Api(self.exec_client)

    # -- description
    @property
    def is_sandbox(self) -> bool:
        return self.sandbox is not None

    def describe(self) -> dict[str, object]:
        return {"cluster": self.server, "context": self.context, "namespace": self.namespace,
                "sandbox": self.is_sandbox, "kubeconfig": self.kubeconfig,
                "productpage_url": self.productpage_url}

    def fresh(self) -> Client:
        """Another Client on the same cluster with its own ApiClients (for a thread of its own); the caller
        closes it. Without a kubeconfig to build one from, this Client itself."""
        if not self.kubeconfig:
            return self
        from kubernetes import config

        ctx = self.context or None
        return Client(config.new_client_from_config(config_file=self.kubeconfig, context=ctx),
                      config.new_client_from_config(config_file=self.kubeconfig, context=ctx),
                      namespace=self.namespace, context=self.context, kubeconfig=self.kubeconfig,
                      sandbox=self.sandbox, server=self.server, productpage_url=self.productpage_url)

    def close(self) -> None:
        self.api_client.close()
        self.exec_client.close()

    # -- pods
    def list_pods(self, selector: str | Mapping[str, str] | None = None, *,
                  namespace: str | None = None) -> PodList:
        """The matching pods (API JSON) and the list's resourceVersion."""
        text = selector_text(selector)
        ns = namespace or self.namespace
        try:
            resp = self.core.list_namespaced_pod(ns, label_selector=text or None, _preload_content=False,
                                                 _request_timeout=(CONNECT_TIMEOUT, 60))
        except Exception as exc:
            translate(exc, f"listing pods{f' matching {text!r}' if text else ''} in namespace {ns}")
        doc = json.loads(resp.data)
        return PodList(list(doc.get("items") or []), str((doc.get("metadata") or {}).get("resourceVersion") or ""))

    def watch_pods(self, selector: str | Mapping[str, str] | None = None, *, namespace: str | None = None,
                   timeout: float | None = None, resource_version: str = "", retry: bool = False,
                   watch_seconds: int = WATCH_SECONDS, read_timeout: float | None = None) -> PodWatch:
        """A :class:`PodWatch` of the matching pods (list, watch, relist on 410), ending after ``timeout`` s.

        Example:
            >>> for event in lab.watch_pods("app=details", timeout=10):
            ...     print(event.type, event.pod.get("metadata", {}).get("name"))
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        return PodWatch(self, selector_text(selector), namespace, deadline=deadline,
                        resource_version=resource_version, retry=retry, watch_seconds=watch_seconds,
                        read_timeout=read_timeout)

    def pods(self, selector: str | Mapping[str, str] | None = None, *,
             namespace: str | None = None) -> pd.DataFrame:
        """The pods matching ``selector`` as a DataFrame with the columns of ``kubectl get pods`` and more.

        Columns (:data:`POD_COLUMNS`): name, ready ("1/1"), status (as kubectl computes it, e.g.
        CrashLoopBackOff, Error, Terminating), restarts, age, app, version, ip, node, namespace, containers,
        ready_containers, created. An empty frame keeps these columns.

        Example:
            >>> lab.pods("app=details")[["name", "status", "restarts"]]
        """
        return pods_frame(self.list_pods(selector, namespace=namespace).items)

    def pod_names(self, selector: str | Mapping[str, str] | None = None, *, namespace: str | None = None,
                  require: bool = False) -> list[str]:
        """Names of the matching pods, sorted like kubectl sorts them (by name)."""
        text = selector_text(selector)
        names = sorted(_name(p) for p in self.list_pods(text, namespace=namespace).items)
        if require and not names:
            raise self.no_match(text, namespace)
        return names

    def no_match(self, selector: str, namespace: str | None = None) -> NoPodsMatch:
        """The error for a selector that matches nothing, listing the labels that do exist."""
        ns = namespace or self.namespace
        present: set[str] = set()
        for p in self.list_pods(namespace=ns).items:
            for k, v in (p["metadata"].get("labels") or {}).items():
                if k != "pod-template-hash":
                    present.add(f"{k}={v}")
        listed = ", ".join(sorted(present)) or "none (the namespace has no pods)"
        return NoPodsMatch(f"No pods match {selector!r} in namespace {ns}. Labels present: {listed}.")

    def read_pod(self, name: str, namespace: str | None = None) -> Pod:
        """One pod (API JSON); a missing one raises :class:`~labkit.errors.NotFound` listing the pods there."""
        from kubernetes.client.exceptions import ApiException

        ns = namespace or self.namespace
        try:
            resp = self.core.read_namespaced_pod(name, ns, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                names = [_name(p) for p in self.list_pods(namespace=ns).items]
                hint = f"Pods there: {', '.join(names[:15])}" if names else "The namespace has no pods."
                raise NotFound(f'pod "{name}" not found in namespace {ns}. {hint}', status=404,
                               reason="NotFound", body=exc.body) from exc
            translate(exc, f'pod "{name}" in namespace {ns}')
        except Exception as exc:
            translate(exc, f'pod "{name}" in namespace {ns}')
        return dict(json.loads(resp.data))

    def delete_pod(self, name: str, *, namespace: str | None = None, grace_period: int | None = None) -> bool:
        """Delete a pod (``kubectl delete pod``); False when it was already gone."""
        ns = namespace or self.namespace
        return _unless_missing(
            lambda: self.core.delete_namespaced_pod(name, ns, grace_period_seconds=grace_period,
                                                    _preload_content=False),
            f'deleting pod "{name}" in namespace {ns}')[0]

    def container_for(self, pod: str, container: str | None = None, *, namespace: str | None = None) -> str:
        """The container an exec should use: the given one, the pod's default-container annotation, or the only one.

        Raises:
            LabkitError: the pod has several containers and no default: name one.
        """
        ns = namespace or self.namespace
        key = (ns, pod)
        if key not in self._containers:
            obj = self.read_pod(pod, ns)
            names = [str(c["name"]) for c in obj["spec"]["containers"]]
            default = str((obj["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER, ""))
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
        """Run ``command`` in ``pod`` (``kubectl exec``) and return an :class:`~labkit.records.ExecResult`.

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
                still_open = bool(ws.is_open())
                out = str(ws.read_channel(1))
                err = str(ws.read_channel(2))
                if still_open:
                    ws.close()
                    result = ExecResult(args, -1, out, err, pod, cname, time.perf_counter() - started, ns)
                    raise ExecTimeout(f"`{shlex.join(args)}` in pod {pod} did not finish within {timeout} s",
                                      result)
                code, failed = exec_exit_status(str(ws.read_channel(3)))
                err += failed
            finally:
                if ws.is_open():
                    ws.close()
        result = ExecResult(args, int(code if code is not None else -1), out, err, pod, cname,
                            time.perf_counter() - started, ns)
        return result.check_returncode() if check else result

    def _exec_error(self, exc: Exception, pod: str, ns: str, container: str, args: list[str]) -> NoReturn:
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
            items = [p for p in self.list_pods(sel).items if kubestatus.is_pod_ready(p)]
            if items:
                self._tester = sorted(_name(p) for p in items)[0]
                return self._tester
        apps = " or ".join(f"app={a}" for a in TESTER_APPS)
        raise NoPodsMatch(f"No running tester pod ({apps}) in namespace {self.namespace}. Deploy one "
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
        return bytes(resp.data).decode("utf-8", "replace")

    def scale(self, deployment: str, replicas: int, *, namespace: str | None = None) -> dict[str, object]:
        """Scale a deployment (``kubectl scale deploy NAME --replicas N``); returns the before/after counts."""
        if replicas < 0:
            raise LabkitError(f"replicas must be 0 or more, not {replicas}")
        ns = namespace or self.namespace
        try:
            before = int(self.apps.read_namespaced_deployment_scale(deployment, ns).spec.replicas or 0)
            self.apps.patch_namespaced_deployment_scale(deployment, ns, {"spec": {"replicas": replicas}})
        except Exception as exc:
            translate(exc, f'deployment "{deployment}" in namespace {ns}',
                      hint="List them with `kubectl get deploy`.")
        return {"deployment": deployment, "namespace": ns, "before": before, "after": replicas}

    def rollout_restart(self, deployment: str, *, namespace: str | None = None, wait: bool = True,
                        timeout: float = 120.0) -> dict[str, object]:
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
        generation = int(dep.metadata.generation or 0)
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
                raise WaitTimeout(f'deployment "{deployment}" did not finish rolling out within {timeout:g} s; '
                                  "see lab.pods() and `kubectl rollout status`")
        return {"deployment": deployment, "namespace": ns, "restartedAt": stamp,
                "seconds": round(time.monotonic() - started, 2)}

    # -- any object, by its API path (provisioning uses these; kinds without a verb here)
    def api_call(self, method: str, path: str, *, body: object = None, content_type: str | None = None,
                 query: Sequence[tuple[str, str]] = (), timeout: float = 60.0) -> dict[str, Any]:
        """One request to the API server with this Client's credentials; the JSON answer.

        Raises:
            kubernetes.client.ApiException: a non-2xx answer (callers translate it with what they were doing).
        """
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(method=method, resource_path=path, query_params=list(query),
                                                  header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = self.api_client.call_api(*request, _request_timeout=(CONNECT_TIMEOUT, timeout))
        data = resp.read() or b""
        if not 200 <= int(resp.status) <= 299:
            raise ApiException(http_resp=resp, body=data.decode("utf-8", "replace"))
        return dict(json.loads(data)) if data else {}

    def read_object(self, path: str, *, what: str = "") -> dict[str, Any] | None:
        """``GET`` one object by its API path (``/api/v1/namespaces/team``); None when it does not exist."""
        found, obj = _unless_missing(lambda: self.api_call("GET", path), what or path)
        return obj if found else None

    def apply_object(self, path: str, obj: Mapping[str, Any], *, field_manager: str = "labkit",
                     what: str = "") -> dict[str, Any]:
        """Server-side apply of ``obj`` at its API path (``kubectl apply --server-side --force-conflicts``)."""
        try:
            return self.api_call("PATCH", path, body=dict(obj), content_type="application/apply-patch+yaml",
                                 query=[("fieldManager", field_manager), ("force", "true")])
        except Exception as exc:
            translate(exc, f"applying {what or path}")

    def delete_object(self, path: str, *, what: str = "") -> bool:
        """``DELETE`` one object by its API path; False when it was already gone."""
        return _unless_missing(lambda: self.api_call("DELETE", path), f"deleting {what or path}")[0]

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

    def __repr__(self) -> str:
        kind = "embedded sandbox" if self.is_sandbox else "cluster"
        return f"<{type(self).__name__} {kind} {self.server} context={self.context!r} namespace={self.namespace!r}>"

    def _repr_html_(self) -> str:
        kind = "embedded sandbox" if self.is_sandbox else "Kubernetes cluster"
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td><code>{html.escape(str(v))}</code></td></tr>"
                       for k, v in self.describe().items() if v not in (None, ""))
        return f"<div><b>labkit {type(self).__name__}</b> · {kind}<table>{rows}</table></div>"


def _status_text(exc: Any) -> str:
    """The API server's Status message from a client exception, even inside a websocket handshake dump."""
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
    m = re.match(r"Handshake status (\d+)", reason)
    return int(m.group(1)) if m else 0


def _resolve(doc: Mapping[str, Any], context: str | None = None) -> tuple[str, dict[str, Any], str]:
    name = context or str(doc.get("current-context", ""))
    ctxs = {c["name"]: c.get("context", {}) for c in doc.get("contexts") or []}
    if name not in ctxs:
        raise LabkitError(f"context {name!r} is not in the kubeconfig; contexts there: {', '.join(ctxs) or 'none'}")
    ctx = dict(ctxs[name])
    clusters = {c["name"]: c.get("cluster", {}) for c in doc.get("clusters") or []}
    return name, ctx, str(clusters.get(ctx.get("cluster", ""), {}).get("server", ""))


C = TypeVar("C", bound=Client)


def connect(factory: type[C], *, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
            namespace: str | None = None, sandbox_dir: str | os.PathLike[str] | None = None,
            start: bool = True, productpage_url: str | None = None) -> C:
    """Connect to the embedded sandbox (the default) or to a cluster you name, as a ``factory`` (a Client class).

    See :func:`labkit.connect` for the arguments.
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
    path = str(Path(kubeconfig).expanduser())
    if not Path(path).exists():
        raise ClusterUnreachable(f"the kubeconfig {path} does not exist; pass the path of your cluster's "
                                 "kubeconfig, or leave kubeconfig unset to use the embedded sandbox")
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise LabkitError(f"{path} is not a kubeconfig (it does not parse as one YAML document: "
                          f"{str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or doc.get("kind", "Config") != "Config" or "clusters" not in doc:
        raise LabkitError(f"{path} is not a kubeconfig (no clusters and contexts in it)")
    ctx_name, ctx, server = _resolve(doc, context)
    ns = namespace or str(ctx.get("namespace") or "default")
    api_client = config.new_client_from_config(config_file=path, context=ctx_name)
    exec_client = config.new_client_from_config(config_file=path, context=ctx_name)
    client = factory(api_client, exec_client, namespace=ns, context=ctx_name, kubeconfig=path, sandbox=sb,
                     server=server, productpage_url=productpage_url or os.environ.get("LABKIT_PRODUCTPAGE_URL"))
    try:
        client.core.read_namespace(ns, _request_timeout=10)
    except Exception as exc:
        client.close()
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, ApiException) and exc.status == 404:
            raise NotFound(f"namespace {ns} does not exist on {server}; create it (kubectl create namespace {ns}) "
                           "or pass namespace=...", status=404, reason="NotFound") from exc
        translate(exc, f"connecting to {server} (context {ctx_name})")
    return client
