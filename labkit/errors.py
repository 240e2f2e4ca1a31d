"""labkit's exceptions, and the one place where Kubernetes client errors become them.

::

    LabkitError
     ├── ClusterUnreachable      no sandbox running, a dead sandbox, a cluster that does not answer
     ├── ApiError                the API server refused (status, reason and body kept)
     │    ├── NotFound           404: an absent pod, deployment, namespace...
     │    ├── Forbidden          401/403: the cluster refuses these credentials or this action
     │    └── Conflict           409
     ├── BadSelector             a label selector the API server cannot parse
     ├── NoPodsMatch             a selector that matches nothing (lists the labels that exist)
     ├── ExecError               a command in a pod exited non-zero with ``check=True``
     │    └── ExecTimeout        ... or did not finish in time
     ├── SafetyError             a guard rail refused a chaos action (namespace, tester pod, "all" unconfirmed)
     ├── WaitTimeout             a wait ran out of time; says what it was waiting for and what it saw
     └── HypothesisFailed        an experiment's steady state did not hold (raised only when asked to)

Every message names the object and the next step.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

__all__ = [
    "ApiError",
    "BadSelector",
    "ClusterUnreachable",
    "Conflict",
    "ExecError",
    "ExecTimeout",
    "Forbidden",
    "HypothesisFailed",
    "LabkitError",
    "NoPodsMatch",
    "NotFound",
    "SafetyError",
    "WaitTimeout",
    "translate",
]


class LabkitError(Exception):
    """Base class of every error labkit raises on purpose."""


class ClusterUnreachable(LabkitError):
    """The cluster (or the sandbox) does not answer."""


class ApiError(LabkitError):
    """The Kubernetes API server answered with an error ``Status``."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", body: Any = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.body = status, reason, body


class NotFound(ApiError):
    """The object does not exist."""


class Forbidden(ApiError):
    """The cluster refuses these credentials or this action."""


class Conflict(ApiError):
    """The object exists already or changed under us."""


class BadSelector(LabkitError):
    """A label selector that does not parse."""


class NoPodsMatch(LabkitError):
    """A selector matched no pod."""


class ExecError(LabkitError):
    """A command in a pod failed; carries the :class:`~labkit.records.ExecResult`."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result


class ExecTimeout(ExecError):
    """A command in a pod did not finish in time."""


class SafetyError(LabkitError):
    """A guard rail refused a chaos action."""


class WaitTimeout(LabkitError):
    """A wait ran out of time."""


class HypothesisFailed(LabkitError):
    """An experiment's steady-state hypothesis did not hold; carries the experiment's ``journal``."""

    def __init__(self, message: str, journal: object = None) -> None:
        super().__init__(message)
        self.journal = journal


def _status_message(body: Any) -> tuple[str, str]:
    try:
        doc = json.loads(body) if isinstance(body, (str, bytes)) else body
        return str(doc.get("message", "")), str(doc.get("reason", ""))
    except (ValueError, AttributeError, TypeError):
        return (body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")), ""


def translate(exc: BaseException, what: str, *, hint: str = "") -> NoReturn:
    """Re-raise a client exception as a labkit error about ``what`` (e.g. ``pod "x" in namespace default``).

    This is the single boundary between the official client's exceptions and labkit's.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ApiException):
        message, reason = _status_message(exc.body)
        status = int(exc.status or 0)
        detail = message or exc.reason or "no details"
        tail = f" {hint}" if hint else ""
        if status == 404:
            raise NotFound(f"{what}: not found ({detail}).{tail or ' Check the name with lab.pods().'}",
                           status=status, reason=reason, body=exc.body) from exc
        if status in (401, 403):
            raise Forbidden(f"{what}: the cluster refused the request ({status} {reason or exc.reason}: {detail}). "
                            "Check the kubeconfig's credentials and your RBAC permissions.",
                            status=status, reason=reason, body=exc.body) from exc
        if status == 409:
            raise Conflict(f"{what}: {detail}.{tail}", status=status, reason=reason, body=exc.body) from exc
        if (status == 400 and "selector" in detail.lower()) or "unable to parse requirement" in detail:
            raise BadSelector(f"{what}: the selector does not parse ({detail}). Write it like 'app=details' or "
                              "'app in (details,ratings),version!=v2'.") from exc
        if status == 0:
            raise ClusterUnreachable(f"{what}: the cluster did not answer ({exc.reason}). Is it running? For the "
                                     "sandbox: `labkit sandbox status`.") from exc
        raise ApiError(f"{what}: {status} {reason or exc.reason}: {detail}.{tail}", status=status, reason=reason,
                       body=exc.body) from exc
    if isinstance(exc, (Urllib3Error, OSError)):
        raise ClusterUnreachable(f"{what}: cannot reach the cluster ({exc}). If this is the sandbox, it may have "
                                 "stopped: run `labkit sandbox status`, or `labkit sandbox up` to start it.") from exc
    raise exc
