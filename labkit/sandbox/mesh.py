"""The mesh's control plane (istiod's part): tells the sidecars and the network what the mesh looks like.

On every change of pods, Services, Endpoints, VirtualServices or DestinationRules it rebuilds one
:class:`~.meshrules.MeshConfig` (Services with their ready endpoints and labels, cluster addresses, meshed pods,
the rules) and writes it to ``network/mesh.json``, which every ``istio-proxy`` process rereads when it changes,
as Envoy receives xDS pushes. It also tells the network which pods have a ready sidecar, so that their
connections to Service addresses go through it, and connections to them through their inbound listener (Istio's
iptables redirects); and which app ports of each meshed pod it serves on the pod's own address
(:func:`intercepted_ports`), so that ``curl POD_IP:9080`` goes through the sidecars too. Writes are coalesced:
many changes in one turn of the event loop make one write.

The ingress gateway (``istio-ingressgateway`` in ``istio-system``: a Deployment of one proxy in router mode and its
Service, port 80 -> 8080) is created once the mesh is wanted, that is when a namespace is labelled
``istio-injection=enabled`` or a Gateway is applied, so that a sandbox without the mesh pays nothing for it. Its
Service's ``http2`` port has a nodePort served on the node's address, ``127.0.0.1``, as istio.io's "no external
load balancer" instructions expect (``INGRESS_HOST`` = the pod's ``hostIP``, ``INGRESS_PORT`` = the nodePort).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
from typing import Any

from . import meshrules
from .network import Network
from .registry import INJECTION_LABEL, PROXY_CONTAINER, PROXY_IMAGE, PROXY_PORT, Registry
from .resources import BY_PLURAL
from .store import Store, StoreError, WatchEvent

PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
VIRTUAL_SERVICES = BY_PLURAL[("networking.istio.io", "virtualservices")]
DESTINATION_RULES = BY_PLURAL[("networking.istio.io", "destinationrules")]
GATEWAYS = BY_PLURAL[("networking.istio.io", "gateways")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]

log = logging.getLogger("labkit.sandbox.mesh")
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_NAME = "istio-ingressgateway"
GATEWAY_LABELS = {"app": "istio-ingressgateway", "istio": "ingressgateway"}


def gateway_objects(node_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ingress gateway's Deployment and Service, as Istio's default profile installs them (trimmed)."""
    meta = {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE, "labels": dict(GATEWAY_LABELS)}
    env = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in (
        ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("INSTANCE_IP", "status.podIP"))]
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "selector": {"matchLabels": dict(GATEWAY_LABELS)}, "template": {
            "metadata": {"labels": {**GATEWAY_LABELS, "sidecar.istio.io/inject": "false"},
                         "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "15020",
                                         "prometheus.io/path": "/stats/prometheus"}},
            "spec": {"containers": [{
                "name": PROXY_CONTAINER, "image": PROXY_IMAGE,
                "args": ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                "ports": [{"containerPort": 15021, "name": "status-port", "protocol": "TCP"},
                          {"containerPort": 8080, "name": "http2", "protocol": "TCP"},
                          {"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
                "env": env}]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "LoadBalancer", "selector": dict(GATEWAY_LABELS), "ports": [
            {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
            {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": node_port}]},
    }
    return deployment, service


def free_node_port() -> int:
    """A port of Kubernetes' NodePort range that is free on the host's loopback."""
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.randrange(30000, 32768)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    return 0


def _workload(pod: dict[str, Any]) -> str:
    """The pod's workload as Istio names it (its Deployment): ``reviews-v2-5b6f8d9c7-x`` -> ``reviews-v2``."""
    meta = pod["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner and owner.get("kind") == "ReplicaSet":
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        name = str(owner.get("name", ""))
        return name[: -len(template_hash) - 1] if template_hash and name.endswith("-" + template_hash) else name
    return str(owner.get("name")) if owner else str(meta.get("name", ""))


def proxy_role(pod: dict[str, Any]) -> str | None:
    """``sidecar`` or ``router`` (a gateway) for a pod running Istio's proxy image as ``istio-proxy``, else None.

    A container that is merely named ``istio-proxy`` (a hand-written pod) is not a proxy.
    """
    for c in pod["spec"].get("containers") or []:
        if c.get("name") == PROXY_CONTAINER and "istio/proxyv2" in str(c.get("image", "")):
            return "router" if "router" in (c.get("args") or []) else "sidecar"
    return None


def intercepted_ports(pod: dict[str, Any]) -> list[int]:
    """The app ports of a pod with Istio's sidecar, whose traffic to the pod's address the sidecar takes (Istio's
    iptables redirect): the TCP ``containerPort`` of every container but ``istio-proxy``. Empty for other pods."""
    if proxy_role(pod) != "sidecar":
        return []
    ports = {int(p["containerPort"]) for c in pod["spec"].get("containers") or [] if c.get("name") != PROXY_CONTAINER
             for p in c.get("ports") or [] if str(p.get("protocol", "TCP")) == "TCP"
             and isinstance(p.get("containerPort"), int)}
    return sorted(ports)


def _sidecar_ready(pod: dict[str, object]) -> bool:
    status = pod.get("status")
    if not isinstance(status, dict):
        return False
    return any(cs.get("name") == PROXY_CONTAINER and cs.get("ready") for cs in status.get("containerStatuses") or [])


class MeshControl:
    """Keeps ``mesh.json`` and the network's sidecar table in step with the store."""

    def __init__(self, store: Store, network: Network, registry: Registry | None = None) -> None:
        self.store = store
        self.network = network
        self.registry = registry
        self._scheduled = False
        self.writes = 0
        self.gateway_port: int | None = None
        """The ingress gateway's nodePort on 127.0.0.1, once it is started."""

    def start(self) -> None:
        self.store.subscribe((PODS, SERVICES, ENDPOINTS, VIRTUAL_SERVICES, DESTINATION_RULES, GATEWAYS,
                              NAMESPACES), self._on_event)
        self.flush()

    def _mesh_wanted(self) -> bool:
        return bool(self.store.list(GATEWAYS)) or any(
            (ns["metadata"].get("labels") or {}).get(INJECTION_LABEL) == "enabled"
            for ns in self.store.list(NAMESPACES))

    def start_gateway(self) -> None:
        """Create the ingress gateway (once) and serve its Service's nodePort on the host's loopback."""
        if self.registry is None or self.gateway_port is not None:
            return
        port = free_node_port()
        self.gateway_port = port
        deployment, service = gateway_objects(port)
        try:
            if self.store.get(NAMESPACES, "", GATEWAY_NAMESPACE) is None:
                self.registry.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": GATEWAY_NAMESPACE}}, None)
            if self.store.get(SERVICES, GATEWAY_NAMESPACE, GATEWAY_NAME) is None:
                self.registry.create(SERVICES, service, GATEWAY_NAMESPACE)
            if self.store.get(DEPLOYMENTS, GATEWAY_NAMESPACE, GATEWAY_NAME) is None:
                self.registry.create(DEPLOYMENTS, deployment, GATEWAY_NAMESPACE)
        except StoreError as exc:
            log.warning("cannot create the ingress gateway: %s", exc.message)
            return
        svc = self.store.get(SERVICES, GATEWAY_NAMESPACE, GATEWAY_NAME) or service
        port = next((int(p.get("nodePort") or 0) for p in svc["spec"].get("ports") or [] if p.get("port") == 80), 0)
        self.gateway_port = port
        if port:
            asyncio.get_running_loop().create_task(self._expose(port))

    async def _expose(self, port: int) -> None:
        try:
            await self.network.expose(GATEWAY_NAMESPACE, GATEWAY_NAME, 80, port)
        except OSError as exc:
            log.warning("cannot serve the ingress gateway on 127.0.0.1:%s: %s", port, exc)

    def _on_event(self, ev: WatchEvent) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def config(self) -> tuple[meshrules.MeshConfig, dict[str, tuple[str, int]], dict[str, list[int]]]:
        """The configuration for the sidecars, the meshed pods with a ready sidecar, and the app ports of every
        meshed pod (pod IP -> ports) whose address the network redirects to its sidecar."""
        pods = self.store.list(PODS)
        labels_by_ip: dict[str, dict[str, str]] = {}
        cfg = meshrules.MeshConfig()
        sidecars: dict[str, tuple[str, int]] = {}
        pod_ports: dict[str, list[int]] = {}
        for p in pods:
            ip = (p.get("status") or {}).get("podIP")
            if not ip:
                continue
            labels = dict(p["metadata"].get("labels") or {})
            labels_by_ip[ip] = labels
            role = proxy_role(p)
            if role is not None:
                cfg.pods[ip] = (p["metadata"].get("namespace", "default"), labels)
                cfg.workloads[ip] = _workload(p)
                if role == "sidecar" and _sidecar_ready(p) and not p["metadata"].get("deletionTimestamp"):
                    sidecars[ip] = (ip, PROXY_PORT)
                if role == "sidecar":
                    pod_ports[ip] = intercepted_ports(p)
        cfg.labels = labels_by_ip
        cfg.inbound = frozenset(sidecars)
        for svc in self.store.list(SERVICES):
            ip = svc["spec"].get("clusterIP")
            if ip and ip != "None":
                cfg.addresses[ip] = f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"
        for (ns, name), ports in self.network.service_ports().items():
            cfg.services[f"{ns}/{name}"] = {
                port: [meshrules.Endpoint(ip, tp, labels_by_ip.get(ip, {})) for ip, tp in backends]
                for port, backends in ports.items()}
        cfg.virtual_services = [{"metadata": {k: vs["metadata"].get(k) for k in ("name", "namespace",
                                                                                   "creationTimestamp")},
                                 "spec": vs.get("spec") or {}} for vs in self.store.list(VIRTUAL_SERVICES)]
        cfg.destination_rules = [{"metadata": {k: dr["metadata"].get(k) for k in ("name", "namespace",
                                                                                    "creationTimestamp")},
                                  "spec": dr.get("spec") or {}} for dr in self.store.list(DESTINATION_RULES)]
        cfg.gateways = [{"metadata": {k: gw["metadata"].get(k) for k in ("name", "namespace", "creationTimestamp")},
                         "spec": gw.get("spec") or {}} for gw in self.store.list(GATEWAYS)]
        return cfg, sidecars, pod_ports

    def flush(self) -> None:
        """Write the configuration now (atomically: a sidecar never reads half a file)."""
        self._scheduled = False
        if self.gateway_port is None and self.registry is not None and self._mesh_wanted():
            with contextlib.suppress(RuntimeError):  # no event loop (a unit test): no gateway
                asyncio.get_running_loop()
                self.start_gateway()
        cfg, sidecars, pod_ports = self.config()
        path = self.network.mesh_file
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cfg.to_json(), f, separators=(",", ":"))
        os.replace(tmp, path)
        self.writes += 1
        self.network.set_sidecars(sidecars)
        with contextlib.suppress(RuntimeError):  # no event loop (a unit test): no listeners
            asyncio.get_running_loop()
            self.network.set_pod_ports(pod_ports)
