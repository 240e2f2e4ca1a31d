"""``istio-proxy``: a small HTTP/1.1 proxy standing in for Envoy, as a pod's sidecar or as the ingress gateway.

As a **sidecar** (``pilot-agent proxy sidecar``) it has two listeners on its pod's address:

* **outbound**, ``podIP:15001``: the sandbox's network hands it every connection the pod's app opens to a
  Service address, after one line naming the original destination (``LABKIT-ORIG <cluster IP> <port>\\r\\n``).
  For each request it asks :func:`meshrules.route` what the caller's sidecar does (VirtualService match, fault
  delay/abort, weighted subset, timeout, retries) and forwards it to one endpoint;
* **inbound**, ``podIP:15006``: traffic to its own pod (from another sidecar, the network or a gateway) arrives
  here, after a line naming the pod's port (``LABKIT-ORIG <pod IP> <port> [passthrough]``), and is passed to the
  app, from the caller's address. The app listens on a private address (``LABKIT_APP_IP``) for its declared ports
  (``LABKIT_APP_PORTS``), and the sandbox's network serves the pod's own address, so ``curl POD_IP:9080`` comes
  here too, as Istio's iptables redirect sends it to Envoy's port 15006.

As the **ingress gateway** (``pilot-agent proxy router``) it listens on ``podIP:8080`` and routes each request by
the Gateways that select its pod and the VirtualServices bound to them (404 ``NR`` when none matches).

Every request writes one access-log line in Istio's default format to stdout (``kubectl logs POD -c istio-proxy``)
and counts in ``istio_requests_total`` / ``istio_request_duration_milliseconds`` (``reporter="source"`` outbound and
at the gateway, ``reporter="destination"`` inbound), served on ``podIP:15020`` at ``/stats/prometheus``. Upstream
connections are kept open and reused (Envoy's connection pools), so a request through two sidecars costs two
parses, not four connections. The mesh configuration is ``mesh.json`` beside the cluster hosts file, reread when
it changes (the sandbox's stand-in for xDS); lookups against one configuration are cached in it.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import select
import socket
import socketserver
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer

from labkit.sandbox import meshrules
from labkit.sandbox.images import runtime

OUTBOUND_PORT = 15001
INBOUND_PORT = meshrules.INBOUND_PORT
STATS_PORT = 15020
HEALTH_PORT = 15021
ROUTER_PORT = 8080
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                        "trailer", "content-length", "date", "server"})
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
           1800000, 3600000)
POOL_IDLE = 2.0
"""Seconds an idle upstream connection is kept; below the apps' 5 s keep-alive, so a kept one is still open."""
INBOUND_PASSTHROUGH = "InboundPassthroughClusterIpv4"
"""Istio's inbound cluster for a port no Service declares (its ``0.0.0.0/0`` filter chain on 15006)."""
NO_RETRY = meshrules.Retry(0, None, frozenset(), frozenset())
INBOUND_RETRY = meshrules.Retry(1, None, frozenset({"reset-before-request"}), frozenset())
"""The inbound route: no timeout, one retry of a connection reset before the request was sent."""

QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

_log_lock = threading.Lock()
_rng = random.Random()


class _Config:
    """The mesh configuration, reloaded when the sandbox rewrites its file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mtime = -1.0
        self.value = meshrules.MeshConfig()
        self.lock = threading.Lock()

    def get(self) -> meshrules.MeshConfig:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return self.value
        if mtime != self.mtime:
            with self.lock:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        self.value = meshrules.MeshConfig.from_json(json.load(f))
                    self.mtime = mtime
                except (OSError, ValueError):
                    pass  # being rewritten: keep the last good one
        return self.value


def _config_path() -> str:
    hosts = os.environ.get("LABKIT_HOSTS_FILE", "")
    return os.path.join(os.path.dirname(hosts), "mesh.json") if hosts else "mesh.json"


CONFIG = _Config(_config_path())


def workload_of(pod_name: str) -> str:
    """A Deployment pod's workload name: ``reviews-v2-5b6f8d9c7-abcde`` -> ``reviews-v2``."""
    parts = pod_name.split("-")
    return "-".join(parts[:-2]) if len(parts) > 2 else pod_name


def own_workload() -> str:
    return workload_of(os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "unknown"))


class Metrics:
    """Istio's standard metrics, as this proxy reports them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = {}
        self.durations: dict[tuple[tuple[str, str], ...], list[float]] = {}

    def record(self, labels: dict[str, str], millis: float) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.durations.setdefault(key, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if millis <= bound:
                    hist[i] += 1
            hist[-2] += 1
            hist[-1] += millis

    def exposition(self) -> str:
        def fmt(key: tuple[tuple[str, str], ...], extra: str = "") -> str:
            inner = ",".join(f'{k}="{v}"' for k, v in key)
            return "{" + inner + (("," + extra) if extra and inner else extra) + "}"

        lines = ["# TYPE istio_requests_total counter"]
        with self.lock:
            lines += [f"istio_requests_total{fmt(k)} {v}" for k, v in self.requests.items()]
            lines.append("# TYPE istio_request_duration_milliseconds histogram")
            for k, hist in self.durations.items():
                for i, bound in enumerate(BUCKETS):
                    le = 'le="' + str(bound) + '"'
                    lines.append(f"istio_request_duration_milliseconds_bucket{fmt(k, le)} {int(hist[i])}")
                inf = 'le="+Inf"'
                lines.append(f"istio_request_duration_milliseconds_bucket{fmt(k, inf)} {int(hist[-2])}")
                lines.append(f"istio_request_duration_milliseconds_sum{fmt(k)} {hist[-1]:.3f}")
                lines.append(f"istio_request_duration_milliseconds_count{fmt(k)} {int(hist[-2])}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()


# --- upstream connections -------------------------------------------------------------------------


class _Upstream(http.client.HTTPConnection):
    """A connection to an app, or to another pod's inbound listener (then it first names the pod's port)."""

    def __init__(self, address: tuple[str, int], preamble: bytes, source: tuple[str, int] | None) -> None:
        super().__init__(address[0], address[1], timeout=None, source_address=source)
        self.source = source[0] if source else ""
        self.preamble = preamble
        self.idle_since = 0.0

    def connect(self) -> None:
        super().connect()
        assert self.sock is not None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.preamble:
            self.sock.sendall(self.preamble)


class _Pool:
    """Idle keep-alive connections per upstream (Envoy's per-cluster connection pool)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: dict[tuple[str, int, bytes, str], list[_Upstream]] = {}

    def take(self, address: tuple[str, int], preamble: bytes, source: tuple[str, int] | None,
             fresh: bool = False) -> tuple[_Upstream, bool]:
        """A connection to ``address`` (a new one if ``fresh``), and whether it was reused (a reused one may have
        been closed by the far end since)."""
        key = (address[0], address[1], preamble, source[0] if source else "")
        now = time.monotonic()
        with self.lock:
            conns = None if fresh else self.idle.get(key)
            while conns:
                conn = conns.pop()
                if now - conn.idle_since < POOL_IDLE:
                    return conn, True
                conn.close()
        return _Upstream(address, preamble, source), False

    def give(self, conn: _Upstream) -> None:
        conn.idle_since = time.monotonic()
        key = (conn.host, conn.port, conn.preamble, conn.source)
        with self.lock:
            conns = self.idle.setdefault(key, [])
            if len(conns) < 32:
                conns.append(conn)
                return
        conn.close()


POOL = _Pool()


class _ClientGone(Exception):
    """The caller closed its connection before the upstream answered."""


class _Result:
    """The outcome of forwarding one request."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.headers: list[tuple[str, str]] = []
        self.flags: list[str] = []
        self.details = "via_upstream"
        self.upstream = "-"
        self.upstream_local = "-"
        self.service_time: int | None = None


def _retryable(on: frozenset[str], codes: frozenset[int], status: int) -> bool:
    return (("5xx" in on and status >= 500) or ("gateway-error" in on and status in (502, 503, 504))
            or ("retriable-4xx" in on and status == 409)
            or ("retriable-status-codes" in on and status in codes))


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}Z"


class _Proxy(runtime.Handler):
    """What the three listeners share: reading the first line, forwarding with retries, logging, counting."""

    server_header = "envoy"
    timeout = 60.0
    wbufsize = 1 << 16  # a response leaves in one write (with Nagle off: no delayed-ACK stalls)
    original: tuple[str, int] = ("", 0)
    passthrough = False
    """Sent by a caller's sidecar through its ``PassthroughCluster`` (plain text, no mTLS): the caller named the
    pod's address, not a Service."""
    needs_preamble = True
    to_app = False
    """The inbound listener hands requests to its own app; the others go through the callee's sidecar."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        if self.needs_preamble:
            first = self.rfile.readline(256).decode("latin-1").split()
            if len(first) not in (3, 4) or first[0] != "LABKIT-ORIG" or not first[2].isdigit():
                return
            self.original = (first[1], int(first[2]))
            self.passthrough = first[3:] == ["passthrough"]
        else:
            local = self.connection.getsockname()
            self.original = (str(local[0]), int(local[1]))
        super().handle()

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        raise NotImplementedError

    def _send(self, conn: _Upstream, body: bytes, timeout: float | None, result: _Result) -> None:
        conn.timeout = timeout
        if conn.sock is None:
            conn.connect()
        else:
            conn.sock.settimeout(timeout)
        assert conn.sock is not None
        local = conn.sock.getsockname()
        result.upstream_local = f"{local[0]}:{local[1]}"
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            lower = name.lower()
            if lower not in HOP_BY_HOP or lower == "content-length":
                conn.putheader(name, value)
        if "x-request-id" not in self.headers:
            conn.putheader("x-request-id", self.request_id)
        if "x-forwarded-proto" not in self.headers:
            conn.putheader("x-forwarded-proto", "http")
        conn.endheaders(body or None)

    def _attempt(self, address: tuple[str, int], preamble: bytes, body: bytes, timeout: float | None,
                 result: _Result, source: tuple[str, int] | None) -> None:
        """One try over a pooled connection; a kept connection the far end closed meanwhile is replaced once."""
        for fresh in (False, True):
            conn, reused = POOL.take(address, preamble, source, fresh)
            started = time.monotonic()
            try:
                self._send(conn, body, timeout, result)
                if QUICKACK is not None and conn.sock is not None:
                    # Apps write headers and body separately; acknowledging at once keeps a kept-alive
                    # connection from waiting out Nagle against a delayed ACK (40 ms) on every response.
                    conn.sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                self._await_upstream(conn, timeout)
                response = conn.getresponse()
                data = response.read()
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                conn.close()
                if reused:
                    continue  # stale keep-alive connection: nothing reached the app yet
                raise
            except BaseException:
                conn.close()
                raise
            result.body = data
            result.service_time = int((time.monotonic() - started) * 1000)
            result.status = response.status
            result.headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            if response.will_close:
                conn.close()
            else:
                POOL.give(conn)
            return

    def _await_upstream(self, conn: _Upstream, timeout: float | None) -> None:
        """Wait for the upstream's answer to start, watching the caller: if it leaves first (productpage's own
        timeout), give up on the upstream too, as Envoy resets the upstream request of a closed downstream."""
        if conn.sock is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        readable, _, _ = select.select([conn.sock, self.connection], [], [], timeout)
        if not readable:
            raise TimeoutError("upstream request timeout")
        if deadline is not None:  # what is left of the timeout, for reading the rest of the answer
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        if conn.sock not in readable and self._client_gone():
            raise _ClientGone
        # Otherwise the answer has started, or the caller sent more (a pipelined request): read the answer.

    def _upstream_of(self, endpoint: tuple[str, int], config: meshrules.MeshConfig,
                     passthrough: bool) -> tuple[tuple[str, int], bytes, tuple[str, int] | None]:
        """Where to connect for an endpoint, and from which address.

        The inbound listener reaches its app at the app's own address (the private one the kubelet gave it for a
        redirected port), from the caller's address, so that the app sees who called as without the mesh.
        Outbound, a pod with a ready sidecar is reached at its inbound listener, from this pod's address.
        """
        if self.to_app:
            app_ip = os.environ.get("LABKIT_APP_IP", "")
            redirected = app_ip and str(endpoint[1]) in os.environ.get("LABKIT_APP_PORTS", "").split(",")
            return (app_ip if redirected else endpoint[0], endpoint[1]), b"", (str(self.client_address[0]), 0)
        source = (runtime.pod_ip(), 0)
        if endpoint[0] in config.inbound:
            marker = " passthrough" if passthrough else ""
            return ((endpoint[0], INBOUND_PORT), f"LABKIT-ORIG {endpoint[0]} {endpoint[1]}{marker}\r\n".encode(),
                    source)
        if passthrough and (endpoint[0] in config.pods or endpoint[0] not in config.labels):
            # A meshed pod whose sidecar is not ready, or no pod: not from this pod's address, or the network would
            # hand the connection back to this sidecar.
            return endpoint, b"", None
        return endpoint, b"", source

    def _forward(self, decision: meshrules.Decision, body: bytes, deadline: float | None,
                 config: meshrules.MeshConfig) -> _Result:
        result = _Result()
        retry = decision.retry
        tried: list[tuple[str, int]] = []
        passthrough = decision.cluster == "PassthroughCluster"
        for attempt in range(1 + max(retry.attempts, 0)):
            if attempt:
                time.sleep(_rng.uniform(0, 0.025 * (2 ** (attempt - 1))))
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            per_try = retry.per_try_timeout
            overall = per_try is None or (remaining is not None and remaining <= per_try)
            timeout = remaining if overall else per_try
            fresh = [e for e in decision.endpoints if e not in tried] or list(decision.endpoints)
            endpoint = fresh[0] if len(fresh) == 1 else _rng.choice(fresh)
            tried.append(endpoint)
            result.upstream = f"{endpoint[0]}:{endpoint[1]}"
            result.flags = []
            retry_this = False
            address, preamble, source = self._upstream_of(endpoint, config, passthrough)
            try:
                self._attempt(address, preamble, body, timeout, result, source)
                result.details = "via_upstream"
                retry_this = _retryable(retry.retry_on, retry.codes, result.status)
            except _ClientGone:
                result.status, result.body, result.flags = 0, b"", ["DC"]
                result.details, result.headers, result.service_time = "downstream_remote_disconnect", [], None
                return result
            except TimeoutError:
                result.status, result.body, result.flags = 504, b"upstream request timeout", ["UT"]
                result.headers, result.service_time = [("content-type", "text/plain")], None
                if overall:
                    result.details = "response_timeout"
                    return result
                result.details = "upstream_per_try_timeout"
                retry_this = bool({"5xx", "gateway-error"} & retry.retry_on)
            except (OSError, http.client.HTTPException) as exc:
                refused = isinstance(exc, ConnectionRefusedError)
                reason = ("remote connection failure, transport failure reason: delayed connect error: "
                          "Connection refused" if refused else "connection termination")
                result.status, result.flags = 503, ["UF" if refused else "UC"]
                result.details = ("upstream_reset_before_response_started{remote_connection_failure}" if refused
                                  else "upstream_reset_before_response_started{connection_termination}")
                result.body = (f"upstream connect error or disconnect/reset before headers. "
                               f"{'retried and the latest ' if attempt else ''}reset reason: {reason}").encode()
                result.headers, result.service_time = [("content-type", "text/plain")], None
                on = retry.retry_on
                retry_this = bool(("connect-failure" in on and refused) or ("reset" in on and not refused)
                                  or ("reset-before-request" in on and refused)
                                  or {"5xx", "gateway-error"} & on)
            if not retry_this:
                return result
        else:
            if retry.attempts and result.flags:
                result.flags.append("URX")
            return result
        # The route timeout ran out between tries.
        result.status, result.body, result.flags = 504, b"upstream request timeout", ["UT"]
        result.details, result.headers, result.service_time = "response_timeout", [("content-type", "text/plain")], None
        return result

    def _serve(self, decision: meshrules.Decision, body: bytes, config: meshrules.MeshConfig) -> tuple[_Result,
                                                                                                     list[str]]:
        """Apply a decision (delay, local reply or forward) and answer the client; returns the result and flags."""
        flags: list[str] = []
        started = time.monotonic()
        if decision.delay > 0:
            time.sleep(decision.delay)
            flags.append("DI")
        if decision.status:
            result = _Result()
            result.status, result.body, result.details = decision.status, decision.body, decision.details
            result.flags = [decision.flags]
            if decision.body:
                result.headers = [("content-type", "text/plain")]
        else:
            deadline = None if decision.timeout is None else time.monotonic() + decision.timeout
            result = self._forward(decision, body, deadline, config)
        flags = result.flags + flags
        out_headers = result.headers
        if result.service_time is not None:  # this proxy's own figure replaces the next proxy's
            out_headers = [*(h for h in out_headers if h[0].lower() != "x-envoy-upstream-service-time"),
                           ("x-envoy-upstream-service-time", str(result.service_time))]
        if "DC" in flags:
            self.close_connection = True
            return result, flags
        if time.monotonic() - started > 0.05 and self._client_gone():
            # The caller gave up first (productpage's 3 s timeout): Envoy logs no response code, and DC.
            result.status = 0
            flags.append("DC")
            self.close_connection = True
            return result, flags
        try:
            self.reply(result.status, result.body, out_headers)
            self.wfile.flush()
        except OSError:
            flags.append("DC")
            self.close_connection = True
        return result, flags

    def _client_gone(self) -> bool:
        """Whether the downstream connection was closed while the request was being served."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _log(self, start_wall: float, result: _Result, flags: list[str], body: bytes, millis: float,
             cluster: str, route_name: str, headers: dict[str, str], downstream_local: str, sni: str = "-") -> None:
        client = f"{self.client_address[0]}:{self.client_address[1]}"
        line = (f'[{_stamp(start_wall)}] "{self.command} {self.path} {self.request_version}" {result.status} '
                f'{",".join(flags) or "-"} {result.details} - "-" {len(body)} {len(result.body)} {int(millis)} '
                f'{result.service_time if result.service_time is not None else "-"} '
                f'"{headers.get("x-forwarded-for", "-")}" "{headers.get("user-agent", "-")}" "{self.request_id}" '
                f'"{headers.get("host", "-")}" "{result.upstream}" {cluster} {result.upstream_local} '
                f"{downstream_local} {client} {sni} {route_name}")
        with _log_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def _start(self) -> tuple[float, float, bytes, dict[str, str]]:
        start_wall, start = time.time(), time.monotonic()
        body = self.read_body(16 << 20)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.request_id = headers.get("x-request-id") or str(uuid.uuid4())
        return start_wall, start, body, headers


def _labels(config: meshrules.MeshConfig, ip: str) -> dict[str, str]:
    return config.labels.get(ip) or (config.pods.get(ip) or ("", {}))[1]


def _report(reporter: str, config: meshrules.MeshConfig, source_ip: str | None, dest_ip: str | None,
            key: str | None, status: int, flags: list[str], millis: float, passthrough: str | None = None) -> None:
    """Count one request in Istio's standard metrics, with the labels Istio gives them.

    ``passthrough``: the request's authority when the caller's sidecar sent it through ``PassthroughCluster``
    (to a pod's address); Istio then names the service ``PassthroughCluster`` and gives the authority as the
    service, and the connection is plain text.
    """
    src = config.pods.get(source_ip or "")
    dst_ns, dst_labels = config.pods.get(dest_ip or "") or ("unknown", _labels(config, dest_ip or ""))
    svc_ns, svc_name = (key or "unknown/unknown").split("/", 1)
    service = meshrules.fqdn(key) if key else "unknown"
    if passthrough is not None and reporter == "source":
        svc_ns, svc_name, service = "unknown", "PassthroughCluster", passthrough or "unknown"
    METRICS.record({
        "reporter": reporter,
        "source_workload": config.workloads.get(source_ip or "", "unknown") if src else "unknown",
        "source_workload_namespace": src[0] if src else "unknown",
        "source_app": src[1].get("app", "unknown") if src else "unknown",
        "source_version": src[1].get("version", "unknown") if src else "unknown",
        "destination_workload": config.workloads.get(dest_ip or "", "unknown"),
        "destination_workload_namespace": dst_ns if dest_ip in config.pods else svc_ns if dest_ip else "unknown",
        "destination_app": dst_labels.get("app", "unknown"),
        "destination_version": dst_labels.get("version", "unknown"),
        "destination_service": service,
        "destination_service_name": svc_name,
        "destination_service_namespace": svc_ns,
        "request_protocol": "http",
        "response_code": str(status),
        "response_flags": ",".join(flags) or "-",
        "connection_security_policy": ("mutual_tls" if reporter == "destination" and src and passthrough is None else
                                       "none" if reporter == "destination" else "unknown"),
    }, millis)


class Outbound(_Proxy):
    """One connection from the pod's app to a Service address, relayed here by the sandbox's network."""

    def _proxy(self) -> None:
        start_wall, start, body, headers = self._start()
        config = CONFIG.get()
        key = config.addresses.get(self.original[0])
        if key is None:  # not a Service of the mesh (a pod's address): Istio's PassthroughCluster, route allow_any
            decision = meshrules.Decision(cluster="PassthroughCluster", endpoints=(self.original,), retry=NO_RETRY,
                                          route_name="allow_any")
        else:
            decision = meshrules.route(config, runtime.pod_ip(), key, self.original[1], self.command, self.path,
                                       headers, _rng)
        result, flags = self._serve(decision, body, config)
        millis = (time.monotonic() - start) * 1000
        self._log(start_wall, result, flags, body, millis, decision.cluster, decision.route_name, headers,
                  f"{self.original[0]}:{self.original[1]}")
        dest_ip = result.upstream.rpartition(":")[0] if result.upstream != "-" else None
        authority = headers.get("host", f"{self.original[0]}:{self.original[1]}") if key is None else None
        _report("source", config, runtime.pod_ip(), dest_ip, key, result.status, flags, millis, authority)


class Inbound(_Proxy):
    """Traffic to this pod: from other sidecars, from the network (clients without a sidecar) or a gateway."""

    to_app = True

    def _proxy(self) -> None:
        start_wall, start, body, headers = self._start()
        config = CONFIG.get()
        ip, port = runtime.pod_ip(), self.original[1]
        # A port some Service has this pod behind: its inbound cluster; any other port (a pod no Service selects,
        # reached by its address): Envoy's catch-all inbound filter chain.
        cluster = f"inbound|{port}||" if config.service_of(ip, port) else INBOUND_PASSTHROUGH
        decision = meshrules.Decision(cluster=cluster, endpoints=((ip, port),), retry=INBOUND_RETRY)
        result, flags = self._serve(decision, body, config)
        millis = (time.monotonic() - start) * 1000
        source = str(self.client_address[0])
        host = headers.get("host", "").rsplit(":", 1)[0]
        key = (meshrules.resolve_host(host, config.pods.get(ip, ("default", {}))[0])
               if host and not host[0].isdigit() else None)
        if key not in config.services:
            key = config.service_of(ip, port)
        meshed_source = source in config.pods and not self.passthrough  # mTLS: from a sidecar, to a Service
        sni = f"outbound_.{port}_._.{meshrules.fqdn(key)}" if meshed_source and key else "-"
        self._log(start_wall, result, flags, body, millis, decision.cluster, "default", headers, f"{ip}:{port}",
                  sni)
        _report("destination", config, source, ip, key, result.status, flags, millis,
                headers.get("host", "") if self.passthrough else None)


class Router(_Proxy):
    """The ingress gateway's listener: Gateway servers on this port, and the VirtualServices bound to them."""

    needs_preamble = False

    def _proxy(self) -> None:
        start_wall, start, body, headers = self._start()
        config = CONFIG.get()
        ip = runtime.pod_ip()
        cached = ("router", headers.get("host", ""), str(self.original[1]))
        if cached not in config.cache:
            gateways = meshrules.gateways_for(config, _labels(config, ip), self.original[1])
            config.cache[cached] = meshrules.gateway_virtual_service(config, gateways, headers.get("host", ""))
        vs = config.cache[cached]
        if vs is None:
            decision = meshrules.Decision(404, b"", "NR", "route_not_found", "-", route_name="-")
        else:
            decision = meshrules.route_with(config, vs, config.pods.get(ip, ("istio-system", {})), self.original[1],
                                            self.command, self.path, headers, _rng)
        result, flags = self._serve(decision, body, config)
        millis = (time.monotonic() - start) * 1000
        self._log(start_wall, result, flags, body, millis, decision.cluster, decision.route_name, headers,
                  f"{self.original[0]}:{self.original[1]}")
        parts = decision.cluster.split("|")
        key = None
        if len(parts) == 4:
            name, _, rest = parts[3].partition(".")
            key = f"{rest.split('.', 1)[0]}/{name}"
        dest_ip = result.upstream.rpartition(":")[0] if result.upstream != "-" else None
        _report("source", config, ip, dest_ip, key, result.status, flags, millis)


class Stats(runtime.Handler):
    """``/stats/prometheus`` and ``/healthz/ready`` on port 15020 (and 15021 at a gateway), as pilot-agent serves."""

    def do_GET(self) -> None:
        if self.path.startswith("/stats/prometheus"):
            self.reply(200, METRICS.exposition().encode(), [("content-type", "text/plain; version=0.0.4")])
        elif self.path.startswith("/healthz/ready"):
            self.reply(200, b"")
        else:
            self.reply(404, b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:  # no reverse DNS lookup of the pod address (see runtime.serve)
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def _listen(handler: type[runtime.Handler], port: int) -> ThreadingHTTPServer | None:
    try:
        server = _Server((runtime.pod_ip(), port), handler)
    except OSError as exc:
        runtime.log_error(f"pilot-agent: cannot listen on {runtime.pod_ip()}:{port}: {exc}")
        return None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str]) -> int:
    """``pilot-agent proxy sidecar|router ...``: serve the stats port and the listeners until killed."""
    router = "router" in argv
    extra = [(Stats, HEALTH_PORT)] if router else [(Inbound, INBOUND_PORT)]
    for handler, port in [(Stats, STATS_PORT), *extra]:
        if _listen(handler, port) is None:
            return 1

    def listening() -> None:
        runtime.log(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.000000Z\tinfo\tEnvoy proxy is ready")
        sys.stdout.flush()

    socket.setdefaulttimeout(None)
    if router:
        return runtime.serve(Router, ROUTER_PORT, program="envoy", on_listen=listening)
    return runtime.serve(Outbound, OUTBOUND_PORT, program="envoy", on_listen=listening)
