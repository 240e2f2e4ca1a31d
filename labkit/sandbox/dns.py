"""Cluster DNS for the sandbox: service names to cluster addresses.

The API server keeps a hosts file (``<state>/network/hosts``) with one line per Service,
``<clusterIP> <name>.<ns>.svc.cluster.local <name>.<ns>.svc <name>.<ns>``, rewritten atomically whenever Services
change. Containers (child processes) and the exec toolbox resolve through :class:`Resolver`, which applies the pod's
search path the way ``/etc/resolv.conf`` does in a real pod (``<ns>.svc.cluster.local svc.cluster.local
cluster.local``), so ``ratings``, ``ratings.default`` and ``ratings.default.svc.cluster.local`` all work.

Only the standard library is used here: this module is imported by every container process.
"""

from __future__ import annotations

import ipaddress
import os

CLUSTER_DOMAIN = "cluster.local"


def search_domains(namespace: str) -> list[str]:
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]


def resolv_conf(namespace: str) -> str:
    """The text of the pod's ``/etc/resolv.conf``."""
    return f"search {' '.join(search_domains(namespace))}\nnameserver 127.0.0.53\noptions ndots:5\n"


def render_hosts(entries: dict[str, list[str]]) -> str:
    """Hosts-file text from ``{ip: [names...]}``."""
    lines = ["# labkit sandbox: cluster DNS (Services)"]
    lines += [f"{ip} {' '.join(names)}" for ip, names in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def write_hosts(path: str, entries: dict[str, list[str]]) -> None:
    """Atomically replace the hosts file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(render_hosts(entries))
    os.replace(tmp, path)


def reachable(address: str, pod_network: str | None) -> bool:
    """Whether a pod may connect to ``address``: only inside the sandbox's own pod and service block.

    Everything else is refused, as a cluster network routes it nowhere: the host's loopback services in all their
    spellings (``127.0.0.1`` is not the pod's own address here, ``0.0.0.0``, ``::``, ``::ffff:127.0.0.1``), other
    sandboxes' blocks and anything outside. ``pod_network`` None means no boundary (an image run by hand).

        >>> reachable("127.70.8.5", "127.70.8.0/22"), reachable("0.0.0.0", "127.70.8.0/22")
        (True, False)
        >>> reachable("::ffff:127.70.8.5", "127.70.8.0/22"), reachable("127.71.0.2", "127.70.8.0/22")
        (True, False)
    """
    if pod_network is None:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
        network = ipaddress.ip_network(pod_network, strict=False)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version == network.version and ip in network and ip != network.network_address


class Resolver:
    """Resolves names the way a pod in ``namespace`` would, from the sandbox hosts file.

    ``pod_network`` (``127.A.B.0/22``) is the sandbox's block of pod and service addresses: :meth:`reachable`
    says whether a resolved address may be dialled from a pod.
    """

    def __init__(self, hosts_file: str | None, namespace: str = "default", pod_network: str | None = None) -> None:
        self.hosts_file = hosts_file
        self.namespace = namespace
        self.pod_network = pod_network
        self._stamp: tuple[int, int] | None = None
        self._table: dict[str, str] = {}

    @classmethod
    def from_env(cls) -> Resolver:
        """The resolver of the current container (``LABKIT_HOSTS_FILE``, ``LABKIT_NAMESPACE``,
        ``LABKIT_POD_NETWORK``)."""
        return cls(os.environ.get("LABKIT_HOSTS_FILE"), os.environ.get("LABKIT_NAMESPACE", "default"),
                   os.environ.get("LABKIT_POD_NETWORK") or None)

    def reachable(self, address: str) -> bool:
        """Whether a pod may connect to ``address`` (see :func:`reachable`)."""
        return reachable(address, self.pod_network)

    def _load(self) -> dict[str, str]:
        if not self.hosts_file:
            return {}
        try:
            st = os.stat(self.hosts_file)
        except OSError:
            return {}
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            table: dict[str, str] = {}
            try:
                with open(self.hosts_file, encoding="utf-8") as fh:
                    for line in fh:
                        parts = line.split("#", 1)[0].split()
                        for name in parts[1:]:
                            table[name.lower()] = parts[0]
            except OSError:
                return self._table
            self._table, self._stamp = table, stamp
        return self._table

    def resolve(self, host: str) -> str | None:
        """The IPv4 address for ``host``, or None when the name does not exist (curl's exit code 6)."""
        host = host.strip().rstrip(".").lower()
        if not host:
            return None
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            pass
        if host == "localhost":
            return "127.0.0.1"
        table = self._load()
        if host in table:
            return table[host]
        for domain in search_domains(self.namespace):
            hit = table.get(f"{host}.{domain}")
            if hit:
                return hit
        return None
