"""The sandbox's network: pod addresses, Service addresses (kube-proxy), cluster DNS and the ingress.

Every pod gets its own loopback address (``127.A.B.n``; all of 127.0.0.0/8 is loopback on Linux) and serves on its
container port there, so ``podIP:9080`` works as on a real cluster. Every Service gets a cluster address in another
loopback block, where a small TCP proxy hands each new connection to a random ready endpoint, as kube-proxy's
iptables rules do. With no ready endpoint the Service address refuses connections. The ingress is the same proxy on
``127.0.0.1:<port>`` in front of productpage, so a browser on the host can open the page.

A pod with Istio's sidecar gets a second, private address in the block's fourth /24 (:meth:`Network.app_address`):
its app listens there on its declared ports, and the network serves ``podIP:port`` instead, handing each connection
to the pod's inbound sidecar, or first to the caller's own sidecar when the caller is meshed, as Istio's iptables
redirects do for traffic to a pod's address (:meth:`Network.set_pod_ports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import struct
from dataclasses import dataclass, field

from . import dns, meshrules

log = logging.getLogger("labkit.sandbox.network")
MAX_PROXY_CONNECTIONS = 512
"""Connections at once through one Service port or the ingress; more are reset (each holds two descriptors)."""


def pick_subnet() -> tuple[int, int]:
    """A random ``127.A.B.0/22`` block for this sandbox, so two sandboxes on one machine do not collide."""
    rng = random.SystemRandom()
    for _ in range(50):
        a, b = rng.randrange(64, 250), rng.randrange(0, 252, 4)
        # If something already serves on the block's first pod or service address, another sandbox owns it.
        taken = False
        for probe in (f"127.{a}.{b}.2", f"127.{a}.{b + 2}.10"):
            with socket.socket() as s:
                s.settimeout(0.05)
                taken |= s.connect_ex((probe, 9080)) == 0
        if not taken:
            return a, b
    return 127, 0


class AddressPool:
    """Hands out addresses from a list, reusing released ones last (so a fresh pod rarely gets a just-freed IP)."""

    def __init__(self, addresses: list[str]) -> None:
        self._free = list(addresses)
        self._used: set[str] = set()

    def take(self) -> str:
        if not self._free:
            raise RuntimeError("the sandbox ran out of pod addresses")
        ip = self._free.pop(0)
        self._used.add(ip)
        return ip

    def give_back(self, ip: str) -> None:
        if ip in self._used:
            self._used.discard(ip)
            self._free.append(ip)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a connection to a dead pod ends on a real cluster."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        _reset(writer)


@dataclass
class ServicePort:
    """One listening Service address and port, balancing over its ready endpoints."""

    host: str
    port: int
    backends: list[tuple[str, int]] = field(default_factory=list)
    server: asyncio.Server | None = None
    connections: int = 0
    active: int = 0
    ingress: bool = False
    """An ingress answers 503 "no healthy upstream" (as Envoy does) where a Service would refuse or reset."""
    sidecars: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Meshed pods: pod IP -> its sidecar's outbound listener (shared by every ServicePort of the network)."""
    pod: bool = False
    """A meshed pod's own address and app port: always to its inbound sidecar (its only backend is itself)."""
    listening: socket.socket | None = None
    """A pod port's socket, bound and listening, until :attr:`server` serves it."""

    async def start(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True,
                                                     backlog=256)

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 0.2)

    async def set_backends(self, backends: list[tuple[str, int]]) -> None:
        self.backends = list(backends)
        # No ready endpoint: close the listener so clients get "connection refused", as with kube-proxy.
        if self.backends:
            await self.start()
        else:
            await self.stop()

    async def _unavailable(self, writer: asyncio.StreamWriter) -> None:
        if not self.ingress:
            _reset(writer)
            return
        body = b"no healthy upstream"
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\nconnection: close\r\nserver: labkit-ingress\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()

    async def _to_sidecar(self, sidecar: tuple[str, int], peer: str, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """A meshed pod's connection: its own sidecar applies the mesh's rules per request (Istio's iptables
        redirect to Envoy's outbound port), told the original destination in a first line."""
        try:
            up_reader, up_writer = await asyncio.open_connection(*sidecar, local_addr=(peer, 0))
        except OSError:
            _reset(writer)
            return
        up_writer.write(f"LABKIT-ORIG {self.host} {self.port}\r\n".encode())
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.active >= MAX_PROXY_CONNECTIONS:
            _reset(writer)
            return
        self.active += 1
        try:
            await self._relay(reader, writer)
        finally:
            self.active -= 1

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.sidecars and not self.ingress:
            peer = writer.get_extra_info("peername")
            sidecar = self.sidecars.get(peer[0]) if peer else None
            if sidecar is not None:
                await self._to_sidecar(sidecar, peer[0], reader, writer)
                return
        if not self.backends:
            await self._unavailable(writer)
            return
        ip, port = random.choice(self.backends)
        try:
            if ip in self.sidecars or self.pod:
                # A meshed pod is reached through its sidecar's inbound listener (Istio's inbound redirect),
                # from the client's address so that the sidecar knows who called.
                peer = writer.get_extra_info("peername")
                up_reader, up_writer = await asyncio.open_connection(
                    ip, meshrules.INBOUND_PORT, local_addr=(peer[0], 0) if peer else None)
                up_writer.write(f"LABKIT-ORIG {ip} {port}\r\n".encode())
            else:
                up_reader, up_writer = await asyncio.open_connection(ip, port)
        except OSError:
            await self._unavailable(writer)
            return
        with contextlib.suppress(Exception):
            sock = up_writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()


class Network:
    """Address management, Service proxies, the DNS hosts file and the host ingress."""

    def __init__(self, state_dir: str, subnet: tuple[int, int] | None = None) -> None:
        a, b = subnet or pick_subnet()
        self.subnet = (a, b)
        self.pods = AddressPool([f"127.{a}.{b + i}.{n}" for i in (0, 1) for n in range(2, 255)])
        self.services = AddressPool([f"127.{a}.{b + 2}.{n}" for n in range(10, 255)])
        self.pod_network = f"127.{a}.{b}.0/22"
        """The block a pod may reach: its own pods (first two /24s) and Services (the third)."""
        self.hosts_file = os.path.join(state_dir, "network", "hosts")
        os.makedirs(os.path.dirname(self.hosts_file), exist_ok=True)
        self._dns: dict[tuple[str, str], str] = {}  # (namespace, service) -> cluster IP
        self._ports: dict[tuple[str, str], dict[int, ServicePort]] = {}
        self.ingress: ServicePort | None = None
        self.ingress_target: tuple[str, str, int] | None = None
        self.sidecars: dict[str, tuple[str, int]] = {}
        """Meshed pods whose sidecar is ready: pod IP -> the sidecar's outbound listener."""
        self.app_addresses = AddressPool([f"127.{a}.{b + 3}.{n}" for n in range(1, 255)])
        self.apps: dict[str, str] = {}
        """Meshed pods: pod IP -> the private address its app listens on (see :meth:`app_address`)."""
        self.pod_ports: dict[tuple[str, int], ServicePort] = {}
        """Meshed pods' own addresses and app ports, served by the network: (pod IP, port) -> its listener."""
        self.exposed: dict[tuple[str, str, int], ServicePort] = {}
        """Service ports served on the host's loopback (a NodePort): (namespace, name, port) -> its listener."""
        self.mesh_file = os.path.join(state_dir, "network", "mesh.json")
        self._write_hosts()

    # -- DNS
    def _write_hosts(self) -> None:
        entries: dict[str, list[str]] = {}
        for (ns, name), ip in self._dns.items():
            entries.setdefault(ip, []).extend(
                [f"{name}.{ns}.svc.{dns.CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"])
        dns.write_hosts(self.hosts_file, entries)

    def register_service(self, namespace: str, name: str, cluster_ip: str) -> None:
        self._dns[(namespace, name)] = cluster_ip
        self._write_hosts()

    async def unregister_service(self, namespace: str, name: str) -> None:
        ip = self._dns.pop((namespace, name), None)
        self._write_hosts()
        for sp in self._ports.pop((namespace, name), {}).values():
            await sp.stop()
        if ip:
            self.services.give_back(ip)

    def cluster_ip(self, namespace: str, name: str) -> str | None:
        return self._dns.get((namespace, name))

    # -- kube-proxy
    async def set_endpoints(self, namespace: str, name: str,
                            ports: dict[int, list[tuple[str, int]]]) -> None:
        """Point each Service port at its ready ``(podIP, targetPort)`` backends."""
        ip = self._dns.get((namespace, name))
        if ip is None:
            return
        current = self._ports.setdefault((namespace, name), {})
        for port in list(current):
            if port not in ports:
                await current.pop(port).stop()
        for port, backends in ports.items():
            sp = current.get(port) or current.setdefault(port, ServicePort(ip, port, sidecars=self.sidecars))
            try:
                await sp.set_backends(backends)
            except OSError as exc:
                log.warning("cannot listen on %s:%s for service %s/%s: %s", ip, port, namespace, name, exc)
        if self.ingress_target and self.ingress_target[:2] == (namespace, name) and self.ingress is not None:
            self.ingress.backends = list(ports.get(self.ingress_target[2], []))
        for (ns, svc, port), sp in self.exposed.items():
            if (ns, svc) == (namespace, name):
                sp.backends = list(ports.get(port, []))

    def set_sidecars(self, sidecars: dict[str, tuple[str, int]]) -> None:
        """Which pods are meshed now (the dict is shared with every Service port, so update it in place)."""
        self.sidecars.clear()
        self.sidecars.update(sidecars)

    # -- Istio's redirect of traffic to a meshed pod's address
    def app_address(self, pod_ip: str) -> str | None:
        """The private address the app of a meshed pod listens on (taken once per pod; None when all are taken,
        and then the pod's address is not redirected)."""
        if pod_ip not in self.apps:
            try:
                self.apps[pod_ip] = self.app_addresses.take()
            except RuntimeError:
                log.warning("no private app address left for meshed pod %s: its address is not redirected", pod_ip)
                return None
        return self.apps[pod_ip]

    def release_app_address(self, pod_ip: str) -> None:
        """The pod is gone: stop serving its address and give its private address back."""
        app = self.apps.pop(pod_ip, None)
        if app is not None:
            self.app_addresses.give_back(app)
        for key in [k for k in self.pod_ports if k[0] == pod_ip]:
            self._close_pod_port(key)

    def set_pod_ports(self, ports: dict[str, list[int]]) -> None:
        """Serve ``podIP:port`` for each meshed pod's app ports (pod IP -> ports), and no others.

        Each socket is bound and listening before this returns, so a client that sees the pod Ready can connect.
        Only pods given a private address (:meth:`app_address`) are served; their apps do not listen here.
        """
        wanted = {(ip, port) for ip, plist in ports.items() if ip in self.apps for port in plist}
        for key in [k for k in self.pod_ports if k not in wanted]:
            self._close_pod_port(key)
        for ip, port in wanted - set(self.pod_ports):
            sp = ServicePort(ip, port, [(ip, port)], sidecars=self.sidecars, pod=True)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((ip, port))
                sock.listen(256)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                log.warning("cannot serve meshed pod address %s:%s: %s", ip, port, exc)
                continue
            sp.listening = sock
            self.pod_ports[(ip, port)] = sp
            asyncio.get_running_loop().create_task(self._serve_pod_port(sp))

    async def _serve_pod_port(self, sp: ServicePort) -> None:
        sock, sp.listening = sp.listening, None
        if sock is None:  # closed meanwhile
            return
        sp.server = await asyncio.start_server(sp._handle, sock=sock, backlog=256)
        if self.pod_ports.get((sp.host, sp.port)) is not sp:
            sp.server.close()

    def _close_pod_port(self, key: tuple[str, int]) -> None:
        sp = self.pod_ports.pop(key)
        if sp.listening is not None:
            sp.listening.close()
            sp.listening = None
        if sp.server is not None:
            sp.server.close()
            sp.server = None

    def service_ports(self) -> dict[tuple[str, str], dict[int, list[tuple[str, int]]]]:
        """Every Service's ready backends per port, as kube-proxy has them."""
        return {key: {port: list(sp.backends) for port, sp in ports.items()} for key, ports in self._ports.items()}

    def backends(self, namespace: str, name: str, port: int) -> list[tuple[str, int]]:
        sp = self._ports.get((namespace, name), {}).get(port)
        return list(sp.backends) if sp else []

    async def start_ingress(self, namespace: str, service: str, port: int, host_port: int) -> int:
        """Serve ``service:port`` on ``127.0.0.1:host_port`` (0 picks a free port); returns the port."""
        self.ingress_target = (namespace, service, port)
        self.ingress = ServicePort("127.0.0.1", host_port, self.backends(namespace, service, port), ingress=True,
                                   sidecars=self.sidecars)
        self.ingress.server = await asyncio.start_server(self.ingress._handle, "127.0.0.1", host_port,
                                                         reuse_address=True, backlog=256)
        return int(self.ingress.server.sockets[0].getsockname()[1])

    async def expose(self, namespace: str, service: str, port: int, host_port: int) -> int:
        """Serve ``service:port`` on ``127.0.0.1:host_port`` too (a NodePort on the node's loopback address)."""
        sp = ServicePort("127.0.0.1", host_port, self.backends(namespace, service, port), ingress=True,
                         sidecars=self.sidecars)
        sp.server = await asyncio.start_server(sp._handle, "127.0.0.1", host_port, reuse_address=True, backlog=256)
        self.exposed[(namespace, service, port)] = sp
        return int(sp.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for ports in self._ports.values():
            for sp in ports.values():
                await sp.stop()
        self._ports.clear()
        if self.ingress is not None and self.ingress.server is not None:
            self.ingress.server.close()
        for sp in self.exposed.values():
            await sp.stop()
        self.exposed.clear()
        for key in list(self.pod_ports):
            self._close_pod_port(key)
