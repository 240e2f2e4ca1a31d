"""The sandbox process: API server, controllers, kubelet and network in one asyncio loop.

Started in the background by ``labkit sandbox up`` (or :class:`labkit.sandbox.Sandbox`); reports on an inherited
pipe once every pod is Ready, then serves until SIGTERM/SIGINT, when it stops every container it started.
Containers die with it even on SIGKILL (they hold ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ctypes
import gc
import json
import logging
import os
import signal
import ssl
import sys
import time
from importlib import resources as importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import state as st
from .images import zygote

# The API server and the cluster are imported in serve(), after main() has started the containers' zygote: its
# imports then overlap ours, and the first container does not wait for them.
if TYPE_CHECKING:
    from aiohttp import web

    from .apiserver import ApiServer
    from .cluster import Cluster

log = logging.getLogger("labkit.sandbox")
LESSON_MANIFESTS = ("bookinfo.yaml", "sleep.yaml")


def manifest_text(name: str) -> str:
    return (importlib_resources.files("labkit.sandbox") / "manifests" / name).read_text()


def manifest_objects(name: str) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(manifest_text(name)) if d]


def copy_namespaces(copies: int) -> list[str]:
    """The namespaces of ``--copies N``: the lesson's own ``default``, then ``bookinfo-2`` ... ``bookinfo-N``."""
    return ["default", *(f"bookinfo-{i}" for i in range(2, copies + 1))]


def _trace_memory(loop: asyncio.AbstractEventLoop, root: Path, cluster: Cluster) -> None:
    """A diagnosis switch (``LABKIT_TRACEMALLOC=1``): SIGUSR1 writes the top allocation sites to ``tracemalloc.txt``."""
    import tracemalloc

    tracemalloc.start(int(os.environ.get("LABKIT_TRACEMALLOC", "1")))

    def dump() -> None:
        import gc

        before = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename"))
        unreachable = gc.collect()
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        history = {res.plural: len(h.events) for res, h in cluster.store._history.items()}
        lines = [f"total {sum(s.size for s in stats) / 1e6:.1f} MB traced ({before / 1e6:.1f} MB before a collection"
                 f" that found {unreachable} unreachable objects); watch history {history}"]
        lines += [str(s) for s in stats[:40]]
        with open(root / "tracemalloc.txt", "a") as out:
            out.write("\n".join(lines) + "\n===\n")

    loop.add_signal_handler(signal.SIGUSR1, dump)


def pods_per_copy(replicas: int) -> int:
    """Pods of one copy of the lesson: four Bookinfo deployments and the tester."""
    return 4 * replicas + 1


async def apply_manifests(api: str, ca: ssl.SSLContext, token: str, replicas: int, copies: int = 1) -> None:
    """Create the lesson's objects through the API server itself, as ``kubectl apply`` would.

    With ``copies`` above 1, each extra copy gets its own namespace (see :func:`copy_namespaces`) with its own
    Bookinfo and tester, applied concurrently.
    """
    from aiohttp import ClientSession, TCPConnector

    from .resources import for_api_version

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    parsed = {name: manifest_objects(name) for name in LESSON_MANIFESTS}  # once: YAML parsing is slow
    async with ClientSession(connector=TCPConnector(ssl=ca, limit=32), headers=headers) as http:

        async def post(path: str, obj: dict[str, Any]) -> None:
            async with http.post(f"{api}{path}?fieldManager=labkit-boot", json=obj) as r:
                if r.status not in (200, 201, 409):
                    raise RuntimeError(f"applying {obj['kind']} {obj['metadata']['name']} failed: "
                                       f"{r.status} {await r.text()}")

        async def apply_to(namespace: str) -> None:
            if namespace != "default":
                await post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": namespace}})
            for name in LESSON_MANIFESTS:
                for obj in copy.deepcopy(parsed[name]):
                    res = for_api_version(obj["apiVersion"], obj["kind"])
                    if res is None:
                        raise RuntimeError(f"{name}: kind {obj['kind']} is not served by the sandbox")
                    # Annotate like `kubectl apply` does, so a later `kubectl apply -f` is a clean update.
                    last = json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n"
                    obj["metadata"].setdefault("annotations", {})[
                        "kubectl.kubernetes.io/last-applied-configuration"] = last
                    if obj["kind"] == "Deployment" and name == "bookinfo.yaml":
                        # The lesson's previous page scales everything to 3 replicas.
                        obj["spec"]["replicas"] = replicas
                    prefix = "/api/v1" if not res.group else f"/apis/{res.group_version}"
                    ns = f"namespaces/{namespace}/" if res.namespaced else ""
                    await post(f"{prefix}/{ns}{res.plural}", obj)

        await asyncio.gather(*(apply_to(ns) for ns in copy_namespaces(copies)))


async def wait_all_ready(cluster: Cluster, expected: int, deadline: float, fd: int | None) -> None:
    last = (-1, -1)
    while time.monotonic() < deadline:
        ready, total = cluster.pods_ready()
        if (ready, total) != last:
            last = (ready, total)
            _report(fd, {"progress": {"ready": ready, "total": max(total, expected)}}, final=False)
        if total >= expected and ready == total:
            return
        await asyncio.sleep(0.02)
    ready, total = cluster.pods_ready()
    raise TimeoutError(f"only {ready} of {total} pods became Ready in time")


async def serve(args: argparse.Namespace, paths: st.StatePaths, lock: st.Lock, pki: st.CertificateJob) -> int:
    """Run the sandbox in ``paths`` (whose lock is held) until a signal; ``pki`` is making its certificate."""
    from aiohttp import web

    from . import limits
    from .apiserver import ApiServer, make_ssl_context
    from .cluster import Cluster

    report_fd = args.ready_fd
    token = st.new_token()
    try:
        ca_pem = pki.result()
    except (RuntimeError, OSError) as exc:
        _report(report_fd, {"ok": False, "error": str(exc), "log": str(paths.log)})
        lock.release()
        return 1
    cluster = Cluster(str(paths.root), time_scale=args.time_scale, ca_pem=ca_pem.decode())
    cluster.start()
    server = ApiServer(cluster.store, cluster.registry, cluster.kubelet, cluster.network, token)
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=limits.IDLE_TIMEOUT)
    await runner.setup()
    site = limits.GuardedSite(runner, "127.0.0.1", args.api_port, guard=server.guard, ssl_context=make_ssl_context(
        str(paths.cert), str(paths.key)), backlog=256, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1]
    api = f"https://127.0.0.1:{port}"
    server.server_address = f"127.0.0.1:{port}"
    cluster.api_server_listening("127.0.0.1", port)
    st.write_private(paths.kubeconfig, st.kubeconfig_text(api, ca_pem, token).encode())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    if os.environ.get("LABKIT_TRACEMALLOC"):
        _trace_memory(loop, paths.root, cluster)
    started = time.time()
    try:
        client_ssl = ssl.create_default_context(cadata=ca_pem.decode())
        await apply_manifests(api, client_ssl, token, args.replicas, args.copies)
        ingress_port = await cluster.network.start_ingress("default", "productpage", 9080, args.ingress_port)
        expected = args.copies * pods_per_copy(args.replicas)
        await wait_all_ready(cluster, expected, time.monotonic() + args.boot_timeout, report_fd)
    except Exception as exc:
        log.exception("boot failed")
        _report(report_fd, {"ok": False, "error": f"{type(exc).__name__}: {exc}", "log": str(paths.log)})
        await shutdown(cluster, server, runner)
        lock.release()
        return 1
    info = {
        "pid": os.getpid(),
        "api": api,
        "kubeconfig": str(paths.kubeconfig),
        "productpage_url": f"http://127.0.0.1:{ingress_port}/productpage",
        "ingress": f"http://127.0.0.1:{ingress_port}",
        "dir": str(paths.root),
        "replicas": args.replicas,
        "copies": args.copies,
        "namespaces": copy_namespaces(args.copies),
        "time_scale": args.time_scale,
        "started": started,
        "boot_seconds": round(time.time() - started, 3),
        "pod_network": "127.{}.{}.0/23".format(*cluster.network.subnet),
    }
    if cluster.mesh.gateway_port:  # the mesh was wanted at boot (LABKIT_SANDBOX_MESH=1): Istio's ingress gateway
        info["gateway_url"] = f"http://127.0.0.1:{cluster.mesh.gateway_port}"
    st.write_state(paths, info)
    log.info("sandbox ready: %s", json.dumps(info))
    _report(report_fd, {"ok": True, **info})
    asyncio.get_running_loop().call_later(0.5, release_boot_memory)
    await stop.wait()
    log.info("stopping")
    await shutdown(cluster, server, runner)
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()
    lock.release()
    return 0


async def shutdown(cluster: Cluster, server: ApiServer, runner: web.AppRunner) -> None:
    await cluster.shutdown()
    await server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(runner.cleanup(), 3)


def _report(fd: int | None, payload: dict[str, Any], final: bool = True) -> None:
    """A JSON line to whoever started us: progress while booting, then the outcome (and the pipe closes)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(payload) + "\n").encode())
        if final:
            os.close(fd)


def release_boot_memory() -> None:
    """Give the heap the boot left behind (parsed manifests, first requests) back to the system.

    glibc keeps freed memory for reuse; ``malloc_trim`` returns the free pages, which for a sandbox that then
    idles is most of its start-up garbage. Elsewhere (musl, macOS) this does nothing.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labkit-sandbox-daemon")
    p.add_argument("--dir", required=True)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--api-port", type=int, default=0)
    p.add_argument("--ingress-port", type=int, default=0)
    p.add_argument("--ready-fd", type=int, default=None)
    p.add_argument("--parent-pid", type=int, default=None)
    p.add_argument("--boot-timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    # The sandbox verifies no public server (its clients trust its own CA only), yet aiohttp builds two default
    # TLS contexts when imported, each loading the system's whole CA store: about 35 ms of the boot and 1 MB of
    # memory. An empty store instead (containers get their own environment; the certificate child needs none).
    os.environ["SSL_CERT_FILE"] = os.environ["SSL_CERT_DIR"] = os.devnull
    if args.parent_pid:
        st.die_with_parent(args.parent_pid)
    paths = st.StatePaths(Path(args.dir))
    st.make_private_dirs(paths.root)
    lock = st.Lock(paths.lock)
    if not lock.acquire():
        _report(args.ready_fd, {"ok": False, "error": f"a sandbox is already running in {paths.root}"})
        return 1
    # Stale files of a crashed run are safe to replace now that the lock is ours.
    for stale in (paths.state, paths.kubeconfig):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    # Both before the heavy imports of serve(), which they overlap: the certificate (made in a child, see
    # CertificateJob) and the zygote (the kubelet adopts it).
    pki = st.CertificateJob(paths.cert, paths.key)
    zygote.prestart(str(paths.root))
    from . import limits  # (it imports aiohttp: only once the zygote has started)

    handler = logging.FileHandler(Path(args.dir) / "sandbox.log")
    handler.addFilter(limits.RateLimitFilter())  # a flood of bad requests must not fill the disk
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[handler])
    limits.raise_fd_limit()
    if sys.version_info < (3, 12):
        with contextlib.suppress(Exception):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return asyncio.run(serve(args, paths, lock, pki))


if __name__ == "__main__":
    sys.exit(main())
