"""The cluster: one object wiring the store, the controllers, the kubelet and the network together.

The API server calls into it for everything that changes state (create, delete with grace periods and garbage
collection); the controllers and the kubelet react to the store's changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime, timedelta

import labkit
from labkit.kubestatus import is_pod_ready

from . import dns, toolbox
from .controllers import Controllers, controller_of, safe_suffix
from .events import EventRecorder
from .kubelet import Kubelet
from .network import Network
from .resources import BY_PLURAL, Resource
from .store import Obj, Store, StoreError, labels_match, match_labels_selector

PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def invalid(kind: str, name: str, causes: list[tuple[str, str]]) -> StoreError:
    """A 422 ``Invalid`` error like the API server's validation returns."""
    text = "; ".join(f"{f}: {m}" for f, m in causes)
    return StoreError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', {
        "name": name, "kind": kind,
        "causes": [{"reason": "FieldValueRequired" if "Required" in m else "FieldValueInvalid",
                    "message": m, "field": f} for f, m in causes]})


class Cluster:
    """Everything behind the API server."""

    def __init__(self, state_dir: str, time_scale: float = 1.0, subnet: tuple[int, int] | None = None) -> None:
        self.state_dir = state_dir
        self.time_scale = time_scale
        self.store = Store()
        self.events = EventRecorder(self.store)
        self.network = Network(state_dir, subnet)
        self.kubelet = Kubelet(self)
        self.controllers = Controllers(self)
        # Containers import labkit from the same place as this process, whatever the install.
        self.python_path = os.path.dirname(os.path.dirname(os.path.abspath(labkit.__file__)))
        self._finalizing: set[str] = set()

    def start(self) -> None:
        for ns in ("default", *SYSTEM_NAMESPACES):
            self.store.create(NAMESPACES, {"metadata": {"name": ns, "labels": {
                "kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}})
        self.controllers.start()
        self.kubelet.start()

    async def shutdown(self) -> None:
        self.controllers.stop()
        self.events.close()
        await self.kubelet.shutdown()
        self.store.close_all_watches()
        await self.network.close()

    # -- create
    def prepare(self, res: Resource, obj: Obj, namespace: str | None) -> Obj:
        """Validate and default a new object the way the API server's admission and validation do."""
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise StoreError(400, "BadRequest", "the namespace of the provided object does not match the "
                                 "namespace sent on the request", {"causes": [{
                                     "reason": "FieldValueInvalid", "field": "metadata.namespace",
                                     "message": "does not match the namespace sent on the request"}]})
            meta["namespace"] = namespace or meta.get("namespace") or "default"
            if self.store.get(NAMESPACES, "", meta["namespace"]) is None:
                raise StoreError(404, "NotFound", f'namespaces "{meta["namespace"]}" not found',
                                 {"name": meta["namespace"], "kind": "namespaces"})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + safe_suffix()
            else:
                raise invalid(res.kind, "", [("metadata.name", "Required value: name or generateName is required")])
        name = meta["name"]
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(key, None)
        spec = obj.get("spec") or {}
        if res is PODS:
            if not spec.get("containers"):
                raise invalid("Pod", name, [("spec.containers", "Required value")])
            for c in spec["containers"]:
                if not c.get("name"):
                    raise invalid("Pod", name, [("spec.containers[0].name", "Required value")])
                if not c.get("image"):
                    raise invalid("Pod", name, [(f"spec.containers[{c['name']}].image", "Required value")])
                c.setdefault("imagePullPolicy", "IfNotPresent")
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("serviceAccountName", "default")
            spec.setdefault("dnsPolicy", "ClusterFirst")
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        elif res in (DEPLOYMENTS, REPLICASETS):
            selector = spec.get("selector")
            template = spec.get("template") or {}
            tlabels = (template.get("metadata") or {}).get("labels") or {}
            if not selector:
                raise invalid(res.kind, name, [("spec.selector", "Required value")])
            if not labels_match(match_labels_selector(selector), tlabels):
                raise invalid(res.kind, name, [("spec.template.metadata.labels",
                                                f"Invalid value: {tlabels!r}: `selector` does not match "
                                                "template `labels`")])
            if not (template.get("spec") or {}).get("containers"):
                raise invalid(res.kind, name, [("spec.template.spec.containers", "Required value")])
            spec.setdefault("replicas", 1)
            if res is DEPLOYMENTS:
                spec.setdefault("strategy", {"type": "RollingUpdate",
                                             "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
                spec.setdefault("revisionHistoryLimit", 10)
                spec.setdefault("progressDeadlineSeconds", 600)
            obj.setdefault("status", {})
        elif res is SERVICES:
            ports = spec.get("ports") or []
            for i, p in enumerate(ports):
                if "port" not in p:
                    raise invalid("Service", name, [(f"spec.ports[{i}].port", "Required value")])
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p["port"])
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None":
                ip = self.network.services.take()
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            obj["status"] = {"loadBalancer": {}}
        elif res is NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        if res in (PODS, DEPLOYMENTS, REPLICASETS, SERVICES):
            obj["spec"] = spec
        return obj

    def create(self, res: Resource, obj: Obj, namespace: str | None, *, dry_run: bool = False) -> Obj:
        obj = self.prepare(res, obj, namespace)
        if dry_run:
            if self.store.get(res, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) is not None:
                raise StoreError(409, "AlreadyExists", f'{res.plural} "{obj["metadata"]["name"]}" already exists',
                                 {"name": obj["metadata"]["name"], "kind": res.plural})
            return obj
        created = self.store.create(res, obj)
        if res is SERVICES and created["spec"].get("clusterIP") not in (None, "None"):
            self.network.register_service(created["metadata"]["namespace"], created["metadata"]["name"],
                                          created["spec"]["clusterIP"])
        return created

    # -- delete
    def delete(self, res: Resource, namespace: str, name: str, grace: int | None = None,
               propagation: str = "Background") -> Obj:
        """Delete like the API server: graceful for pods, garbage-collecting owned objects for the rest."""
        obj = self.store.get(res, namespace, name)
        if obj is None:
            group = f".{res.group}" if res.group else ""
            raise StoreError(404, "NotFound", f'{res.plural}{group} "{name}" not found',
                             {"name": name, "kind": res.plural, **({"group": res.group} if res.group else {})})
        if res is PODS:
            return self.delete_pod(namespace, name, grace)
        if res is NAMESPACES:
            if name in ("default", *SYSTEM_NAMESPACES):
                raise StoreError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                 "deleted")
            for other in (DEPLOYMENTS, REPLICASETS, SERVICES):
                for o in self.store.list(other, name):
                    self.delete(other, name, o["metadata"]["name"])
            for p in self.store.list(PODS, name):
                self.delete_pod(name, p["metadata"]["name"], 0)
        final = self.store.delete(res, namespace, name)
        if propagation != "Orphan":
            self._collect_owned(final)
        if res is SERVICES:
            asyncio.get_running_loop().create_task(self.network.unregister_service(namespace, name))
        return final

    def _collect_owned(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        ns = owner["metadata"].get("namespace", "default")
        for res in (REPLICASETS, PODS):
            for o in self.store.list(res, ns):
                if (controller_of(o) or {}).get("uid") == uid:
                    with contextlib.suppress(StoreError):
                        self.delete(res, ns, o["metadata"]["name"])

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> Obj:
        pod = self.store.get(PODS, namespace, name)
        if pod is None:
            raise StoreError(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        when = (datetime.now(UTC) + timedelta(seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def mark(p: Obj) -> None:
            p["metadata"]["deletionTimestamp"] = when
            p["metadata"]["deletionGracePeriodSeconds"] = grace

        marked = self.store.mutate(PODS, namespace, name, mark)
        runtime = self.kubelet.pods.get(pod["metadata"]["uid"])
        if runtime is None:
            # Never started (or already gone from the node): nothing to stop.
            return self.store.delete(PODS, namespace, name)
        return marked or pod

    def finalize_pod(self, namespace: str, name: str, uid: str) -> None:
        pod = self.store.get(PODS, namespace, name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            with contextlib.suppress(StoreError):
                self.store.delete(PODS, namespace, name)

    # -- helpers for the API server
    def resolver_for(self, namespace: str) -> dns.Resolver:
        return dns.Resolver(self.network.hosts_file, namespace, self.network.pod_network)

    def pod_processes(self, namespace: str, name: str) -> list[toolbox.PodProcess]:
        """The live processes of a pod as ``ps`` inside it shows them (main processes are pids 1, 2, ...)."""
        runtime = self.kubelet.runtime_for(namespace, name)
        if runtime is None:
            return []
        return [toolbox.PodProcess(pid=pid, host_pid=c.process.pid, comm=c.comm, args=list(c.argv),
                                   container=c.name, started=c.started_at)
                for pid, c in runtime.processes() if c.process is not None]

    def signal_pod_process(self, namespace: str, name: str, proc: toolbox.PodProcess, sig: int) -> None:
        """Deliver a signal to one of the pod's own processes (never anything else on the host)."""
        for p in self.pod_processes(namespace, name):
            if p.host_pid == proc.host_pid:
                os.kill(p.host_pid, sig)
                return
        raise ProcessLookupError(proc.pid)

    def pods_ready(self) -> tuple[int, int]:
        pods = self.store.list(PODS)
        return sum(1 for p in pods if is_pod_ready(p)), len(pods)
