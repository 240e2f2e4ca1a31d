"""Chaos actions for the lesson: kill a process in pods (``pkill ruby``) or delete pods, with guard rails.

The two actions teach different failures:

============  =========================================  =====================================================
action        what happens                               what ``kubectl get pods`` shows
============  =========================================  =====================================================
``kill``      the container's main process dies; the     same pod name, RESTARTS +1, STATUS ``Error`` then
              kubelet restarts the container in place    ``Running`` (``CrashLoopBackOff`` when repeated)
``delete``    the pod goes away; its ReplicaSet creates  the old pod ``Terminating``, then a NEW pod name with
              a new one (possibly on another node)       RESTARTS 0, ``ContainerCreating`` then ``Running``
============  =========================================  =====================================================

Every action returns a :class:`ChaosAction` record (a good last line for a notebook cell) and is marked on every
running :class:`~labkit.observe.Recorder` of the lab. Guard rails are checked before anything is done: only the
lab's namespace, never a system namespace, never the tester pod or the notebook's own pod, and hitting every
matching pod of a real (non-sandbox) cluster needs ``confirm=True``. ``dry_run=True`` shows what would be hit.

Example:
    >>> from labkit import chaos
    >>> chaos.kill(lab, "app=details")                       # the lesson: pkill ruby in the first details pod
    >>> chaos.kill(lab, "app=details", mode="all")           # ... then in all of them
    >>> chaos.delete_pods(lab, "app=details", dry_run=True)  # which pod would be deleted?
"""

from __future__ import annotations

import html
import json
import math
import os
import random
import signal as _signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from . import kubestatus
from .errors import ApiError, ExecError, SafetyError, translate
from .lab import selector_text

if TYPE_CHECKING:
    from .lab import Lab

__all__ = [
    "MODES",
    "ORDERS",
    "PROTECTED_NAMESPACES",
    "TESTER_APPS",
    "ChaosAction",
    "Repeater",
    "delete_pods",
    "kill",
    "repeat",
]

Mode = Literal["one", "all", "fixed", "percent"]
Order = Literal["first", "random", "oldest"]
MODES: tuple[str, ...] = ("one", "all", "fixed", "percent")
ORDERS: tuple[str, ...] = ("first", "random", "oldest")
PROTECTED_NAMESPACES: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease", "istio-system")
"""Namespaces no chaos action touches (nor any other ``kube-*``)."""
TESTER_APPS: tuple[str, ...] = ("sleep", "curl")
"""``app`` labels of the lesson's tester pod (``sleep`` before Istio 1.24, ``curl`` after): never a target."""


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
        results: one dict per pod: pod, returncode, stderr, ok, plus time (ISO, when that pod was hit) and note.
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
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every pod was hit (always True for a dry run)."""
        return self.dry_run or (bool(self.results) and all(r.get("ok") for r in self.results))

    def summary(self) -> str:
        """One line: what, where, how many, and whether it worked."""
        what = (f"pkill -{(self.signal or 'SIGTERM').removeprefix('SIG')} {self.process}" if self.action == "kill"
                else "delete pod" + (f" --grace-period={self.grace_period}" if self.grace_period is not None else ""))
        verb = "would hit" if self.dry_run else "hit"
        hit = sum(bool(r.get("ok")) for r in self.results)
        tail = "" if self.dry_run else f" ({hit}/{len(self.pods)} ok)"
        return (f"{'[dry run] ' if self.dry_run else ''}{what} · {self.selector or 'all pods'} in {self.namespace} · "
                f"mode {self.mode} · {verb} {len(self.pods)} pod{'s' if len(self.pods) != 1 else ''}{tail}")

    def to_dict(self) -> dict[str, Any]:
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
            "results": [dict(r) for r in self.results],
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
        by_pod = {r["pod"]: r for r in self.results}
        for pod in self.pods:
            r = by_pod.get(pod)
            if r is None:
                result = "<i>would be hit</i>" if self.dry_run else "<i>not run</i>"
            else:
                mark = "#2e7d32" if r.get("ok") else "#c62828"
                result = (f"<span style='color:{mark}'>{html.escape(str(r.get('note') or ''))}</span>"
                          + (f" <small>(exit {r['returncode']})</small>" if r.get("returncode") is not None else ""))
            rows.append(f"<tr><td><code>{html.escape(pod)}</code></td><td>{result}</td></tr>")
        for s in self.skipped:
            rows.append(f"<tr><td colspan=2 style='color:#777'>skipped: {html.escape(s)}</td></tr>")
        when = f"{self.time:%H:%M:%S.%f}"[:-3]
        return (f"<div><b style='color:{colour}'>{html.escape(self.summary())}</b> <small>at {when} UTC</small>"
                f"<table><tr><th style='text-align:left'>pod</th><th style='text-align:left'>result</th></tr>"
                f"{''.join(rows)}</table></div>")


# -- argument checks (before anything touches the cluster)

def _signal_name(sig: str | int) -> str:
    """``"TERM"``, ``"SIGTERM"``, ``"term"``, ``15`` or ``"15"`` -> ``"SIGTERM"``."""
    try:
        if isinstance(sig, bool):
            raise ValueError
        if isinstance(sig, int) or (isinstance(sig, str) and sig.strip().isdigit()):
            return _signal.Signals(int(sig)).name
        text = str(sig).strip().upper()
        name = text if text.startswith("SIG") else f"SIG{text}"
        if name in _signal.Signals.__members__ and not name.startswith("SIG_"):
            return _signal.Signals[name].name
    except ValueError:
        pass
    raise ValueError(f"unknown signal {sig!r}; use a name like 'TERM', 'KILL', 'INT' or 'SIGTERM', or a number "
                     "like 9 (see `kill -l`)")


def _check_selection(mode: str, count: int, percent: float | None, order: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)} (one pod, every pod, `count` pods, "
                         "or `percent` of the pods)")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; use one of {', '.join(ORDERS)} ('first' is kubectl's "
                         ".items[0], sorted by name)")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a whole number of pods, 1 or more, not {count!r}")
    if count != 1 and mode != "fixed":
        raise ValueError(f"count={count} applies to mode='fixed'; pass mode='fixed', count={count}")
    if mode == "percent":
        if percent is None:
            raise ValueError("mode='percent' needs percent=..., e.g. percent=50 (rounded up, at least one pod)")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 1 <= percent <= 100:
            raise ValueError(f"percent must be between 1 and 100, not {percent!r}")
    elif percent is not None:
        raise ValueError(f"percent={percent} applies to mode='percent'; pass mode='percent', percent={percent}")


def _check_namespace(lab: Lab, namespace: str | None) -> str:
    ns = namespace or lab.namespace
    if ns != lab.namespace:
        raise SafetyError(f"chaos is allowed only in the lab namespace {lab.namespace!r}, not {ns!r}. To work in "
                          f"another namespace, connect to it: labkit.connect(namespace={ns!r}).")
    if ns in PROTECTED_NAMESPACES or ns.startswith("kube-"):
        raise SafetyError(f"labkit never runs chaos in the system namespace {ns!r}: breaking it breaks the cluster, "
                          "not the application. Deploy Bookinfo in a lab namespace (e.g. default) and connect to "
                          "that one.")
    return ns


def _guard_all(lab: Lab, verb: str, selector: str, hit: int, total: int | None) -> None:
    counted = f" ({hit} of {total})" if total is not None else ""
    raise SafetyError(f"{verb} would hit every pod matching {selector or 'any label'!r}{counted} in namespace "
                      f"{lab.namespace} on the cluster {lab.server or lab.context}: the whole service goes down. "
                      "That is allowed on a real cluster only with confirm=True. Try dry_run=True to see the pods, "
                      "or mode='one' / mode='percent' to keep some running.")


def _hits_all(mode: str, percent: float | None) -> bool:
    # Known before listing: refuse these without even reading the cluster.
    return mode == "all" or (mode == "percent" and percent == 100)


# -- choosing the pods

def _list_pods(lab: Lab, ns: str, selector: str) -> list[dict[str, Any]]:
    try:
        resp = lab.core.list_namespaced_pod(ns, label_selector=selector or None, _preload_content=False)
    except Exception as exc:
        translate(exc, f"listing pods{f' matching {selector!r}' if selector else ''} in namespace {ns}")
    return list(json.loads(resp.data)["items"])


def _own_pod_names() -> set[str]:
    return {v for v in (os.environ.get("POD_NAME"), os.environ.get("HOSTNAME")) if v}


def _select(lab: Lab, ns: str, selector: str, verb: str, *, mode: str, count: int, percent: float | None,
            order: str, confirm: bool, dry_run: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The pods to hit (API JSON, in order) and the pods skipped (with why), after every guard rail."""
    items = _list_pods(lab, ns, selector)
    if not items:
        raise lab.no_match(selector, ns)
    own = _own_pod_names()
    candidates: list[dict[str, Any]] = []
    skipped: list[str] = []
    protected: list[str] = []
    for pod in sorted(items, key=lambda p: p["metadata"]["name"]):
        meta = pod["metadata"]
        name = meta["name"]
        app = (meta.get("labels") or {}).get("app", "")
        if app in TESTER_APPS:
            skipped.append(f"{name} (the tester pod, app={app}: the lesson's requests come from it)")
            protected.append(name)
        elif name in own:
            skipped.append(f"{name} (the notebook's own pod)")
            protected.append(name)
        elif meta.get("deletionTimestamp"):
            skipped.append(f"{name} (already terminating)")
        else:
            candidates.append(pod)
    if not candidates:
        if protected:
            raise SafetyError(f"{selector or 'the selector'!r} matches only {', '.join(protected)}, which labkit "
                              f"never {'kills' if verb == 'kill' else 'deletes'} (the tester pod sends the lesson's "
                              "requests; the notebook's pod runs this code). Choose a Bookinfo service, e.g. "
                              "'app=details'.")
        raise SafetyError(f"every pod matching {selector!r} is already terminating; wait for the new ones with "
                          f"observe.wait_ready(lab, {selector!r})")
    total = len(candidates)
    if mode == "one":
        n = 1
    elif mode == "all":
        n = total
    elif mode == "fixed":
        n = min(count, total)
    else:
        assert percent is not None
        # Round up with a minimum of one (Chaos Toolkit and Chaos Mesh do the same): 10 % of 3 pods is 1 pod.
        n = max(1, math.ceil(round(total * float(percent) / 100, 9)))
    if order == "random":
        chosen = random.sample(candidates, n)
    elif order == "oldest":
        chosen = sorted(candidates, key=lambda p: (p["metadata"].get("creationTimestamp") or "",
                                                   p["metadata"]["name"]))[:n]
    else:
        chosen = candidates[:n]
    if n >= total and not lab.is_sandbox and not confirm and not dry_run:
        _guard_all(lab, verb, selector, n, total)
    return chosen, skipped


def _mark(lab: Lab, action: ChaosAction) -> None:
    from .observe import active_recorders

    for recorder in active_recorders(lab):
        if recorder.namespace == action.namespace:
            recorder.mark(action)


def _now() -> pd.Timestamp:
    return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")


# -- the actions

def kill(lab: Lab, selector: str | dict[str, str], process: str = "ruby", *, mode: Mode = "one", count: int = 1,
         percent: float | None = None, signal: str | int = "TERM", order: Order = "first",
         container: str | None = None, dry_run: bool = False, confirm: bool = False,
         namespace: str | None = None, verify: bool = True) -> ChaosAction:
    """Kill a process in one, some or all pods matching ``selector`` (``kubectl exec POD -- pkill -SIG PROCESS``).

    The container's main process dies, so the kubelet restarts the container in the same pod: RESTARTS goes up,
    STATUS shows ``Error``, and ``CrashLoopBackOff`` if it keeps dying. A pod whose container is already down
    (restarting) is reported in the results, not raised.

    Args:
        lab: the lab.
        selector: which pods, e.g. ``"app=details"``.
        process: the process name ``pkill`` matches: details ``ruby``, ratings ``node``, reviews ``java``,
            productpage ``gunicorn`` (``python`` in newer Bookinfo images).
        mode: ``"one"`` pod, ``"all"`` of them, ``"fixed"`` (``count`` pods) or ``"percent"`` (``percent`` of
            them, rounded up, at least one).
        count: pods to hit with ``mode="fixed"``.
        percent: 1..100, with ``mode="percent"``.
        signal: ``"TERM"`` (the default of ``pkill``), ``"KILL"``, ``"INT"``... or a number.
        order: which pods first: ``"first"`` (by name, kubectl's ``.items[0]``), ``"random"``, ``"oldest"``.
        container: the container to exec in (default: the pod's default container).
        dry_run: only list the pods that would be hit.
        confirm: required to hit every matching pod of a real (non-sandbox) cluster.
        namespace: must be the lab's namespace if given (chaos never leaves it).
        verify: after the kills, wait (up to 10 s) until the API server shows each hit container down or
            restarted, and say so in each result (``observed``, ``observed_at``). This proves the chaos happened,
            and a ``wait_ready()`` right after cannot return before the kill even shows.

    Returns:
        A :class:`ChaosAction`.

    Raises:
        ValueError: a bad mode, order, count, percent, signal or process, before anything runs.
        SafetyError: a guard rail refused (system namespace, tester pod only, "all" unconfirmed on a real cluster).
        NoPodsMatch: nothing matches ``selector`` (the message lists the labels that exist).

    Example:
        >>> chaos.kill(lab, "app=details")                  # kubectl exec <first details pod> -- pkill ruby
        >>> chaos.kill(lab, "app=details", mode="all")
        >>> chaos.kill(lab, "app=ratings", "node", mode="percent", percent=50, order="random")
    """
    sel = selector_text(selector)
    _check_selection(mode, count, percent, order)
    sig = _signal_name(signal)
    if not isinstance(process, str) or not process.strip() or process.startswith("-") or any(
            c.isspace() for c in process):
        raise ValueError(f"process must be one process name for pkill, like 'ruby', not {process!r}")
    ns = _check_namespace(lab, namespace)
    if _hits_all(mode, percent) and not lab.is_sandbox and not confirm and not dry_run:
        _guard_all(lab, "kill", sel, 0, None)
    chosen, skipped = _select(lab, ns, sel, "kill", mode=mode, count=count, percent=percent, order=order,
                              confirm=confirm, dry_run=dry_run)
    pods = [p["metadata"]["name"] for p in chosen]
    action = ChaosAction(time=_now(), action="kill", selector=sel, namespace=ns, mode=mode, pods=pods,
                         process=process, signal=sig, dry_run=dry_run, skipped=skipped)
    if dry_run:
        return action
    short = sig.removeprefix("SIG")
    for pod in pods:
        hit_at = _now()
        try:
            r = lab.exec(pod, ["pkill", f"-{short}", process], container=container, namespace=ns, timeout=15)
        except (ExecError, ApiError) as exc:
            # Already down (restarting, CrashLoopBackOff) or gone: worth reporting, not worth stopping the others.
            action.results.append({"pod": pod, "returncode": None, "stderr": str(exc), "ok": False,
                                   "time": hit_at.isoformat(), "note": "not run: the container is not running"
                                   if isinstance(exc, ExecError) else f"not run: {exc}"})
            continue
        if r.returncode == 0:
            note = f"{process} got {sig}"
        elif r.returncode == 1:
            note = (f"no process named {process!r} in the container; list them with "
                    f"lab.exec({pod!r}, 'ps')")
        else:
            note = f"pkill failed (exit {r.returncode})"
        action.results.append({"pod": pod, "returncode": r.returncode, "stderr": r.stderr.strip(),
                               "ok": r.returncode == 0, "time": hit_at.isoformat(), "note": note})
    if verify:
        _verify_kills(lab, ns, sel, {p["metadata"]["name"]: p for p in chosen}, action.results, VERIFY_TIMEOUT,
                      repr(process))
    _mark(lab, action)
    return action


def delete_pods(lab: Lab, selector: str | dict[str, str], *, mode: Mode = "one", count: int = 1,
                percent: float | None = None, order: Order = "first", grace_period: int | None = None,
                dry_run: bool = False, confirm: bool = False, namespace: str | None = None) -> ChaosAction:
    """Delete one, some or all pods matching ``selector`` (``kubectl delete pod``); their ReplicaSet replaces them.

    Unlike :func:`kill`, the pod itself goes away: a NEW pod, with a new name and RESTARTS 0, takes its place.
    This is what Litmus pod-delete, Chaos Mesh pod-kill, chaoskube and kube-monkey do.

    Args:
        lab: the lab.
        selector: which pods.
        mode, count, percent, order, dry_run, confirm, namespace: as for :func:`kill`.
        grace_period: seconds the pod gets to stop (0 = at once); None uses the pod's own setting.

    Returns:
        A :class:`ChaosAction`.

    Example:
        >>> chaos.delete_pods(lab, "app=details")
        >>> lab.pods("app=details")        # a new name, AGE a few seconds
    """
    sel = selector_text(selector)
    _check_selection(mode, count, percent, order)
    if grace_period is not None and (isinstance(grace_period, bool) or not isinstance(grace_period, int)
                                     or grace_period < 0):
        raise ValueError(f"grace_period must be None (the pod's own) or whole seconds, 0 or more, not "
                         f"{grace_period!r}")
    ns = _check_namespace(lab, namespace)
    if _hits_all(mode, percent) and not lab.is_sandbox and not confirm and not dry_run:
        _guard_all(lab, "delete_pods", sel, 0, None)
    chosen, skipped = _select(lab, ns, sel, "delete_pods", mode=mode, count=count, percent=percent,
                              order=order, confirm=confirm, dry_run=dry_run)
    pods = [p["metadata"]["name"] for p in chosen]
    action = ChaosAction(time=_now(), action="delete", selector=sel, namespace=ns, mode=mode, pods=pods,
                         grace_period=grace_period, dry_run=dry_run, skipped=skipped)
    if dry_run:
        return action
    for pod in pods:
        hit_at = _now()
        try:
            lab.core.delete_namespaced_pod(pod, ns, grace_period_seconds=grace_period, _preload_content=False)
        except Exception as exc:
            from kubernetes.client.exceptions import ApiException

            if isinstance(exc, ApiException) and exc.status == 404:
                action.results.append({"pod": pod, "returncode": None, "stderr": "already gone", "ok": False,
                                       "time": hit_at.isoformat(), "note": "already gone"})
                continue
            translate(exc, f'deleting pod "{pod}" in namespace {ns}')
        action.results.append({"pod": pod, "returncode": 0, "stderr": "", "ok": True, "time": hit_at.isoformat(),
                               "note": "deleted"})
    _mark(lab, action)
    return action


VERIFY_TIMEOUT = 10.0
"""Seconds :func:`kill` waits to see each hit container down or restarted (a real kubelet notices within ~1 s)."""


def _went_down(now: dict[str, Any] | None, before: dict[str, Any]) -> bool:
    """Whether a pod shows the kill: gone or replaced, more restarts, or a container not running."""
    if now is None or now["metadata"].get("uid") != before["metadata"].get("uid"):
        return True
    if kubestatus.summarize_pod(now).restarts > kubestatus.summarize_pod(before).restarts:
        return True
    return any("running" not in (cs.get("state") or {})
               for cs in (now.get("status") or {}).get("containerStatuses") or [])


def _verify_kills(lab: Lab, ns: str, selector: str, before: dict[str, dict[str, Any]],
                  results: list[dict[str, Any]], timeout: float, process_hint: str) -> None:
    """Mark each landed kill ``observed`` once the API server shows it (list, then watch; no polling)."""
    from kubernetes import watch

    pending = {r["pod"]: r for r in results if r.get("ok")}
    if not pending:
        return
    deadline = time.monotonic() + timeout

    def check(name: str, pod: dict[str, Any] | None) -> None:
        if name in pending and _went_down(pod, before[name]):
            result = pending.pop(name)
            result["observed"], result["observed_at"] = True, _now().isoformat()

    try:
        resp = lab.core.list_namespaced_pod(ns, label_selector=selector or None, _preload_content=False)
        doc = json.loads(resp.data)
        listed = {p["metadata"]["name"]: p for p in doc["items"]}
        for name in list(pending):
            check(name, listed.get(name))
        rv = doc["metadata"].get("resourceVersion")
        while pending and (remaining := deadline - time.monotonic()) > 0:
            w = watch.Watch()
            for ev in w.stream(lab.core.list_namespaced_pod, ns, label_selector=selector or None,
                               resource_version=rv, timeout_seconds=max(1, math.ceil(remaining)),
                               _request_timeout=(10, max(remaining, 0.05))):
                obj = ev.get("raw_object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                name = (obj.get("metadata") or {}).get("name", "")
                check(name, None if ev["type"] == "DELETED" else obj)
                if not pending or time.monotonic() >= deadline:
                    w.stop()
                    break
    except Exception as exc:
        # The kills did happen: a watch that fails (410, the read timeout at the deadline, a dropped connection)
        # leaves them unconfirmed, which the results say, instead of losing the action's record.
        problem = "" if "timed out" in str(exc).lower() else f"; the check failed: {exc}"
    else:
        problem = ""
    for result in pending.values():
        result["observed"] = False
        result["note"] += (f" (not seen down or restarted within {timeout:g} s{problem}: is {process_hint}"
                           f" the main process of {result['pod']}?)")


# -- repetition

def _check_timing(every: float, duration: float | None) -> None:
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
        raise ValueError(f"every must be a positive number of seconds, not {every!r}")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or duration < 0):
        raise ValueError(f"duration must be 0 or more seconds, not {duration!r}")


def repeat(fn: Callable[[], ChaosAction], *, every: float, duration: float,
           progress: bool = True) -> list[ChaosAction]:
    """Call ``fn()`` every ``every`` seconds for ``duration`` seconds (first call at once), blocking.

    Repeated kills keep a service down: each restart meets a new kill and the kubelet's back-off grows, which
    ``kubectl get pods`` shows as ``CrashLoopBackOff``. Interrupting the cell (the stop button) ends the loop and
    returns what was done so far.

    Args:
        fn: a function returning a :class:`ChaosAction`, e.g. ``lambda: chaos.kill(lab, "app=details")``.
        every: seconds between calls (calls are not stacked if one runs late).
        duration: seconds to keep going; returns at the end of it.
        progress: show a progress line.

    Returns:
        The actions, in order.

    Example:
        >>> chaos.repeat(lambda: chaos.kill(lab, "app=details", mode="all"), every=2, duration=20)
    """
    from .progress import Progress

    _check_timing(every, duration)
    bar = Progress(progress)
    actions: list[ChaosAction] = []
    start = time.monotonic()
    k = 0
    try:
        while True:
            actions.append(fn())
            hit = sum(len(a.pods) for a in actions)
            bar.update(f"chaos: {len(actions)} actions, {hit} pod hits, "
                       f"{time.monotonic() - start:.1f}/{duration:g} s", force=True)
            # Keep the cadence: skip the slots a slow call overran instead of firing them back to back.
            k = max(k + 1, math.ceil((time.monotonic() - start) / every))
            if k * every >= duration:
                time.sleep(max(0.0, start + duration - time.monotonic()))
                break
            time.sleep(max(0.0, start + k * every - time.monotonic()))
    except KeyboardInterrupt:
        bar.close(f"chaos interrupted after {len(actions)} actions")
        return actions
    bar.close(f"chaos done: {len(actions)} actions in {time.monotonic() - start:.1f} s")
    return actions


class Repeater:
    """Run ``fn()`` every ``every`` seconds in a background thread until ``stop()`` (or ``duration``).

    For widgets: a "keep killing" toggle starts one and stops it. Errors end the loop and are kept in ``error``.

    Example:
        >>> r = chaos.Repeater(lambda: chaos.kill(lab, "app=details", mode="all"), every=2).start()
        >>> ...
        >>> r.stop()
        >>> r.actions
    """

    def __init__(self, fn: Callable[[], ChaosAction], *, every: float, duration: float | None = None,
                 on_action: Callable[[ChaosAction], None] | None = None) -> None:
        _check_timing(every, duration)
        self.fn = fn
        self.every = float(every)
        self.duration = duration
        self.on_action = on_action
        self.actions: list[ChaosAction] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Repeater:
        """Start the loop (the first call happens at once). Returns self."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="labkit-chaos-repeater", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        k = 0
        while not self._stop.is_set():
            if self.duration is not None and time.monotonic() - start >= self.duration and k:
                break
            try:
                action = self.fn()
            except BaseException as exc:  # kept for the caller; the thread must not die silently
                self.error = exc
                break
            self.actions.append(action)
            if self.on_action is not None:
                try:
                    self.on_action(action)
                except Exception as exc:
                    self.error = exc
            k = max(k + 1, math.ceil((time.monotonic() - start) / self.every))
            # Event.wait doubles as the stop signal: stop() wakes this at once.
            if self._stop.wait(max(0.0, start + k * self.every - time.monotonic())):
                break

    def stop(self, timeout: float = 30.0) -> list[ChaosAction]:
        """Stop after the call in progress (if any); return the actions done."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return list(self.actions)

    def __enter__(self) -> Repeater:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Repeater every {self.every:g} s: {state}, {len(self.actions)} actions>"
