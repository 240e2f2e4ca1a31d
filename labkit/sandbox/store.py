"""The sandbox's object store: etcd and the watch cache in one small class.

Objects are plain JSON dicts, treated as immutable once stored: every change stores a new dict, so readers
(list, watch streams, printers) can use what they get without copying. Each change bumps one global
``resourceVersion`` and is appended to its resource's bounded history, so a watch that starts from a version
replays what it missed; a version older than the history gets ``410 Gone``, as on a real cluster.

Objects are indexed by namespace and by label (``key=value``), so a list or a watch in one namespace, or with an
equality selector such as ``app=details``, looks only at the objects it can match.

Only :mod:`.registry` writes here; everything else reads, lists and watches.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .resources import Resource

Obj = dict[str, Any]
HISTORY = 20000
COMPACT_AFTER = 300.0
"""Seconds of watch history kept, like etcd's default 5-minute compaction: older versions get 410 Gone."""
WATCH_BUFFER = 10000
"""Events queued for one watcher that does not read; beyond this it is closed (the client re-watches from its
last resourceVersion), as the real watch cache closes a watcher that is too slow."""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreError(Exception):
    """A request the store refuses; the API server turns it into a ``Status``."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}


def not_found(res: Resource, name: str) -> StoreError:
    """The 404 the API server answers for a missing object (``deployments.apps "x" not found``)."""
    group = f".{res.group}" if res.group else ""
    return StoreError(404, "NotFound", f'{res.plural}{group} "{name}" not found',
                      {"name": name, "kind": res.plural, **({"group": res.group} if res.group else {})})


class SelectorError(ValueError):
    """A label or field selector that does not parse."""


# --------------------------------------------------------------------------------------------- selectors

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return has and value == self.values[0]
        if self.op == "!=":
            return not has or value != self.values[0]
        if self.op == "in":
            return has and value in self.values
        if self.op == "notin":
            return not has or value not in self.values
        if self.op == "exists":
            return has
        return not has  # "!"


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, term: str) -> str:
    if not _LABEL_KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {term!r}")
    return key


def _check_value(value: str, term: str) -> str:
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label value {value!r} in {term!r}")
    return value


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``app=details,version!=v2,env in (a,b),!canary`` into requirements.

    Raises:
        SelectorError: with a message in the API server's words, for a 400 ``BadRequest``.
    """
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        term = raw.strip()
        if not term:
            raise SelectorError(f"unable to parse requirement: found '', expected: identifier in {text!r}")
        m = re.match(r"^(\S+?)\s+(in|notin)\s*\((.*)\)$", term)
        if m:
            values = tuple(_check_value(v.strip(), term) for v in m.group(3).split(",") if v.strip())
            if not values:
                raise SelectorError(f"unable to parse requirement: for 'in', 'notin' operators, values set "
                                    f"can't be empty in {term!r}")
            reqs.append(Requirement(_check_key(m.group(1), term), m.group(2), values))
            continue
        m = re.match(r"^([^=!\s]+)\s*(==|=|!=)\s*(.*)$", term)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(_check_key(m.group(1), term), op, (_check_value(m.group(3).strip(), term),)))
            continue
        if term.startswith("!"):
            reqs.append(Requirement(_check_key(term[1:].strip(), term), "!"))
            continue
        if re.match(r"^[^=!\s()]+$", term):
            reqs.append(Requirement(_check_key(term, term), "exists"))
            continue
        raise SelectorError(f"unable to parse requirement: invalid selector term {term!r}")
    return reqs


def labels_match(reqs: Iterable[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in reqs)


def match_labels_selector(selector: dict[str, Any] | None) -> list[Requirement]:
    """Requirements from a ``spec.selector`` (``matchLabels`` / ``matchExpressions``) or a plain label map."""
    if not selector:
        return []
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return [Requirement(k, "=", (str(v),)) for k, v in selector.items()]
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(expr.get("operator", ""))
        if op:
            reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return reqs


def selector_string(selector: dict[str, Any] | None) -> str:
    """``app=details,version=v1`` from a ``matchLabels`` selector (for Scale status and printers)."""
    reqs = match_labels_selector(selector)
    out: list[str] = []
    for r in reqs:
        if r.op in ("=", "!="):
            out.append(f"{r.key}{r.op}{r.values[0]}")
        elif r.op in ("in", "notin"):
            out.append(f"{r.key} {r.op} ({','.join(r.values)})")
        elif r.op == "exists":
            out.append(r.key)
        else:
            out.append(f"!{r.key}")
    return ",".join(out)


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    value: str
    negate: bool

    def matches(self, obj: Obj) -> bool:
        cur: Any = obj
        for part in self.path:
            cur = cur.get(part) if isinstance(cur, dict) else None
        actual = "" if cur is None else str(cur)
        return (actual != self.value) if self.negate else (actual == self.value)


def parse_field_selector(text: str | None) -> list[FieldRequirement]:
    """Parse ``metadata.name=x,involvedObject.uid=y`` (``=``, ``==`` and ``!=``)."""
    if not text or not text.strip():
        return []
    out: list[FieldRequirement] = []
    for term in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not m:
            raise SelectorError(f"invalid selector: {text!r}; can't understand {term!r}")
        out.append(FieldRequirement(tuple(m.group(1).split(".")), m.group(3), m.group(2) == "!="))
    return out


# --------------------------------------------------------------------------------------------- store


@dataclass
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    resource: Resource
    object: Obj
    old: Obj | None
    rv: int
    at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Watcher:
    resource: Resource
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)

    def selects(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and self.resource.namespaced and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and all(f.matches(obj) for f in self.fields)

    def translate(self, ev: WatchEvent) -> WatchEvent | None:
        """The event this watcher should see: objects moving in or out of the selection become ADDED/DELETED."""
        now_in, was_in = self.selects(ev.object), self.selects(ev.old)
        if ev.type == "DELETED":
            return ev if was_in or now_in else None
        if now_in and was_in:
            return ev
        if now_in:
            return WatchEvent("ADDED", ev.resource, ev.object, ev.old, ev.rv)
        if was_in:
            return WatchEvent("DELETED", ev.resource, ev.object, ev.old, ev.rv)
        return None


Listener = Callable[[WatchEvent], None]
Key = tuple[str, str]
"""(namespace, name); the namespace is "" for cluster-scoped kinds."""


@dataclass
class _History:
    """The watch cache of one resource: its recent events, oldest first."""

    events: deque[WatchEvent] = field(default_factory=deque)
    compacted: int = 1
    """The newest resourceVersion dropped from ``events``: a watch from an older version gets 410 Gone."""

    def append(self, ev: WatchEvent) -> None:
        self.events.append(ev)
        while self.events and (len(self.events) > HISTORY or ev.at - self.events[0].at > COMPACT_AFTER):
            self.compacted = self.events.popleft().rv

    def since(self, rv: int) -> list[WatchEvent]:
        """The kept events newer than ``rv``, oldest first."""
        out: list[WatchEvent] = []
        for ev in reversed(self.events):
            if ev.rv <= rv:
                break
            out.append(ev)
        out.reverse()
        return out


@dataclass
class _Table:
    """The objects of one resource, with their indexes."""

    objects: dict[Key, Obj] = field(default_factory=dict)
    by_namespace: dict[str, dict[str, Obj]] = field(default_factory=dict)
    by_label: dict[tuple[str, str], set[Key]] = field(default_factory=dict)

    def put(self, key: Key, obj: Obj) -> None:
        old = self.objects.get(key)
        if old is not None:
            self._unindex_labels(key, old)
        self.objects[key] = obj
        self.by_namespace.setdefault(key[0], {})[key[1]] = obj
        for pair in (obj["metadata"].get("labels") or {}).items():
            self.by_label.setdefault(pair, set()).add(key)

    def pop(self, key: Key) -> Obj | None:
        old = self.objects.pop(key, None)
        if old is None:
            return None
        names = self.by_namespace.get(key[0], {})
        names.pop(key[1], None)
        if not names:
            self.by_namespace.pop(key[0], None)
        self._unindex_labels(key, old)
        return old

    def _unindex_labels(self, key: Key, obj: Obj) -> None:
        for pair in (obj["metadata"].get("labels") or {}).items():
            keys = self.by_label.get(pair)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_label[pair]

    def candidates(self, namespace: str | None, labels: list[Requirement] | None) -> list[Key]:
        """Keys that may match: narrowed by the label index (``=`` and ``in`` terms), then by namespace."""
        narrowed: set[Key] | None = None
        for req in labels or ():
            if req.op not in ("=", "in"):
                continue
            keys: set[Key] = set()
            for value in req.values:
                keys |= self.by_label.get((req.key, value), set())
            narrowed = keys if narrowed is None else narrowed & keys
            if not narrowed:
                return []
        if narrowed is not None:
            return [k for k in narrowed if namespace is None or k[0] == namespace]
        if namespace is not None:
            return [(namespace, name) for name in self.by_namespace.get(namespace, {})]
        return list(self.objects)


class Store:
    """Objects by resource, namespace and name; change history; watchers and in-process listeners."""

    def __init__(self) -> None:
        self.rv = 1
        self._tables: dict[Resource, _Table] = {}
        self._history: dict[Resource, _History] = {}
        # Watchers by resource, then by the namespace they watch (None: every namespace, or a cluster-scoped kind).
        self._watchers: dict[Resource, dict[str | None, set[Watcher]]] = {}
        self._listeners: dict[Resource, list[Listener]] = {}

    def _table(self, res: Resource) -> _Table:
        table = self._tables.get(res)
        if table is None:
            table = self._tables[res] = _Table()
        return table

    # -- reads
    def get(self, res: Resource, namespace: str, name: str) -> Obj | None:
        return self._table(res).objects.get((namespace if res.namespaced else "", name))

    def list(self, res: Resource, namespace: str | None = None, labels: list[Requirement] | None = None,
             fields: list[FieldRequirement] | None = None) -> list[Obj]:
        """Objects sorted by namespace and name, in ``namespace`` (None: all) and matching the selectors."""
        table = self._table(res)
        ns = namespace if res.namespaced else None
        items: list[Obj] = []
        for key in sorted(table.candidates(ns, labels)):
            obj = table.objects[key]
            if labels and not labels_match(labels, obj["metadata"].get("labels")):
                continue
            if fields and not all(f.matches(obj) for f in fields):
                continue
            items.append(obj)
        return items

    def require(self, res: Resource, namespace: str, name: str) -> Obj:
        """The object, or the API server's 404 naming it."""
        obj = self.get(res, namespace, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    # -- writes (the registry's)
    def _key(self, res: Resource, obj: Obj) -> Key:
        meta = obj["metadata"]
        return (meta.get("namespace", "") if res.namespaced else "", meta["name"])

    def _emit(self, etype: str, res: Resource, obj: Obj, old: Obj | None) -> None:
        ev = WatchEvent(etype, res, obj, old, self.rv)
        history = self._history.get(res)
        if history is None:
            history = self._history[res] = _History()
        history.append(ev)
        by_ns = self._watchers.get(res)
        if by_ns:
            ns = obj["metadata"].get("namespace") if res.namespaced else None
            for w in [*by_ns.get(None, ()), *(by_ns.get(ns, ()) if ns is not None else ())]:
                seen = w.translate(ev)
                if seen is not None:
                    if w.queue.qsize() >= WATCH_BUFFER:
                        self.unwatch(w)
                        continue
                    w.queue.put_nowait(seen)
        for listener in list(self._listeners.get(res, ())):
            listener(ev)

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def create(self, res: Resource, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        key = self._key(res, obj)
        table = self._table(res)
        if key in table.objects:
            raise StoreError(409, "AlreadyExists", f'{res.plural}{"." + res.group if res.group else ""} '
                             f'"{meta["name"]}" already exists', {"name": meta["name"], "kind": res.plural})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._bump()
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        table.put(key, obj)
        self._emit("ADDED", res, obj, None)
        return obj

    def replace(self, res: Resource, obj: Obj, *, bump_generation: bool = False) -> Obj:
        """Store a new version of an existing object (the caller built it from a copy of the old one)."""
        key = self._key(res, obj)
        table = self._table(res)
        old = table.objects.get(key)
        if old is None:
            raise not_found(res, key[1])
        meta = obj["metadata"]
        meta["uid"], meta["creationTimestamp"] = old["metadata"]["uid"], old["metadata"]["creationTimestamp"]
        if bump_generation:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._bump()
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        table.put(key, obj)
        self._emit("MODIFIED", res, obj, old)
        return obj

    def delete(self, res: Resource, namespace: str, name: str) -> Obj:
        key = (namespace if res.namespaced else "", name)
        old = self._table(res).pop(key)
        if old is None:
            raise not_found(res, name)
        final = copy.deepcopy(old)
        final["metadata"]["resourceVersion"] = self._bump()
        self._emit("DELETED", res, final, old)
        return final

    # -- watching
    def subscribe(self, resources: Iterable[Resource], listener: Listener) -> None:
        """Call ``listener`` synchronously with every change of these resources (an in-process informer)."""
        for res in resources:
            self._listeners.setdefault(res, []).append(listener)

    def watch(self, res: Resource, namespace: str | None, labels: builtins.list[Requirement],
              fields: builtins.list[FieldRequirement], since: int | None) -> tuple[Watcher, builtins.list[WatchEvent]]:
        """Register a watcher and return it with the events to replay first.

        ``since=None`` replays the current objects as ADDED; a version replays the history after it.

        Raises:
            StoreError: 410 Gone when ``since`` is older than the kept history.
        """
        w = Watcher(res, namespace, labels, fields)
        replay: builtins.list[WatchEvent] = []
        if since is None:
            replay = [WatchEvent("ADDED", res, o, None, self.rv)
                      for o in self.list(res, namespace, labels, fields)]
        else:
            history = self._history.get(res) or _History()
            if since < history.compacted and since < self.rv:
                raise StoreError(410, "Expired", f"too old resource version: {since} ({history.compacted})")
            for ev in history.since(since):
                seen = w.translate(ev)
                if seen is not None:
                    replay.append(seen)
        self._watchers.setdefault(res, {}).setdefault(self._watch_key(w), set()).add(w)
        return w, replay

    @staticmethod
    def _watch_key(w: Watcher) -> str | None:
        return w.namespace if w.resource.namespaced else None

    def unwatch(self, w: Watcher) -> None:
        watchers = self._watchers.get(w.resource, {}).get(self._watch_key(w))
        if watchers is not None:
            watchers.discard(w)
            if not watchers:
                del self._watchers[w.resource][self._watch_key(w)]
        w.queue.put_nowait(None)

    def close_all_watches(self) -> None:
        for by_ns in list(self._watchers.values()):
            for watchers in list(by_ns.values()):
                for w in list(watchers):
                    self.unwatch(w)
