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

import math
import os
import random
import signal as _signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal

from .bookinfo import TESTER_APPS
from .client import Client, Pod, selector_text
from .errors import ApiError, ExecError, LabkitError, SafetyError
from .progress import Progress
from .records import ChaosAction, PodHit, PodState, now, publish_action, went_down

__all__ = [
    "MODES",
    "ORDERS",
    "PROTECTED_NAMESPACES",
    "TESTER_APPS",
    "ChaosAction",
    "PodHit",
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
Selector = str | Mapping[str, str]


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


def _check_namespace(lab: Client, namespace: str | None) -> str:
    ns = namespace or lab.namespace
    if ns != lab.namespace:
        raise SafetyError(f"chaos is allowed only in the lab namespace {lab.namespace!r}, not {ns!r}. To work in "
                          f"another namespace, connect to it: labkit.connect(namespace={ns!r}).")
    if ns in PROTECTED_NAMESPACES or ns.startswith("kube-"):
        raise SafetyError(f"labkit never runs chaos in the system namespace {ns!r}: breaking it breaks the cluster, "
                          "not the application. Deploy Bookinfo in a lab namespace (e.g. default) and connect to "
                          "that one.")
    return ns


def _guard_all(lab: Client, verb: str, selector: str, hit: int, total: int | None) -> None:
    counted = f" ({hit} of {total})" if total is not None else ""
    raise SafetyError(f"{verb} would hit every pod matching {selector or 'any label'!r}{counted} in namespace "
                      f"{lab.namespace} on the cluster {lab.server or lab.context}: the whole service goes down. "
                      "That is allowed on a real cluster only with confirm=True. Try dry_run=True to see the pods, "
                      "or mode='one' / mode='percent' to keep some running.")


def _hits_all(mode: str, percent: float | None) -> bool:
    # Known before listing: refuse these without even reading the cluster.
    return mode == "all" or (mode == "percent" and percent == 100)


# -- choosing the pods

def _own_pod_names() -> set[str]:
    return {v for v in (os.environ.get("POD_NAME"), os.environ.get("HOSTNAME")) if v}


def _select(lab: Client, ns: str, selector: str, verb: str, *, mode: str, count: int, percent: float | None,
            order: str, confirm: bool, dry_run: bool) -> tuple[list[Pod], list[str]]:
    """The pods to hit (API JSON, in order) and the pods skipped (with why), after every guard rail."""
    items = lab.list_pods(selector, namespace=ns).items
    if not items:
        raise lab.no_match(selector, ns)
    own = _own_pod_names()
    candidates: list[Pod] = []
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


def _mark(lab: Client, action: ChaosAction) -> None:
    # Running recorders of this cluster and namespace subscribed to actions (see labkit.records): they get it.
    publish_action(action, lab.server)


# -- the actions

def kill(lab: Client, selector: Selector, process: str = "ruby", *, mode: Mode = "one", count: int = 1,
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
    action = ChaosAction(time=now(), action="kill", selector=sel, namespace=ns, mode=mode, pods=pods,
                         process=process, signal=sig, dry_run=dry_run, skipped=skipped)
    if dry_run:
        return action
    short = sig.removeprefix("SIG")
    for pod in pods:
        hit_at = now()
        try:
            r = lab.exec(pod, ["pkill", f"-{short}", process], container=container, namespace=ns, timeout=15)
        except (ExecError, ApiError) as exc:
            # Already down (restarting, CrashLoopBackOff) or gone: worth reporting, not worth stopping the others.
            action.results.append(PodHit(pod, hit_at, ok=False, stderr=str(exc),
                                         note="not run: the container is not running"
                                         if isinstance(exc, ExecError) else f"not run: {exc}"))
            continue
        if r.returncode == 0:
            note = f"{process} got {sig}"
        elif r.returncode == 1:
            note = (f"no process named {process!r} in the container; list them with "
                    f"lab.exec({pod!r}, 'ps')")
        else:
            note = f"pkill failed (exit {r.returncode})"
        action.results.append(PodHit(pod, hit_at, ok=r.returncode == 0, returncode=r.returncode,
                                     stderr=r.stderr.strip(), note=note))
    if verify:
        _verify_kills(lab, ns, sel, {p["metadata"]["name"]: p for p in chosen}, action.results, VERIFY_TIMEOUT,
                      repr(process))
    _mark(lab, action)
    return action


def delete_pods(lab: Client, selector: Selector, *, mode: Mode = "one", count: int = 1,
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
    action = ChaosAction(time=now(), action="delete", selector=sel, namespace=ns, mode=mode, pods=pods,
                         grace_period=grace_period, dry_run=dry_run, skipped=skipped)
    if dry_run:
        return action
    for pod in pods:
        hit_at = now()
        if lab.delete_pod(pod, namespace=ns, grace_period=grace_period):
            action.results.append(PodHit(pod, hit_at, ok=True, returncode=0, note="deleted"))
        else:
            action.results.append(PodHit(pod, hit_at, ok=False, stderr="already gone", note="already gone"))
    _mark(lab, action)
    return action


VERIFY_TIMEOUT = 10.0
"""Seconds :func:`kill` waits to see each hit container down or restarted (a real kubelet notices within ~1 s)."""


def _verify_kills(lab: Client, ns: str, selector: str, before: dict[str, Pod], results: list[PodHit],
                  timeout: float, process_hint: str) -> None:
    """Mark each landed kill ``observed`` once the API server shows the pod down (:func:`~labkit.records.went_down`),
    with the one pod watch (list, then watch; no polling)."""
    pending = {r.pod: r for r in results if r.ok}
    if not pending:
        return
    restarts = {name: PodState.of(pod, "ADDED").restarts for name, pod in before.items()}

    def check(name: str, pod: Pod | None) -> None:
        hit = pending.get(name)
        if hit is None:
            return
        if pod is None or (pod.get("metadata") or {}).get("uid") != before[name]["metadata"].get("uid"):
            down = True  # gone, or replaced by a pod of the same name
        else:
            down = went_down(PodState.of(pod, "MODIFIED"), restarts[name])
        if down:
            del pending[name]
            hit.observed, hit.observed_at = True, now()

    problem = ""
    try:
        for event in lab.watch_pods(selector, namespace=ns, timeout=timeout):
            if event.type == "LIST":
                listed = {str(p["metadata"]["name"]): p for p in event.pods}
                for name in list(pending):
                    check(name, listed.get(name))
            else:
                check(str(event.pod.get("metadata", {}).get("name", "")),
                      None if event.type == "DELETED" else event.pod)
            if not pending:
                break
    except LabkitError as exc:
        # The kills did happen: a watch that fails leaves them unconfirmed, which the results say, instead of
        # losing the action's record.
        problem = f"; the check failed: {exc}"
    for hit in pending.values():
        hit.observed = False
        hit.note += (f" (not seen down or restarted within {timeout:g} s{problem}: is {process_hint}"
                     f" the main process of {hit.pod}?)")


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
