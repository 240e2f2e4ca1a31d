"""Port-forward to sandbox pods with the real kubectl (SPDY/3.1) and the official Python client (v4 channels).

Test harness (until the API server routes ``pods/NAME/portforward`` to :func:`labkit.sandbox.portforward.handle`):
a small aiohttp app on ``http://127.0.0.1:PORT`` (no auth: kubectl sends no credentials over http), run on its own
event loop in a thread, that

* answers ``GET``/``POST /api/v1/namespaces/NS/pods/NAME/portforward`` with ``portforward.handle(request, ip,
  ports)``, where ``ip`` (``status.podIP``) and ``ports`` (the declared container ports) are read from the real
  sandbox with the official Python client, exactly what the API server will pass;
* proxies every other request (discovery, GET pod, GET service, list pods) to the real sandbox API with the
  sandbox kubeconfig's token and CA.

The clients get a kubeconfig pointing at the harness. Nothing in the sandbox is patched. To test the real endpoint
instead, point :class:`Forwarding` at ``sandbox.kubeconfig`` and drop the harness.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import queue
import re
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web
from conftest import kubectl_binary, wait_all_ready
from helpers import eventually, free_port
from kubernetes import client, config
from kubernetes.stream import portforward

from labkit.sandbox import Sandbox
from labkit.sandbox import portforward as pf_module

PORTFORWARD_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/portforward")


# --- harness --------------------------------------------------------------------------------------------------------
class Harness:
    """The tiny API front described in the module docstring. ``declared_only=False`` passes ``None`` (any port)."""

    def __init__(self, sandbox: Sandbox, core: client.CoreV1Api, root: Path) -> None:
        self.core = core
        kc = yaml.safe_load(sandbox.kubeconfig.read_text())
        self.upstream = kc["clusters"][0]["cluster"]["server"]
        self.token = kc["users"][0]["user"]["token"]
        ca = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
        self.ssl = ssl.create_default_context(cadata=ca)
        self.declared_only = True
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="portforward-harness", daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self.kubeconfig = root / "harness-kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "harness",
            "clusters": [{"name": "harness", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "harness", "user": {}}],
            "contexts": [{"name": "harness", "context": {"cluster": "harness", "user": "harness",
                                                         "namespace": "default"}}]}))

    async def _start(self) -> int:
        self.session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._route)
        self.runner = web.AppRunner(app, shutdown_timeout=2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    async def _route(self, request: web.Request) -> web.StreamResponse:
        match = PORTFORWARD_PATH.fullmatch(request.path)
        if match:
            ns, name = match.groups()
            pod = await asyncio.get_running_loop().run_in_executor(None, self.core.read_namespaced_pod, name, ns)
            ports = {p.container_port for c in pod.spec.containers for p in (c.ports or [])}
            return await pf_module.handle(request, pod.status.pod_ip, ports if self.declared_only else None)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        async with self.session.request(request.method, self.upstream + request.path_qs, data=await request.read(),
                                        headers={**headers, "Authorization": f"Bearer {self.token}"},
                                        ssl=self.ssl) as up:
            return web.Response(status=up.status, body=await up.read(),
                                headers={"Content-Type": up.headers.get("Content-Type", "application/json")})

    async def _stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def harness(sandbox: Sandbox, core: client.CoreV1Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(sandbox, core, tmp_path_factory.mktemp("harness"))
    try:
        yield h
    finally:
        h.close()


@pytest.fixture()
def any_port(harness: Harness) -> Iterator[Harness]:
    """The harness passing ``allowed_ports=None``, so that an undeclared port is really dialled."""
    harness.declared_only = False
    try:
        yield harness
    finally:
        harness.declared_only = True


@pytest.fixture(scope="module")
def ratings_pod(sandbox: Sandbox) -> str:
    wait_all_ready(sandbox)
    return next(p["name"] for p in sandbox.pods() if p["name"].startswith("ratings-v1-"))


# --- helpers --------------------------------------------------------------------------------------------------------
class Forwarding:
    """``kubectl port-forward TARGET LOCAL:REMOTE`` as a subprocess; output lines are collected by a thread."""

    def __init__(self, kubeconfig: Path, cache: Path, target: str, remote: int, env: dict[str, str] | None = None
                 ) -> None:
        self.local = free_port()
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [kubectl_binary(), "port-forward", target, f"{self.local}:{remote}"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(cache), **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in "".join(self.output):
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if not line:
                raise AssertionError(f"kubectl never printed {text!r}; exit {self.proc.poll()}, output:\n"
                                     + "".join(self.output))
            self.output.append(line)

    def text(self) -> str:
        """Everything printed so far (all of it once kubectl has exited)."""
        if self.proc.poll() is not None:
            self.reader.join(10)
        with contextlib.suppress(queue.Empty):
            while True:
                self.output.append(self.lines.get_nowait())
        return "".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@contextlib.contextmanager
def forwarding(harness: Harness, cache: Path, target: str, remote: int, env: dict[str, str] | None = None
               ) -> Iterator[Forwarding]:
    fw = Forwarding(harness.kubeconfig, cache, target, remote, env)
    try:
        fw.wait_for(f"Forwarding from 127.0.0.1:{fw.local} -> {remote}")
        yield fw
    finally:
        fw.stop()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.read()


def python_client(harness: Harness) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(harness.kubeconfig)))


# --- protocol constants ---------------------------------------------------------------------------------------------
def test_spdy_dictionary_is_the_spdy3_one() -> None:
    d = pf_module.SPDY_DICTIONARY
    assert len(d) == 1423
    assert zlib.adler32(d) == 0xE3C6A7C2
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head") and d.endswith(b",*,enq=0.")


# --- the Python client ----------------------------------------------------------------------------------------------
def test_python_client_http_get_through_the_tunnel(harness: Harness, ratings_pod: str) -> None:
    api = python_client(harness)
    try:
        pf = portforward(api.connect_get_namespaced_pod_portforward, ratings_pod, "default", ports="9080")
        conn = http.client.HTTPConnection("ratings", 9080, timeout=10)
        conn.sock = pf.socket(9080)
        conn.request("GET", "/ratings/0")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
        conn.close()
        pf.close()
        assert pf.error(9080) is None
    finally:
        api.api_client.close()


def test_python_client_two_ports_one_refused(any_port: Harness, ratings_pod: str, sandbox: Sandbox) -> None:
    api = python_client(any_port)
    try:
        pf = portforward(api.connect_get_namespaced_pod_portforward, ratings_pod, "default", ports="9999,9080")
        sock = pf.socket(9080)
        sock.settimeout(10)
        sock.sendall(b"GET /ratings/3 HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):  # EOF: the pod closed and the server closed the WebSocket
            raw += chunk
        assert raw.startswith(b"HTTP/1.1 200") and b'"id":3' in raw
        eventually(lambda: pf.error(9999), timeout=10, what="the error of port 9999")
        ip = next(p["ip"] for p in sandbox.pods() if p["name"] == ratings_pod)
        assert pf.error(9999) == (f"error forwarding port 9999 to pod {ratings_pod}: dial tcp {ip}:9999: connect: "
                                  "connection refused")
        pf.close()
        pf.websocket.shutdown()  # the client leaves its socket open when the server ends the WebSocket
    finally:
        api.api_client.close()


def test_python_client_undeclared_port(harness: Harness, ratings_pod: str) -> None:
    api = python_client(harness)
    try:
        pf = portforward(api.connect_get_namespaced_pod_portforward, ratings_pod, "default", ports="22")
        eventually(lambda: pf.error(22), timeout=10, what="the error of port 22")
        assert pf.error(22) == (f"error forwarding port 22 to pod {ratings_pod}: port 22 is not a container port of "
                                "the pod (declared: 9080)")
        pf.close()
    finally:
        api.api_client.close()


# --- kubectl --------------------------------------------------------------------------------------------------------
@pytest.fixture()
def cache(tmp_path: Path) -> Path:
    return tmp_path / "kubecache"


def test_kubectl_port_forward_pod_sequential_requests(harness: Harness, ratings_pod: str, cache: Path) -> None:
    with forwarding(harness, cache, f"pod/{ratings_pod}", 9080) as fw:
        for i in range(5):
            status, body = fetch(fw.local, f"/ratings/{i}")
            assert status == 200
            assert json.loads(body) == {"id": i, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
        fw.wait_for(f"Handling connection for {fw.local}")
        assert fw.proc.poll() is None
    # Every request went through kubectl (and not through something else holding the port).
    assert fw.text().count(f"Handling connection for {fw.local}") == 5
    assert "error" not in fw.text().lower()


def test_kubectl_port_forward_service_productpage(harness: Harness, cache: Path, sandbox: Sandbox) -> None:
    wait_all_ready(sandbox)
    with forwarding(harness, cache, "svc/productpage", 9080) as fw:
        for _ in range(2):
            status, body = fetch(fw.local, "/productpage")
            assert status == 200
            assert "<title>Simple Bookstore App</title>" in body.decode()
        assert fw.proc.poll() is None


def test_kubectl_port_forward_concurrent_connections(harness: Harness, ratings_pod: str, cache: Path) -> None:
    with forwarding(harness, cache, f"pod/{ratings_pod}", 9080) as fw:
        results: list[Any] = [None] * 8

        def get(i: int) -> None:
            results[i] = fetch(fw.local, f"/ratings/{i}")

        threads = [threading.Thread(target=get, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [json.loads(body)["id"] for _, body in results] == list(range(8))


def test_kubectl_port_forward_raw_spdy_fallback(harness: Harness, ratings_pod: str, cache: Path) -> None:
    """kubectl 1.30 and older (or any kubectl whose WebSocket upgrade fails) use POST + Upgrade: SPDY/3.1."""
    with forwarding(harness, cache, f"pod/{ratings_pod}", 9080, env={"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}
                    ) as fw:
        for i in range(3):
            assert json.loads(fetch(fw.local, f"/ratings/{i}")[1])["id"] == i


def expect_forward_error(fw: Forwarding, remote: int) -> str:
    """A connection through kubectl fails, kubectl prints the pod-side error and exits 1 (as with a real cluster)."""
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        fetch(fw.local, "/")
    fw.proc.wait(20)
    out = fw.text()
    assert fw.proc.returncode == 1, out
    # kubectl 1.32 prints "an error occurred forwarding L -> R: <msg>", 1.37 a structured log line.
    structured = rf'"An error occurred forwarding" err=".*" localPort={fw.local} remotePort={remote}'
    assert f"an error occurred forwarding {fw.local} -> {remote}" in out or re.search(structured, out), out
    assert "lost connection to pod" in out
    return out


def test_kubectl_reports_connection_refused(any_port: Harness, ratings_pod: str, cache: Path) -> None:
    with forwarding(any_port, cache, f"pod/{ratings_pod}", 9999) as fw:
        out = expect_forward_error(fw, 9999)
    assert f"error forwarding port 9999 to pod {ratings_pod}: dial tcp" in out
    assert "connect: connection refused" in out


def test_kubectl_reports_undeclared_port(harness: Harness, ratings_pod: str, cache: Path) -> None:
    with forwarding(harness, cache, f"pod/{ratings_pod}", 9999) as fw:
        out = expect_forward_error(fw, 9999)
    assert f"error forwarding port 9999 to pod {ratings_pod}: port 9999 is not a container port" in out


# --- SPDY framing details a short kubectl run does not reach ---------------------------------------------------
def test_spdy_session_frames_split_byte_by_byte_and_ping(sandbox: Sandbox, ratings_pod: str) -> None:
    """Frames cut at every byte still parse; PING comes back identical; a forwarded GET works; RST ends it."""
    ip = next(p["ip"] for p in sandbox.pods() if p["name"] == ratings_pod)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, pf_module.SPDY_DICTIONARY)
    inflate = zlib.decompressobj(zdict=pf_module.SPDY_DICTIONARY)

    def syn_stream(sid: int, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode() for k, v in headers.items())
        block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
        return struct.pack(">HHI", 0x8003, 1, 10 + len(block)) + struct.pack(">IIH", sid, 0, 0) + block

    def data(sid: int, payload: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", sid, (1 << 24 if fin else 0) | len(payload)) + payload

    async def run() -> list[tuple[str, int, int, bytes]]:
        out = bytearray()
        got = asyncio.Event()

        async def write(b: bytes) -> None:
            out.extend(b)
            got.set()

        session = pf_module.SpdySession(pf_module.Target(ip, {9080}, ratings_pod), write)
        ping = struct.pack(">HHII", 0x8003, 6, 4, 1)
        request = b"GET /ratings/5 HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n"
        stream = (syn_stream(1, {"streamtype": "error", "port": "9080", "requestid": "0"}) + data(1, b"", fin=True)
                  + syn_stream(3, {"streamtype": "data", "port": "9080", "requestid": "0"}) + ping
                  + data(3, request, fin=True))
        for i in range(len(stream)):
            assert await session.feed(stream[i:i + 1])
        frames: list[tuple[str, int, int, bytes]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(f[:2] == ("data", 1) and f[2] & 1 for f in frames):
            got.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 0.5)
            while len(out) >= 8 and len(out) >= 8 + int.from_bytes(out[5:8], "big"):
                n = 8 + int.from_bytes(out[5:8], "big")
                frame, out[:n] = bytes(out[:n]), b""
                if frame[0] & 0x80:
                    kind = {2: "syn_reply", 6: "ping"}[int.from_bytes(frame[2:4], "big")]
                    sid = int.from_bytes(frame[8:12], "big")
                    if kind == "syn_reply":
                        assert inflate.decompress(frame[12:]) == b"\x00\x00\x00\x00"  # empty header block
                    frames.append((kind, sid, frame[4], frame))
                else:
                    frames.append(("data", int.from_bytes(frame[:4], "big"), frame[4], frame[8:]))
        assert await session.feed(struct.pack(">HHIII", 0x8003, 3, 8, 3, 5))  # RST_STREAM CANCEL on the data stream
        await session.close()
        return frames

    frames = asyncio.run(run())
    assert [f[:2] for f in frames[:3]] == [("syn_reply", 1), ("syn_reply", 3), ("ping", 1)]
    assert frames[2][3] == struct.pack(">HHII", 0x8003, 6, 4, 1)
    body = b"".join(f[3] for f in frames if f[:2] == ("data", 3))
    assert body.startswith(b"HTTP/1.1 200") and b'"id":5' in body
    # The pod closed: FIN on the data stream, then an empty FIN on the error stream (no error).
    fins = [(f[1], f[3]) for f in frames if f[0] == "data" and f[2] & 1]
    assert fins == [(3, b""), (1, b"")]


def test_plain_get_is_refused(harness: Harness, ratings_pod: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{harness.port}/api/v1/namespaces/default/pods/{ratings_pod}"
                                 "/portforward?ports=9080")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    assert json.loads(err.value.read())["message"] == "Upgrade request required"
