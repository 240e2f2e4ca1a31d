"""Watching pods while chaos runs: a timeline of what ``kubectl get pods -w`` would show, recovery times, waits.

A :class:`Recorder` lists the pods, then watches them from the list's ``resourceVersion`` in a background thread
with its own ``ApiClient`` (``kubernetes.stream``, used by exec, swaps the request function of the client it is
given, so a watch must never share the Lab's). It restarts the watch when the stream ends, re-lists after
``410 Gone``, and records a row only when something a user sees changes: STATUS, READY, RESTARTS, phase, the
container's state or reason, or the pod appearing or going away. Chaos actions (:mod:`labkit.chaos`) mark every
running recorder of their lab, so a timeline carries the moments of the kills.

Example:
    >>> from labkit import chaos, observe
    >>> with observe.Recorder(lab, "app=details") as rec:
    ...     chaos.kill(lab, "app=details")
    ...     observe.wait_ready(lab, "app=details")
    >>> rec.timeline[["time", "pod", "status", "ready", "restarts"]]
    >>> rec.recovery()
"""

from __future__ import annotations

import contextlib
import html
import json
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import kubestatus
from .errors import LabkitError, WaitTimeout, translate
from .lab import pods_frame, selector_text
from .progress import Progress

if TYPE_CHECKING:
    import ipywidgets
    from kubernetes import client as k8s

    from .chaos import ChaosAction
    from .lab import Lab

__all__ = [
    "RECOVERY_COLUMNS",
    "TIMELINE_COLUMNS",
    "Recorder",
    "active_recorders",
    "live_pods",
    "wait_ready",
]

TIMELINE_COLUMNS: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    "pod": "string",
    "app": "string",
    "event": "string",
    "phase": "string",
    "ready": "bool",
    "status": "string",
    "restarts": "int64",
    "reason": "string",
    "exit_code": "Int64",
    "state": "string",
}
"""The columns of :attr:`Recorder.timeline`, in order, with their dtypes (fixed even when empty).

``time`` is when labkit received the change; ``event`` is ADDED, MODIFIED or DELETED; ``status`` is kubectl's
STATUS column (Running, Error, CrashLoopBackOff, Terminating...); ``reason`` the container's waiting or terminated
reason; ``exit_code`` the exit code of the last termination when the container is down; ``state`` is running,
waiting, terminated or "" (no container status yet).
"""

RECOVERY_COLUMNS: dict[str, str] = {
    "pod": "string",
    "action_time": "datetime64[ns, UTC]",
    "down_at": "datetime64[ns, UTC]",
    "ready_at": "datetime64[ns, UTC]",
    "recovery_s": "float64",
    "restarts_before": "Int64",
    "restarts_after": "Int64",
}
"""The columns of :meth:`Recorder.recovery`: per pod hit by a chaos action, from the action to Ready again."""

RESTART_COLUMNS: dict[str, str] = {"pod": "string", "app": "string", "restarts": "int64"}

# What a user sees of a pod; a MODIFIED event that changes none of these (a new resourceVersion, an annotation,
# a condition's timestamp) is not a row.
_VISIBLE = ("status", "ready", "restarts", "phase", "reason", "state")

# The server ends each watch after this long and the recorder resumes from the last resourceVersion; the read
# timeout is longer, so only a dead connection (not a quiet namespace) trips it.
WATCH_SECONDS = 240
_READ_TIMEOUT = WATCH_SECONDS + 30
_CONNECT_TIMEOUT = 10


def _now() -> pd.Timestamp:
    return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")


def _rv_int(value: Any) -> int | None:
    # resourceVersions are opaque strings; they are compared only for one object, and only when numeric (etcd and
    # the sandbox), to drop events replayed from before what the recorder already knows.
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _main_container(pod: dict[str, Any]) -> dict[str, Any]:
    """The container status that explains the pod's state: the first one down, or the first one."""
    statuses = [s for s in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(s, dict)]
    for cs in statuses:
        state = cs.get("state") or {}
        if "running" not in state or not cs.get("ready"):
            return cs
    return statuses[0] if statuses else {}


def pod_row(pod: dict[str, Any], event: str, when: pd.Timestamp | None = None) -> dict[str, Any]:
    """One timeline row (:data:`TIMELINE_COLUMNS`) for a pod as the API returns it (JSON)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    summary = kubestatus.summarize_pod(pod)
    cs = _main_container(pod)
    state = cs.get("state") or {}
    kind = next((k for k in ("running", "waiting", "terminated") if k in state), "")
    detail = state.get(kind) or {}
    reason = str(detail.get("reason") or "") if kind in ("waiting", "terminated") else ""
    exit_code: int | None = None
    if kind == "terminated":
        exit_code = int(detail.get("exitCode") or 0)
    elif kind == "waiting":
        # CrashLoopBackOff: the exit code that put it there is in lastState.
        last = (cs.get("lastState") or {}).get("terminated")
        if isinstance(last, dict) and last.get("exitCode") is not None:
            exit_code = int(last["exitCode"])
    return {
        "time": when if when is not None else _now(),
        "pod": str(meta.get("name", "")),
        "app": str((meta.get("labels") or {}).get("app", "")),
        "event": event,
        "phase": str(status.get("phase") or ""),
        "ready": kubestatus.is_pod_ready(pod),
        "status": summary.status,
        "restarts": int(summary.restarts),
        "reason": reason,
        "exit_code": exit_code,
        "state": kind,
    }


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for name, dtype in columns.items():
        if dtype.startswith("datetime64") and frame[name].dtype == object:
            # A column of only None/NaT (a pod not back yet) has no time zone to convert from: build it in UTC.
            frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.astype(columns)


# -- progress: one updating line on stderr, or an HTML widget in a notebook

# -- the registry that chaos actions use to mark running recorders

_RUNNING: weakref.WeakSet[Recorder] = weakref.WeakSet()
_RUNNING_LOCK = threading.Lock()


def active_recorders(lab: Lab) -> list[Recorder]:
    """The running recorders that watch ``lab``'s namespace on ``lab``'s cluster (chaos actions mark them)."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    return [r for r in running
            if r.running and (r.lab is lab or (r.lab.server == lab.server and r.namespace == lab.namespace))]


class _Gone(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass
class _Pod:
    row: dict[str, Any]
    rv: int | None
    owner: str
    first_seen: pd.Timestamp
    deleted: bool = False


class Recorder:
    """Records every visible change of the pods matching a selector, from a background watch.

    Args:
        lab: the :class:`~labkit.lab.Lab` to watch.
        selector: a label selector (``"app=details"``, ``{"app": "details"}``); None watches every pod.
        namespace: the namespace to watch (default: the lab's).

    Attributes:
        actions: the chaos actions that ran while recording (see :meth:`mark`).
        relists: how many times the watch had to list again after ``410 Gone``.
        reconnects: how many times the watch was resumed after its stream ended or broke.
        error: the last error the background watch met (it keeps retrying), or None.

    Example:
        >>> rec = observe.Recorder(lab, "app=details").start()
        >>> chaos.kill(lab, "app=details", mode="all")
        >>> rec.wait_restarts(rec.restart_counts().pod[0], 1)
        >>> rec.stop()
        >>> rec.timeline
    """

    def __init__(self, lab: Lab, selector: str | dict[str, str] | None = None, *,
                 namespace: str | None = None) -> None:
        self.lab = lab
        self.selector = selector_text(selector)
        self.namespace = namespace or lab.namespace
        self.actions: list[ChaosAction] = []
        self.relists = 0
        self.reconnects = 0
        self.error: BaseException | None = None
        self.started_at: pd.Timestamp | None = None
        self.stopped_at: pd.Timestamp | None = None
        self._rows: list[dict[str, Any]] = []
        self._pods: dict[str, _Pod] = {}  # by uid
        self._rv = ""
        self._base_rv: int | None = None  # the last full list: events up to it are already known
        self._dropping = False
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._api_client: k8s.ApiClient | None = None
        self._core: k8s.CoreV1Api | None = None
        self._watch: Any = None
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    def start(self) -> Recorder:
        """List the pods and start watching. Returns self.

        The first start records every pod as ADDED. Starting a stopped recorder again lists again and records
        what changed meanwhile (restarts, new and deleted pods), so nothing is missed, only coarser.
        """
        if self.running:
            return self
        from kubernetes import client, config

        self._stopping.clear()
        self._api_client = config.new_client_from_config(config_file=self.lab.kubeconfig,
                                                         context=self.lab.context or None)
        self._core = client.CoreV1Api(self._api_client)
        try:
            self._rv = self._relist()
        except BaseException:
            self._close_client()
            raise
        self.started_at = _now()
        self.stopped_at = None
        self._thread = threading.Thread(target=self._run, name=f"labkit-recorder-{self.selector or 'all'}",
                                        daemon=True)
        self._thread.start()
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        return self

    def stop(self, *, sync: bool = True) -> Recorder:
        """Stop watching (the timeline stays). Returns self.

        Args:
            sync: first let the timeline catch up with the cluster (see :meth:`sync`), so a change that the API
                server already has (the Ready that ended your ``wait_ready``) is not lost in flight.
        """
        if sync and self.running:
            with contextlib.suppress(LabkitError):
                self.sync(timeout=1.0)
        with _RUNNING_LOCK:
            _RUNNING.discard(self)
        self._stopping.set()
        thread = self._thread
        # Watch.stop() shuts the socket down, but only once the stream has its response: retry briefly.
        for _ in range(20):
            if thread is None or not thread.is_alive():
                break
            if self._watch is not None:
                self._watch.stop()
            thread.join(0.25)
        self._close_client()
        if self.stopped_at is None:
            self.stopped_at = _now()
        with self._cond:
            self._cond.notify_all()
        return self

    def _close_client(self) -> None:
        if self._api_client is not None:
            with contextlib.suppress(Exception):
                self._api_client.close()
        self._api_client = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Recorder {self.selector or 'all pods'} in {self.namespace}: {state}, {len(self._rows)} rows, "
                f"{len(self.actions)} actions>")

    # -- the watch thread
    def _list_raw(self) -> tuple[list[dict[str, Any]], str]:
        assert self._core is not None
        try:
            resp = self._core.list_namespaced_pod(self.namespace, label_selector=self.selector or None,
                                                  _preload_content=False,
                                                  _request_timeout=(_CONNECT_TIMEOUT, 60))
        except Exception as exc:
            what = f"pods{f' matching {self.selector!r}' if self.selector else ''} in namespace {self.namespace}"
            translate(exc, f"listing {what}")
        doc = json.loads(resp.data)
        return list(doc.get("items") or []), str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _relist(self) -> str:
        """List again and turn the difference with what is known into rows; return the list's resourceVersion."""
        items, rv = self._list_raw()
        self._reconcile(items, rv)
        return rv

    def _reconcile(self, items: list[dict[str, Any]], rv: str) -> None:
        when = _now()
        new_rows: list[dict[str, Any]] = []
        with self._cond:
            self._base_rv = _rv_int(rv)
            seen: set[str] = set()
            for pod in items:
                uid = str(pod["metadata"].get("uid") or pod["metadata"]["name"])
                seen.add(uid)
                known = self._pods.get(uid)
                if known is not None and known.deleted:
                    continue
                row = pod_row(pod, "ADDED" if known is None else "MODIFIED", when)
                if known is None:
                    self._pods[uid] = _Pod(row, _rv_int(pod["metadata"].get("resourceVersion")), _owner(pod), when)
                    new_rows.append(row)
                    continue
                known.rv = _rv_int(pod["metadata"].get("resourceVersion"))
                if _changed(known.row, row):
                    known.row = row
                    new_rows.append(row)
            # Gone since we last knew (a restarted recorder, or a watch that expired): DELETED rows.
            for uid, known in self._pods.items():
                if uid not in seen and not known.deleted:
                    known.deleted = True
                    known.row = {**known.row, "time": when, "event": "DELETED"}
                    new_rows.append(known.row)
            self._rows.extend(new_rows)
            self._cond.notify_all()
        self._notify(new_rows)

    def sync(self, timeout: float = 2.0) -> Recorder:
        """Wait until the timeline has caught up with the cluster as it is now; returns self.

        It lists the pods and waits (on the watch, up to ``timeout``) until every change up to that list has
        arrived; whatever is still missing then is taken from the list. :meth:`stop` does this first, so a
        stopped recorder's final state matches the API server (e.g. RESTARTS of ``kubectl get pods``).
        """
        if self._api_client is None:
            return self
        items, rv = self._list_raw()
        want = {str(p["metadata"].get("uid") or p["metadata"]["name"]): _rv_int(p["metadata"].get("resourceVersion"))
                for p in items}
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._caught_up(want):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    break
                self._cond.wait(remaining)
            caught_up = self._caught_up(want)
        if not caught_up:
            self._reconcile(items, rv)
        return self

    def _caught_up(self, want: dict[str, int | None]) -> bool:
        for uid, rv in want.items():
            known = self._pods.get(uid)
            if known is None or known.deleted or (rv is not None and (known.rv is None or known.rv < rv)):
                return False
        return all(uid in want for uid, p in self._pods.items() if not p.deleted)

    def _apply(self, etype: str, pod: dict[str, Any]) -> None:
        """Turn one watch event into a row when it changes something visible."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or meta.get("name"))
        rv = _rv_int(meta.get("resourceVersion"))
        row = pod_row(pod, etype)
        with self._cond:
            known = self._pods.get(uid)
            if known is not None:
                if known.deleted or (rv is not None and known.rv is not None and rv <= known.rv):
                    return  # replayed from before what we know (a resumed or re-listed watch)
                known.rv = rv
                if etype == "DELETED":
                    known.deleted = True
                elif not _changed(known.row, row):
                    return
                if etype == "ADDED":
                    row["event"] = "MODIFIED"
                known.row = row
            else:
                if etype == "DELETED" or (rv is not None and self._base_rv is not None and rv <= self._base_rv):
                    return  # never seen alive, or replayed from before the list (which showed what is left of it)
                row["event"] = "ADDED"
                self._pods[uid] = _Pod(row, rv, _owner(pod), row["time"])
            self._rows.append(row)
            self._cond.notify_all()
        self._notify([row])

    def _watch_once(self, rv: str) -> str:
        """Watch from ``rv`` until the server ends the stream; return the last resourceVersion seen.

        Raises:
            _Gone: the server answered 410 Gone (``rv`` is older than it keeps).
        """
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        assert self._core is not None
        w = watch.Watch()
        self._dropping = False
        self._watch = w
        try:
            # The official Watch raises 410 itself when timeout_seconds is given (no silent internal retry).
            for ev in w.stream(self._core.list_namespaced_pod, self.namespace,
                               label_selector=self.selector or None, resource_version=rv,
                               timeout_seconds=WATCH_SECONDS, allow_watch_bookmarks=True,
                               _request_timeout=(_CONNECT_TIMEOUT, _READ_TIMEOUT)):
                if self._stopping.is_set():
                    break
                obj = ev.get("raw_object") or {}
                new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(ev["type"], obj)
                if new_rv:
                    rv = new_rv
                    self._rv = rv
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone(str(exc.reason)) from exc
            raise
        finally:
            self._watch = None
        return rv

    def _run(self) -> None:
        rv = self._rv
        failures = 0
        while not self._stopping.is_set():
            try:
                rv = self._watch_once(self._rv or rv)
                failures = 0
            except _Gone:
                self.relists += 1
                try:
                    rv = self._rv = self._relist()
                except Exception as exc:
                    self.error = exc
                    failures += 1
            except Exception as exc:
                if self._stopping.is_set():
                    break
                if self._dropping:
                    self._dropping = False  # a connection we dropped on purpose (_reconnect): not an error
                else:
                    self.error = exc
                    failures += 1
            if self._stopping.is_set():
                break
            self.reconnects += 1
            if failures:
                # A broken connection: back off a little (the sandbox may be restarting), never busy-loop.
                self._stopping.wait(min(0.1 * 2 ** (failures - 1), 5.0))

    def _reconnect(self) -> None:
        """Drop the current watch connection; the thread resumes from the last resourceVersion (for tests)."""
        w = self._watch
        if w is not None:
            self._dropping = True
            w.stop()

    # -- listeners (live widgets)
    def subscribe(self, callback: Callable[[list[dict[str, Any]]], None]) -> Callable[[], None]:
        """Call ``callback(new_rows)`` from the watch thread after each change; returns an unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def _notify(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        for callback in list(self._listeners):
            try:
                callback(rows)
            except Exception as exc:  # a broken widget must not stop the recording
                self.error = exc

    # -- chaos marks
    def mark(self, action: ChaosAction) -> None:
        """Add a chaos action to :attr:`actions` (chaos functions do this for every running recorder)."""
        with self._cond:
            if not any(a is action for a in self.actions):
                self.actions.append(action)
            self._cond.notify_all()

    # -- results
    @property
    def timeline(self) -> pd.DataFrame:
        """Every recorded change, oldest first, with :data:`TIMELINE_COLUMNS` (fixed even when empty)."""
        with self._cond:
            rows = [dict(r) for r in self._rows]
        return _frame(rows, TIMELINE_COLUMNS)

    def current(self) -> pd.DataFrame:
        """The latest row of every pod that still exists, by pod name (:data:`TIMELINE_COLUMNS`)."""
        with self._cond:
            rows = [dict(p.row) for p in self._pods.values() if not p.deleted]
        return _frame(sorted(rows, key=lambda r: r["pod"]), TIMELINE_COLUMNS)

    def restart_counts(self) -> pd.DataFrame:
        """Restarts per pod now (pod, app, restarts), sorted by pod; deleted pods are left out.

        Example:
            >>> plots.restart_counts(rec.restart_counts())
        """
        with self._cond:
            rows = [{"pod": p.row["pod"], "app": p.row["app"], "restarts": p.row["restarts"]}
                    for p in self._pods.values() if not p.deleted]
        return _frame(sorted(rows, key=lambda r: r["pod"]), RESTART_COLUMNS)

    def saw_status(self, status: str, pod: str | None = None) -> bool:
        """Whether a pod (or ``pod``) showed kubectl STATUS ``status`` (e.g. ``"CrashLoopBackOff"``) at some point."""
        with self._cond:
            return any(r["status"] == status and (pod is None or r["pod"] == pod) for r in self._rows)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0, *,
                 since: pd.Timestamp | datetime | None = None, what: str = "") -> dict[str, Any]:
        """Block until a pod's row satisfies ``predicate``; return that row (a dict of :data:`TIMELINE_COLUMNS`).

        Without ``since``, the current row of every pod is checked first, then each new row as it arrives. With
        ``since``, every row recorded from that time on counts, so a short-lived status is not missed.

        Args:
            predicate: called with a row, e.g. ``lambda r: r["status"] == "CrashLoopBackOff"``.
            timeout: seconds before :class:`~labkit.errors.WaitTimeout`.
            since: also consider rows recorded at or after this time.
            what: words for the timeout message ("details-v1-x to restart").

        Example:
            >>> rec.wait_for(lambda r: r["app"] == "details" and r["status"] == "CrashLoopBackOff", 20)
        """
        deadline = time.monotonic() + timeout
        cutoff = None
        if since is not None:
            cutoff = pd.Timestamp(since)
            cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
        with self._cond:
            if cutoff is None:
                for p in list(self._pods.values()):
                    if not p.deleted and predicate(dict(p.row)):
                        return dict(p.row)
                index = len(self._rows)
            else:
                index = next((i for i, r in enumerate(self._rows) if r["time"] >= cutoff), len(self._rows))
            while True:
                while index < len(self._rows):
                    row = self._rows[index]
                    index += 1
                    if predicate(dict(row)):
                        return dict(row)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"Timed out after {timeout:g} s waiting for "
                                      f"{what or 'a pod row that satisfies the predicate'} (watching "
                                      f"{self.selector or 'all pods'} in namespace {self.namespace}). "
                                      f"Pods now: {self._describe_locked()}.")
                if not self.running:
                    raise LabkitError(f"the recorder of {self.selector or 'all pods'} is not running, so nothing "
                                      "new will arrive; start it with rec.start() (or use it as `with` block)")
                self._cond.wait(min(remaining, 1.0))

    def wait_restarts(self, pod: str, n: int = 1, timeout: float = 30.0) -> dict[str, Any]:
        """Block until ``pod``'s RESTARTS reaches ``n`` (or more); return its row.

        Example:
            >>> rec.wait_restarts("details-v1-6d86fd9949-fr59p", 1)
        """
        with self._cond:
            known = sorted({p.row["pod"] for p in self._pods.values()})
        if pod not in known:
            raise LabkitError(f"the recorder has not seen pod {pod!r} (it watches {self.selector or 'all pods'} in "
                              f"namespace {self.namespace}); pods it knows: {', '.join(known) or 'none'}")
        return self.wait_for(lambda r: r["pod"] == pod and r["restarts"] >= n, timeout,
                             what=f"pod {pod} to reach {n} restart{'s' if n != 1 else ''}")

    def _describe_locked(self) -> str:
        rows = sorted((p.row for p in self._pods.values() if not p.deleted), key=lambda r: r["pod"])
        return "; ".join(f"{r['pod']} {r['status']} ready={r['ready']} restarts={r['restarts']}"
                         for r in rows) or "none"

    def recovery(self) -> pd.DataFrame:
        """Per pod hit by a chaos action: when it went down, when it was Ready again, and the seconds in between.

        A kill's pod recovers when that same pod (its container restarted) is Ready again; a deleted pod recovers
        when its replacement (a new pod of the same owner, created after the action) is Ready. Dry runs and kills
        that did not land (the container was already down) are left out. Columns: :data:`RECOVERY_COLUMNS`.

        Example:
            >>> rec.recovery()[["pod", "recovery_s"]]
        """
        with self._cond:
            rows = [dict(r) for r in self._rows]
            actions = list(self.actions)
            owners = {p.row["pod"]: p.owner for p in self._pods.values()}
            first_seen = {p.row["pod"]: p.first_seen for p in self._pods.values()}
        by_pod: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_pod.setdefault(r["pod"], []).append(r)
        claimed: set[str] = set()
        out = []
        for action in sorted(actions, key=lambda a: a.time):
            if action.dry_run:
                continue
            for result in action.results:
                name = result.get("pod", "")
                if not result.get("ok") or name not in by_pod:
                    continue
                t0 = pd.Timestamp(result["time"]) if result.get("time") else action.time
                history = by_pod[name]
                before = [r for r in history if r["time"] < t0]
                restarts_before = before[-1]["restarts"] if before else None
                after = [r for r in history if r["time"] >= t0]
                down = next((r for r in after if not r["ready"] or r["status"] != "Running"
                             or r["event"] == "DELETED"
                             or (restarts_before is not None and r["restarts"] > restarts_before)), None)
                ready_row = None
                if down is not None and action.action == "delete":
                    candidates = sorted((p for p in by_pod if p not in claimed and p != name
                                         and owners.get(p) == owners.get(name) and first_seen[p] >= t0),
                                        key=lambda p: first_seen[p])
                    if candidates:
                        claimed.add(candidates[0])
                        ready_row = next((r for r in by_pod[candidates[0]] if r["ready"]
                                          and r["event"] != "DELETED"), None)
                elif down is not None:
                    ready_row = next((r for r in after if r["time"] >= down["time"] and r["ready"]
                                      and r["event"] != "DELETED"), None)
                out.append({
                    "pod": name,
                    "action_time": t0,
                    "down_at": down["time"] if down else pd.NaT,
                    "ready_at": ready_row["time"] if ready_row else pd.NaT,
                    "recovery_s": (ready_row["time"] - t0).total_seconds() if ready_row else float("nan"),
                    "restarts_before": restarts_before,
                    "restarts_after": ready_row["restarts"] if ready_row else None,
                })
        return _frame(out, RECOVERY_COLUMNS)

    def _repr_html_(self) -> str:
        state = "running" if self.running else "stopped"
        head = (f"<div><b>Recorder</b> · {html.escape(self.selector or 'all pods')} in "
                f"{html.escape(self.namespace)} · {state} · {len(self._rows)} changes · "
                f"{len(self.actions)} chaos actions</div>")
        return head + _pods_table_html(self.current())


def _owner(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or ref.get("name"))
    return str(meta.get("generateName") or meta.get("name") or "")


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old[k] != new[k] for k in _VISIBLE)


# -- waiting for readiness

def _settled(pod: dict[str, Any]) -> bool:
    """Ready and staying: the Ready condition holds and the pod is not being deleted (or it completed)."""
    if (pod.get("status") or {}).get("phase") == "Succeeded":
        return True
    return kubestatus.is_pod_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def wait_ready(lab: Lab, selector: str | dict[str, str] | None = None, *, timeout: float = 120.0,
               progress: bool = True, namespace: str | None = None) -> pd.DataFrame:
    """Block until every pod matching ``selector`` is Ready (and none is terminating); return them.

    It lists the pods, then watches them from the list's resourceVersion under a deadline (no polling), and
    lists again after ``410 Gone``. Like ``kubectl wait --for=condition=Ready pod -l ...``, plus a progress line.

    Args:
        lab: the lab.
        selector: a label selector; None waits for every pod of the namespace.
        timeout: seconds before :class:`~labkit.errors.WaitTimeout`, which names the pods still not Ready.
        progress: show a progress line (a widget in Jupyter, one rewritten stderr line elsewhere).
        namespace: default the lab's.

    Returns:
        The pods as :meth:`Lab.pods` shows them (:data:`~labkit.lab.POD_COLUMNS`).

    Raises:
        NoPodsMatch: nothing matches ``selector``.
        WaitTimeout: some pods were not Ready in time.

    Example:
        >>> observe.wait_ready(lab, "app=details", timeout=60)
    """
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    sel = selector_text(selector)
    ns = namespace or lab.namespace
    started = time.monotonic()
    deadline = started + timeout
    bar = Progress(progress)
    what = f"pods{f' matching {sel!r}' if sel else ''} in namespace {ns}"

    def listing() -> tuple[dict[str, dict[str, Any]], str]:
        try:
            resp = lab.core.list_namespaced_pod(ns, label_selector=sel or None, _preload_content=False,
                                                _request_timeout=(_CONNECT_TIMEOUT, 60))
        except Exception as exc:
            translate(exc, f"listing {what}")
        doc = json.loads(resp.data)
        items = {p["metadata"]["name"]: p for p in doc.get("items") or []}
        return items, str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def show(pods: dict[str, dict[str, Any]], *, force: bool = False) -> None:
        ready = sum(_settled(p) for p in pods.values())
        waiting = [f"{n} {kubestatus.pod_status(p)}" for n, p in sorted(pods.items()) if not _settled(p)]
        bar.update(f"waiting for {what} to be Ready: {ready}/{len(pods)} ready, {time.monotonic() - started:.1f} s"
                   + (f" ({', '.join(waiting[:3])}{', ...' if len(waiting) > 3 else ''})" if waiting else ""),
                   force=force)

    pods, rv = listing()
    if not pods:
        bar.close()
        raise lab.no_match(sel, ns)
    while not (pods and all(_settled(p) for p in pods.values())):
        show(pods)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        w = watch.Watch()
        try:
            # Server-side timeout ends the stream at the deadline; the read timeout covers sub-second rests.
            for ev in w.stream(lab.core.list_namespaced_pod, ns, label_selector=sel or None,
                               resource_version=rv, timeout_seconds=max(1, int(remaining + 0.999)),
                               allow_watch_bookmarks=True,
                               _request_timeout=(_CONNECT_TIMEOUT, max(remaining, 0.05))):
                obj = ev.get("raw_object") or {}
                meta = obj.get("metadata") or {}
                rv = str(meta.get("resourceVersion") or rv)
                if ev["type"] == "DELETED":
                    pods.pop(meta.get("name", ""), None)
                elif ev["type"] in ("ADDED", "MODIFIED"):
                    pods[meta["name"]] = obj
                show(pods)
                if (pods and all(_settled(p) for p in pods.values())) or time.monotonic() >= deadline:
                    w.stop()
                    break
        except ApiException as exc:
            if exc.status != 410:
                translate(exc, f"watching {what}")
            pods, rv = listing()
        except Exception as exc:
            # The read timeout at the deadline (urllib3 ReadTimeoutError) ends this watch; anything else is a
            # real connection problem.
            if time.monotonic() < deadline and "timed out" not in str(exc).lower():
                translate(exc, f"watching {what}")
        if not pods:
            # Everything matching went away (e.g. deleted and not yet replaced): list to see the new ones.
            pods, rv = listing()
    elapsed = time.monotonic() - started
    if pods and all(_settled(p) for p in pods.values()):
        bar.close(f"{len(pods)} {what} Ready after {elapsed:.1f} s")
        return pods_frame(list(pods.values()))
    bar.close(f"timed out after {elapsed:.1f} s")
    late = [f"{n} ({kubestatus.pod_status(p)}, ready {'/'.join(map(str, kubestatus.pod_ready(p)))}, "
            f"restarts {kubestatus.summarize_pod(p).restarts})" for n, p in sorted(pods.items()) if not _settled(p)]
    raise WaitTimeout(f"Timed out after {timeout:g} s waiting for {what} to be Ready. Not Ready: "
                      f"{', '.join(late) or 'none left (all were deleted)'}. Look with lab.pods({sel!r}) and "
                      "lab.logs(pod, previous=True), or wait longer (timeout=...).")


# -- a live pods table

def _pods_table_html(frame: pd.DataFrame) -> str:
    colours = {"Running": "#2e7d32", "Error": "#c62828", "CrashLoopBackOff": "#c62828", "Terminating": "#ef6c00"}
    body = []
    now = datetime.now(UTC)
    for r in frame.itertuples(index=False):
        colour = colours.get(str(r.status), "#ef6c00" if not r.ready else "#333")
        body.append(f"<tr><td><code>{html.escape(str(r.pod))}</code></td><td>{'yes' if r.ready else 'no'}</td>"
                    f"<td style='color:{colour}'><b>{html.escape(str(r.status))}</b></td>"
                    f"<td style='text-align:right'>{int(r.restarts)}</td>"
                    f"<td style='color:#777'>{kubestatus.human_duration((now - r.time).total_seconds())}</td></tr>")
    head = ("<tr><th style='text-align:left'>NAME</th><th>READY</th><th style='text-align:left'>STATUS</th>"
            "<th>RESTARTS</th><th style='text-align:left'>CHANGED</th></tr>")
    return f"<table style='font-family:monospace'>{head}{''.join(body)}</table>"


def _make_live_widget_class() -> type:
    import ipywidgets

    class LivePods(ipywidgets.HTML):  # type: ignore[misc]
        """A pods table (an HTML widget) kept up to date from a :class:`Recorder`; call ``stop()`` when done."""

        def setup(self, recorder: Recorder, owns: bool, min_interval: float) -> None:
            self.recorder = recorder
            self._owns = owns
            self._min_interval = min_interval
            self._lock = threading.Lock()
            self._last = 0.0
            self._timer: threading.Timer | None = None
            self._unsubscribe = recorder.subscribe(self._on_rows)
            self.refresh()

        def refresh(self) -> None:
            """Redraw now."""
            with self._lock:
                self._last = time.monotonic()
                self._timer = None
            self.value = _pods_table_html(self.recorder.current())

        def _on_rows(self, rows: list[dict[str, Any]]) -> None:
            # Throttle: at most one redraw per min_interval, and the last change always gets drawn.
            with self._lock:
                wait = self._min_interval - (time.monotonic() - self._last)
                if self._timer is not None:
                    return
                if wait > 0:
                    self._timer = threading.Timer(wait, self.refresh)
                    self._timer.daemon = True
                    self._timer.start()
                    return
            self.refresh()

        def stop(self) -> None:
            """Stop updating (and stop the recorder if this widget started it), after one last redraw.

            The last redraw happens here, in the cell that calls ``stop()``: a redraw from the watch's thread
            after the last cell ran never reaches the notebook's saved widget state, so an exported page would
            show a stale table.
            """
            self._unsubscribe()
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self.refresh()
            if self._owns:
                self.recorder.stop()

    return LivePods


_LIVE_CLASS: list[type] = []


def live_pods(lab: Lab, selector: str | dict[str, str] | None = None, *,
              recorder: Recorder | None = None, max_rate: float = 5.0) -> ipywidgets.HTML:
    """A pods table widget that updates as events arrive (at most ``max_rate`` redraws a second).

    It uses ``recorder`` when given (and leaves it running on ``stop()``), or starts its own.

    Example:
        >>> table = observe.live_pods(lab, "app=details")
        >>> table            # displays; watch it while you kill
        >>> table.stop()
    """
    if not _LIVE_CLASS:
        _LIVE_CLASS.append(_make_live_widget_class())
    owns = recorder is None
    rec = recorder if recorder is not None else Recorder(lab, selector)
    if not rec.running:
        rec.start()
    widget = _LIVE_CLASS[0]()
    widget.setup(rec, owns, 1.0 / max_rate)
    return widget  # type: ignore[no-any-return]
