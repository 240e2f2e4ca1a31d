"""The kinds the sandbox's API server serves, in one table.

Discovery documents, routing, the store and the table printers are all derived from this registry, so adding a
kind means adding one line here.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field


@dataclass(frozen=True, eq=False)
class Resource:
    """One served resource type, e.g. ``pods`` in the core group (compared and hashed by identity)."""

    plural: str
    kind: str
    group: str = ""  # "" is the core (legacy) group served under /api/v1
    version: str = "v1"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    singular: str = ""
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    categories: tuple[str, ...] = ()
    subresources: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    """name -> (kind, verbs), e.g. {"exec": ("PodExecOptions", ("create", "get"))}."""
    also_served: tuple[str, ...] = ()
    """Older versions served with the same schema and no conversion (a CRD's extra ``served`` versions): the
    objects are stored once, at :attr:`version`, and read or written at any of these too."""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


ALL = ("all",)
ISTIO_OLD_VERSIONS = ("v1beta1", "v1alpha3")
"""networking.istio.io's other served versions (istio.io's task pages and many workshops still use them)."""
ISTIO_CATEGORIES = ("istio-io", "networking-istio-io")

RESOURCES: tuple[Resource, ...] = (
    Resource(
        "pods", "Pod", short_names=("po",), singular="pod", categories=ALL,
        subresources={
            "exec": ("PodExecOptions", ("create", "get")),
            "log": ("Pod", ("get",)),
            "portforward": ("PodPortForwardOptions", ("create", "get")),
            "status": ("Pod", ("get", "patch", "update")),
        },
    ),
    Resource(
        "services", "Service", short_names=("svc",), singular="service", categories=ALL,
        subresources={
            "proxy": ("ServiceProxyOptions", ("create", "delete", "get", "patch", "put")),
            "status": ("Service", ("get", "patch", "update")),
        },
    ),
    Resource("endpoints", "Endpoints", short_names=("ep",), singular="endpoints"),
    Resource("events", "Event", short_names=("ev",), singular="event"),
    Resource("namespaces", "Namespace", namespaced=False, short_names=("ns",), singular="namespace",
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("serviceaccounts", "ServiceAccount", short_names=("sa",), singular="serviceaccount",
             subresources={"token": ("TokenRequest", ("create",))}),
    Resource("configmaps", "ConfigMap", short_names=("cm",), singular="configmap"),
    Resource("secrets", "Secret", singular="secret"),
    Resource("nodes", "Node", namespaced=False, short_names=("no",), singular="node",
             subresources={"status": ("Node", ("get", "patch", "update"))}),
    Resource(
        "deployments", "Deployment", group="apps", short_names=("deploy",), singular="deployment", categories=ALL,
        subresources={
            "scale": ("Scale", ("get", "patch", "update")),
            "status": ("Deployment", ("get", "patch", "update")),
        },
    ),
    Resource(
        "replicasets", "ReplicaSet", group="apps", short_names=("rs",), singular="replicaset", categories=ALL,
        subresources={
            "scale": ("Scale", ("get", "patch", "update")),
            "status": ("ReplicaSet", ("get", "patch", "update")),
        },
    ),

    Resource("endpointslices", "EndpointSlice", group="discovery.k8s.io", singular="endpointslice"),
    Resource("leases", "Lease", group="coordination.k8s.io", singular="lease"),
    Resource("selfsubjectaccessreviews", "SelfSubjectAccessReview", group="authorization.k8s.io",
             namespaced=False, singular="selfsubjectaccessreview", verbs=("create",)),
    Resource("selfsubjectrulesreviews", "SelfSubjectRulesReview", group="authorization.k8s.io",
             namespaced=False, singular="selfsubjectrulesreview", verbs=("create",)),
    Resource("selfsubjectreviews", "SelfSubjectReview", group="authentication.k8s.io",
             namespaced=False, singular="selfsubjectreview", verbs=("create",)),
    # RBAC (enforced for ServiceAccount tokens; see rbac.py).
    Resource("roles", "Role", group="rbac.authorization.k8s.io", singular="role"),
    Resource("rolebindings", "RoleBinding", group="rbac.authorization.k8s.io", singular="rolebinding"),
    Resource("clusterroles", "ClusterRole", group="rbac.authorization.k8s.io", namespaced=False,
             singular="clusterrole"),
    Resource("clusterrolebindings", "ClusterRoleBinding", group="rbac.authorization.k8s.io", namespaced=False,
             singular="clusterrolebinding"),
    # Istio's traffic-management CRDs (served as an installed Istio would serve them; see meshrules.py).
    Resource("virtualservices", "VirtualService", group="networking.istio.io", short_names=("vs",),
             singular="virtualservice", categories=ISTIO_CATEGORIES,
             also_served=ISTIO_OLD_VERSIONS),
    Resource("destinationrules", "DestinationRule", group="networking.istio.io", short_names=("dr",),
             singular="destinationrule", categories=ISTIO_CATEGORIES,
             also_served=ISTIO_OLD_VERSIONS),
    Resource("gateways", "Gateway", group="networking.istio.io", short_names=("gw",),
             singular="gateway", categories=ISTIO_CATEGORIES,
             also_served=ISTIO_OLD_VERSIONS),
)

REVIEW_KINDS = frozenset({"SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview"})
"""Kinds that are answered, never stored: a create returns the evaluated review."""

BY_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}
BY_KIND: dict[tuple[str, str], Resource] = {(r.group, r.kind): r for r in RESOURCES}

GROUP_VERSIONS: tuple[str, ...] = ("v1", "apps/v1", "discovery.k8s.io/v1", "coordination.k8s.io/v1",
                                   "authorization.k8s.io/v1",
                                   "authentication.k8s.io/v1", "rbac.authorization.k8s.io/v1",
                                   "networking.istio.io/v1",
                                   *(f"networking.istio.io/{v}" for v in ISTIO_OLD_VERSIONS))


@functools.cache
def served_as(res: Resource, version: str) -> Resource:
    """``res`` as seen at another of its served versions (for discovery and OpenAPI; the store knows only ``res``)."""
    return res if version == res.version else dataclasses.replace(res, version=version, also_served=())


def lookup(group: str, plural: str) -> Resource | None:
    """The resource served at ``/api[s]/<group>/<version>/<plural>``, or None."""
    return BY_PLURAL.get((group, plural))


def for_api_version(api_version: str, kind: str) -> Resource | None:
    """The resource for a manifest's ``apiVersion`` and ``kind`` (``apps/v1`` + ``Deployment``)."""
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return BY_KIND.get((group, kind))
