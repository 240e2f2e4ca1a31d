"""The cluster: wires the parts together, and nothing else.

Data flows one way::

    API server -> registry -> store (+ watch cache) -> watches -> controllers, kubelet -> network, processes
                     ^                                                 |
                     +------------- writes (status, pods, events) ----+

The API server (:mod:`.apiserver`) is given the parts it serves from; controllers, the kubelet and the event
recorder are given the store to read and the registry to write, never this object.
"""

from __future__ import annotations

import os
from pathlib import Path

from labkit.kubestatus import is_pod_ready

from .controllers import Controllers
from .events import EventRecorder
from .kubelet import Kubelet, NodeConfig
from .mesh import MeshControl
from .network import Network
from .node import Heartbeat, NodeFacts
from .registry import INJECTION_LABEL, Registry
from .resources import BY_PLURAL
from .store import Store

PODS = BY_PLURAL[("", "pods")]

# Containers import labkit from the same place as this process, whatever the install: the folder holding the
# ``labkit`` package (this file is labkit/sandbox/cluster.py).
PYTHON_PATH = str(Path(__file__).resolve().parents[2])


class Cluster:
    """Everything behind the API server, constructed, started and stopped together."""

    def __init__(self, state_dir: str, time_scale: float = 1.0, subnet: tuple[int, int] | None = None,
                 ca_pem: str = "") -> None:
        self.state_dir = str(state_dir)
        self.time_scale = time_scale
        self.store = Store()
        self.network = Network(state_dir, subnet)
        self.registry = Registry(self.store, self.network.services)
        self.events = EventRecorder(self.registry)
        self.kubelet = Kubelet(self.store, self.registry, self.events, self.network,
                               NodeConfig(state_dir=state_dir, time_scale=time_scale, python_path=PYTHON_PATH))
        self.controllers = Controllers(self.store, self.registry, self.events, self.network, ca_pem=ca_pem)
        self.mesh = MeshControl(self.store, self.network, self.registry)
        self.heartbeat = Heartbeat(self.registry, BY_PLURAL[("", "nodes")], BY_PLURAL[("coordination.k8s.io",
                                                                                      "leases")])

    def start(self) -> None:
        self.registry.create_initial_namespaces()
        if os.environ.get("LABKIT_SANDBOX_MESH") == "1":  # every pod of "default" gets an istio-proxy sidecar
            self.registry.mutate(BY_PLURAL[("", "namespaces")], "", "default",
                                 lambda ns: ns["metadata"]["labels"].update({INJECTION_LABEL: "enabled"}))
        a, b = self.network.subnet
        self.registry.create_furniture(NodeFacts.of_this_machine(self.state_dir), f"127.{a}.{b}.0/23",
                                       f"127.{a}.{b + 2}.1")
        self.controllers.start()
        self.mesh.start()
        self.kubelet.start()
        self.heartbeat.start()

    def api_server_listening(self, ip: str, port: int) -> None:
        """The API server's address is known: the ``kubernetes`` Service's endpoints point at it."""
        self.registry.publish_api_server(ip, port)

    async def shutdown(self) -> None:
        self.heartbeat.stop()
        self.controllers.stop()
        self.events.close()
        await self.kubelet.shutdown()
        self.store.close_all_watches()
        await self.network.close()

    def pods_ready(self) -> tuple[int, int]:
        """(Ready pods, all pods), for the boot report."""
        pods = self.store.list(PODS)
        return sum(1 for p in pods if is_pod_ready(p)), len(pods)
