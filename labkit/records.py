"""The records that cross labkit's modules, and the one place where their shared rules live.

- :class:`PodState`: one recorded state of a pod (a row of a recorder's timeline), and :func:`went_down`, the
  single definition of "the pod went down" used by chaos's verification, the recorder, the waits, the widgets and
  experiments.
- :class:`PodHit` and :class:`ChaosAction`: what a chaos action did, pod by pod.
- :class:`RecoveryRow` and :func:`recovery_table`: the one recovery table (kill or delete to Ready again).
- :data:`LABKIT_MIME` and :func:`mime_bundle`: records that carry data in a notebook also put it in their display
  bundle as JSON (``{"kind": ..., ...}``), so an exporter reads data instead of parsing reprs back.
- The chaos-action sinks: chaos publishes each action, recorders subscribe (no import between the two).
"""

from __future__ import annotations

import html
import math
import shlex
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from . import kubestatus
from .errors import ExecError

__all__ = [
    "LABKIT_MIME",
    "RECOVERY_COLUMNS",
    "TIMELINE_COLUMNS",
    "ActionSink",
    "Applied",
    "ApplyResult",
    "ChaosAction",
    "ExecResult",
    "LabelChange",
    "LabelResult",
    "PodHit",
    "PodState",
    "RecoveryFrame",
    "RecoveryRow",
    "json_safe",
    "mime_bundle",
    "publish_action",
    "recovery_frame",
    "recovery_table",
    "subscribe_actions",
    "typed_frame",
    "unsubscribe_actions",
    "went_down",
]

LABKIT_MIME = "application/vnd.labkit.record+json"
"""The MIME type of labkit's records in a notebook's display bundle: a JSON object with a ``kind`` and fields."""

Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]


def json_safe(value: object) -> Json:
    """A JSON-ready copy: timestamps as ISO 8601, NaN/NA as None, numpy scalars as numbers, records as dicts."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return None if math.isnan(number) or math.isinf(number) else number
    if isinstance(value, pd.Timedelta):
        return None if pd.isna(value) else float(value.total_seconds())
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return json_safe(value.to_dict(orient="records"))
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return str(isoformat())
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return json_safe(to_dict())
    return repr(value)


def mime_bundle(record: Mapping[str, object], plain: str, html_text: str | None = None) -> dict[str, object]:
    """A display bundle: ``text/plain``, ``text/html`` when given, and the record as :data:`LABKIT_MIME`.

    ``record`` must have a ``kind`` (``"exec"``, ``"page"``, ``"chaos"``, ``"recovery"``).
    """
    if "kind" not in record:
        raise ValueError("a labkit record needs a 'kind', e.g. {'kind': 'exec', ...}")
    bundle: dict[str, object] = {"text/plain": plain, LABKIT_MIME: json_safe(dict(record))}
    if html_text is not None:
        bundle["text/html"] = html_text
    return bundle


def typed_frame(rows: Sequence[Mapping[str, object]], columns: Mapping[str, str]) -> pd.DataFrame:
    """A DataFrame with exactly ``columns`` (name -> dtype), in order, even when ``rows`` is empty."""
    frame = pd.DataFrame([dict(r) for r in rows], columns=list(columns))
    for name, dtype in columns.items():
        if dtype.startswith("datetime64") and frame[name].dtype == object:
            # A column of only None/NaT (a pod not back yet) has no time zone to convert from: build it in UTC.
            frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame.astype(dict(columns))


def now() -> pd.Timestamp:
    """The current time in UTC, to the nanosecond."""
    return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")


def utc(value: pd.Timestamp | datetime | str) -> pd.Timestamp:
    """A timestamp in UTC (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# ------------------------------------------------------------------------------------------------ exec


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

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "exec", "pod": self.pod, "container": self.container or None, "command": list(self.args),
                  "stdout": self.stdout, "stderr": self.stderr, "returncode": self.returncode}
        return mime_bundle(record, repr(self), self._repr_html_())


# ------------------------------------------------------------------------------------------------ pod states

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
"""The columns of a recorder's timeline (one :class:`PodState` a row), in order, with their dtypes.

``time`` is when labkit received the change; ``event`` is ADDED, MODIFIED or DELETED; ``status`` is kubectl's
STATUS column (Running, Error, CrashLoopBackOff, Terminating...); ``reason`` the container's waiting or terminated
reason; ``exit_code`` the exit code of the last termination when the container is down; ``state`` is running,
waiting, terminated or "" (no container status yet).
"""

Event = Literal["ADDED", "MODIFIED", "DELETED"]

# What a user sees of a pod; a change that touches none of these (a new resourceVersion, an annotation, a
# condition's timestamp) is not a new state.
_VISIBLE = ("status", "ready", "restarts", "phase", "reason", "state")


def _main_container(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The container status that explains the pod's state: the first one down, or the first one."""
    statuses = [s for s in (pod.get("status") or {}).get("containerStatuses") or [] if isinstance(s, dict)]
    for cs in statuses:
        if "running" not in (cs.get("state") or {}) or not cs.get("ready"):
            return cs
    return statuses[0] if statuses else {}


def owner_of(pod: Mapping[str, Any]) -> str:
    """The pod's controller (its ReplicaSet's uid), or its generateName/name without one."""
    meta = pod.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or ref.get("name"))
    return str(meta.get("generateName") or meta.get("name") or "")


@dataclass(frozen=True)
class PodState:
    """One state of one pod as ``kubectl get pods -w`` would show it, at the moment labkit received it.

    Attributes:
        time: when labkit received it (UTC).
        pod, app: the pod's name and ``app`` label.
        event: ADDED, MODIFIED or DELETED.
        phase: the pod's phase.
        ready: the Ready condition.
        status: kubectl's STATUS column.
        restarts: kubectl's RESTARTS column.
        reason: the main container's waiting or terminated reason.
        exit_code: the exit code of the last termination while the container is down.
        state: the main container's state: running, waiting, terminated or "".
        uid: the pod's uid.
        owner: its controller (a ReplicaSet's uid): a deleted pod's replacement has the same one.
    """

    time: pd.Timestamp
    pod: str
    app: str
    event: Event
    phase: str
    ready: bool
    status: str
    restarts: int
    reason: str = ""
    exit_code: int | None = None
    state: str = ""
    uid: str = ""
    owner: str = ""

    @classmethod
    def of(cls, pod: Mapping[str, Any], event: Event, when: pd.Timestamp | None = None) -> PodState:
        """The state of a pod as the API returns it (JSON)."""
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        summary = kubestatus.summarize_pod(dict(pod))
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
        return cls(time=when if when is not None else now(), pod=str(meta.get("name", "")),
                   app=str((meta.get("labels") or {}).get("app", "")), event=event,
                   phase=str(status.get("phase") or ""), ready=kubestatus.is_pod_ready(dict(pod)),
                   status=summary.status, restarts=int(summary.restarts), reason=reason, exit_code=exit_code,
                   state=kind, uid=str(meta.get("uid") or meta.get("name") or ""), owner=owner_of(pod))

    def row(self) -> dict[str, object]:
        """The state as a timeline row (:data:`TIMELINE_COLUMNS`)."""
        return {name: getattr(self, name) for name in TIMELINE_COLUMNS}

    def changed_from(self, other: PodState) -> bool:
        """Whether a user would see a difference (STATUS, READY, RESTARTS, phase, reason, container state)."""
        return any(getattr(self, k) != getattr(other, k) for k in _VISIBLE)

    def at(self, when: pd.Timestamp, event: Event | None = None) -> PodState:
        """This state, received at ``when`` (and as ``event``)."""
        return replace(self, time=when, event=event or self.event)


def went_down(state: PodState, restarts_before: int | None = None) -> bool:
    """THE definition of "the pod went down": deleted, not Ready, STATUS other than Running, or RESTARTS above
    ``restarts_before`` (a restart that happened between two states labkit saw).

    Example:
        >>> went_down(state, restarts_before=0)
    """
    return (state.event == "DELETED" or not state.ready or state.status != "Running"
            or (restarts_before is not None and state.restarts > restarts_before))


# ------------------------------------------------------------------------------------------------ chaos actions


@dataclass
class PodHit:
    """What a chaos action did to one pod.

    Attributes:
        pod: the pod's name.
        time: when it was hit (UTC).
        ok: whether the action landed (the process got the signal, the pod was deleted).
        returncode: pkill's exit code; 0 for a delete; None when nothing ran.
        stderr: what went wrong, if anything.
        note: the outcome in words ("ruby got SIGTERM", "deleted", "not run: ...").
        observed: whether the API server was seen showing the pod down afterwards (kill with verify), else None.
        observed_at: when that was seen.
    """

    pod: str
    time: pd.Timestamp
    ok: bool
    returncode: int | None = None
    stderr: str = ""
    note: str = ""
    observed: bool | None = None
    observed_at: pd.Timestamp | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (times as ISO 8601)."""
        out: dict[str, object] = {"pod": self.pod, "returncode": self.returncode, "stderr": self.stderr,
                                  "ok": self.ok, "time": self.time.isoformat(), "note": self.note}
        if self.observed is not None:
            out["observed"] = self.observed
            out["observed_at"] = self.observed_at.isoformat() if self.observed_at is not None else None
        return out


@dataclass(repr=False)
class ChaosAction:
    """What a chaos action did (or would do, in a dry run).

    Attributes:
        time: when the action ran (UTC).
        action: ``"kill"`` (a process in the pod) or ``"delete"`` (the pod).
        selector: the label selector it was given.
        namespace: where.
        mode: one, all, fixed or percent.
        pods: the pods hit (or that would be hit in a dry run), in the order they were hit.
        process: the process name given to ``pkill`` (kill only).
        signal: e.g. ``"SIGTERM"`` (kill only).
        grace_period: seconds given to the pod to stop (delete only; None = the pod's own).
        dry_run: nothing was done.
        results: one :class:`PodHit` per pod.
        skipped: pods the selector matched that were left alone, each with why.
    """

    time: pd.Timestamp
    action: Literal["kill", "delete"]
    selector: str
    namespace: str
    mode: str
    pods: list[str]
    process: str | None = None
    signal: str | None = None
    grace_period: int | None = None
    dry_run: bool = False
    results: list[PodHit] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every pod was hit (always True for a dry run)."""
        return self.dry_run or (bool(self.results) and all(r.ok for r in self.results))

    @property
    def landed(self) -> list[PodHit]:
        """The hits that landed (none for a dry run)."""
        return [] if self.dry_run else [r for r in self.results if r.ok]

    def summary(self) -> str:
        """One line: what, where, how many, and whether it worked."""
        what = (f"pkill -{(self.signal or 'SIGTERM').removeprefix('SIG')} {self.process}" if self.action == "kill"
                else "delete pod" + (f" --grace-period={self.grace_period}" if self.grace_period is not None else ""))
        verb = "would hit" if self.dry_run else "hit"
        hit = sum(r.ok for r in self.results)
        tail = "" if self.dry_run else f" ({hit}/{len(self.pods)} ok)"
        return (f"{'[dry run] ' if self.dry_run else ''}{what} · {self.selector or 'all pods'} in {self.namespace} · "
                f"mode {self.mode} · {verb} {len(self.pods)} pod{'s' if len(self.pods) != 1 else ''}{tail}")

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the time as ISO 8601), e.g. for an experiment's journal."""
        return {
            "time": self.time.isoformat(),
            "action": self.action,
            "selector": self.selector,
            "namespace": self.namespace,
            "mode": self.mode,
            "pods": list(self.pods),
            "process": self.process,
            "signal": self.signal,
            "grace_period": self.grace_period,
            "dry_run": self.dry_run,
            "results": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped),
            "ok": self.ok,
        }

    def __repr__(self) -> str:
        pods = ", ".join(self.pods) or "none"
        skipped = f"; skipped {', '.join(self.skipped)}" if self.skipped else ""
        return f"<ChaosAction {self.time:%H:%M:%S} {self.summary()}: {pods}{skipped}>"

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.ok else "#c62828"
        rows = []
        by_pod = {r.pod: r for r in self.results}
        for pod in self.pods:
            r = by_pod.get(pod)
            if r is None:
                result = "<i>would be hit</i>" if self.dry_run else "<i>not run</i>"
            else:
                mark = "#2e7d32" if r.ok else "#c62828"
                result = (f"<span style='color:{mark}'>{html.escape(r.note)}</span>"
                          + (f" <small>(exit {r.returncode})</small>" if r.returncode is not None else ""))
            rows.append(f"<tr><td><code>{html.escape(pod)}</code></td><td>{result}</td></tr>")
        for s in self.skipped:
            rows.append(f"<tr><td colspan=2 style='color:#777'>skipped: {html.escape(s)}</td></tr>")
        when = f"{self.time:%H:%M:%S.%f}"[:-3]
        return (f"<div><b style='color:{colour}'>{html.escape(self.summary())}</b> <small>at {when} UTC</small>"
                f"<table><tr><th style='text-align:left'>pod</th><th style='text-align:left'>result</th></tr>"
                f"{''.join(rows)}</table></div>")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        plain = repr(self)
        return mime_bundle({"kind": "chaos", "summary": plain.splitlines()[0], "action": self.to_dict()}, plain,
                           self._repr_html_())


class ActionSink(Protocol):
    """Something that wants to know about chaos actions (a running recorder)."""

    def wants(self, server: str, namespace: str) -> bool: ...

    def mark(self, action: ChaosAction) -> None: ...


_SINKS: weakref.WeakSet[Any] = weakref.WeakSet()
_SINKS_LOCK = threading.Lock()


def subscribe_actions(sink: ActionSink) -> None:
    """Have ``sink.mark(action)`` called for every chaos action it ``wants`` (held weakly)."""
    with _SINKS_LOCK:
        _SINKS.add(sink)


def unsubscribe_actions(sink: ActionSink) -> None:
    with _SINKS_LOCK:
        _SINKS.discard(sink)


def action_sinks() -> list[ActionSink]:
    """The subscribed sinks, now."""
    with _SINKS_LOCK:
        return list(_SINKS)


def publish_action(action: ChaosAction, server: str) -> None:
    """Tell every sink that wants actions on ``server`` in the action's namespace."""
    for sink in action_sinks():
        if sink.wants(server, action.namespace):
            sink.mark(action)


# ------------------------------------------------------------------------------------------------ recovery

RECOVERY_COLUMNS: dict[str, str] = {
    "pod": "string",
    "action": "string",
    "action_time": "datetime64[ns, UTC]",
    "down_at": "datetime64[ns, UTC]",
    "ready_at": "datetime64[ns, UTC]",
    "down_s": "float64",
    "recovery_s": "float64",
    "replaced_by": "string",
    "restarts_before": "Int64",
    "restarts_after": "Int64",
}
"""The columns of the recovery table, one row per pod a chaos action hit: the action (kill or delete) and when
it hit that pod, when the pod was seen down (:func:`went_down`) and Ready again (a deleted pod: its replacement,
named in ``replaced_by``), the seconds from the hit to each, and RESTARTS before and after."""


@dataclass(frozen=True)
class RecoveryRow:
    """One pod a chaos action hit, from the hit to Ready again (see :data:`RECOVERY_COLUMNS`)."""

    pod: str
    action: str
    action_time: pd.Timestamp
    down_at: pd.Timestamp | None = None
    ready_at: pd.Timestamp | None = None
    replaced_by: str = ""
    restarts_before: int | None = None
    restarts_after: int | None = None

    @property
    def recovered(self) -> bool:
        return self.ready_at is not None

    @property
    def down_s(self) -> float:
        return _seconds(self.action_time, self.down_at)

    @property
    def recovery_s(self) -> float:
        return _seconds(self.action_time, self.ready_at)

    def row(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in RECOVERY_COLUMNS}


def _seconds(start: pd.Timestamp, end: pd.Timestamp | None) -> float:
    return float("nan") if end is None else round((end - start).total_seconds(), 3)


def recovery_table(states: Sequence[PodState], actions: Iterable[ChaosAction]) -> list[RecoveryRow]:
    """THE recovery model: for each landed hit of each action, when the pod went down and was Ready again.

    A killed pod recovers when that same pod (its container restarted) is Ready again after going down. A deleted
    pod recovers when its replacement is Ready: a pod of the same owner (ReplicaSet), first seen after the hit,
    not already claimed by another deleted pod (the first one Ready goes to the first pod deleted). Dry runs,
    hits that did not land, and pods ``states`` never showed are left out.

    Args:
        states: a recorder's states, oldest first.
        actions: the chaos actions.
    """
    by_pod: dict[str, list[PodState]] = {}
    for s in states:
        by_pod.setdefault(s.pod, []).append(s)
    first_seen = {pod: history[0].time for pod, history in by_pod.items()}
    claimed: set[str] = set()
    out: list[RecoveryRow] = []
    for action in sorted(actions, key=lambda a: a.time):
        for hit in action.landed:
            history = by_pod.get(hit.pod)
            if not history:
                continue
            t0 = hit.time
            before = [s for s in history if s.time < t0]
            restarts_before = before[-1].restarts if before else None
            after = [s for s in history if s.time >= t0]
            down = next((s for s in after if went_down(s, restarts_before)), None)
            ready: PodState | None = None
            replaced_by = ""
            if down is not None and action.action == "delete":
                owner = (before[-1] if before else history[0]).owner
                candidates = sorted((p for p in by_pod if p not in claimed and p != hit.pod
                                     and first_seen[p] >= t0 and by_pod[p][0].owner == owner),
                                    key=lambda p: first_seen[p])
                ready_ones = {p: next((s for s in by_pod[p] if s.ready and s.event != "DELETED"), None)
                              for p in candidates}
                # The replacement Ready first goes to the pod deleted first (stable as more states arrive).
                ready_first = sorted((s.time, p) for p, s in ready_ones.items() if s is not None)
                chosen = ready_first[0][1] if ready_first else (candidates[0] if candidates else "")
                if chosen:
                    claimed.add(chosen)
                    replaced_by, ready = chosen, ready_ones[chosen]
            elif down is not None:
                ready = next((s for s in after if s.time >= down.time and s.ready and s.event != "DELETED"), None)
            out.append(RecoveryRow(pod=hit.pod, action=action.action, action_time=t0,
                                   down_at=down.time if down else None, ready_at=ready.time if ready else None,
                                   replaced_by=replaced_by, restarts_before=restarts_before,
                                   restarts_after=ready.restarts if ready else None))
    return out


class RecoveryFrame(pd.DataFrame):
    """The recovery table as a DataFrame (:data:`RECOVERY_COLUMNS`) that also carries its data as a labkit record
    in a notebook (``{"kind": "recovery", "columns": [...], "rows": [[...], ...]}``). Selections of it keep that."""

    @property
    def _constructor(self) -> type[RecoveryFrame]:
        return RecoveryFrame

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        # IPython adds text/html from DataFrame._repr_html_ (the usual table) to what this returns.
        rows = [[json_safe(v) for v in row] for row in self.itertuples(index=False, name=None)]
        return mime_bundle({"kind": "recovery", "columns": [str(c) for c in self.columns], "rows": rows},
                           repr(self))


def recovery_frame(rows: Sequence[RecoveryRow]) -> RecoveryFrame:
    """The recovery rows as a :class:`RecoveryFrame` with :data:`RECOVERY_COLUMNS` (fixed even when empty)."""
    return RecoveryFrame(typed_frame([r.row() for r in rows], RECOVERY_COLUMNS))


# ------------------------------------------------------------------------------------------------ apply and label


@dataclass(frozen=True)
class Applied:
    """One object ``kubectl apply`` handled: ``action`` is created, configured or unchanged."""

    kind: str
    name: str
    namespace: str
    action: Literal["created", "configured", "unchanged"] | str
    printed_kind: str = ""

    def __str__(self) -> str:
        return f"{self.printed_kind or self.kind.lower()}/{self.name} {self.action}"


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`labkit.deploy.apply` did; prints as kubectl's lines (``deployment.apps/reviews-v2 created``).

    Attributes:
        objects: the objects applied, in the manifest's order.
        skipped: objects of the manifest left out by the selector.
        selector: the ``-l`` selector ("" for none).
    """

    objects: list[Applied]
    skipped: int = 0
    selector: str = ""

    def __str__(self) -> str:
        return "\n".join(str(o) for o in self.objects)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre style='margin:0'>{html.escape(str(self))}</pre>"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "apply", "selector": self.selector, "skipped": self.skipped,
                  "objects": [{"kind": o.kind, "name": o.name, "namespace": o.namespace, "action": o.action}
                              for o in self.objects]}
        return mime_bundle(record, str(self), self._repr_html_())


@dataclass(frozen=True)
class LabelChange:
    """One pod's labels before and after ``kubectl label``."""

    pod: str
    namespace: str
    before: dict[str, str]
    after: dict[str, str]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def __str__(self) -> str:
        return f"pod/{self.pod} {'labeled' if self.changed else 'not labeled'}"


@dataclass(frozen=True)
class LabelResult:
    """What :func:`labkit.deploy.label` did, pod by pod; prints as kubectl's lines (``pod/NAME labeled``)."""

    changes: list[LabelChange]
    target: str = ""

    @property
    def pods(self) -> list[str]:
        """The pods whose labels changed."""
        return [c.pod for c in self.changes if c.changed]

    def __str__(self) -> str:
        return "\n".join(str(c) for c in self.changes)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<pre style='margin:0'>{html.escape(str(self))}</pre>"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "label", "target": self.target,
                  "changes": [{"pod": c.pod, "namespace": c.namespace, "before": dict(c.before),
                               "after": dict(c.after)} for c in self.changes]}
        return mime_bundle(record, str(self), self._repr_html_())
