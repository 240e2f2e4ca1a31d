"""The registry: every write to the store goes through here, from the API server, the controllers and the kubelet.

It is the part of the API server that sits between the HTTP handlers and etcd: defaulting of new objects (and the
few checks the handlers have always made), updates that keep what a client may not change, graceful deletion of
pods, garbage collection of owned objects, and the finalizing of pods once the kubelet has stopped them.
Controllers and the kubelet read through watches on the :class:`~.store.Store` and write back only here.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from . import defaults, meshrules, node, rbac
from .resources import BY_PLURAL, REVIEW_KINDS, Resource
from .store import Obj, Store, StoreError, already_exists, labels_match, match_labels_selector, not_found, now_rfc3339

PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]
SECRETS = BY_PLURAL[("", "secrets")]
CONFIGMAPS = BY_PLURAL[("", "configmaps")]
NODES = BY_PLURAL[("", "nodes")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
LEASES = BY_PLURAL[("coordination.k8s.io", "leases")]
ENDPOINT_SLICES = BY_PLURAL[("discovery.k8s.io", "endpointslices")]
NAMESPACE_CONTENTS = tuple(r for r in BY_PLURAL.values() if r.namespaced and r.kind not in ("Pod", "Event"))
"""What a namespace's deletion removes (pods go gracefully, events stay until they expire)."""

SANDBOX_USER = "sandbox"
SANDBOX_GROUPS = ("system:masters", "system:authenticated")
"""Who the kubeconfig's token authenticates as: a cluster administrator, as on a fresh kind or minikube."""

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
INITIAL_NAMESPACES = ("default", *SYSTEM_NAMESPACES)

# The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alike characters).
SAFE = "bcdfghjklmnpqrstvwxz2456789"


def safe_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(SAFE) for _ in range(n))


def owner_ref(obj: Obj) -> Obj:
    """A controller ``ownerReference`` to ``obj``."""
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Obj) -> Obj | None:
    """The ``ownerReference`` marked ``controller: true``, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


MESH_KINDS = frozenset({"VirtualService", "DestinationRule", "Gateway"})
INJECTION_LABEL = "istio-injection"
PROXY_CONTAINER = "istio-proxy"
PROXY_IMAGE = "docker.io/istio/proxyv2:1.24.0"
PROXY_PORT = 15001
"""The sidecar's outbound listener on the pod's address (Envoy's virtualOutbound port)."""


def check_mesh_object(res: Resource, obj: Obj) -> None:
    """Reject an invalid Istio object as Istio does: the CRD schema (422) or the validation webhook (400)."""
    problems = meshrules.validate(res.kind, obj)
    if not problems:
        return
    name = (obj.get("metadata") or {}).get("name", "")
    schema = [p for p in problems if p.schema]
    if schema:
        raise invalid(f"{res.kind}.{res.group}", name, [(p.field, p.message) for p in schema])
    text = "; ".join(f"{p.field}: {p.message}" for p in problems)
    raise StoreError(400, "BadRequest", f'admission webhook "validation.istio.io" denied the request: '
                     f"configuration is invalid: {text}")


def inject_sidecar(meta: Obj, spec: Obj) -> None:
    """Add Istio's ``istio-proxy`` container (classic sidecar) to a new pod, as the injection webhook does."""
    if any(c.get("name") == PROXY_CONTAINER for c in spec.get("containers") or []):
        return
    annotations = meta.setdefault("annotations", {})
    if str(annotations.get("sidecar.istio.io/inject", "")).lower() == "false":
        return
    labels = meta.setdefault("labels", {})
    app = spec["containers"][0].get("name", "")
    annotations.setdefault("kubectl.kubernetes.io/default-container", app)
    annotations.setdefault("kubectl.kubernetes.io/default-logs-container", app)
    annotations.setdefault("istio.io/rev", "default")
    annotations.setdefault("prometheus.io/scrape", "true")
    annotations.setdefault("prometheus.io/port", "15020")
    annotations.setdefault("prometheus.io/path", "/stats/prometheus")
    annotations.setdefault("sidecar.istio.io/status", '{"initContainers":null,"containers":["istio-proxy"],'
                           '"volumes":null,"imagePullSecrets":null,"revision":"default"}')
    labels.setdefault("security.istio.io/tlsMode", "istio")
    labels.setdefault("service.istio.io/canonical-name", labels.get("app", meta.get("name", "")))
    labels.setdefault("service.istio.io/canonical-revision", labels.get("version", "latest"))
    spec["containers"].append({
        "name": PROXY_CONTAINER, "image": PROXY_IMAGE,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "INSTANCE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    })


def invalid(kind: str, name: str, causes: list[tuple[str, str]]) -> StoreError:
    """A 422 ``Invalid`` error like the API server's validation returns."""
    text = "; ".join(f"{f}: {m}" for f, m in causes)
    bare, _, group = kind.partition(".")  # "Deployment.apps": details name the group on its own
    return StoreError(422, "Invalid", f'{kind} "{name}" is invalid: {text}', {
        "name": name, "group": group, "kind": bare,
        "causes": [{"reason": "FieldValueRequired" if "Required" in m else
                    "FieldValueForbidden" if m.startswith("Forbidden") else "FieldValueInvalid",
                    "message": m, "field": f} for f, m in causes]})


class AddressAllocator(Protocol):
    """Hands out Service cluster addresses (the network's pool; released when the network drops the Service)."""

    def take(self) -> str: ...


class Registry:
    """Create, update, delete and finalize objects in the store, as the API server's registry does."""

    def __init__(self, store: Store, service_ips: AddressAllocator) -> None:
        self.store = store
        self.service_ips = service_ips

    def create_initial_namespaces(self) -> None:
        for ns in INITIAL_NAMESPACES:
            self.store.create(NAMESPACES, {"metadata": {"name": ns, "labels": {
                "kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}})

    def create_furniture(self, facts: node.NodeFacts, pod_cidr: str, api_service_ip: str) -> None:
        """The Node, its Lease and the ``kubernetes`` Service, as a fresh cluster has them (after the namespaces).

        The Service gets ``api_service_ip``, the first address of the service range as on a real cluster
        (``10.96.0.1``), outside the pool the other Services draw from.
        """
        node_obj = self.store.create(NODES, node.node_object(facts, pod_cidr, now_rfc3339()))
        lease = node.node_lease(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        lease["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node.NODE_NAME,
                                                 "uid": node_obj["metadata"]["uid"]}]
        self.store.create(LEASES, lease)
        for res, obj in rbac.bootstrap_objects():
            self.store.create(res, self.prepare(res, obj, None))
        service = self.prepare(SERVICES, node.kubernetes_service(), "default")
        service["spec"]["clusterIP"] = api_service_ip
        service["spec"]["clusterIPs"] = [api_service_ip]
        self.store.create(SERVICES, service)

    def publish_api_server(self, ip: str, port: int) -> None:
        """Point the ``kubernetes`` Service's Endpoints and EndpointSlice at the API server."""
        for res, obj in ((ENDPOINTS, node.api_server_endpoints(ip, port)),
                         (ENDPOINT_SLICES, node.api_server_slice(ip, port))):
            old = self.store.get(res, "default", "kubernetes")
            if old is None:
                self.store.create(res, obj)
            else:
                self.update(res, old, obj)

    def review(self, res: Resource, obj: Obj) -> Obj:
        """Answer a self-review without storing it: the sandbox's user may do everything."""
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        obj.setdefault("metadata", {})
        obj["metadata"].setdefault("creationTimestamp", None)
        spec = obj.setdefault("spec", {})
        if res.kind == "SelfSubjectAccessReview":
            if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
                raise invalid(res.kind, "", [("spec.resourceAttributes", "Required value: exactly one of "
                                              "nonResourceAttributes or resourceAttributes must be specified")])
            obj["status"] = {"allowed": True, "reason": 'RBAC: allowed by ClusterRoleBinding "cluster-admin" of '
                             'ClusterRole "cluster-admin" to Group "system:masters"'}
        elif res.kind == "SelfSubjectRulesReview":
            obj["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                             "incomplete": False}
        else:
            obj["status"] = {"userInfo": {"username": SANDBOX_USER, "groups": list(SANDBOX_GROUPS)}}
        return obj

    # -- create
    def prepare(self, res: Resource, obj: Obj, namespace: str | None) -> Obj:
        """Default a new object (and make the checks the API server always made) before it is stored."""
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise StoreError(400, "BadRequest", "the namespace of the provided object does not match the "
                                 "namespace sent on the request", {"causes": [{
                                     "reason": "FieldValueInvalid", "field": "metadata.namespace",
                                     "message": "does not match the namespace sent on the request"}]})
            meta["namespace"] = namespace or meta.get("namespace") or "default"
            ns_obj = self.store.get(NAMESPACES, "", meta["namespace"])
            if ns_obj is None:
                raise not_found(NAMESPACES, meta["namespace"])
            if ns_obj["metadata"].get("deletionTimestamp"):
                plural = f"{res.plural}.{res.group}" if res.group else res.plural
                raise StoreError(403, "Forbidden", f'{plural} "{meta.get("name") or meta.get("generateName", "")}" '
                                 f"is forbidden: unable to create new content in namespace {meta['namespace']} "
                                 "because it is being terminated",
                                 {"name": meta.get("name", ""), "group": res.group, "kind": res.plural})
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
            ns_obj = self.store.get(NAMESPACES, "", meta["namespace"]) or {}
            if ((ns_obj.get("metadata") or {}).get("labels") or {}).get(INJECTION_LABEL) == "enabled":
                inject_sidecar(meta, spec)
            defaults.pod(spec)
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
            (defaults.deployment_spec if res is DEPLOYMENTS else defaults.replicaset_spec)(spec)
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
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            obj["status"] = {"loadBalancer": {}}
        elif res is NAMESPACES:
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif res is SECRETS:
            problem = defaults.secret(obj)
            if problem:
                raise StoreError(400, "BadRequest", problem)
        elif res.kind in MESH_KINDS:
            check_mesh_object(res, obj)
        elif res.kind in rbac.RBAC_KINDS:
            rbac.check_object(res.kind, obj)
        if res in (PODS, DEPLOYMENTS, REPLICASETS, SERVICES):
            obj["spec"] = spec
        return obj

    def create(self, res: Resource, obj: Obj, namespace: str | None, *, dry_run: bool = False) -> Obj:
        """Default and store a new object; ``namespace`` is the request's (None: the object's or "default")."""
        if res.kind in REVIEW_KINDS:
            return self.review(res, obj)
        obj = self.prepare(res, obj, namespace)
        meta = obj["metadata"]
        if dry_run:
            if self.store.get(res, meta.get("namespace", ""), meta["name"]) is not None:
                raise already_exists(res, meta["name"])
            return obj
        if res is SERVICES and obj["spec"].get("clusterIP") != "None":
            if self.store.get(res, meta["namespace"], meta["name"]) is not None:
                raise already_exists(res, meta["name"])
            ip = self.service_ips.take()
            obj["spec"]["clusterIP"] = ip
            obj["spec"]["clusterIPs"] = [ip]
        return self.store.create(res, obj)

    # -- update
    def update(self, res: Resource, old: Obj, new: Obj, *, dry_run: bool = False) -> Obj:
        """Store ``new`` in place of ``old``, keeping what a client may not change (identity, pod spec, status).

        With ``dry_run`` the object is only made, as it would be stored, and returned.
        """
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        meta["name"], meta["namespace"] = old["metadata"]["name"], old["metadata"].get("namespace")
        if not res.namespaced:
            meta.pop("namespace", None)
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "ownerReferences", "generateName"):
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
        if res is PODS:
            # A pod's spec is immutable but for a few fields; its status belongs to the kubelet.
            new["spec"] = old["spec"]
            new["status"] = old.get("status", {})
        if res is SERVICES:
            spec = new.setdefault("spec", {})
            spec["clusterIP"] = old["spec"].get("clusterIP")
            spec["clusterIPs"] = old["spec"].get("clusterIPs")
        if res in (DEPLOYMENTS, REPLICASETS):
            new["status"] = old.get("status", {})
            spec = new.setdefault("spec", {})
            (defaults.deployment_spec if res is DEPLOYMENTS else defaults.replicaset_spec)(spec)
        if res.kind in MESH_KINDS:
            check_mesh_object(res, new)
        if res.kind in rbac.RBAC_KINDS:
            rbac.check_object(res.kind, new, old)
        if res is SECRETS:
            problem = defaults.secret(new)
            if problem:
                raise StoreError(400, "BadRequest", problem)
        if res in (SECRETS, CONFIGMAPS) and old.get("immutable"):
            changed = [f for f in ("data", "binaryData", "immutable") if new.get(f) != old.get(f)]
            if changed:
                raise invalid(res.kind, meta["name"], [(f, "Forbidden: field is immutable when `immutable` is set")
                                                       for f in changed])
        bump = new.get("spec") != old.get("spec") and res in (DEPLOYMENTS, REPLICASETS)
        if new == old or dry_run:
            return old if new == old else new
        return self.store.replace(res, new, bump_generation=bump)

    def mutate(self, res: Resource, namespace: str, name: str, fn: Callable[[Obj], object],
               *, bump_generation: bool = False) -> Obj | None:
        """Apply ``fn`` to a copy of the object and store it if anything changed. None if the object is gone.

        How controllers and the kubelet write status, scale and bind: they never hold the stored dict.
        """
        old = self.store.get(res, namespace, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        fn(new)
        if new == old:
            return old
        return self.store.replace(res, new, bump_generation=bump_generation)

    # -- delete
    def delete(self, res: Resource, namespace: str, name: str, grace: int | None = None,
               propagation: str = "Background", *, dry_run: bool = False) -> Obj:
        """Delete like the API server: graceful for pods, garbage-collecting owned objects for the rest.

        ``propagation="Orphan"`` leaves owned objects alone; ``dry_run`` returns the object and changes nothing.
        """
        obj = self.store.require(res, namespace, name)
        if dry_run:
            return obj
        if res is PODS:
            return self.delete_pod(namespace, name, grace)
        if res is NAMESPACES:
            if name in INITIAL_NAMESPACES:
                raise StoreError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                 "deleted", {"name": name, "kind": "namespaces"})
            for other in NAMESPACE_CONTENTS:
                for o in self.store.list(other, name):
                    self.delete(other, name, o["metadata"]["name"])
            for p in self.store.list(PODS, name):
                self.delete_pod(name, p["metadata"]["name"], 0)
            if self.store.list(PODS, name):
                # Terminating until the kubelet has stopped its last pod (finalize_pod then removes it).
                def terminate(ns: Obj) -> None:
                    ns["metadata"].setdefault("deletionTimestamp", now_rfc3339())
                    ns["metadata"]["deletionGracePeriodSeconds"] = 0
                    ns.setdefault("status", {})["phase"] = "Terminating"
                return self.mutate(NAMESPACES, "", name, terminate) or obj
        final = self.store.delete(res, namespace, name)
        if propagation != "Orphan":
            self._collect_owned(final)
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
        """Mark a pod for deletion; the kubelet stops it and calls :meth:`finalize_pod`.

        A pod no node has taken yet (no ``spec.nodeName``) has nothing to stop and goes at once.
        """
        pod = self.store.require(PODS, namespace, name)
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        if not pod["spec"].get("nodeName"):
            return self.store.delete(PODS, namespace, name)
        when = (datetime.now(UTC) + timedelta(seconds=grace)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def mark(p: Obj) -> None:
            p["metadata"]["deletionTimestamp"] = when
            p["metadata"]["deletionGracePeriodSeconds"] = grace

        return self.mutate(PODS, namespace, name, mark) or pod

    def finalize_pod(self, namespace: str, name: str, uid: str) -> None:
        """Remove a pod once its containers are stopped (only the instance with this ``uid``)."""
        pod = self.store.get(PODS, namespace, name)
        if pod is not None and pod["metadata"]["uid"] == uid:
            with contextlib.suppress(StoreError):
                self.store.delete(PODS, namespace, name)
            self._finish_namespace(namespace)

    def _finish_namespace(self, name: str) -> None:
        """Remove a Terminating namespace once its last pod is gone."""
        ns = self.store.get(NAMESPACES, "", name)
        if ns is not None and ns["metadata"].get("deletionTimestamp") and not self.store.list(PODS, name):
            with contextlib.suppress(StoreError):
                self.store.delete(NAMESPACES, "", name)
