"""Server-side printing: the ``meta.k8s.io/v1`` Tables that ``kubectl get`` renders.

kubectl asks for a list with ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the cells
verbatim, upper-casing the column names. Columns of priority 1 appear only with ``-o wide``; the server always
sends them.
Each row carries a ``PartialObjectMetadata`` so that ``-A`` (NAMESPACE) and ``--show-labels`` work.

The columns and cells follow the Kubernetes printers (``pkg/printers/internalversion/printers.go``) for the
kinds in :mod:`labkit.sandbox.resources`; any other kind gets ``Name`` and ``Age``. Pod cells come from
:mod:`labkit.kubestatus`, which the client library shares.

    >>> from datetime import UTC, datetime
    >>> from labkit.sandbox import resources
    >>> table = to_table(resources.lookup("", "configmaps"), [], datetime.now(UTC), "42")
    >>> [c["name"] for c in table["columnDefinitions"]], table["metadata"]
    (['Name', 'Data', 'Age'], {'resourceVersion': '42'})
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeAlias

from labkit import kubestatus
from labkit.sandbox.resources import Resource

__all__ = ["TABLE_CONTENT_TYPE", "column_definitions", "format_label_selector", "format_labels", "to_table"]

TABLE_CONTENT_TYPE = "application/json"
"""A Table is sent with a plain JSON content type; only the Accept header asks for it."""

Column: TypeAlias = tuple[str, str, str, int, str]
"""(name, type, format, priority, description)."""
Cells: TypeAlias = list[Any]
RowPrinter: TypeAlias = Callable[[dict[str, Any], datetime], Cells]

_NAME_DOC = "Name must be unique within a namespace."
_AGE_DOC = "CreationTimestamp is a timestamp representing the server time when this object was created."
_CONTAINERS_DOC = "Names of each container in the template."
_IMAGES_DOC = "Images referenced by each container in the template."

_NAME: Column = ("Name", "string", "name", 0, _NAME_DOC)
_AGE: Column = ("Age", "string", "", 0, _AGE_DOC)


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None as soon as a step is missing."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name(obj: dict[str, Any]) -> str:
    return str(_get(obj, "metadata", "name") or "")


def _age(obj: dict[str, Any], now: datetime) -> str:
    return kubestatus.human_age(_get(obj, "metadata", "creationTimestamp"), now)


def _or_none(text: str) -> str:
    return text or "<none>"


def format_labels(labels: dict[str, str] | None) -> str:
    """Labels as ``k=v`` pairs sorted by key and joined by commas, or ``<none>`` (``labels.FormatLabels``).

    Args:
        labels: A label map such as ``spec.selector`` of a Service.

    Returns:
        E.g. ``"app=ratings,version=v1"``.
    """
    if not labels:
        return "<none>"
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def _selector_terms(selector: dict[str, Any]) -> list[tuple[str, str]]:
    terms = [(key, f"{key}={value}") for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in _items(selector.get("matchExpressions")):
        key = str(expression.get("key", ""))
        values = ",".join(sorted(str(v) for v in expression.get("values") or []))
        operator = expression.get("operator")
        if operator == "In":
            terms.append((key, f"{key} in ({values})"))
        elif operator == "NotIn":
            terms.append((key, f"{key} notin ({values})"))
        elif operator == "Exists":
            terms.append((key, key))
        elif operator == "DoesNotExist":
            terms.append((key, f"!{key}"))
    return terms


def format_label_selector(selector: dict[str, Any] | None, empty: str = "<none>") -> str:
    """A ``LabelSelector`` in kubectl's string form, terms sorted by key (``metav1.FormatLabelSelector``).

    Args:
        selector: ``{"matchLabels": {...}, "matchExpressions": [...]}``, or None.
        empty: What to show for a selector that selects everything or nothing.

    Returns:
        E.g. ``"app=reviews,tier in (back,front)"``.
    """
    if not isinstance(selector, dict):
        return empty
    terms = sorted(_selector_terms(selector), key=lambda term: term[0])
    return ",".join(text for _, text in terms) or empty


def _containers(template_owner: dict[str, Any]) -> tuple[str, str]:
    containers = _items(_get(template_owner, "spec", "template", "spec", "containers"))
    names = ",".join(str(c.get("name", "")) for c in containers)
    images = ",".join(str(c.get("image", "")) for c in containers)
    return names, images


# --- pods ---------------------------------------------------------------------------------------------------


def _pod_ip(pod: dict[str, Any]) -> str:
    pod_ips = _items(_get(pod, "status", "podIPs"))
    if pod_ips and isinstance(pod_ips[0], dict) and pod_ips[0].get("ip"):
        return str(pod_ips[0]["ip"])
    # The internal type fills podIPs from podIP on conversion, so an object carrying only podIP shows it too.
    return str(_get(pod, "status", "podIP") or "<none>")


def _readiness_gates(pod: dict[str, Any]) -> str:
    gates = _items(_get(pod, "spec", "readinessGates"))
    if not gates:
        return "<none>"
    conditions = _items(_get(pod, "status", "conditions"))
    true = 0
    for gate in gates:
        for condition in conditions:
            if condition.get("type") == gate.get("conditionType"):
                true += condition.get("status") == "True"
                break
    return f"{true}/{len(gates)}"


def _pod_cells(pod: dict[str, Any], now: datetime) -> Cells:
    summary = kubestatus.summarize_pod(pod)
    _, restarts = kubestatus.pod_restarts(pod, now)
    return [
        _name(pod),
        f"{summary.ready}/{summary.total}",
        summary.status,
        restarts,
        _age(pod, now),
        _pod_ip(pod),
        _or_none(str(_get(pod, "spec", "nodeName") or "")),
        _or_none(str(_get(pod, "status", "nominatedNodeName") or "")),
        _readiness_gates(pod),
    ]


_POD_COLUMNS: list[Column] = [
    _NAME,
    ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
    (
        "Restarts",
        "string",
        "",
        0,
        "The number of times the containers in this pod have been restarted and when "
        "the last container in this pod has restarted.",
    ),
    _AGE,
    ("IP", "string", "", 1, "podIP address allocated to the pod."),
    ("Node", "string", "", 1, "NodeName is the node the pod is scheduled onto."),
    (
        "Nominated Node",
        "string",
        "",
        1,
        "nominatedNodeName is set when this pod preempts other pods on a node.",
    ),
    (
        "Readiness Gates",
        "string",
        "",
        1,
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
]

# --- workloads ----------------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _replicas(obj: dict[str, Any]) -> int:
    # spec.replicas defaults to 1 when unset, as the API server's defaulting does.
    value = _get(obj, "spec", "replicas")
    return 1 if value is None else _int(value)


def _deployment_cells(deployment: dict[str, Any], now: datetime) -> Cells:
    names, images = _containers(deployment)
    ready = _int(_get(deployment, "status", "readyReplicas"))
    return [
        _name(deployment),
        f"{ready}/{_replicas(deployment)}",
        _int(_get(deployment, "status", "updatedReplicas")),
        _int(_get(deployment, "status", "availableReplicas")),
        _age(deployment, now),
        names,
        images,
        format_label_selector(_get(deployment, "spec", "selector"), empty=""),
    ]


_DEPLOYMENT_COLUMNS: list[Column] = [
    _NAME,
    ("Ready", "string", "", 0, "Number of the pod with ready state"),
    (
        "Up-to-date",
        "string",
        "",
        0,
        "Total number of non-terminated pods targeted by this deployment that have "
        "the desired template spec.",
    ),
    (
        "Available",
        "string",
        "",
        0,
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    _AGE,
    ("Containers", "string", "", 1, _CONTAINERS_DOC),
    ("Images", "string", "", 1, _IMAGES_DOC),
    ("Selector", "string", "", 1, "Label selector for pods."),
]


def _replicaset_cells(replicaset: dict[str, Any], now: datetime) -> Cells:
    names, images = _containers(replicaset)
    return [
        _name(replicaset),
        _replicas(replicaset),
        _int(_get(replicaset, "status", "replicas")),
        _int(_get(replicaset, "status", "readyReplicas")),
        _age(replicaset, now),
        names,
        images,
        format_label_selector(_get(replicaset, "spec", "selector")),
    ]


_REPLICASET_COLUMNS: list[Column] = [
    _NAME,
    ("Desired", "integer", "", 0, "Replicas is the number of desired replicas."),
    ("Current", "integer", "", 0, "Replicas is the most recently observed number of replicas."),
    ("Ready", "integer", "", 0, "The number of ready replicas for this replica set."),
    _AGE,
    ("Containers", "string", "", 1, _CONTAINERS_DOC),
    ("Images", "string", "", 1, _IMAGES_DOC),
    ("Selector", "string", "", 1, "Selector is a label query over pods that should match the replica count."),
]

# --- services and endpoints ---------------------------------------------------------------------------------


def _external_ip(service: dict[str, Any]) -> str:
    spec = service.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _items(spec.get("externalIPs"))]
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        ingress = _items(_get(service, "status", "loadBalancer", "ingress"))
        balanced = sorted(
            {str(i.get("ip") or i.get("hostname")) for i in ingress if i.get("ip") or i.get("hostname")}
        )
        if external:
            return ",".join(balanced + external)
        # Without -o wide the real printer clips this to 16 characters; the server sends the wide form.
        return ",".join(balanced) or "<pending>"
    if kind == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _port_string(ports: Iterable[dict[str, Any]]) -> str:
    pieces = []
    for port in ports:
        protocol = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            pieces.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            pieces.append(f"{port.get('port')}/{protocol}")
    return ",".join(pieces)


def _service_cells(service: dict[str, Any], now: datetime) -> Cells:
    spec = service.get("spec") or {}
    cluster_ips = _items(spec.get("clusterIPs"))
    cluster_ip = str(cluster_ips[0]) if cluster_ips else str(spec.get("clusterIP") or "<none>")
    return [
        _name(service),
        str(spec.get("type") or "ClusterIP"),
        cluster_ip,
        _external_ip(service),
        _port_string(_items(spec.get("ports"))) or "<none>",
        _age(service, now),
        format_labels(spec.get("selector")),
    ]


_SERVICE_COLUMNS: list[Column] = [
    _NAME,
    ("Type", "string", "", 0, "type determines how the Service is exposed."),
    ("Cluster-IP", "string", "", 0, "clusterIP is the IP address of the service."),
    (
        "External-IP",
        "string",
        "",
        0,
        "externalIPs is a list of IP addresses for which nodes in the cluster will "
        "also accept traffic for this service.",
    ),
    ("Port(s)", "string", "", 0, "The list of ports that are exposed by this service."),
    _AGE,
    (
        "Selector",
        "string",
        "",
        1,
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
]

_ENDPOINTS_SHOWN = 3


def format_endpoints(endpoints: dict[str, Any]) -> str:
    """The ENDPOINTS cell: up to three ``ip:port`` pairs, then ``+ N more...`` (``formatEndpoints``).

    Args:
        endpoints: An Endpoints object.

    Returns:
        E.g. ``"127.0.1.1:9080,127.0.1.2:9080,127.0.1.3:9080 + 1 more..."``, or ``<none>`` without subsets.
    """
    subsets = _items(endpoints.get("subsets"))
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    more = False
    for subset in subsets:
        addresses = [str(a.get("ip", "")) for a in _items(subset.get("addresses"))]
        ports = _items(subset.get("ports"))
        # A headless service without ports lists bare addresses; otherwise every address once per port.
        groups = (
            [addresses]
            if not ports
            else [[f"{_host(ip)}:{p.get('port')}" for ip in addresses] for p in ports]
        )
        for group in groups:
            count += len(group)
            for entry in group:
                if len(shown) == _ENDPOINTS_SHOWN:
                    more = True
                    break
                shown.append(entry)
    text = ",".join(shown)
    return f"{text} + {count - _ENDPOINTS_SHOWN} more..." if more else text


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # net.JoinHostPort brackets IPv6


def _endpoints_cells(endpoints: dict[str, Any], now: datetime) -> Cells:
    return [_name(endpoints), format_endpoints(endpoints), _age(endpoints, now)]


_ENDPOINTS_COLUMNS: list[Column] = [
    _NAME,
    ("Endpoints", "string", "", 0, "The set of all endpoints is the union of all subsets."),
    _AGE,
]

# --- events -------------------------------------------------------------------------------------------------


def _event_cells(event: dict[str, Any], now: datetime) -> Cells:
    first_seen = kubestatus.human_age(event.get("firstTimestamp") or event.get("eventTime"), now)
    last_seen = (
        kubestatus.human_age(event.get("lastTimestamp"), now) if event.get("lastTimestamp") else first_seen
    )
    count = _int(event.get("count"))
    series = event.get("series")
    if isinstance(series, dict):
        last_seen = kubestatus.human_age(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events of the events.k8s.io API carry no count
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    component = _get(event, "source", "component") or event.get("reportingController") or ""
    host = _get(event, "source", "host") or event.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else str(component)
    return [
        last_seen,
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
        target,
        str(involved.get("fieldPath") or ""),
        source,
        str(event.get("message") or "").strip(),
        first_seen,
        count,
        _name(event),
    ]


_EVENT_COLUMNS: list[Column] = [
    (
        "Last Seen",
        "string",
        "",
        0,
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    ("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
    (
        "Reason",
        "string",
        "",
        0,
        "This should be a short, machine understandable string that gives the reason for "
        "the transition into the object's current status.",
    ),
    ("Object", "string", "", 0, "The object that this event is about."),
    (
        "Subobject",
        "string",
        "",
        1,
        "The field of the involved object the event is about, e.g. the container.",
    ),
    ("Source", "string", "", 1, "The component reporting this event."),
    ("Message", "string", "", 0, "A human-readable description of the status of this operation."),
    ("First Seen", "string", "", 1, "The time at which the event was first recorded."),
    ("Count", "string", "", 1, "The number of times this event has occurred."),
    ("Name", "string", "name", 1, _NAME_DOC),
]

# --- small core kinds ---------------------------------------------------------------------------------------


def _namespace_cells(namespace: dict[str, Any], now: datetime) -> Cells:
    # The API server defaults an empty phase to Active before anything is printed.
    return [_name(namespace), str(_get(namespace, "status", "phase") or "Active"), _age(namespace, now)]


def _serviceaccount_cells(account: dict[str, Any], now: datetime) -> Cells:
    return [_name(account), len(_items(account.get("secrets"))), _age(account, now)]


def _configmap_cells(configmap: dict[str, Any], now: datetime) -> Cells:
    entries = len(configmap.get("data") or {}) + len(configmap.get("binaryData") or {})
    return [_name(configmap), entries, _age(configmap, now)]


def _secret_cells(secret: dict[str, Any], now: datetime) -> Cells:
    return [_name(secret), str(secret.get("type") or ""), len(secret.get("data") or {}), _age(secret, now)]


def _node_roles(node: dict[str, Any]) -> str:
    roles = set()
    for key, value in (_get(node, "metadata", "labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            roles.add(key.removeprefix("node-role.kubernetes.io/"))
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    return ",".join(sorted(r for r in roles if r)) or "<none>"


def _node_cells(node: dict[str, Any], now: datetime) -> Cells:
    conditions = {c.get("type"): c.get("status") for c in _items(_get(node, "status", "conditions"))}
    status = "Ready" if conditions.get("Ready") == "True" else "NotReady" if "Ready" in conditions else "Unknown"
    if _get(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    addresses = {a.get("type"): a.get("address") for a in _items(_get(node, "status", "addresses"))}
    info = _get(node, "status", "nodeInfo") or {}
    return [_name(node), status, _node_roles(node), _age(node, now), str(info.get("kubeletVersion") or ""),
            str(addresses.get("InternalIP") or "<none>"), str(addresses.get("ExternalIP") or "<none>"),
            str(info.get("osImage") or "<unknown>"), str(info.get("kernelVersion") or "<unknown>"),
            str(info.get("containerRuntimeVersion") or "<unknown>")]


_NODE_COLUMNS: list[Column] = [
    _NAME,
    ("Status", "string", "", 0, "The status of the node"),
    ("Roles", "string", "", 0, "The roles of the node"),
    _AGE,
    ("Version", "string", "", 0, "Kubelet Version reported by the node."),
    ("Internal-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if "
                                     "available."),
    ("External-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if "
                                     "available."),
    ("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 "
                                  "(wheezy))."),
    ("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. "
                                        "3.16.0-0.bpo.4-amd64)."),
    ("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node through runtime remote "
                                           "API (e.g. containerd://1.4.2)."),
]


def _endpointslice_cells(eps: dict[str, Any], now: datetime) -> Cells:
    ports = _items(eps.get("ports"))
    port_text = ",".join(str(p.get("port")) if p.get("port") is not None else "<unset>" for p in ports)
    if not ports:
        port_text = "<unset>"
    addresses = [a for e in _items(eps.get("endpoints")) for a in _items(e.get("addresses"))]
    shown = ",".join(addresses[:_ENDPOINTS_SHOWN])
    if len(addresses) > _ENDPOINTS_SHOWN:
        shown += f" + {len(addresses) - _ENDPOINTS_SHOWN} more..."
    return [_name(eps), str(eps.get("addressType") or ""), port_text, shown or "<unset>", _age(eps, now)]


_ENDPOINTSLICE_COLUMNS: list[Column] = [
    _NAME,
    ("AddressType", "string", "", 0, "Type of address carried by this EndpointSlice."),
    ("Ports", "string", "", 0, "Ports the endpoints of this EndpointSlice listen on."),
    ("Endpoints", "string", "", 0, "Addresses of the endpoints of this EndpointSlice."),
    _AGE,
]


def _default_cells(obj: dict[str, Any], now: datetime) -> Cells:
    return [_name(obj), _age(obj, now)]


_PRINTERS: dict[tuple[str, str], tuple[list[Column], RowPrinter]] = {
    ("", "Pod"): (_POD_COLUMNS, _pod_cells),
    ("apps", "Deployment"): (_DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "ReplicaSet"): (_REPLICASET_COLUMNS, _replicaset_cells),
    ("", "Service"): (_SERVICE_COLUMNS, _service_cells),
    ("", "Endpoints"): (_ENDPOINTS_COLUMNS, _endpoints_cells),
    ("", "Event"): (_EVENT_COLUMNS, _event_cells),
    ("", "Namespace"): (
        [_NAME, ("Status", "string", "", 0, "The status of the namespace"), _AGE],
        _namespace_cells,
    ),
    ("", "ServiceAccount"): (
        [
            _NAME,
            (
                "Secrets",
                "string",
                "",
                0,
                "Secrets is a list of the secrets in the same "
                "namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            _AGE,
        ],
        _serviceaccount_cells,
    ),
    ("", "ConfigMap"): (
        [_NAME, ("Data", "string", "", 0, "Data contains the configuration data."), _AGE],
        _configmap_cells,
    ),
}
_PRINTERS.update({
    ("", "Secret"): (
        [_NAME, ("Type", "string", "", 0, "Used to facilitate programmatic handling of secret data."),
         ("Data", "string", "", 0, "Contains the secret data."), _AGE],
        _secret_cells,
    ),
    ("", "Node"): (_NODE_COLUMNS, _node_cells),
    ("discovery.k8s.io", "EndpointSlice"): (_ENDPOINTSLICE_COLUMNS, _endpointslice_cells),
    ("coordination.k8s.io", "Lease"): (
        [_NAME, ("Holder", "string", "", 0, "The holder of the lease."), _AGE],
        lambda lease, now: [_name(lease), str(_get(lease, "spec", "holderIdentity") or ""), _age(lease, now)],
    ),
})



def _json_list(value: Any) -> str:
    """An array column of a CRD, as the API server prints it (compact JSON); empty when absent."""
    if value is None:
        return ""
    return "[" + ",".join('"' + str(v).replace('"', '\\"') + '"' for v in _items(value)) + "]"


_PRINTERS.update({
    ("networking.istio.io", "VirtualService"): (
        [_NAME, ("Gateways", "string", "", 0, "The names of gateways and sidecars that should apply these routes"),
         ("Hosts", "string", "", 0, "The destination hosts to which traffic is being sent"), _AGE],
        lambda vs, now: [_name(vs), _json_list(_get(vs, "spec", "gateways")), _json_list(_get(vs, "spec", "hosts")),
                         _age(vs, now)],
    ),
    ("networking.istio.io", "DestinationRule"): (
        [_NAME, ("Host", "string", "", 0, "The name of a service from the service registry"), _AGE],
        lambda dr, now: [_name(dr), str(_get(dr, "spec", "host") or ""), _age(dr, now)],
    ),
})


def _created_at(obj: dict[str, Any], now: datetime) -> Cells:
    return [_name(obj), str(_get(obj, "metadata", "creationTimestamp") or "")]


def _binding_cells(binding: dict[str, Any], now: datetime) -> Cells:
    """NAME, ROLE (``Role/NAME``), AGE; wide: USERS, GROUPS, SERVICEACCOUNTS (``namespace/name``)."""
    subjects = [s for s in _items(binding.get("subjects")) if isinstance(s, dict)]
    ref = binding.get("roleRef") or {}

    def names(kind: str) -> str:
        if kind == "ServiceAccount":
            return ", ".join(f"{s.get('namespace') or ''}/{s.get('name')}" for s in subjects if s.get("kind") == kind)
        return ", ".join(str(s.get("name")) for s in subjects if s.get("kind") == kind)

    return [_name(binding), f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(binding, now), names("User"),
            names("Group"), names("ServiceAccount")]


_CREATED_AT: Column = ("Created At", "date", "", 0, _AGE_DOC)
_BINDING_COLUMNS: list[Column] = [
    _NAME,
    ("Role", "string", "", 0, "Role indicates which role the binding refers to."),
    _AGE,
    ("Users", "string", "", 1, "Users in the binding."),
    ("Groups", "string", "", 1, "Groups in the binding."),
    ("ServiceAccounts", "string", "", 1, "ServiceAccounts in the binding."),
]
_PRINTERS.update({
    ("rbac.authorization.k8s.io", "Role"): ([_NAME, _CREATED_AT], _created_at),
    ("rbac.authorization.k8s.io", "ClusterRole"): ([_NAME, _CREATED_AT], _created_at),
    ("rbac.authorization.k8s.io", "RoleBinding"): (_BINDING_COLUMNS, _binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (_BINDING_COLUMNS, _binding_cells),
})
_DEFAULT: tuple[list[Column], RowPrinter] = ([_NAME, _AGE], _default_cells)


def _printer(resource: Resource) -> tuple[list[Column], RowPrinter]:
    return _PRINTERS.get((resource.group, resource.kind), _DEFAULT)


def column_definitions(resource: Resource) -> list[dict[str, Any]]:
    """The ``columnDefinitions`` of the Table for one kind.

    Args:
        resource: The served resource type.

    Returns:
        One ``{"name", "type", "format", "description", "priority"}`` dict per column, in kubectl's order.
    """
    columns, _ = _printer(resource)
    return [
        {"name": name, "type": kind, "format": fmt, "description": doc, "priority": priority}
        for name, kind, fmt, priority, doc in columns
    ]


def _row_conditions(resource: Resource, obj: dict[str, Any]) -> list[dict[str, str]] | None:
    if (resource.group, resource.kind) != ("", "Pod"):
        return None
    phase = _get(obj, "status", "phase")
    if phase == "Succeeded":
        message = "The pod has completed successfully."
    elif phase == "Failed":
        message = "The pod failed."
    else:
        return None
    return [{"type": "Completed", "status": "True", "reason": str(phase), "message": message}]


def to_table(
    resource: Resource,
    objects: list[dict[str, Any]],
    now: datetime,
    list_rv: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objects``, as the API server answers ``kubectl get``.

    Every column is computed, wide ones included; kubectl hides those of priority 1 unless ``-o wide``. Each
    row's ``object`` is, as the ``includeObject`` query parameter asks, a ``PartialObjectMetadata`` holding a
    copy of the object's metadata (``Metadata``, the default), the whole object (``Object``: kubectl asks for it
    with ``--sort-by``) or nothing (``None``).

    Args:
        resource: The resource type being listed (from :mod:`labkit.sandbox.resources`).
        objects: The objects, already filtered by selectors, in the order to print.
        now: The reference time for AGE and "ago" cells.
        list_rv: The list's resourceVersion, for ``metadata.resourceVersion``.
        include_object: ``Metadata``, ``Object`` or ``None``.

    Returns:
        The Table, ready to be sent as JSON with Content-Type :data:`TABLE_CONTENT_TYPE`.

    Examples:
        >>> from datetime import UTC, datetime
        >>> from labkit.sandbox import resources
        >>> pod = {"metadata": {"name": "sleep-1", "creationTimestamp": "2026-11-26T15:00:00Z"},
        ...        "spec": {"containers": [{"name": "sleep"}]}, "status": {"phase": "Pending"}}
        >>> now = datetime(2026, 11, 26, 15, 1, tzinfo=UTC)
        >>> table = to_table(resources.lookup("", "pods"), [pod], now, "7")
        >>> table["rows"][0]["cells"][:5]
        ['sleep-1', '0/1', 'Pending', '0', '60s']
    """
    _, printer = _printer(resource)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer(obj, now)}
        if include_object == "Object":
            row["object"] = copy.deepcopy(obj)
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": copy.deepcopy(obj.get("metadata") or {}),
            }
        conditions = _row_conditions(resource, obj)
        if conditions:
            row["conditions"] = conditions
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(list_rv)},
        "columnDefinitions": column_definitions(resource),
        "rows": rows,
    }
