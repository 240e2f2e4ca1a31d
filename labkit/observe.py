"""Watching pods while chaos runs: a timeline of what ``kubectl get pods -w`` would show, recovery times, waits.

A :class:`Recorder` lists the pods, then follows them with the client core's one pod watch
(:class:`~labkit.client.PodWatch`: resumed when the stream ends, listed again after ``410 Gone``) in a background
thread, on a Client of its own (``kubernetes.stream``, used by exec, swaps the request function of the client it
is given, so a watch must never share the Lab's). It records a :class:`~labkit.records.PodState` only when
something a user sees changes: STATUS, READY, RESTARTS, phase, the container's state or reason, or the pod
appearing or going away. Chaos actions (:mod:`labkit.chaos`) are published to every running recorder of their
cluster and namespace, so a timeline carries the moments of the kills, and :meth:`Recorder.recovery` turns both
into the recovery table (:func:`labkit.records.recovery_table`).

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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from . import kubestatus
from .client import Client, Pod, PodWatch, pods_frame, selector_text
from .errors import LabkitError, WaitTimeout
from .progress import Progress
from .records import (
    RECOVERY_COLUMNS,
    TIMELINE_COLUMNS,
    ChaosAction,
    Event,
    PodHit,
    PodState,
    RecoveryFrame,
    RecoveryRow,
    action_sinks,
    now,
    recovery_frame,
    recovery_table,
    subscribe_actions,
    typed_frame,
    unsubscribe_actions,
    utc,
    went_down,
)

if TYPE_CHECKING:
    import ipywidgets

__all__ = [
    "RECOVERY_COLUMNS",
    "TIMELINE_COLUMNS",
    "Recorder",
    "active_recorders",
    "live_pods",
    "wait_ready",
]

Selector = str | Mapping[str, str]

RESTART_COLUMNS: dict[str, str] = {"pod": "string", "app": "string", "restarts": "int64"}

# The server ends each watch after this long and the recorder resumes from the last resourceVersion; the read
# timeout is longer, so only a dead connection (not a quiet namespace) trips it.
WATCH_SECONDS = 240
_READ_TIMEOUT = WATCH_SECONDS + 30


def _rv_int(value: object) -> int | None:
    # resourceVersions are opaque strings; they are compared only for one object, and only when numeric (etcd and
    # the sandbox), to drop events replayed from before what the recorder already knows.
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def active_recorders(lab: Client) -> list[Recorder]:
    """The running recorders that watch ``lab``'s namespace on ``lab``'s cluster (chaos actions mark them)."""
    return [r for r in action_sinks() if isinstance(r, Recorder) and r.running
            and (r.lab is lab or r.wants(lab.server, lab.namespace))]


@dataclass
class _Pod:
    state: PodState
    rv: int | None
    deleted: bool = False


class Recorder:
    """Records every visible change of the pods matching a selector, from a background watch.

    Args:
        lab: the :class:`~labkit.lab.Lab` (any :class:`~labkit.client.Client`) to watch.
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

    def __init__(self, lab: Client, selector: Selector | None = None, *, namespace: str | None = None) -> None:
        self.lab = lab
        self.selector = selector_text(selector)
        self.namespace = namespace or lab.namespace
        self.actions: list[ChaosAction] = []
        self.started_at: pd.Timestamp | None = None
        self.stopped_at: pd.Timestamp | None = None
        self._states: list[PodState] = []
        self._pods: dict[str, _Pod] = {}  # by uid
        self._base_rv: int | None = None  # the last full list: events up to it are already known
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._watch: PodWatch | None = None
        self._counts = {"relists": 0, "reconnects": 0}
        self._error: BaseException | None = None
        self._listeners: list[Callable[[list[PodState]], None]] = []

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    @property
    def relists(self) -> int:
        return self._counts["relists"] + (self._watch.relists if self._watch else 0)

    @property
    def reconnects(self) -> int:
        return self._counts["reconnects"] + (self._watch.reconnects if self._watch else 0)

    @property
    def error(self) -> BaseException | None:
        return (self._watch.error if self._watch and self._watch.error else None) or self._error

    def start(self) -> Recorder:
        """List the pods and start watching. Returns self.

        The first start records every pod as ADDED. Starting a stopped recorder again lists again and records
        what changed meanwhile (restarts, new and deleted pods), so nothing is missed, only coarser.
        """
        if self.running:
            return self
        self._stopping.clear()
        self._client = self.lab.fresh()
        try:
            listed = self._client.list_pods(self.selector, namespace=self.namespace)
        except BaseException:
            self._close_client()
            raise
        self._reconcile(listed.items, listed.resource_version)
        self._watch = PodWatch(self._client, self.selector, self.namespace,
                               resource_version=listed.resource_version, retry=True,
                               watch_seconds=WATCH_SECONDS, read_timeout=_READ_TIMEOUT)
        self.started_at = now()
        self.stopped_at = None
        self._thread = threading.Thread(target=self._run, args=(self._watch,),
                                        name=f"labkit-recorder-{self.selector or 'all'}", daemon=True)
        self._thread.start()
        subscribe_actions(self)
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
        unsubscribe_actions(self)
        self._stopping.set()
        thread, watch = self._thread, self._watch
        # Stopping the watch shuts its socket down, but only once the stream has its response: retry briefly.
        for _ in range(20):
            if thread is None or not thread.is_alive():
                break
            if watch is not None:
                watch.stop()
            thread.join(0.25)
        if watch is not None:
            self._counts["relists"] += watch.relists
            self._counts["reconnects"] += watch.reconnects
            self._error = watch.error or self._error
        self._watch = None
        self._close_client()
        if self.stopped_at is None:
            self.stopped_at = now()
        with self._cond:
            self._cond.notify_all()
        return self

    def _close_client(self) -> None:
        if self._client is not None and self._client is not self.lab:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (f"<Recorder {self.selector or 'all pods'} in {self.namespace}: {state}, {len(self._states)} rows, "
                f"{len(self.actions)} actions>")

    # -- the watch thread
    def _run(self, watch: PodWatch) -> None:
        for event in watch:
            if self._stopping.is_set():
                break
            if event.type == "LIST":
                self._reconcile(event.pods, event.resource_version)
            else:
                self._apply(event.type, event.pod)

    def _reconnect(self, resource_version: str | None = None) -> None:
        """Drop the current watch connection; it resumes from the last resourceVersion, or from
        ``resource_version`` when given (for tests)."""
        if self._watch is not None:
            self._watch.reconnect(resource_version)

    def _reconcile(self, items: list[Pod], rv: str) -> None:
        """Turn the difference between a full list and what is known into states."""
        when = now()
        new: list[PodState] = []
        with self._cond:
            self._base_rv = _rv_int(rv)
            seen: set[str] = set()
            for pod in items:
                meta = pod["metadata"]
                uid = str(meta.get("uid") or meta["name"])
                seen.add(uid)
                known = self._pods.get(uid)
                if known is not None and known.deleted:
                    continue
                state = PodState.of(pod, "ADDED" if known is None else "MODIFIED", when)
                if known is None:
                    self._pods[uid] = _Pod(state, _rv_int(meta.get("resourceVersion")))
                    new.append(state)
                    continue
                known.rv = _rv_int(meta.get("resourceVersion"))
                if state.changed_from(known.state):
                    known.state = state
                    new.append(state)
            # Gone since we last knew (a restarted recorder, or a watch that expired): DELETED states.
            for uid, known in self._pods.items():
                if uid not in seen and not known.deleted:
                    known.deleted = True
                    known.state = known.state.at(when, "DELETED")
                    new.append(known.state)
            self._states.extend(new)
            self._cond.notify_all()
        self._notify(new)

    def _apply(self, etype: Event, pod: Pod) -> None:
        """Turn one watch event into a state when it changes something visible."""
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or meta.get("name"))
        rv = _rv_int(meta.get("resourceVersion"))
        with self._cond:
            known = self._pods.get(uid)
            if known is not None:
                if known.deleted or (rv is not None and known.rv is not None and rv <= known.rv):
                    return  # replayed from before what we know (a resumed or re-listed watch)
                known.rv = rv
                state = PodState.of(pod, "MODIFIED" if etype == "ADDED" else etype)
                if etype == "DELETED":
                    known.deleted = True
                elif not state.changed_from(known.state):
                    return
                known.state = state
            else:
                if etype == "DELETED" or (rv is not None and self._base_rv is not None and rv <= self._base_rv):
                    return  # never seen alive, or replayed from before the list (which showed what is left of it)
                state = PodState.of(pod, "ADDED")
                self._pods[uid] = _Pod(state, rv)
            self._states.append(state)
            self._cond.notify_all()
        self._notify([state])

    def sync(self, timeout: float = 2.0) -> Recorder:
        """Wait until the timeline has caught up with the cluster as it is now; returns self.

        It lists the pods and waits (on the watch, up to ``timeout``) until every change up to that list has
        arrived; whatever is still missing then is taken from the list. :meth:`stop` does this first, so a
        stopped recorder's final state matches the API server (e.g. RESTARTS of ``kubectl get pods``).
        """
        if self._client is None:
            return self
        listed = self._client.list_pods(self.selector, namespace=self.namespace)
        want = {str(p["metadata"].get("uid") or p["metadata"]["name"]): _rv_int(p["metadata"].get("resourceVersion"))
                for p in listed.items}
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._caught_up(want):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.running:
                    break
                self._cond.wait(remaining)
            caught_up = self._caught_up(want)
        if not caught_up:
            self._reconcile(listed.items, listed.resource_version)
        return self

    def _caught_up(self, want: dict[str, int | None]) -> bool:
        for uid, rv in want.items():
            known = self._pods.get(uid)
            if known is None or known.deleted or (rv is not None and (known.rv is None or known.rv < rv)):
                return False
        return all(uid in want for uid, p in self._pods.items() if not p.deleted)

    # -- listeners (live widgets)
    def subscribe(self, callback: Callable[[list[PodState]], None]) -> Callable[[], None]:
        """Call ``callback(new_states)`` from the watch thread after each change; returns an unsubscribe function."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def _notify(self, states: list[PodState]) -> None:
        if not states:
            return
        for callback in list(self._listeners):
            try:
                callback(states)
            except Exception as exc:  # a broken widget must not stop the recording
                self._error = exc

    # -- chaos marks
    def wants(self, server: str, namespace: str) -> bool:
        """Whether chaos actions on ``server`` in ``namespace`` belong on this recorder's timeline."""
        return self.running and self.lab.server == server and self.namespace == namespace

    def mark(self, action: ChaosAction) -> None:
        """Add a chaos action to :attr:`actions` (chaos functions do this for every running recorder)."""
        with self._cond:
            if not any(a is action for a in self.actions):
                self.actions.append(action)
            self._cond.notify_all()

    # -- results
    @property
    def states(self) -> list[PodState]:
        """Every recorded state, oldest first."""
        with self._cond:
            return list(self._states)

    @property
    def timeline(self) -> pd.DataFrame:
        """Every recorded change, oldest first, with :data:`TIMELINE_COLUMNS` (fixed even when empty)."""
        return typed_frame([s.row() for s in self.states], TIMELINE_COLUMNS)

    def _current(self) -> list[PodState]:
        with self._cond:
            return sorted((p.state for p in self._pods.values() if not p.deleted), key=lambda s: s.pod)

    def current(self) -> pd.DataFrame:
        """The latest state of every pod that still exists, by pod name (:data:`TIMELINE_COLUMNS`)."""
        return typed_frame([s.row() for s in self._current()], TIMELINE_COLUMNS)

    def restart_counts(self) -> pd.DataFrame:
        """Restarts per pod now (pod, app, restarts), sorted by pod; deleted pods are left out.

        Example:
            >>> plots.restart_counts(rec.restart_counts())
        """
        return typed_frame([{"pod": s.pod, "app": s.app, "restarts": s.restarts} for s in self._current()],
                           RESTART_COLUMNS)

    def saw_status(self, status: str, pod: str | None = None) -> bool:
        """Whether a pod (or ``pod``) showed kubectl STATUS ``status`` (e.g. ``"CrashLoopBackOff"``) at some point."""
        return any(s.status == status and (pod is None or s.pod == pod) for s in self.states)

    def wait_for(self, predicate: Callable[[PodState], bool], timeout: float = 30.0, *,
                 since: pd.Timestamp | datetime | str | None = None, what: str = "") -> PodState:
        """Block until a pod's state satisfies ``predicate``; return that :class:`~labkit.records.PodState`.

        Without ``since``, the current state of every pod is checked first, then each new state as it arrives.
        With ``since``, every state recorded from that time on counts, so a short-lived status is not missed.

        Args:
            predicate: called with a state, e.g. ``lambda s: s.status == "CrashLoopBackOff"``.
            timeout: seconds before :class:`~labkit.errors.WaitTimeout`.
            since: also consider states recorded at or after this time.
            what: words for the timeout message ("details-v1-x to restart").

        Example:
            >>> rec.wait_for(lambda s: s.app == "details" and s.status == "CrashLoopBackOff", 20)
        """
        return self._wait(lambda states: next((s for s in states if predicate(s)), None), timeout, since=since,
                          what=what or "a pod state that satisfies the predicate")

    def _wait(self, check: Callable[[list[PodState]], PodState | None], timeout: float, *,
              since: pd.Timestamp | datetime | str | None, what: str) -> PodState:
        deadline = time.monotonic() + timeout
        cutoff = utc(since) if since is not None else None
        with self._cond:
            if cutoff is None:
                found = check([p.state for p in self._pods.values() if not p.deleted])
                if found is not None:
                    return found
                index = len(self._states)
            else:
                index = next((i for i, s in enumerate(self._states) if s.time >= cutoff), len(self._states))
            while True:
                if index < len(self._states):
                    fresh, index = self._states[index:], len(self._states)
                    found = check(fresh)
                    if found is not None:
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(f"Timed out after {timeout:g} s waiting for {what} (watching "
                                      f"{self.selector or 'all pods'} in namespace {self.namespace}). "
                                      f"Pods now: {self._describe_locked()}.")
                if not self.running:
                    raise LabkitError(f"the recorder of {self.selector or 'all pods'} is not running, so nothing "
                                      "new will arrive; start it with rec.start() (or use it as `with` block)")
                self._cond.wait(min(remaining, 1.0))

    def wait_restarts(self, pod: str, n: int = 1, timeout: float = 30.0) -> PodState:
        """Block until ``pod``'s RESTARTS reaches ``n`` (or more); return its state.

        Example:
            >>> rec.wait_restarts("details-v1-6d86fd9949-fr59p", 1)
        """
        self._require_pod(pod)
        return self.wait_for(lambda s: s.pod == pod and s.restarts >= n, timeout,
                             what=f"pod {pod} to reach {n} restart{'s' if n != 1 else ''}")

    def _require_pod(self, pod: str) -> None:
        with self._cond:
            known = sorted({p.state.pod for p in self._pods.values()})
        if pod not in known:
            raise LabkitError(f"the recorder has not seen pod {pod!r} (it watches {self.selector or 'all pods'} in "
                              f"namespace {self.namespace}); pods it knows: {', '.join(known) or 'none'}")

    def wait_down(self, hit: PodHit, timeout: float = 15.0) -> PodState:
        """Block until the pod ``hit`` names is seen down after the hit (:func:`~labkit.records.went_down`)."""
        self._require_pod(hit.pod)
        with self._cond:
            before = [s for s in self._states if s.pod == hit.pod and s.time < hit.time]
        restarts = before[-1].restarts if before else None
        return self.wait_for(lambda s: s.pod == hit.pod and went_down(s, restarts), timeout, since=hit.time,
                             what=f"pod {hit.pod} to go down")

    def _describe_locked(self) -> str:
        states = sorted((p.state for p in self._pods.values() if not p.deleted), key=lambda s: s.pod)
        return "; ".join(f"{s.pod} {s.status} ready={s.ready} restarts={s.restarts}" for s in states) or "none"

    def recovery_rows(self, actions: list[ChaosAction] | None = None) -> list[RecoveryRow]:
        """The recovery table (:func:`~labkit.records.recovery_table`) as records, for ``actions`` (default all)."""
        with self._cond:
            states = list(self._states)
            chosen = list(self.actions) if actions is None else list(actions)
        return recovery_table(states, chosen)

    def recovery(self) -> RecoveryFrame:
        """Per pod hit by a chaos action: when it went down, when it was Ready again, and the seconds in between.

        A kill's pod recovers when that same pod (its container restarted) is Ready again; a deleted pod recovers
        when its replacement (a new pod of the same owner, created after the action) is Ready. Dry runs and kills
        that did not land (the container was already down) are left out. Columns:
        :data:`~labkit.records.RECOVERY_COLUMNS`.

        Example:
            >>> rec.recovery()[["pod", "recovery_s"]]
        """
        return recovery_frame(self.recovery_rows())

    def wait_recovered(self, action: ChaosAction, *, timeout: float = 180.0,
                       progress: bool = True) -> RecoveryFrame:
        """Block until every pod ``action`` hit is back: seen down, then its container restarted and Ready (a kill),
        or its replacement Ready (a delete). Returns the recovery table of that action.

        Waiting for "all Ready" right after a kill can return at once, before the kubelet has even noticed the
        dead process; this waits until the recorder has seen each pod go down and come back.

        Example:
            >>> action = lab.kill("app=details", "ruby", mode="all")
            >>> rec.wait_recovered(action)
        """
        for hit in action.landed:
            self._require_pod(hit.pod)
        self.mark(action)  # an action from before the recorder ran, or on another cluster object
        hits = len(action.landed)
        bar = Progress(progress)
        started = time.monotonic()
        rows: list[RecoveryRow] = []

        def check(_new: list[PodState]) -> PodState | None:
            nonlocal rows
            rows = self.recovery_rows([action])
            back = sum(r.recovered for r in rows)
            bar.update(f"waiting for the {hits} pod{'s' if hits != 1 else ''} hit at {action.time:%H:%M:%S} to "
                       f"recover: {back}/{hits} back, {time.monotonic() - started:.1f} s")
            return _new[-1] if back >= hits and _new else None

        try:
            if hits:
                # every state since the action counts; the last one stands for "done"
                self._wait(lambda states: check(states) if states else None, timeout, since=action.time,
                           what=f"the pods hit by {action.summary()} to be Ready again")
        finally:
            rows = self.recovery_rows([action])
            ready = [r.ready_at for r in rows if r.ready_at is not None]
            last = f", the last {(max(ready) - action.time).total_seconds():.1f} s after the {action.action}" \
                if ready else ""
            bar.close(f"{len(ready)}/{hits} pod{'s' if hits != 1 else ''} recovered{last}")
        return recovery_frame(rows)

    def _repr_html_(self) -> str:
        state = "running" if self.running else "stopped"
        head = (f"<div><b>Recorder</b> · {html.escape(self.selector or 'all pods')} in "
                f"{html.escape(self.namespace)} · {state} · {len(self._states)} changes · "
                f"{len(self.actions)} chaos actions</div>")
        return head + _pods_table_html(self._current())


# -- waiting for readiness

def _settled(pod: Pod) -> bool:
    """Ready and staying: the Ready condition holds and the pod is not being deleted (or it completed)."""
    if (pod.get("status") or {}).get("phase") == "Succeeded":
        return True
    return kubestatus.is_pod_ready(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def wait_ready(lab: Client, selector: Selector | None = None, *, timeout: float = 120.0,
               progress: bool = True, namespace: str | None = None) -> pd.DataFrame:
    """Block until every pod matching ``selector`` is Ready (and none is terminating); return them.

    It lists the pods, then watches them from the list's resourceVersion under a deadline (no polling), and
    lists again after ``410 Gone`` (the client core's :class:`~labkit.client.PodWatch`). Like
    ``kubectl wait --for=condition=Ready pod -l ...``, plus a progress line.

    Args:
        lab: the lab.
        selector: a label selector; None waits for every pod of the namespace.
        timeout: seconds before :class:`~labkit.errors.WaitTimeout`, which names the pods still not Ready.
        progress: show a progress line (a widget in Jupyter, one rewritten stderr line elsewhere).
        namespace: default the lab's.

    Returns:
        The pods as :meth:`Lab.pods` shows them (:data:`~labkit.client.POD_COLUMNS`).

    Raises:
        NoPodsMatch: nothing matches ``selector``.
        WaitTimeout: some pods were not Ready in time.

    Example:
        >>> observe.wait_ready(lab, "app=details", timeout=60)
    """
    sel = selector_text(selector)
    ns = namespace or lab.namespace
    started = time.monotonic()
    bar = Progress(progress)
    what = f"pods{f' matching {sel!r}' if sel else ''} in namespace {ns}"
    pods: dict[str, Pod] = {}

    def done() -> bool:
        return bool(pods) and all(_settled(p) for p in pods.values())

    def show() -> None:
        ready = sum(_settled(p) for p in pods.values())
        waiting = [f"{n} {kubestatus.pod_status(p)}" for n, p in sorted(pods.items()) if not _settled(p)]
        bar.update(f"waiting for {what} to be Ready: {ready}/{len(pods)} ready, {time.monotonic() - started:.1f} s"
                   + (f" ({', '.join(waiting[:3])}{', ...' if len(waiting) > 3 else ''})" if waiting else ""))

    try:
        for event in lab.watch_pods(sel, namespace=ns, timeout=timeout):
            if event.type == "LIST":
                pods = {str(p["metadata"]["name"]): p for p in event.pods}
                if not pods and not event.relist:
                    raise lab.no_match(sel, ns)
            elif event.type == "DELETED":
                pods.pop(str(event.pod["metadata"]["name"]), None)
            else:
                pods[str(event.pod["metadata"]["name"])] = event.pod
            if done():
                break
            show()
    except BaseException:
        bar.close()
        raise
    elapsed = time.monotonic() - started
    if done():
        bar.close(f"{len(pods)} {what} Ready after {elapsed:.1f} s")
        return pods_frame(list(pods.values()))
    bar.close(f"timed out after {elapsed:.1f} s")
    late = [f"{n} ({kubestatus.pod_status(p)}, ready {'/'.join(map(str, kubestatus.pod_ready(p)))}, "
            f"restarts {kubestatus.summarize_pod(p).restarts})" for n, p in sorted(pods.items()) if not _settled(p)]
    raise WaitTimeout(f"Timed out after {timeout:g} s waiting for {what} to be Ready. Not Ready: "
                      f"{', '.join(late) or 'none left (all were deleted)'}. Look with lab.pods({sel!r}) and "
                      "lab.logs(pod, previous=True), or wait longer (timeout=...).")


# -- a live pods table

def _pods_table_html(states: list[PodState]) -> str:
    colours = {"Running": "#2e7d32", "Error": "#c62828", "CrashLoopBackOff": "#c62828", "Terminating": "#ef6c00"}
    body = []
    current = now()
    for s in states:
        colour = colours.get(s.status, "#ef6c00" if not s.ready else "#333")
        body.append(f"<tr><td><code>{html.escape(s.pod)}</code></td><td>{'yes' if s.ready else 'no'}</td>"
                    f"<td style='color:{colour}'><b>{html.escape(s.status)}</b></td>"
                    f"<td style='text-align:right'>{s.restarts}</td>"
                    f"<td style='color:#777'>{kubestatus.human_duration((current - s.time).total_seconds())}</td></tr>")
    head = ("<tr><th style='text-align:left'>NAME</th><th>READY</th><th style='text-align:left'>STATUS</th>"
            "<th>RESTARTS</th><th style='text-align:left'>CHANGED</th></tr>")
    return f"<table style='font-family:monospace'>{head}{''.join(body)}</table>"


def _make_live_widget_class() -> type:
    import ipywidgets

    class LivePods(ipywidgets.HTML):  # ipywidgets has no types: see the mypy override in pyproject.toml
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
            self.value = _pods_table_html(self.recorder._current())

        def _on_rows(self, states: list[PodState]) -> None:
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
            if self.recorder.running:
                self.recorder.sync()
            self.refresh()
            # A redraw from the watch's thread may already have set this very value: the kernel then sends no
            # change, and the saved state would keep the drawing before it. Send it again, from this cell.
            self.send_state("value")
            if self._owns:
                self.recorder.stop()

    return LivePods


_LIVE_CLASS: list[type] = []


def live_pods(lab: Client, selector: Selector | None = None, *,
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
    return widget
