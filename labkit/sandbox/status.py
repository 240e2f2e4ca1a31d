"""``Status`` objects, the shape every error of the Kubernetes API takes (kubectl prints their message)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# metav1.StatusDetails' fields in the order the API server writes them.
_DETAIL_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure ``Status`` with its fields in the API server's order (``details`` before ``code``).

    ``details`` None leaves the field out (a BadRequest or an Unauthorized carries none); an empty dict is
    written as ``{}``, as the API server does for a path it does not serve. kubectl reads ``details`` of some
    404s without checking it is there (``kubectl debug``), so those must carry it.

    Examples:
        >>> list(status_body(404, "NotFound", "x", {"kind": "pods", "name": "p"}))
        ['kind', 'apiVersion', 'metadata', 'status', 'message', 'reason', 'details', 'code']
        >>> list(status_body(404, "NotFound", "x", {"kind": "pods", "group": "", "name": "p"})["details"])
        ['name', 'kind']
    """
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason}
    if details is not None:
        ordered = {key: details[key] for key in _DETAIL_ORDER if details.get(key) not in (None, "", [])}
        ordered.update({k: v for k, v in details.items() if k not in _DETAIL_ORDER})
        body["details"] = ordered
    body["code"] = code
    return body


def error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    """An HTTP error answered with its ``Status``."""
    return web.Response(status=code, text=json.dumps(status_body(code, reason, message, details),
                                                     separators=(",", ":")), content_type="application/json")
