"""Controllers: Deployments own ReplicaSets, ReplicaSets keep their pods, Endpoints follow ready pods.

Each controller reacts to store changes through a de-duplicating work queue, like the real ones, so a burst of pod
updates makes one reconcile, and no controller ever writes from inside another's store callback. They read the
store and write only through the :class:`~.registry.Registry`; the endpoints controller also points the network's
Service proxies at ready pods (kube-proxy's job) and keeps cluster DNS in step with the Services.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from labkit.kubestatus import is_pod_ready

from . import node
from .events import EventRecorder
from .registry import SAFE, Registry, controller_of, owner_ref, safe_suffix
from .resources import BY_PLURAL
from .store import (
    Obj,
    Requirement,
    Store,
    WatchEvent,
    labels_match,
    match_labels_selector,
    now_rfc3339,
    selector_string,
)

log = logging.getLogger("labkit.sandbox.controllers")
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
CONFIGMAPS = BY_PLURAL[("", "configmaps")]
SERVICE_ACCOUNTS = BY_PLURAL[("", "serviceaccounts")]
ENDPOINT_SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        "deployment.kubernetes.io/desired-replicas", "deployment.kubernetes.io/max-replicas"})
"""Deployment annotations the controller does not copy onto its ReplicaSets (as ``skipCopyAnnotation``)."""


class ServiceNetwork(Protocol):
    """What the controllers need of the network: DNS names and Service proxies (see :mod:`.network`)."""

    def cluster_ip(self, namespace: str, name: str) -> str | None: ...

    def register_service(self, namespace: str, name: str, cluster_ip: str) -> None: ...

    async def unregister_service(self, namespace: str, name: str) -> None: ...

    async def set_endpoints(self, namespace: str, name: str, ports: dict[int, list[tuple[str, int]]]) -> None: ...


def template_hash(template: Obj) -> str:
    """The pod-template-hash, made the way the deployment controller makes it.

    A 32-bit FNV-1a hash of the template, written in decimal and each digit mapped through the safe alphabet
    (``rand.SafeEncodeString``), which is why real hashes look like ``6d86fd9949``.
    """
    h = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(SAFE[ord(ch) % len(SAFE)] for ch in str(h))


def equal_ignoring_hash(a: Obj, b: Obj) -> bool:
    """Whether two pod templates are the same but for the ``pod-template-hash`` label (``EqualIgnoreHash``)."""
    def bare(t: Obj) -> Obj:
        t = copy.deepcopy(t)
        meta = t.setdefault("metadata", {})
        labels = meta.get("labels") or {}
        labels.pop(HASH_LABEL, None)
        meta["labels"] = labels
        if meta.get("creationTimestamp") is None:
            meta.pop("creationTimestamp", None)
        return t
    return bare(a) == bare(b)


def _revision(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _owned_by(obj: Obj, uid: str) -> bool:
    return (controller_of(obj) or {}).get("uid") == uid


class WorkQueue:
    """A set-backed queue of keys with one worker coroutine."""

    def __init__(self, handler: Callable[[str, str], Awaitable[None]], name: str) -> None:
        self._handler, self._name = handler, name
        self._pending: set[tuple[str, str]] = set()
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def add(self, ns: str, name: str) -> None:
        key = (ns, name)
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            try:
                await self._handler(*key)
            except Exception:  # one bad object must not stop the controller
                log.exception("%s controller failed on %s/%s", self._name, *key)


class Controllers:
    """The controller manager: deployment, replicaset and endpoints controllers."""

    def __init__(self, store: Store, registry: Registry, events: EventRecorder, network: ServiceNetwork,
                 ca_pem: str = "") -> None:
        self.store = store
        self.registry = registry
        self.events = events
        self.network = network
        self.ca_pem = ca_pem
        self.deployments = WorkQueue(self.sync_deployment, "deployment")
        self.replicasets = WorkQueue(self.sync_replicaset, "replicaset")
        self.endpoints = WorkQueue(self.sync_endpoints, "endpoints")
        self.namespaces = WorkQueue(self.sync_namespace, "namespace")
        self._queues = (self.deployments, self.replicasets, self.endpoints, self.namespaces)

    def start(self) -> None:
        self.store.subscribe((DEPLOYMENTS, REPLICASETS, PODS, SERVICES, NAMESPACES, CONFIGMAPS, SERVICE_ACCOUNTS),
                             self._on_event)
        for q in self._queues:
            q.start()
        for ns in self.store.list(NAMESPACES):
            self.namespaces.add("", ns["metadata"]["name"])
        for svc in self.store.list(SERVICES):
            self._on_event(WatchEvent("ADDED", SERVICES, svc, None, self.store.rv))

    def stop(self) -> None:
        for q in self._queues:
            if q.task is not None:
                q.task.cancel()

    # -- event routing
    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.object["metadata"]
        ns = meta.get("namespace", "default")
        if ev.resource is NAMESPACES:
            if ev.type == "ADDED":
                self.namespaces.add("", meta["name"])
        elif ev.resource in (CONFIGMAPS, SERVICE_ACCOUNTS):
            if ev.type == "DELETED" and meta["name"] in (node.ROOT_CA_CONFIGMAP, node.DEFAULT_SERVICE_ACCOUNT):
                self.namespaces.add("", ns)
        elif ev.resource is DEPLOYMENTS:
            self.deployments.add(ns, meta["name"])
        elif ev.resource is REPLICASETS:
            self.replicasets.add(ns, meta["name"])
            ref = controller_of(ev.object)
            if ref and ref.get("kind") == "Deployment":
                self.deployments.add(ns, ref["name"])
        elif ev.resource is PODS:
            for obj in (ev.object, ev.old):
                if obj is None:
                    continue
                ref = controller_of(obj)
                if ref and ref.get("kind") == "ReplicaSet":
                    self.replicasets.add(ns, ref["name"])
            for svc in self.store.list(SERVICES, ns):
                sel = match_labels_selector(svc["spec"].get("selector"))
                if not sel:
                    continue
                if any(o is not None and labels_match(sel, o["metadata"].get("labels")) for o in (ev.object, ev.old)):
                    self.endpoints.add(ns, svc["metadata"]["name"])
        elif ev.resource is SERVICES:
            ip = ev.object["spec"].get("clusterIP")
            if ev.type != "DELETED" and ip and ip != "None" and self.network.cluster_ip(ns, meta["name"]) != ip:
                # At once, not from the queue: a pod started right after the Service must resolve its name.
                self.network.register_service(ns, meta["name"], ip)
            self.endpoints.add(ns, meta["name"])

    # -- namespaces: the root-CA publisher and the service-account controller
    async def sync_namespace(self, _: str, name: str) -> None:
        namespace = self.store.get(NAMESPACES, "", name)
        if namespace is None or namespace["metadata"].get("deletionTimestamp"):
            return
        if self.store.get(CONFIGMAPS, name, node.ROOT_CA_CONFIGMAP) is None:
            self.registry.create(CONFIGMAPS, node.root_ca_configmap(name, self.ca_pem), name)
        if self.store.get(SERVICE_ACCOUNTS, name, node.DEFAULT_SERVICE_ACCOUNT) is None:
            self.registry.create(SERVICE_ACCOUNTS, node.default_service_account(name), name)

    # -- deployments
    async def sync_deployment(self, ns: str, name: str) -> None:
        dep = self.store.get(DEPLOYMENTS, ns, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return
        spec = dep["spec"]
        desired = int(spec.get("replicas", 1))
        template = copy.deepcopy(spec["template"])
        phash = template_hash(template)
        owned = [rs for rs in self.store.list(REPLICASETS, ns) if _owned_by(rs, dep["metadata"]["uid"])]
        # The oldest ReplicaSet with this template is the new one again (a rollback), as FindNewReplicaSet says.
        current = next((rs for rs in sorted(owned, key=lambda r: (r["metadata"]["creationTimestamp"],
                                                                  r["metadata"]["name"]))
                        if equal_ignoring_hash(rs["spec"]["template"], template)), None)
        max_revision = max((_revision(rs) for rs in owned), default=0)
        if current is None:
            labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": phash}
            template.setdefault("metadata", {})["labels"] = labels
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
            rs_name = f"{name}-{phash}"
            current = self.registry.create(REPLICASETS, {
                "metadata": {
                    "name": rs_name, "namespace": ns, "labels": labels,
                    "ownerReferences": [owner_ref(dep)],
                    "annotations": {**self._copied_annotations(dep),
                                    "deployment.kubernetes.io/desired-replicas": str(desired),
                                    "deployment.kubernetes.io/max-replicas": str(desired + 1),
                                    REVISION: str(max_revision + 1)},
                },
                "spec": {"replicas": 0, "selector": selector, "template": template},
                "status": {"replicas": 0},
            }, ns)
        else:
            current = self._renew(dep, current, max_revision)
        revision = str(_revision(current))
        if (dep["metadata"].get("annotations") or {}).get(REVISION) != revision:
            dep = self.registry.mutate(DEPLOYMENTS, ns, name, lambda d: d["metadata"].setdefault(
                "annotations", {}).__setitem__(REVISION, revision)) or dep
        self._roll(dep, current, [rs for rs in owned if rs["metadata"]["name"] != current["metadata"]["name"]],
                   desired)
        self._deployment_status(dep, current["metadata"]["name"])

    @staticmethod
    def _copied_annotations(dep: Obj) -> dict[str, str]:
        return {k: v for k, v in (dep["metadata"].get("annotations") or {}).items() if k not in NOT_COPIED}

    def _renew(self, dep: Obj, rs: Obj, max_revision: int) -> Obj:
        """Keep the new ReplicaSet's annotations in step: the deployment's, and the newest revision number.

        A ReplicaSet that was an older revision (after ``rollout undo``) gets the next number and remembers its
        previous ones in ``revision-history``, as the deployment controller does.
        """
        copied = self._copied_annotations(dep)
        old_revision = _revision(rs)
        bump = old_revision < max_revision

        def apply(r: Obj) -> None:
            ann = r["metadata"].setdefault("annotations", {})
            ann.update(copied)
            if bump:
                history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
                ann[REVISION_HISTORY] = ",".join([*history, str(old_revision)])
                ann[REVISION] = str(max_revision + 1)

        return self.registry.mutate(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"],
                                    apply) or rs

    def _scale_rs(self, dep: Obj, rs: Obj, n: int) -> None:
        before = int(rs["spec"].get("replicas", 0))
        if n == before:
            return

        def apply(r: Obj) -> None:
            r["spec"]["replicas"] = n
            r["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(
                dep["spec"].get("replicas", 1))

        self.registry.mutate(REPLICASETS, rs["metadata"]["namespace"], rs["metadata"]["name"], apply,
                             bump_generation=True)
        verb = "up" if n > before else "down"
        self.events.record(dep, "Normal", "ScalingReplicaSet",
                           f"Scaled {verb} replica set {rs['metadata']['name']} from {before} to {n}",
                           component="deployment-controller")

    def _roll(self, dep: Obj, new: Obj, old: list[Obj], desired: int) -> None:
        """One step of a RollingUpdate (25 % surge, 25 % unavailable, as the defaults), or a plain scale."""
        old = [rs for rs in old if int(rs["spec"].get("replicas", 0)) > 0]
        if not old:
            self._scale_rs(dep, new, desired)
            return
        strategy = (dep["spec"].get("strategy") or {})
        if strategy.get("type") == "Recreate":
            for rs in old:
                self._scale_rs(dep, rs, 0)
            if not any(self._rs_pods(rs) for rs in old):
                self._scale_rs(dep, new, desired)
            return
        rolling = strategy.get("rollingUpdate") or {}
        surge = _percent_of(rolling.get("maxSurge", "25%"), desired, up=True)
        unavailable = _percent_of(rolling.get("maxUnavailable", "25%"), desired, up=False)
        if surge == 0 and unavailable == 0:
            surge = 1
        old_total = sum(int(rs["spec"].get("replicas", 0)) for rs in old)
        new_replicas = int(new["spec"].get("replicas", 0))
        grow_to = min(desired, max(new_replicas, desired + surge - old_total))
        self._scale_rs(dep, new, grow_to)
        ready = sum(1 for rs in [new, *old] for p in self._rs_pods(rs) if is_pod_ready(p))
        can_remove = ready - (desired - unavailable)
        for rs in sorted(old, key=lambda r: r["metadata"]["creationTimestamp"]):
            if can_remove <= 0:
                break
            n = int(rs["spec"].get("replicas", 0))
            cut = min(n, can_remove)
            self._scale_rs(dep, rs, n - cut)
            can_remove -= cut

    def _rs_pods(self, rs: Obj) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        selector = match_labels_selector(rs["spec"].get("selector"))
        return [p for p in self.store.list(PODS, rs["metadata"]["namespace"], selector)
                if _owned_by(p, uid) and not p["metadata"].get("deletionTimestamp")]

    def _deployment_status(self, dep: Obj, current_rs: str) -> None:
        ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
        desired = int(dep["spec"].get("replicas", 1))
        rs_names = {rs["metadata"]["name"] for rs in self.store.list(REPLICASETS, ns) if _owned_by(rs, uid)}
        selector = match_labels_selector(dep["spec"].get("selector"))
        pods = [p for p in self.store.list(PODS, ns, selector)
                if (controller_of(p) or {}).get("name") in rs_names and not p["metadata"].get("deletionTimestamp")]
        updated = [p for p in pods if (controller_of(p) or {}).get("name") == current_rs]
        ready = [p for p in pods if is_pod_ready(p)]
        stamp = now_rfc3339()

        def apply(d: Obj) -> None:
            old = d.get("status") or {}
            old_conds = {c["type"]: c for c in old.get("conditions") or []}

            def cond(ctype: str, ok: bool, reason: str, message: str) -> Obj:
                status = "True" if ok else "False"
                prev = old_conds.get(ctype)
                since = prev["lastTransitionTime"] if prev and prev["status"] == status else stamp
                return {"type": ctype, "status": status, "reason": reason, "message": message,
                        "lastUpdateTime": stamp if not prev or prev.get("reason") != reason else prev.get(
                            "lastUpdateTime", stamp), "lastTransitionTime": since}

            available = len(ready) >= desired
            complete = len(updated) == desired and len(pods) == desired and available
            st: Obj = {
                "observedGeneration": d["metadata"].get("generation", 1),
                "replicas": len(pods),
                "updatedReplicas": len(updated),
                "readyReplicas": len(ready),
                "availableReplicas": len(ready),
                "conditions": [
                    cond("Available", available,
                         "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                         "Deployment has minimum availability." if available
                         else "Deployment does not have minimum availability."),
                    cond("Progressing", True, "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                         f'ReplicaSet "{current_rs}" has successfully progressed.' if complete
                         else f'ReplicaSet "{current_rs}" is progressing.'),
                ],
            }
            if len(pods) - len(ready) > 0:
                st["unavailableReplicas"] = max(0, desired - len(ready))
            for k in ("readyReplicas", "availableReplicas", "updatedReplicas"):
                if not st[k]:
                    st.pop(k)
            d["status"] = st

        self.registry.mutate(DEPLOYMENTS, ns, dep["metadata"]["name"], apply)

    # -- replicasets
    async def sync_replicaset(self, ns: str, name: str) -> None:
        rs = self.store.get(REPLICASETS, ns, name)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        selector = match_labels_selector(rs["spec"].get("selector"))
        self._release_orphans(rs, selector)
        mine = [p for p in self.store.list(PODS, ns, selector) if _owned_by(p, uid)]
        active = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
        desired = 0 if rs["metadata"].get("deletionTimestamp") else int(rs["spec"].get("replicas", 1))
        events = self.events
        for _ in range(desired - len(active)):
            pod = self._pod_from_template(rs)
            created = self.registry.create(PODS, pod, ns)
            events.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                          component="replicaset-controller")
        if len(active) > desired:
            # Remove pods that are not ready first, then the newest, as the real controller ranks them.
            victims = sorted(active, key=lambda p: (is_pod_ready(p), -_ts(p)))[: len(active) - desired]
            for p in victims:
                self.registry.delete_pod(ns, p["metadata"]["name"], None)
                events.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                              component="replicaset-controller")
        mine = [p for p in self.store.list(PODS, ns, selector)
                if _owned_by(p, uid) and not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in mine if is_pod_ready(p))

        def status(r: Obj) -> None:
            st: Obj = {"replicas": len(mine), "fullyLabeledReplicas": len(mine),
                       "observedGeneration": r["metadata"].get("generation", 1)}
            if ready:
                st["readyReplicas"] = ready
                st["availableReplicas"] = ready
            r["status"] = st

        self.registry.mutate(REPLICASETS, ns, name, status)

    def _release_orphans(self, rs: Obj, selector: list[Requirement]) -> None:
        """Release the pods this ReplicaSet controls whose labels no longer match its selector (a pod relabelled
        out of it): their controller ownerReference goes, as the real controller's ClaimPods does, so they keep
        running on their own and garbage collection of the ReplicaSet no longer deletes them."""
        ns, uid = rs["metadata"]["namespace"], rs["metadata"]["uid"]
        for pod in self.store.list(PODS, ns):
            if not _owned_by(pod, uid) or labels_match(selector, pod["metadata"].get("labels")):
                continue

            def release(p: Obj) -> None:
                refs = [r for r in p["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if refs:
                    p["metadata"]["ownerReferences"] = refs
                else:
                    p["metadata"].pop("ownerReferences", None)

            self.registry.mutate(PODS, ns, pod["metadata"]["name"], release)

    def _pod_from_template(self, rs: Obj) -> Obj:
        template = copy.deepcopy(rs["spec"]["template"])
        tmeta = template.get("metadata") or {}
        spec = template.get("spec") or {}  # defaulted by the registry, as any new Pod
        meta: Obj = {
            "name": f"{rs['metadata']['name']}-{safe_suffix()}",
            "generateName": f"{rs['metadata']['name']}-",
            "namespace": rs["metadata"]["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [owner_ref(rs)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        return {"metadata": meta, "spec": spec, "status": {"phase": "Pending", "qosClass": "BestEffort"}}

    # -- endpoints
    async def sync_endpoints(self, ns: str, name: str) -> None:
        svc = self.store.get(SERVICES, ns, name)
        if svc is None:
            if self.store.get(ENDPOINTS, ns, name) is not None:
                self.registry.delete(ENDPOINTS, ns, name)
            for eps in self._slices(ns, name):
                self.registry.delete(ENDPOINT_SLICES, ns, eps["metadata"]["name"])
            await self.network.unregister_service(ns, name)
            return
        if not svc["spec"].get("selector"):
            return  # a selectorless Service: whoever made it keeps its endpoints (the API server, for kubernetes)
        selector = match_labels_selector(svc["spec"].get("selector"))
        ports = svc["spec"].get("ports") or []
        ready_addrs: list[Obj] = []
        not_ready: list[Obj] = []
        backends: dict[int, list[tuple[str, int]]] = {int(p["port"]): [] for p in ports}
        ep_ports: list[Obj] = []
        pods = [p for p in self.store.list(PODS, ns, selector) if selector] if selector else []
        for p in sorted(pods, key=lambda p: p.get("status", {}).get("podIP", "")):
            ip = p.get("status", {}).get("podIP")
            if not ip:
                continue
            addr = {"ip": ip, "nodeName": "sandbox", "targetRef": {
                "kind": "Pod", "namespace": ns, "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}
            ok = is_pod_ready(p) and not p["metadata"].get("deletionTimestamp")
            (ready_addrs if ok else not_ready).append(addr)
            for sp in ports:
                target = _target_port(sp, p)
                if ok and target:
                    backends[int(sp["port"])].append((ip, target))
        for sp in ports:
            tp = sp.get("targetPort", sp["port"])
            entry: Obj = {"port": int(tp) if isinstance(tp, int) or str(tp).isdigit() else int(sp["port"]),
                          "protocol": sp.get("protocol", "TCP")}
            if sp.get("name"):
                entry["name"] = sp["name"]
            ep_ports.append(entry)
        subsets: list[Obj] = []
        if ready_addrs or not_ready:
            subset: Obj = {"ports": ep_ports}
            if ready_addrs:
                subset["addresses"] = ready_addrs
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subsets.append(subset)
        await self.network.set_endpoints(ns, name, backends)
        existing = self.store.get(ENDPOINTS, ns, name)
        labels = dict(svc["metadata"].get("labels") or {})
        if existing is None:
            self.registry.create(ENDPOINTS, {"metadata": {"name": name, "namespace": ns, "labels": labels},
                                             "subsets": subsets}, ns)
        else:
            def apply(ep: Obj) -> None:
                ep["subsets"] = subsets
                ep["metadata"]["labels"] = labels
                if not subsets:
                    ep.pop("subsets")
            self.registry.mutate(ENDPOINTS, ns, name, apply)
        self._sync_slice(svc, pods)

    def _slices(self, ns: str, service: str) -> list[Obj]:
        return self.store.list(ENDPOINT_SLICES, ns, [
            Requirement(node.SERVICE_NAME_LABEL, "=", (service,)),
            Requirement(node.MANAGED_BY, "=", (node.SLICE_CONTROLLER,))])

    def _sync_slice(self, svc: Obj, pods: list[Obj]) -> None:
        """The EndpointSlice beside the Endpoints: one per Service, every pod with an address, its conditions."""
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        endpoints: list[Obj] = []
        for p in sorted(pods, key=lambda p: p.get("status", {}).get("podIP", "")):
            ip = p.get("status", {}).get("podIP")
            if not ip:
                continue
            terminating = bool(p["metadata"].get("deletionTimestamp"))
            ready = is_pod_ready(p)
            endpoints.append({
                "addresses": [ip],
                "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
                "nodeName": node.NODE_NAME,
                "targetRef": {"kind": "Pod", "namespace": ns, "name": p["metadata"]["name"],
                              "uid": p["metadata"]["uid"]}})
        ports: list[Obj] = []
        for sp in svc["spec"].get("ports") or []:
            target = next((t for t in (_target_port(sp, p) for p in pods) if t), None)
            tp = sp.get("targetPort", sp["port"])
            number = target or (int(tp) if str(tp).isdigit() else int(sp["port"]))
            ports.append({"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")})
        labels = {**(svc["metadata"].get("labels") or {}), node.SERVICE_NAME_LABEL: name,
                  node.MANAGED_BY: node.SLICE_CONTROLLER}
        existing = self._slices(ns, name)
        if not existing:
            ref = {**owner_ref(svc), "apiVersion": "v1", "kind": "Service"}
            self.registry.create(ENDPOINT_SLICES, {
                "metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                             "ownerReferences": [ref]},
                "addressType": "IPv4", "endpoints": endpoints, "ports": ports}, ns)
            return

        def apply(eps: Obj) -> None:
            eps["metadata"]["labels"] = labels
            eps["endpoints"], eps["ports"] = endpoints, ports

        self.registry.mutate(ENDPOINT_SLICES, ns, existing[0]["metadata"]["name"], apply)


def _percent_of(value: object, total: int, *, up: bool) -> int:
    """A rollingUpdate bound (an int or "25%") as a pod count; surge rounds up, unavailability down."""
    text = str(value)
    if text.endswith("%"):
        exact = total * float(text[:-1]) / 100
        return int(-(-exact // 1)) if up else int(exact // 1)
    return int(text)


def _ts(p: Obj) -> float:
    return datetime.strptime(p["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _target_port(service_port: Obj, pod: Obj) -> int | None:
    target: object = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(str(target))
    for c in pod.get("spec", {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                port = cp.get("containerPort")
                return int(port) if port is not None else None
    return None


__all__ = ["Controllers", "selector_string", "template_hash"]
