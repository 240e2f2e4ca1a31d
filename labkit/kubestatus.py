"""Pod status, readiness, restarts and ages, computed the way ``kubectl get pods`` shows them.

These are pure functions over objects as the API returns them (plain JSON dicts), so the same code serves the
sandbox's Table printers and the labkit client library on a real cluster. Only the standard library is used.

The rules follow the Kubernetes printers (``printPod`` in ``pkg/printers/internalversion/printers.go``) and
``HumanDuration`` in ``k8s.io/apimachinery/pkg/util/duration``:

    >>> human_duration(330)
    '5m30s'
    >>> pod_status({"status": {"phase": "Running", "containerStatuses": [
    ...     {"name": "c", "ready": False, "restartCount": 3,
    ...      "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})
    'CrashLoopBackOff'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "NODE_LOST_REASON",
    "PodSummary",
    "human_age",
    "human_duration",
    "is_pod_ready",
    "parse_timestamp",
    "pod_ready",
    "pod_restarts",
    "pod_status",
    "summarize_pod",
]

NODE_LOST_REASON = "NodeLost"
"""``status.reason`` the node controller sets on pods of an unreachable node."""

_MINUTE = 60
_HOUR = 60 * _MINUTE


def human_duration(seconds: float) -> str:
    """A duration in kubectl's AGE style, about two significant figures.

    The thresholds are those of ``duration.HumanDuration``: seconds below 2 minutes, ``XmYs`` below
    10 minutes, minutes below 3 hours, ``XhYm`` below 8 hours, hours below 2 days, ``XdYh`` below 8 days,
    days below 2 years, ``XyYd`` below 8 years, then years. A zero second part is left out (``5m``, not
    ``5m0s``). A slightly negative duration (clock skew under 2 s) reads ``0s``; anything earlier reads
    ``<invalid>``.

    Args:
        seconds: The elapsed time in seconds.

    Returns:
        The text of the cell, e.g. ``"45s"``, ``"5m30s"``, ``"60m"``, ``"3h5m"``, ``"2d"``.

    Examples:
        >>> [human_duration(s) for s in (59, 119, 120, 600, 3 * 3600, 2 * 86400)]
        ['59s', '119s', '2m', '10m', '3h', '2d']
    """
    whole = int(seconds)  # Go converts with truncation toward zero
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 2 * _MINUTE:
        return f"{whole}s"
    minutes = whole // _MINUTE
    if minutes < 10:
        rest = whole % _MINUTE
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 3 * 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        rest = days % 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{years}y"


def parse_timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (``2026-11-26T15:00:25Z``, fractions allowed) as an aware datetime.

    Args:
        value: The timestamp text, or None / empty when the field is unset.

    Returns:
        The time in UTC, or None when ``value`` is empty.

    Raises:
        ValueError: If ``value`` is not an RFC 3339 timestamp.
    """
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def human_age(timestamp: str | None, now: datetime) -> str:
    """The AGE cell for a timestamp: the time elapsed until ``now``.

    Args:
        timestamp: An RFC 3339 timestamp such as ``metadata.creationTimestamp``; None or empty when unset.
        now: The reference time. A naive datetime is taken as UTC.

    Returns:
        :func:`human_duration` of the elapsed time, or ``"<unknown>"`` when the timestamp is unset.

    Examples:
        >>> human_age("2026-11-26T15:00:00Z", datetime(2026, 11, 26, 16, 0, tzinfo=UTC))
        '60m'
        >>> human_age(None, datetime(2026, 11, 26, tzinfo=UTC))
        '<unknown>'
    """
    moment = parse_timestamp(timestamp)
    if moment is None:
        return "<unknown>"
    return human_duration((_aware(now) - moment).total_seconds())


@dataclass(frozen=True)
class PodSummary:
    """What ``kubectl get pods`` derives from one pod.

    Attributes:
        status: The STATUS cell (``Running``, ``CrashLoopBackOff``, ``Init:0/1``, ``Terminating``, ...).
        ready: Containers counted ready (running and ready, plus started ready sidecars).
        total: Containers counted in READY's denominator (regular containers plus sidecar init containers).
        restarts: The RESTARTS count.
        last_restart: When the most recent counted container last terminated, or None if unknown.
    """

    status: str
    ready: int
    total: int
    restarts: int
    last_restart: datetime | None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _last_termination(container_status: dict[str, Any]) -> datetime | None:
    terminated = _dict(container_status.get("lastState")).get("terminated")
    if not isinstance(terminated, dict):
        return None
    return parse_timestamp(terminated.get("finishedAt"))


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None:
        return current
    if current is None or current < candidate:
        return candidate
    return current


def _terminated_reason(terminated: dict[str, Any], prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + str(terminated["reason"])
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _has_condition(pod: dict[str, Any], kind: str) -> bool:
    for condition in _list(_dict(pod.get("status")).get("conditions")):
        if (
            isinstance(condition, dict)
            and condition.get("type") == kind
            and condition.get("status") == "True"
        ):
            return True
    return False


def summarize_pod(pod: dict[str, Any]) -> PodSummary:
    """Every derived cell of one pod at once, following kubectl's ``printPod`` step by step.

    The status starts as ``status.reason`` or the phase. Init containers are examined in order: the first one
    not yet done sets ``Init:<reason>``, ``Init:ExitCode:N`` or ``Init:N/M``. Once initialised, container
    statuses are read from last to first and a waiting or terminated reason overrides the status; a
    ``Completed`` pod with a container still running is shown as ``Running`` (``NotReady`` without the Ready
    condition). A pod being deleted shows ``Terminating`` (``Unknown`` if its node was lost) unless its phase
    is final.

    Args:
        pod: A Pod as returned by the API.

    Returns:
        The status, ready and total counts, restart count and time of the last restart.
    """
    spec = _dict(pod.get("spec"))
    status = _dict(pod.get("status"))
    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or phase)

    for condition in _list(status.get("conditions")):
        if (
            _dict(condition).get("type") == "PodScheduled"
            and _dict(condition).get("reason") == "SchedulingGated"
        ):
            reason = "SchedulingGated"

    init_specs = [_dict(c) for c in _list(spec.get("initContainers"))]
    sidecars = {c.get("name") for c in init_specs if c.get("restartPolicy") == "Always"}
    total = len(_list(spec.get("containers"))) + len(sidecars)
    ready = 0
    restarts = 0
    last_restart: datetime | None = None
    sidecar_restarts = 0
    last_sidecar_restart: datetime | None = None

    initializing = False
    for index, raw in enumerate(_list(status.get("initContainerStatuses"))):
        container = _dict(raw)
        state = _dict(container.get("state"))
        is_sidecar = container.get("name") in sidecars
        count = int(container.get("restartCount") or 0)
        finished = _last_termination(container)
        restarts += count
        last_restart = _later(last_restart, finished)
        if is_sidecar:
            sidecar_restarts += count
            last_sidecar_restart = _later(last_sidecar_restart, finished)

        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if isinstance(terminated, dict) and int(terminated.get("exitCode") or 0) == 0:
            continue
        if is_sidecar and container.get("started") is True:
            if container.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            reason = _terminated_reason(terminated, "Init:")
        elif (
            isinstance(waiting, dict) and waiting.get("reason") and waiting.get("reason") != "PodInitializing"
        ):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _has_condition(pod, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for raw in reversed(_list(status.get("containerStatuses"))):
            container = _dict(raw)
            state = _dict(container.get("state"))
            restarts += int(container.get("restartCount") or 0)
            last_restart = _later(last_restart, _last_termination(container))
            waiting = state.get("waiting")
            terminated = state.get("terminated")
            if isinstance(waiting, dict) and waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(terminated, dict):
                reason = _terminated_reason(terminated)
            elif container.get("ready") is True and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _has_condition(pod, "Ready") else "NotReady"

    deleting = bool(_dict(pod.get("metadata")).get("deletionTimestamp"))
    if deleting and status.get("reason") == NODE_LOST_REASON:
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    return PodSummary(status=reason, ready=ready, total=total, restarts=restarts, last_restart=last_restart)


def pod_status(pod: dict[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods`` for one pod (see :func:`summarize_pod` for the rules).

    Args:
        pod: A Pod as returned by the API.

    Returns:
        E.g. ``"Running"``, ``"CrashLoopBackOff"``, ``"Error"``, ``"Completed"``, ``"Init:1/2"``,
        ``"Terminating"``.
    """
    return summarize_pod(pod).status


def pod_ready(pod: dict[str, Any]) -> tuple[int, int]:
    """The READY column as numbers: containers running and ready, and containers in total.

    Args:
        pod: A Pod as returned by the API.

    Returns:
        ``(ready, total)``; the cell reads ``f"{ready}/{total}"``.
    """
    summary = summarize_pod(pod)
    return summary.ready, summary.total


def pod_restarts(pod: dict[str, Any], now: datetime) -> tuple[int, str]:
    """The RESTARTS column: the count, and the cell text with the time since the last restart when known.

    Args:
        pod: A Pod as returned by the API.
        now: The reference time for "ago". A naive datetime is taken as UTC.

    Returns:
        ``(count, cell)``, e.g. ``(0, "0")``, ``(1, "1 (5s ago)")``, or ``(2, "2")`` when no container
        records when it last terminated.
    """
    summary = summarize_pod(pod)
    if summary.restarts and summary.last_restart is not None:
        ago = human_duration((_aware(now) - summary.last_restart).total_seconds())
        return summary.restarts, f"{summary.restarts} ({ago} ago)"
    return summary.restarts, str(summary.restarts)


def is_pod_ready(pod: dict[str, Any]) -> bool:
    """Whether the pod's ``Ready`` condition is ``True`` (what Services and ``kubectl wait`` go by).

    Args:
        pod: A Pod as returned by the API.

    Returns:
        True if the pod reports the Ready condition with status ``"True"``.
    """
    return _has_condition(pod, "Ready")
