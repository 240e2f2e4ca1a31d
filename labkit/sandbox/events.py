"""Kubernetes Events, recorded the way the kubelet and controllers do (repeats counted on one object)."""

from __future__ import annotations

import logging
import secrets

from .registry import Registry
from .resources import BY_PLURAL
from .store import Obj, StoreError, now_rfc3339

log = logging.getLogger("labkit.sandbox.events")

EVENTS = BY_PLURAL[("", "events")]


class EventRecorder:
    """Writes ``v1`` Events through the registry; an identical repeat bumps ``count`` and ``lastTimestamp``.

    Best effort, as the real event recorders are: an event that cannot be written (its namespace is being
    deleted) is logged and dropped, never raised into the controller or kubelet that reported it.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._seen: dict[tuple[str, str, str, str, str], str] = {}

    def record(self, obj: Obj, etype: str, reason: str, message: str, *, component: str,
               field_path: str = "") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        key = (meta.get("uid", ""), etype, reason, message, field_path)
        stamp = now_rfc3339()
        name = self._seen.get(key)
        if name:
            def bump(ev: Obj) -> None:
                ev["count"] = int(ev.get("count", 1)) + 1
                ev["lastTimestamp"] = stamp
            if self.registry.mutate(EVENTS, ns, name, bump) is not None:
                return
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        self._seen[key] = name
        involved: Obj = {
            "kind": obj.get("kind", ""), "namespace": ns, "name": meta["name"], "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", "v1"), "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        event: Obj = {
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
        }
        try:
            self.registry.create(EVENTS, event, ns)
        except StoreError as exc:
            log.debug("event %s on %s/%s dropped: %s", reason, ns, meta["name"], exc.message)
