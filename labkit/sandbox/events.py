"""Kubernetes Events, recorded the way the kubelet and controllers do (repeats counted on one object).

Events expire one hour after their last write, as the real API server stores them under an etcd lease
(``--event-ttl``, default 1 h), whoever wrote them: the kubelet, a controller or a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import time

from .registry import Registry
from .resources import BY_PLURAL
from .store import Obj, StoreError, WatchEvent, now_rfc3339

log = logging.getLogger("labkit.sandbox.events")

EVENTS = BY_PLURAL[("", "events")]
EVENT_TTL = 3600.0
"""Seconds an Event lives after its last write (the API server's ``--event-ttl``)."""


class EventRecorder:
    """Writes ``v1`` Events through the registry; an identical repeat bumps ``count`` and ``lastTimestamp``.

    Best effort, as the real event recorders are: an event that cannot be written (its namespace is being
    deleted) is logged and dropped, never raised into the controller or kubelet that reported it.

    It also expires every Event ``ttl`` seconds after its last write.
    """

    def __init__(self, registry: Registry, ttl: float = EVENT_TTL) -> None:
        self.registry = registry
        self.ttl = ttl
        self._seen: dict[tuple[str, str, str, str, str], str] = {}
        self._keys: dict[tuple[str, str], tuple[str, str, str, str, str]] = {}  # event -> its _seen key
        self._deadline: dict[tuple[str, str], float] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        registry.store.subscribe((EVENTS,), self._on_change)

    # -- expiry
    def _on_change(self, ev: WatchEvent) -> None:
        if ev.resource is not EVENTS:
            return
        meta = ev.object["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if ev.type == "DELETED":
            self._deadline.pop(key, None)
            seen = self._keys.pop(key, None)
            if seen is not None and self._seen.get(seen) == key[1]:
                del self._seen[seen]
            return
        fresh = key not in self._deadline
        self._deadline[key] = time.monotonic() + self.ttl
        if fresh:  # one heap entry per live Event: a rewrite only moves its deadline (see _expire)
            heapq.heappush(self._heap, (self._deadline[key], *key))
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or not self._heap:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a store used outside the sandbox): nothing expires
        self._timer = loop.call_at(loop.time() + max(0.0, self._heap[0][0] - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, ns, name = heapq.heappop(self._heap)
            deadline = self._deadline.get((ns, name))
            if deadline is None:  # deleted already
                continue
            if deadline > now:  # rewritten since this entry was pushed: it lives on until its new deadline
                heapq.heappush(self._heap, (deadline, ns, name))
                continue
            with contextlib.suppress(StoreError):
                self.registry.delete(EVENTS, ns, name)
            self._deadline.pop((ns, name), None)
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        self._keys[(ns, name)] = key
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
