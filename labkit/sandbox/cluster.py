"""The cluster: wires the parts together, and nothing else.

Data flows one way::

    API server -> registry -> store (+ watch cache) -> watches -> controllers, kubelet -> network, processes
                     ^                                                 |
                     +------------- writes (status, pods, events) ----+

The API server (:mod:`.apiserver`) is given the parts it serves from; controllers, the kubelet and the event
recorder are given the store to read and the registry to write, never this object.
"""

from __future__ import annotations

from pathlib import Path

from labkit.kubestatus import is_pod_ready

from .controllers import Controllers
from .events import EventRecorder
from .kubelet import Kubelet, NodeConfig
from .network import Network
from .registry import Registry
from .resources import BY_PLURAL
from .store import Store

PODS = BY_PLURAL[("", "pods")]

# Containers import labkit from the same place as this process, whatever the install: the folder holding the
# ``labkit`` package (this file is labkit/sandbox/cluster.py).
PYTHON_PATH = str(Path(__file__).resolve().parents[2])


class Cluster:
    """Everything behind the API server, constructed, started and stopped together."""

    def __init__(self, state_dir: str, time_scale: float = 1.0, subnet: tuple[int, int] | None = None) -> None:
        self.state_dir = state_dir
        self.time_scale = time_scale
        self.store = Store()
        self.network = Network(state_dir, subnet)
        self.registry = Registry(self.store, self.network.services)
        self.events = EventRecorder(self.registry)
        self.kubelet = Kubelet(self.store, self.registry, self.events, self.network,
                               NodeConfig(state_dir=state_dir, time_scale=time_scale, python_path=PYTHON_PATH))
        self.controllers = Controllers(self.store, self.registry, self.events, self.network)

    def start(self) -> None:
        self.registry.create_initial_namespaces()
        self.controllers.start()
        self.kubelet.start()

    async def shutdown(self) -> None:
        self.controllers.stop()
        self.events.close()
        await self.kubelet.shutdown()
        self.store.close_all_watches()
        await self.network.close()

    def pods_ready(self) -> tuple[int, int]:
        """(Ready pods, all pods), for the boot report."""
        pods = self.store.list(PODS)
        return sum(1 for p in pods if is_pod_ready(p)), len(pods)
