"""Kubernetes Events, recorded the way the kubelet and controllers do (repeats counted on one object)."""

from __future__ import annotations

import secrets
from typing import Any

from .resources import BY_PLURAL
from .store import Obj, Store, now_rfc3339

EVENTS = BY_PLURAL[("", "events")]


class EventRecorder:
    """Writes ``v1`` Events into the store; an identical repeat bumps ``count`` and ``lastTimestamp``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple[str, str, str, str, str], str] = {}

    def record(self, obj: Obj, etype: str, reason: str, message: str, *, component: str,
               field_path: str = "") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        key = (meta.get("uid", ""), etype, reason, message, field_path)
        stamp = now_rfc3339()
        name = self._seen.get(key)
        if name and self.store.get(EVENTS, ns, name) is not None:
            def bump(ev: dict[str, Any]) -> None:
                ev["count"] = int(ev.get("count", 1)) + 1
                ev["lastTimestamp"] = stamp
            self.store.mutate(EVENTS, ns, name, bump)
            return
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        self._seen[key] = name
        involved: dict[str, Any] = {
            "kind": obj.get("kind", ""), "namespace": ns, "name": meta["name"], "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", "v1"), "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        self.store.create(EVENTS, {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "source": {"component": component, **({"host": "sandbox"} if component == "kubelet" else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
            "type": etype,
            "reportingComponent": component,
            "reportingInstance": "sandbox" if component == "kubelet" else "",
        })
