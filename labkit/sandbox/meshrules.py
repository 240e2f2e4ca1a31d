"""Istio's traffic rules (``networking.istio.io/v1``): validation for the API server, routing for the sidecars.

Two users share this module:

* the API server's registry calls :func:`validate` before it stores a VirtualService, DestinationRule or Gateway,
  as Istio's CRD schema (CEL) and its ``validation.istio.io`` webhook do;
* every ``istio-proxy`` container process calls :func:`route` once per outbound HTTP request, with the mesh
  configuration the sandbox writes for the sidecars (:class:`MeshConfig`), and gets back a :class:`Decision`:
  a local reply (404 NR, 503 NC/UH, a fault abort) or an upstream cluster with its endpoints, delay, timeout and
  retry policy.

The routing order is Envoy's as Istio configures it: the VirtualService for the host, the first matching HTTP
rule, the fault filter (delay, then abort), a weighted destination drawn independently per request, the
DestinationRule subset, then the endpoints. Container processes import this module, so it uses the standard
library only.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

CLUSTER_DOMAIN = "cluster.local"
MESH_GATEWAY = "mesh"
INBOUND_PORT = 15006
"""A sidecar's inbound listener on its pod's address (Envoy's virtualInbound port): traffic to a meshed pod."""

# --- durations ------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s))+$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


def parse_duration(value: object) -> float | None:
    """A protobuf/Go duration (``7s``, ``0.5s``, ``500ms``, ``1m30s``) in seconds; None if it is not one."""
    if not isinstance(value, str):
        return None
    return _parse_duration(value)


@functools.lru_cache(maxsize=256)
def _parse_duration(value: str) -> float | None:
    if not _DURATION.match(value):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))


# --- validation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One invalid field: ``schema`` problems are the CRD's own (422), the others the webhook's (400)."""

    field: str
    message: str
    schema: bool = False


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RETRY_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure", "cancelled",
    "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})


def _duration_problems(value: object, where: str) -> list[Problem]:
    if value is None:
        return []
    seconds = parse_duration(value)
    if seconds is None or seconds < 1e-3:
        return [Problem(where, f"Invalid value: {value!r}: must be a valid duration greater than 1ms", True)]
    return []


def _percentage(fault: Obj, where: str) -> list[Problem]:
    pct = fault.get("percentage")
    if pct is None:
        return []
    value = pct.get("value", 0) if isinstance(pct, dict) else pct
    if not isinstance(value, (int, float)) or not (value == 0 or 0.0001 <= value <= 100):
        return [Problem(f"{where}.percentage.value", f"percentage {value} is neither 0.0, nor in range "
                        "[0.0001, 100.0]")]
    return []


def _string_match(m: object, where: str) -> list[Problem]:
    if not isinstance(m, dict):
        return [Problem(where, "must be a StringMatch object (exact, prefix or regex)", True)]
    kinds = [k for k in ("exact", "prefix", "regex") if k in m]
    if len(kinds) > 1:
        return [Problem(where, f"only one of exact, prefix or regex may be set, not {', '.join(kinds)}")]
    if "regex" in m:
        try:
            re.compile(str(m["regex"]))
        except re.error as exc:
            return [Problem(f"{where}.regex", f"invalid regex {m['regex']!r}: {exc}")]
        if len(str(m["regex"])) > 1024:
            return [Problem(f"{where}.regex", "regex is too long (at most 1024 characters)")]
    return []


def _http_route(rule: Obj, where: str) -> list[Problem]:
    out: list[Problem] = []
    if not isinstance(rule, dict):
        return [Problem(where, "must be an HTTPRoute object", True)]
    if not (rule.get("route") or rule.get("redirect") or rule.get("directResponse")):
        out.append(Problem(f"{where}.route", "HTTP route, redirect or direct_response is required"))
    for i, m in enumerate(rule.get("match") or []):
        mw = f"{where}.match[{i}]"
        for key in ("uri", "method", "authority", "scheme"):
            if key in m:
                out += _string_match(m[key], f"{mw}.{key}")
        for hname, hm in (m.get("headers") or {}).items():
            if hname != hname.lower():
                out.append(Problem(f"{mw}.headers", f"header name {hname!r} must be lowercase"))
            if hm:
                out += _string_match(hm, f"{mw}.headers.{hname}")
    weights: list[int] = []
    for i, dest in enumerate(rule.get("route") or []):
        dw = f"{where}.route[{i}]"
        d = dest.get("destination") if isinstance(dest, dict) else None
        if not isinstance(d, dict) or not d.get("host"):
            out.append(Problem(f"{dw}.destination.host", "Required value: destination.host is required", True))
            continue
        subset = d.get("subset")
        if subset is not None and not _DNS_LABEL.match(str(subset)):
            out.append(Problem(f"{dw}.destination.subset", f"subset name is invalid: {subset}"))
        w = dest.get("weight", 0)
        if not isinstance(w, int):
            out.append(Problem(f"{dw}.weight", f"Invalid value: {w!r}: must be an integer", True))
        elif w < 0:
            out.append(Problem(f"{dw}.weight", f"weight {w} < 0"))
        else:
            weights.append(w)
    if len(rule.get("route") or []) > 1 and weights and sum(weights) == 0:
        out.append(Problem(f"{where}.route", "total destination weight = 0"))
    out += _duration_problems(rule.get("timeout"), f"{where}.timeout")
    fault = rule.get("fault")
    if fault is not None:
        if not isinstance(fault, dict) or not (fault.get("delay") or fault.get("abort")):
            out.append(Problem(f"{where}.fault", "HTTP fault injection must have an abort and/or a delay"))
        else:
            if fault.get("delay"):
                delay = fault["delay"]
                if "fixedDelay" not in delay and "exponentialDelay" not in delay:
                    out.append(Problem(f"{where}.fault.delay.fixedDelay", "Required value: fixedDelay"))
                out += _duration_problems(delay.get("fixedDelay"), f"{where}.fault.delay.fixedDelay")
                out += _percentage(delay, f"{where}.fault.delay")
            if fault.get("abort"):
                abort = fault["abort"]
                status = abort.get("httpStatus")
                if status is None and "grpcStatus" not in abort and "http2Error" not in abort:
                    out.append(Problem(f"{where}.fault.abort.httpStatus", "Required value: httpStatus"))
                elif status is not None and (not isinstance(status, int) or not 200 <= status <= 599):
                    out.append(Problem(f"{where}.fault.abort.httpStatus",
                                       f"HTTP status {status} is not in range 200-599"))
                out += _percentage(abort, f"{where}.fault.abort")
    retries = rule.get("retries")
    if retries is not None:
        attempts = retries.get("attempts", 0)
        if not isinstance(attempts, int) or attempts < 0:
            out.append(Problem(f"{where}.retries.attempts", "attempts cannot be negative"))
        elif attempts == 0 and (retries.get("perTryTimeout") or retries.get("retryOn")):
            out.append(Problem(f"{where}.retries", "http retry policy configured when attempts are set to 0 "
                               "(disabled)"))
        out += _duration_problems(retries.get("perTryTimeout"), f"{where}.retries.perTryTimeout")
        for policy in str(retries.get("retryOn") or "").split(","):
            policy = policy.strip()
            if policy and policy not in _RETRY_POLICIES and not policy.isdigit():
                out.append(Problem(f"{where}.retries.retryOn", f'"{policy}" is not a valid retryOn policy'))
    return out


def validate(kind: str, obj: Obj) -> list[Problem]:
    """What is wrong with a VirtualService, DestinationRule or Gateway (empty: it may be stored)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Problem("spec", "Required value", True)]
    out: list[Problem] = []
    if kind == "VirtualService":
        hosts = spec.get("hosts") or []
        if not hosts:
            out.append(Problem("spec.hosts", "virtual service must have at least one host"))
        gateways = spec.get("gateways") or [MESH_GATEWAY]
        if "*" in hosts and MESH_GATEWAY in gateways:
            out.append(Problem("spec.hosts", "wildcard host * is not allowed for virtual services bound to the "
                               "mesh gateway"))
        http = spec.get("http")
        if http is not None and not isinstance(http, list):
            return [*out, Problem("spec.http", "must be a list of HTTPRoute", True)]
        for i, rule in enumerate(http or []):
            out += _http_route(rule, f"spec.http[{i}]")
    elif kind == "DestinationRule":
        if not spec.get("host"):
            out.append(Problem("spec.host", "Required value: destination rule must have a host", True))
        seen: set[str] = set()
        for i, subset in enumerate(spec.get("subsets") or []):
            name = str(subset.get("name", ""))
            if not _DNS_LABEL.match(name):
                out.append(Problem(f"spec.subsets[{i}].name", f"subset name is invalid: {name}"))
            elif name in seen:
                out.append(Problem(f"spec.subsets[{i}].name", f"duplicate subset names: {name}"))
            seen.add(name)
        lb = ((spec.get("trafficPolicy") or {}).get("loadBalancer") or {}).get("simple")
        if lb is not None and lb not in ("UNSPECIFIED", "RANDOM", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN",
                                         "PASSTHROUGH"):
            out.append(Problem("spec.trafficPolicy.loadBalancer.simple", f'Unsupported value: "{lb}"', True))
    elif kind == "Gateway":
        servers = spec.get("servers") or []
        if not servers:
            out.append(Problem("spec.servers", "gateway must have at least one server"))
        for i, server in enumerate(servers):
            port = server.get("port") or {}
            if not isinstance(port.get("number"), int) or not 0 < port["number"] < 65536:
                out.append(Problem(f"spec.servers[{i}].port.number", "port number must be in range 1-65535"))
            if not port.get("protocol"):
                out.append(Problem(f"spec.servers[{i}].port.protocol", "Required value: protocol"))
            if not server.get("hosts"):
                out.append(Problem(f"spec.servers[{i}].hosts", "server config must contain at least one host"))
    return out


# --- the sidecars' view of the mesh ---------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    labels: dict[str, str]


@dataclass
class MeshConfig:
    """What the sandbox tells every sidecar (its xDS): Services with their ready endpoints, and the rules.

    ``services`` maps ``namespace/name`` to ``{service port: [Endpoint...]}``; ``addresses`` maps a cluster IP to
    ``namespace/name``; ``pods`` maps a pod IP to ``(namespace, labels)`` of pods with a proxy (sidecars and
    gateways); ``workloads`` maps those pod IPs to their workload name (``reviews-v2``); ``inbound`` holds the
    pods whose sidecar is ready to take their inbound traffic; ``labels`` maps every pod IP to its labels.
    """

    services: dict[str, dict[int, list[Endpoint]]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    pods: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    virtual_services: list[Obj] = field(default_factory=list)
    destination_rules: list[Obj] = field(default_factory=list)
    gateways: list[Obj] = field(default_factory=list)
    workloads: dict[str, str] = field(default_factory=dict)
    inbound: frozenset[str] = frozenset()
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    cache: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    """Lookups already made against this configuration (it is replaced, never changed, once sidecars read it)."""

    def to_json(self) -> Obj:
        return {
            "services": {k: {str(p): [[e.ip, e.port, e.labels] for e in eps] for p, eps in ports.items()}
                         for k, ports in self.services.items()},
            "addresses": self.addresses,
            "pods": {ip: [ns, labels] for ip, (ns, labels) in self.pods.items()},
            "virtualServices": self.virtual_services,
            "destinationRules": self.destination_rules,
            "gateways": self.gateways,
            "workloads": self.workloads,
            "inbound": sorted(self.inbound),
            "labels": self.labels,
        }

    @classmethod
    def from_json(cls, data: Obj) -> MeshConfig:
        return cls(
            services={k: {int(p): [Endpoint(e[0], int(e[1]), dict(e[2])) for e in eps] for p, eps in ports.items()}
                      for k, ports in (data.get("services") or {}).items()},
            addresses=dict(data.get("addresses") or {}),
            pods={ip: (v[0], dict(v[1])) for ip, v in (data.get("pods") or {}).items()},
            virtual_services=list(data.get("virtualServices") or []),
            destination_rules=list(data.get("destinationRules") or []),
            gateways=list(data.get("gateways") or []),
            workloads=dict(data.get("workloads") or {}),
            inbound=frozenset(data.get("inbound") or ()),
            labels={ip: dict(v) for ip, v in (data.get("labels") or {}).items()},
        )

    def service_of(self, ip: str, port: int) -> str | None:
        """The Service (``namespace/name``) a pod's ``ip:port`` is an endpoint of, if any (cached)."""
        key = ("service_of", ip, str(port))
        if key not in self.cache:
            self.cache[key] = next((svc for svc, ports in self.services.items() for eps in ports.values()
                                    for e in eps if e.ip == ip and e.port == port), None)
        found: str | None = self.cache[key]
        return found


def resolve_host(host: str, namespace: str) -> str:
    """A rule's host as ``namespace/name``: a short name is in the rule's own namespace."""
    host = host.lower().rstrip(".")
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if host.endswith(suffix):
        host = host[: -len(suffix)]
    elif host.endswith(".svc"):
        host = host[:-4]
    parts = host.split(".")
    if len(parts) == 1:
        return f"{namespace}/{parts[0]}"
    return f"{parts[1]}/{parts[0]}"


def fqdn(key: str) -> str:
    ns, name = key.split("/", 1)
    return f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"


# --- per-request routing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    attempts: int
    per_try_timeout: float | None
    retry_on: frozenset[str]
    codes: frozenset[int]


DEFAULT_RETRY = Retry(2, None, frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                                          "retriable-status-codes"}), frozenset())
"""Istio's retry policy for a route that sets none (1.24+: no status code is retried by default)."""


@dataclass(frozen=True)
class Decision:
    """What the sidecar does with one request.

    Attributes:
        status: For a local reply, its status (404 NR, 503 NC/UH, a fault abort); 0 when forwarding.
        body: The local reply's body.
        flags: Envoy response flags decided here (``FI``, ``NR``, ``NC``, ``UH``); ``DI`` is added by the proxy.
        details: The response-code details for a local reply.
        cluster: ``outbound|port|subset|fqdn``, or ``-``.
        endpoints: The cluster's ready endpoints, ``(ip, port)``.
        delay: Seconds of injected delay (0: none).
        timeout: The route timeout in seconds (None: disabled, Istio's default).
        retry: The retry policy.
        route_name: The rule's ``name`` (``default`` with no VirtualService; ``-`` for an unnamed rule).
    """

    status: int = 0
    body: bytes = b""
    flags: str = "-"
    details: str = "via_upstream"
    cluster: str = "-"
    endpoints: tuple[tuple[str, int], ...] = ()
    delay: float = 0.0
    timeout: float | None = None
    retry: Retry = DEFAULT_RETRY
    route_name: str = "default"


def _str_match(m: Obj, value: str | None, ignore_case: bool = False) -> bool:
    if value is None:
        return False
    if not m:
        return True
    if ignore_case:
        value = value.lower()
    if "exact" in m:
        return value == (str(m["exact"]).lower() if ignore_case else str(m["exact"]))
    if "prefix" in m:
        return value.startswith(str(m["prefix"]).lower() if ignore_case else str(m["prefix"]))
    if "regex" in m:
        return re.fullmatch(str(m["regex"]), value) is not None
    return True


def _match_one(m: Obj, method: str, path: str, headers: Mapping[str, str], source: tuple[str, dict[str, str]],
               port: int) -> bool:
    uri = path.split("?", 1)[0]
    query = path.split("?", 1)[1] if "?" in path else ""
    if "uri" in m and not _str_match(m["uri"], uri, bool(m.get("ignoreUriCase"))):
        return False
    if "method" in m and not _str_match(m["method"], method):
        return False
    if "authority" in m and not _str_match(m["authority"], headers.get("host")):
        return False
    for name, hm in (m.get("headers") or {}).items():
        if not _str_match(hm or {}, headers.get(name.lower())):
            return False
    for name, hm in (m.get("withoutHeaders") or {}).items():
        if _str_match(hm or {}, headers.get(name.lower())):
            return False
    if m.get("queryParams"):
        params = {p.partition("=")[0]: p.partition("=")[2] for p in query.split("&") if p}
        for name, qm in m["queryParams"].items():
            if not _str_match(qm or {}, params.get(name)):
                return False
    if m.get("port") and int(m["port"]) != port:
        return False
    if m.get("sourceNamespace") and m["sourceNamespace"] != source[0]:
        return False
    return all(source[1].get(key) == value for key, value in (m.get("sourceLabels") or {}).items())


def _applies_to_mesh(vs: Obj) -> bool:
    gateways = (vs.get("spec") or {}).get("gateways") or [MESH_GATEWAY]
    return MESH_GATEWAY in gateways


def find_virtual_service(config: MeshConfig, key: str, caller_ns: str) -> Obj | None:
    """The VirtualService for a Service: the caller's namespace first, then the Service's, then any."""
    cached = ("vs", key, caller_ns)
    if cached not in config.cache:
        config.cache[cached] = _find_virtual_service(config, key, caller_ns)
    vs: Obj | None = config.cache[cached]
    return vs


def _find_virtual_service(config: MeshConfig, key: str, caller_ns: str) -> Obj | None:
    found: list[Obj] = []
    for vs in config.virtual_services:
        ns = vs["metadata"].get("namespace", "default")
        hosts = (vs.get("spec") or {}).get("hosts") or []
        if _applies_to_mesh(vs) and any(h != "*" and resolve_host(h, ns) == key for h in hosts):
            found.append(vs)
    if not found:
        return None
    svc_ns = key.split("/", 1)[0]
    found.sort(key=lambda v: (v["metadata"].get("namespace") != caller_ns, v["metadata"].get("namespace") != svc_ns,
                              v["metadata"].get("creationTimestamp", "")))
    return found[0]


def subset_labels(config: MeshConfig, key: str, subset: str, caller_ns: str) -> dict[str, str] | None:
    """The labels of a DestinationRule subset for a Service (None: no DestinationRule defines it)."""
    cached = ("subset", key, subset, caller_ns)
    if cached not in config.cache:
        config.cache[cached] = _subset_labels(config, key, subset, caller_ns)
    labels: dict[str, str] | None = config.cache[cached]
    return labels


def _subset_labels(config: MeshConfig, key: str, subset: str, caller_ns: str) -> dict[str, str] | None:
    rules = [dr for dr in config.destination_rules
             if resolve_host(str((dr.get("spec") or {}).get("host", "")), dr["metadata"].get("namespace", "default"))
             == key]
    svc_ns = key.split("/", 1)[0]
    rules.sort(key=lambda d: (d["metadata"].get("namespace") != caller_ns, d["metadata"].get("namespace") != svc_ns,
                              d["metadata"].get("creationTimestamp", "")))
    for dr in rules:
        for s in (dr.get("spec") or {}).get("subsets") or []:
            if s.get("name") == subset:
                return {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
    return None


def _percent(spec: Obj) -> float:
    pct = spec.get("percentage")
    if isinstance(pct, dict):
        return float(pct.get("value", 0))
    if "percent" in spec:
        return float(spec["percent"])
    return 0.0  # no percentage: nothing is injected (Istio's TranslateFault)


def _hit(percent: float, rng: random.Random) -> bool:
    return percent > 0 and rng.randrange(1_000_000) < percent * 10_000


def _retry(spec: Obj | None) -> Retry:
    if spec is None:
        return DEFAULT_RETRY
    attempts = int(spec.get("attempts", 0) or 0)
    per_try = parse_duration(spec.get("perTryTimeout")) if spec.get("perTryTimeout") else None
    policies = [p.strip() for p in str(spec.get("retryOn") or "").split(",") if p.strip()]
    codes = frozenset(int(p) for p in policies if p.isdigit())
    on = frozenset(p for p in policies if not p.isdigit()) or DEFAULT_RETRY.retry_on
    if codes:
        on = on | {"retriable-status-codes"}
    return Retry(attempts, per_try, on, codes)


def _cluster(config: MeshConfig, key: str, port: int, subset: str, caller_ns: str) -> Decision:
    name = f"outbound|{port}|{subset}|{fqdn(key)}"
    endpoints = config.services.get(key, {}).get(port)
    if key not in config.services:
        return Decision(503, b"", "NC", "cluster_not_found", name)
    if subset:
        labels = subset_labels(config, key, subset, caller_ns)
        if labels is None:
            return Decision(503, b"", "NC", "cluster_not_found", name)
        endpoints = [e for e in endpoints or [] if all(e.labels.get(k) == v for k, v in labels.items())]
    if not endpoints:
        return Decision(503, b"no healthy upstream", "UH", "no_healthy_upstream", name)
    return Decision(cluster=name, endpoints=tuple((e.ip, e.port) for e in endpoints))


def route(config: MeshConfig, caller_ip: str, key: str, port: int, method: str, path: str,
          headers: Mapping[str, str], rng: random.Random | None = None) -> Decision:
    """Decide what the caller's sidecar does with one request to Service ``key`` (``namespace/name``) on ``port``.

    ``headers`` have lowercase names.
    """
    caller_ns, caller_labels = config.pods.get(caller_ip, ("default", {}))
    vs = find_virtual_service(config, key, caller_ns)
    if vs is None:
        return _cluster(config, key, port, "", caller_ns)
    return route_with(config, vs, (caller_ns, caller_labels), port, method, path, headers, rng)


def route_with(config: MeshConfig, vs: Obj, caller: tuple[str, dict[str, str]], port: int, method: str, path: str,
               headers: Mapping[str, str], rng: random.Random | None = None) -> Decision:
    """What one VirtualService does with a request from a caller ``(namespace, labels)``."""
    rng = rng or random.Random()
    caller_ns, caller_labels = caller
    vs_ns = vs["metadata"].get("namespace", "default")
    rule: Obj | None = None
    for candidate in (vs.get("spec") or {}).get("http") or []:
        matches = candidate.get("match") or []
        if not matches or any(_match_one(m, method, path, headers, (caller_ns, caller_labels), port)
                              for m in matches):
            rule = candidate
            break
    if rule is None:
        return Decision(404, b"", "NR", "route_not_found", "-", route_name="-")
    name = str(rule.get("name") or "-")
    fault = rule.get("fault") or {}
    delay = 0.0
    if fault.get("delay") and _hit(_percent(fault["delay"]), rng):
        delay = parse_duration(fault["delay"].get("fixedDelay")) or 0.0
    if fault.get("abort") and _hit(_percent(fault["abort"]), rng):
        status = int(fault["abort"].get("httpStatus", 503))
        return Decision(status, b"fault filter abort", "FI", "fault_filter_abort", "-", delay=delay, route_name=name)
    destinations = [d for d in rule.get("route") or [] if isinstance(d, dict)]
    if not destinations:
        return Decision(404, b"", "NR", "route_not_found", "-", delay=delay, route_name=name)
    if len(destinations) == 1:
        chosen = destinations[0]
    else:
        weights = [max(int(d.get("weight", 0) or 0), 0) for d in destinations]
        if sum(weights) == 0:
            weights = [1] * len(destinations)
        chosen = rng.choices(destinations, weights=weights)[0]
    dest = chosen.get("destination") or {}
    dest_key = resolve_host(str(dest.get("host", "")), vs_ns)
    dest_port = int((dest.get("port") or {}).get("number") or port)
    if dest_key in config.services and dest_port not in config.services[dest_key]:
        ports = config.services[dest_key]
        dest_port = next(iter(ports)) if len(ports) == 1 else dest_port
    decision = _cluster(config, dest_key, dest_port, str(dest.get("subset") or ""), caller_ns)
    timeout = parse_duration(rule.get("timeout")) if rule.get("timeout") else None
    return Decision(decision.status, decision.body, decision.flags, decision.details, decision.cluster,
                    decision.endpoints, delay, timeout, _retry(rule.get("retries")), name)


# --- gateways -------------------------------------------------------------------------------------


def gateway_key(name: str, vs_namespace: str) -> str:
    """A VirtualService's ``gateways`` entry as ``namespace/name`` (``name``, ``ns/name`` or the legacy FQDN)."""
    if "/" in name:
        return name
    parts = name.split(".")
    if len(parts) > 1:  # bookinfo-gateway.tutorial.svc.cluster.local
        return f"{parts[1]}/{parts[0]}"
    return f"{vs_namespace}/{name}"


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.split("/", 1)[-1].lower()  # a Gateway's "ns/host" form
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def gateways_for(config: MeshConfig, labels: Mapping[str, str], port: int) -> list[Obj]:
    """The Gateways whose selector picks a gateway pod with ``labels``, with a server on ``port``.

    A server's port is the gateway Service's port or the pod's (Istio maps 80 to the pod's 8080; bookinfo's
    gateway names 8080 since Istio 1.19 and 80 before).
    """
    found = []
    for gw in config.gateways:
        selector = (gw.get("spec") or {}).get("selector") or {}
        if not all(labels.get(k) == v for k, v in selector.items()):
            continue
        if any(int((s.get("port") or {}).get("number") or 0) in (port, port - 8000) for s in
               (gw.get("spec") or {}).get("servers") or []):
            found.append(gw)
    return found


def gateway_virtual_service(config: MeshConfig, gateways: list[Obj], host: str) -> Obj | None:
    """The VirtualService bound to one of ``gateways`` whose hosts match the request's ``Host`` (no port)."""
    host = host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()
    served: dict[str, Obj] = {}
    for gw in gateways:
        ns = gw["metadata"].get("namespace", "default")
        hosts = [h for s in (gw.get("spec") or {}).get("servers") or [] for h in s.get("hosts") or []]
        if any(_host_matches(h, host) for h in hosts):
            served[f"{ns}/{gw['metadata']['name']}"] = gw
    candidates = []
    for vs in config.virtual_services:
        spec = vs.get("spec") or {}
        ns = vs["metadata"].get("namespace", "default")
        bound = {gateway_key(str(g), ns) for g in spec.get("gateways") or []}
        if bound & served.keys() and any(_host_matches(str(h), host) for h in spec.get("hosts") or []):
            candidates.append(vs)
    candidates.sort(key=lambda v: v["metadata"].get("creationTimestamp", ""))
    return candidates[0] if candidates else None
