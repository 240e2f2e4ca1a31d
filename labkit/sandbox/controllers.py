"""Controllers: Deployments own ReplicaSets, ReplicaSets keep their pods, Endpoints follow ready pods.

Each controller reacts to store changes through a de-duplicating work queue, like the real ones, so a burst of pod
updates makes one reconcile, and no controller ever writes from inside another's store callback.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from labkit.kubestatus import is_pod_ready

from .resources import BY_PLURAL
from .store import Obj, WatchEvent, labels_match, match_labels_selector, now_rfc3339, selector_string

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("labkit.sandbox.controllers")
PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]

# The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alike characters).
SAFE = "bcdfghjklmnpqrstvwxz2456789"


def safe_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(SAFE) for _ in range(n))


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(SAFE[b % len(SAFE)] for b in digest[:10])


def owner_ref(obj: Obj) -> Obj:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


class WorkQueue:
    """A set-backed queue of keys with one worker coroutine."""

    def __init__(self, handler: Callable[[str, str], Coroutine[Any, Any, None]], name: str) -> None:
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

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.deployments = WorkQueue(self.sync_deployment, "deployment")
        self.replicasets = WorkQueue(self.sync_replicaset, "replicaset")
        self.endpoints = WorkQueue(self.sync_endpoints, "endpoints")

    def start(self) -> None:
        self.store.subscribe(self._on_event)
        for q in (self.deployments, self.replicasets, self.endpoints):
            q.start()

    def stop(self) -> None:
        for q in (self.deployments, self.replicasets, self.endpoints):
            if q.task is not None:
                q.task.cancel()

    # -- event routing
    def _on_event(self, ev: WatchEvent) -> None:
        meta = ev.object["metadata"]
        ns = meta.get("namespace", "default")
        if ev.resource is DEPLOYMENTS:
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
            self.endpoints.add(ns, meta["name"])

    # -- deployments
    async def sync_deployment(self, ns: str, name: str) -> None:
        dep = self.store.get(DEPLOYMENTS, ns, name)
        if dep is None or dep["metadata"].get("deletionTimestamp"):
            return
        spec = dep["spec"]
        desired = int(spec.get("replicas", 1))
        template = copy.deepcopy(spec["template"])
        phash = template_hash(template)
        owned = [rs for rs in self.store.list(REPLICASETS, ns)
                 if (controller_of(rs) or {}).get("uid") == dep["metadata"]["uid"]]
        current = next((rs for rs in owned
                        if rs["metadata"].get("labels", {}).get("pod-template-hash") == phash), None)
        events = self.cluster.events
        if current is None:
            labels = {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": phash}
            template.setdefault("metadata", {})["labels"] = labels
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
            rs_name = f"{name}-{phash}"
            revision = 1 + max((int(rs["metadata"].get("annotations", {}).get(
                "deployment.kubernetes.io/revision", "0")) for rs in owned), default=0)
            current = self.store.create(REPLICASETS, {
                "metadata": {
                    "name": rs_name, "namespace": ns, "labels": labels,
                    "ownerReferences": [owner_ref(dep)],
                    "annotations": {"deployment.kubernetes.io/desired-replicas": str(desired),
                                    "deployment.kubernetes.io/max-replicas": str(desired + 1),
                                    "deployment.kubernetes.io/revision": str(revision)},
                },
                "spec": {"replicas": desired, "selector": selector, "template": template},
                "status": {"replicas": 0},
            })
            if desired:
                events.record(dep, "Normal", "ScalingReplicaSet",
                              f"Scaled up replica set {rs_name} from 0 to {desired}",
                              component="deployment-controller")
        elif int(current["spec"].get("replicas", 0)) != desired:
            before = int(current["spec"].get("replicas", 0))

            def set_replicas(rs: Obj, n: int = desired) -> None:
                rs["spec"]["replicas"] = n
                rs["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(n)

            self.store.mutate(REPLICASETS, ns, current["metadata"]["name"], set_replicas, bump_generation=True)
            verb = "up" if desired > before else "down"
            events.record(dep, "Normal", "ScalingReplicaSet",
                          f"Scaled {verb} replica set {current['metadata']['name']} from {before} to {desired}",
                          component="deployment-controller")
        for rs in owned:
            if rs["metadata"]["name"] != current["metadata"]["name"] and int(rs["spec"].get("replicas", 0)):
                before = int(rs["spec"]["replicas"])
                self.store.mutate(REPLICASETS, ns, rs["metadata"]["name"],
                                  lambda r: r["spec"].__setitem__("replicas", 0), bump_generation=True)
                events.record(dep, "Normal", "ScalingReplicaSet",
                              f"Scaled down replica set {rs['metadata']['name']} from {before} to 0",
                              component="deployment-controller")
        self._deployment_status(dep, current["metadata"]["name"])

    def _deployment_status(self, dep: Obj, current_rs: str) -> None:
        ns, uid = dep["metadata"]["namespace"], dep["metadata"]["uid"]
        desired = int(dep["spec"].get("replicas", 1))
        rs_names = {rs["metadata"]["name"] for rs in self.store.list(REPLICASETS, ns)
                    if (controller_of(rs) or {}).get("uid") == uid}
        pods = [p for p in self.store.list(PODS, ns)
                if (controller_of(p) or {}).get("name") in rs_names and not p["metadata"].get("deletionTimestamp")]
        updated = [p for p in pods if controller_of(p)["name"] == current_rs]  # type: ignore[index]
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

        self.store.mutate(DEPLOYMENTS, ns, dep["metadata"]["name"], apply)

    # -- replicasets
    async def sync_replicaset(self, ns: str, name: str) -> None:
        rs = self.store.get(REPLICASETS, ns, name)
        if rs is None:
            return
        uid = rs["metadata"]["uid"]
        selector = match_labels_selector(rs["spec"].get("selector"))
        mine = [p for p in self.store.list(PODS, ns)
                if (controller_of(p) or {}).get("uid") == uid and labels_match(selector, p["metadata"].get("labels"))]
        active = [p for p in mine if not p["metadata"].get("deletionTimestamp")]
        desired = 0 if rs["metadata"].get("deletionTimestamp") else int(rs["spec"].get("replicas", 1))
        events = self.cluster.events
        for _ in range(desired - len(active)):
            pod = self._pod_from_template(rs)
            created = self.store.create(PODS, pod)
            events.record(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}",
                          component="replicaset-controller")
        if len(active) > desired:
            # Remove pods that are not ready first, then the newest, as the real controller ranks them.
            victims = sorted(active, key=lambda p: (is_pod_ready(p), p["metadata"]["creationTimestamp"]),
                             reverse=False)
            victims = sorted(victims, key=lambda p: (is_pod_ready(p), -_ts(p)))[: len(active) - desired]
            for p in victims:
                self.cluster.delete_pod(ns, p["metadata"]["name"], None)
                events.record(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                              component="replicaset-controller")
        mine = [p for p in self.store.list(PODS, ns)
                if (controller_of(p) or {}).get("uid") == uid and labels_match(selector, p["metadata"].get("labels"))
                and not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in mine if is_pod_ready(p))

        def status(r: Obj) -> None:
            st: Obj = {"replicas": len(mine), "fullyLabeledReplicas": len(mine),
                       "observedGeneration": r["metadata"].get("generation", 1)}
            if ready:
                st["readyReplicas"] = ready
                st["availableReplicas"] = ready
            r["status"] = st

        self.store.mutate(REPLICASETS, ns, name, status)

    def _pod_from_template(self, rs: Obj) -> Obj:
        template = copy.deepcopy(rs["spec"]["template"])
        tmeta = template.get("metadata") or {}
        spec = template.get("spec") or {}
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
        spec.setdefault("securityContext", {})
        for c in spec.get("containers") or []:
            c.setdefault("imagePullPolicy", "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")
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
                self.store.delete(ENDPOINTS, ns, name)
            await self.cluster.network.unregister_service(ns, name)
            return
        selector = match_labels_selector(svc["spec"].get("selector"))
        ports = svc["spec"].get("ports") or []
        ready_addrs, not_ready = [], []
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
        await self.cluster.network.set_endpoints(ns, name, backends)
        existing = self.store.get(ENDPOINTS, ns, name)
        labels = dict(svc["metadata"].get("labels") or {})
        if existing is None:
            self.store.create(ENDPOINTS, {"metadata": {"name": name, "namespace": ns, "labels": labels},
                                          "subsets": subsets})
        else:
            def apply(ep: Obj) -> None:
                ep["subsets"] = subsets
                ep["metadata"]["labels"] = labels
                if not subsets:
                    ep.pop("subsets")
            self.store.mutate(ENDPOINTS, ns, name, apply)


def _ts(p: Obj) -> float:
    from datetime import datetime

    return datetime.strptime(p["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").timestamp()


def _target_port(service_port: Obj, pod: Obj) -> int | None:
    target = service_port.get("targetPort", service_port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod.get("spec", {}).get("containers") or []:
        for cp in c.get("ports") or []:
            if cp.get("name") == target:
                return int(cp["containerPort"])
    return None


__all__ = ["Controllers", "selector_string", "template_hash"]
