"""The mesh's control plane (istiod's part): tells the sidecars and the network what the mesh looks like.

On every change of pods, Services, Endpoints, VirtualServices or DestinationRules it rebuilds one
:class:`~.meshrules.MeshConfig` (Services with their ready endpoints and labels, cluster addresses, meshed pods,
the rules) and writes it to ``network/mesh.json``, which every ``istio-proxy`` process rereads when it changes,
as Envoy receives xDS pushes. It also tells the network which pods have a ready sidecar, so that their
connections to Service addresses go through it (Istio's iptables redirect). Writes are coalesced: many changes
in one turn of the event loop make one write.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from . import meshrules
from .network import Network
from .registry import PROXY_CONTAINER, PROXY_PORT
from .resources import BY_PLURAL
from .store import Store, WatchEvent

PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
VIRTUAL_SERVICES = BY_PLURAL[("networking.istio.io", "virtualservices")]
DESTINATION_RULES = BY_PLURAL[("networking.istio.io", "destinationrules")]
GATEWAYS = BY_PLURAL[("networking.istio.io", "gateways")]


def _workload(pod: dict[str, Any]) -> str:
    """The pod's workload as Istio names it (its Deployment): ``reviews-v2-5b6f8d9c7-x`` -> ``reviews-v2``."""
    meta = pod["metadata"]
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner and owner.get("kind") == "ReplicaSet":
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        name = str(owner.get("name", ""))
        return name[: -len(template_hash) - 1] if template_hash and name.endswith("-" + template_hash) else name
    return str(owner.get("name")) if owner else str(meta.get("name", ""))


def _sidecar_ready(pod: dict[str, object]) -> bool:
    status = pod.get("status")
    if not isinstance(status, dict):
        return False
    return any(cs.get("name") == PROXY_CONTAINER and cs.get("ready") for cs in status.get("containerStatuses") or [])


class MeshControl:
    """Keeps ``mesh.json`` and the network's sidecar table in step with the store."""

    def __init__(self, store: Store, network: Network) -> None:
        self.store = store
        self.network = network
        self._scheduled = False
        self.writes = 0

    def start(self) -> None:
        self.store.subscribe((PODS, SERVICES, ENDPOINTS, VIRTUAL_SERVICES, DESTINATION_RULES, GATEWAYS),
                             self._on_event)
        self.flush()

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

    def config(self) -> tuple[meshrules.MeshConfig, dict[str, tuple[str, int]]]:
        """The configuration for the sidecars, and the meshed pods with a ready sidecar."""
        pods = self.store.list(PODS)
        labels_by_ip: dict[str, dict[str, str]] = {}
        cfg = meshrules.MeshConfig()
        sidecars: dict[str, tuple[str, int]] = {}
        for p in pods:
            ip = (p.get("status") or {}).get("podIP")
            if not ip:
                continue
            labels = dict(p["metadata"].get("labels") or {})
            labels_by_ip[ip] = labels
            if any(c.get("name") == PROXY_CONTAINER for c in p["spec"].get("containers") or []):
                cfg.pods[ip] = (p["metadata"].get("namespace", "default"), labels)
                cfg.workloads[ip] = _workload(p)
                gateway = [c.get("name") for c in p["spec"].get("containers") or []] == [PROXY_CONTAINER]
                if not gateway and _sidecar_ready(p) and not p["metadata"].get("deletionTimestamp"):
                    sidecars[ip] = (ip, PROXY_PORT)
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
        return cfg, sidecars

    def flush(self) -> None:
        """Write the configuration now (atomically: a sidecar never reads half a file)."""
        self._scheduled = False
        cfg, sidecars = self.config()
        path = self.network.mesh_file
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(cfg.to_json(), f, separators=(",", ":"))
        os.replace(tmp, path)
        self.writes += 1
        self.network.set_sidecars(sidecars)
