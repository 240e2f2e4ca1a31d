"""An ordinary cluster's furniture: the one Node, the ``kubernetes`` Service and the objects of every namespace.

Pure builders of wire objects; the registry stores them at boot and the namespace controller in every new
namespace (a real cluster's kubelet registers its Node, the API server keeps the ``kubernetes`` Service and its
endpoints, the root-CA publisher and the service-account controller fill each namespace).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .discovery import GIT_VERSION
from .resources import Resource

Obj = dict[str, Any]

NODE_NAME = "sandbox"
"""The node every pod runs on (``spec.nodeName``)."""
NODE_IP = "127.0.0.1"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DEFAULT_SERVICE_ACCOUNT = "default"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
API_SERVER_PORT_NAME = "https"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(machine, machine or "amd64")


@dataclass(frozen=True)
class NodeFacts:
    """What the Node reports about the machine it runs on."""

    cpus: int
    memory_kib: int
    storage_kib: int
    kernel: str
    arch: str
    machine_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def of_this_machine(cls, state_dir: str) -> NodeFacts:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
        except (ValueError, OSError, AttributeError):
            memory = 8 * 1024 * 1024
        try:
            storage = shutil.disk_usage(state_dir).total // 1024
        except OSError:
            storage = 100 * 1024 * 1024
        return cls(cpus=os.cpu_count() or 1, memory_kib=memory, storage_kib=storage, kernel=platform.release(),
                   arch=_arch())


def node_object(facts: NodeFacts, pod_cidr: str, now: str) -> Obj:
    """The sandbox's Node, Ready, as a kubelet registers it (``kubectl get nodes``, ``describe node``)."""
    capacity = {"cpu": str(facts.cpus), "ephemeral-storage": f"{facts.storage_kib}Ki", "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": f"{facts.memory_kib}Ki", "pods": "110"}

    def condition(ctype: str, status: str, reason: str, message: str) -> Obj:
        return {"type": ctype, "status": status, "lastHeartbeatTime": now, "lastTransitionTime": now,
                "reason": reason, "message": message}

    return {
        "metadata": {
            "name": NODE_NAME,
            "labels": {"beta.kubernetes.io/arch": facts.arch, "beta.kubernetes.io/os": "linux",
                       "kubernetes.io/arch": facts.arch, "kubernetes.io/hostname": NODE_NAME,
                       "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                          "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE_NAME}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": facts.machine_id, "systemUUID": facts.machine_id, "bootID": facts.boot_id,
                "kernelVersion": facts.kernel, "osImage": "labkit sandbox", "containerRuntimeVersion":
                "labkit://processes", "kubeletVersion": GIT_VERSION, "kubeProxyVersion": GIT_VERSION,
                "operatingSystem": "linux", "architecture": facts.arch,
            },
        },
    }


def root_ca_configmap(namespace: str, ca_pem: str) -> Obj:
    """The ``kube-root-ca.crt`` ConfigMap the root-CA publisher keeps in every namespace."""
    return {"metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": namespace,
                         "annotations": {"kubernetes.io/description": (
                             "Contains a CA bundle that can be used to verify the kube-apiserver when using "
                             "internal endpoints such as the internal service IP or kubernetes.default.svc. No "
                             "other usage is guaranteed across distributions of Kubernetes clusters.")}},
            "data": {"ca.crt": ca_pem}}


def default_service_account(namespace: str) -> Obj:
    """The ``default`` ServiceAccount the service-account controller keeps in every namespace."""
    return {"metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace}}


def kubernetes_service() -> Obj:
    """The ``kubernetes`` Service in ``default`` (selectorless: the API server keeps its endpoints)."""
    return {"metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"ports": [{"name": API_SERVER_PORT_NAME, "port": 443, "protocol": "TCP", "targetPort": 6443}],
                     "type": "ClusterIP", "sessionAffinity": "None"}}


def api_server_endpoints(ip: str, port: int) -> Obj:
    """The ``kubernetes`` Endpoints: the API server's address."""
    return {"metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}],
                         "ports": [{"name": API_SERVER_PORT_NAME, "port": port, "protocol": "TCP"}]}]}


def api_server_slice(ip: str, port: int) -> Obj:
    """The ``kubernetes`` EndpointSlice, beside the Endpoints."""
    return {"metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {SERVICE_NAME_LABEL: "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": API_SERVER_PORT_NAME, "port": port, "protocol": "TCP"}]}


def node_lease(now_micro: str) -> Obj:
    """The node's heartbeat Lease in ``kube-node-lease`` (``describe node`` shows its holder and renew time)."""
    return {"metadata": {"name": NODE_NAME, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": NODE_NAME, "leaseDurationSeconds": 40, "renewTime": now_micro}}


LEASE_RENEW_SECONDS = 10.0
"""How often the kubelet renews its node Lease (``nodeLeaseDurationSeconds`` 40, renewed every quarter)."""
STATUS_REPORT_SECONDS = 300.0
"""How often an unchanged node status is reported anyway (``nodeStatusReportFrequency``): the heartbeat times."""


class Writer(Protocol):
    def mutate(self, res: Resource, namespace: str, name: str, fn: Callable[[Obj], object]) -> Obj | None: ...


class Heartbeat:
    """The kubelet's node heartbeats: the Lease's ``renewTime`` and the conditions' ``lastHeartbeatTime``."""

    def __init__(self, registry: Writer, nodes: Resource, leases: Resource) -> None:
        self.registry, self.nodes, self.leases = registry, nodes, leases
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def beat(self, *, status: bool) -> None:
        now = datetime.now(UTC)
        micro = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.registry.mutate(self.leases, "kube-node-lease", NODE_NAME,
                             lambda lease: lease["spec"].__setitem__("renewTime", micro))
        if status:
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")

            def heartbeat(node: Obj) -> None:
                for condition in node.get("status", {}).get("conditions") or []:
                    condition["lastHeartbeatTime"] = stamp

            self.registry.mutate(self.nodes, "", NODE_NAME, heartbeat)

    async def _run(self) -> None:
        since_status = 0.0
        while True:
            await asyncio.sleep(LEASE_RENEW_SECONDS)
            since_status += LEASE_RENEW_SECONDS
            self.beat(status=since_status >= STATUS_REPORT_SECONDS)
            if since_status >= STATUS_REPORT_SECONDS:
                since_status = 0.0
