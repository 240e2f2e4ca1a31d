"""``Status`` objects, the shape every error of the Kubernetes API takes (kubectl prints their message)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> web.Response:
    """An HTTP error answered with its ``Status``."""
    return web.Response(status=code, text=json.dumps(status_body(code, reason, message, details),
                                                     separators=(",", ":")), content_type="application/json")
