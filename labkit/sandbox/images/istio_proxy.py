"""The ``istio-proxy`` sidecar: a small HTTP/1.1 proxy applying Istio's traffic rules for its pod's outbound calls.

The sandbox's network hands every connection a meshed pod opens to a Service address to this process, on
``podIP:15001`` (Envoy's outbound port), after one line naming the original destination::

    LABKIT-ORIG <cluster IP> <port>\\r\\n

The proxy then reads HTTP/1.1 requests from the connection and, for each, asks :func:`meshrules.route` what the
caller's sidecar does (VirtualService match, fault delay/abort, weighted subset, timeout, retries), forwards the
request to one endpoint over a new connection, and answers with the upstream's response or Envoy's local reply.
Each request writes one access-log line in Istio's default format to stdout (``kubectl logs POD -c istio-proxy``)
and counts in ``istio_requests_total`` / ``istio_request_duration_milliseconds``, served on ``podIP:15020`` at
``/stats/prometheus``. The mesh configuration is ``mesh.json`` beside the cluster hosts file, reread when it
changes (the sandbox's stand-in for xDS).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from http.server import ThreadingHTTPServer

from labkit.sandbox import meshrules
from labkit.sandbox.images import runtime

OUTBOUND_PORT = 15001
STATS_PORT = 15020
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                        "trailer", "content-length", "date", "server"})
BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
           1800000, 3600000)

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


class Metrics:
    """Istio's standard metrics, as this sidecar reports them (``reporter="source"``)."""

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


class Outbound(runtime.Handler):
    """One connection from the pod's app to a Service address, relayed here by the sandbox's network."""

    server_header = "envoy"
    timeout = 60.0
    original: tuple[str, int] = ("", 0)

    def handle(self) -> None:
        first = self.rfile.readline(256).decode("latin-1").split()
        if len(first) != 3 or first[0] != "LABKIT-ORIG" or not first[2].isdigit():
            return
        self.original = (first[1], int(first[2]))
        super().handle()

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _attempt(self, endpoint: tuple[str, int], body: bytes, timeout: float | None, result: _Result,
                 passthrough: bool) -> None:
        # From the pod's address, as Envoy's upstream connections are; a passthrough goes back to the Service
        # address, so it must not come from the pod (the network would hand it to this sidecar again).
        source = None if passthrough else (runtime.pod_ip(), 0)
        conn = http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=timeout, source_address=source)
        try:
            conn.connect()
            sock = conn.sock
            if sock is not None:
                local = sock.getsockname()
                result.upstream_local = f"{local[0]}:{local[1]}"
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP or name.lower() == "content-length":
                    conn.putheader(name, value)
            if "x-request-id" not in self.headers:
                conn.putheader("x-request-id", self.request_id)
            conn.putheader("x-forwarded-proto", "http")
            conn.endheaders(body or None)
            started = time.monotonic()
            response = conn.getresponse()
            result.body = response.read()
            result.service_time = int((time.monotonic() - started) * 1000)
            result.status = response.status
            result.headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        finally:
            conn.close()

    def _forward(self, decision: meshrules.Decision, body: bytes, deadline: float | None) -> _Result:
        result = _Result()
        retry = decision.retry
        tried: list[tuple[str, int]] = []
        refused = False
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
            endpoint = _rng.choice(fresh)
            tried.append(endpoint)
            result.upstream = f"{endpoint[0]}:{endpoint[1]}"
            result.flags = []
            retry_this = False
            try:
                self._attempt(endpoint, body, timeout, result, decision.cluster == "PassthroughCluster")
                result.details = "via_upstream"
                retry_this = _retryable(retry.retry_on, retry.codes, result.status)
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

    def _proxy(self) -> None:
        start_wall, start = time.time(), time.monotonic()
        body = self.read_body(16 << 20)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.request_id = headers.get("x-request-id") or str(uuid.uuid4())
        config = CONFIG.get()
        key = config.addresses.get(self.original[0])
        if key is None:  # not a Service of the mesh: Istio's PassthroughCluster
            decision = meshrules.Decision(cluster="PassthroughCluster", endpoints=(self.original,),
                                          retry=meshrules.Retry(0, None, frozenset(), frozenset()))
        else:
            decision = meshrules.route(config, runtime.pod_ip(), key, self.original[1], self.command, self.path,
                                       headers, _rng)
        flags: list[str] = []
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
            result = self._forward(decision, body, deadline)
        flags = result.flags + flags
        out_headers = list(result.headers)
        if result.service_time is not None:
            out_headers.append(("x-envoy-upstream-service-time", str(result.service_time)))
        try:
            self.reply(result.status, result.body, out_headers)
            self.wfile.flush()
        except OSError:
            flags.append("DC")
            self.close_connection = True
        millis = (time.monotonic() - start) * 1000
        self._log(start_wall, result, flags, body, millis, decision, headers)
        self._count(key, result, flags, millis, config)

    def _log(self, start_wall: float, result: _Result, flags: list[str], body: bytes, millis: float,
             decision: meshrules.Decision, headers: dict[str, str]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start_wall)) + f".{int(start_wall * 1000) % 1000:03d}Z"
        client = f"{self.client_address[0]}:{self.client_address[1]}"
        line = (f'[{stamp}] "{self.command} {self.path} {self.request_version}" {result.status} '
                f'{",".join(flags) or "-"} {result.details} - "-" {len(body)} {len(result.body)} {int(millis)} '
                f'{result.service_time if result.service_time is not None else "-"} '
                f'"{headers.get("x-forwarded-for", "-")}" "{headers.get("user-agent", "-")}" "{self.request_id}" '
                f'"{headers.get("host", "-")}" "{result.upstream}" {decision.cluster} {result.upstream_local} '
                f"{self.original[0]}:{self.original[1]} {client} - {decision.route_name}")
        with _log_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def _count(self, key: str | None, result: _Result, flags: list[str], millis: float,
               config: meshrules.MeshConfig) -> None:
        ns, labels = config.pods.get(runtime.pod_ip(), (os.environ.get("POD_NAMESPACE", "default"), {}))
        dest_ns, dest_name = (key or "unknown/unknown").split("/", 1)
        dest_labels: dict[str, str] = {}
        if result.upstream != "-" and key is not None:
            ip, _, _port = result.upstream.rpartition(":")
            for eps in config.services.get(key, {}).values():
                dest_labels = next((e.labels for e in eps if e.ip == ip), dest_labels)
        METRICS.record({
            "reporter": "source",
            "source_workload": workload_of(os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "unknown")),
            "source_workload_namespace": ns,
            "source_app": labels.get("app", "unknown"),
            "source_version": labels.get("version", "unknown"),
            "destination_service": meshrules.fqdn(key) if key else "unknown",
            "destination_service_name": dest_name,
            "destination_service_namespace": dest_ns,
            "destination_app": dest_labels.get("app", "unknown"),
            "destination_version": dest_labels.get("version", "unknown"),
            "request_protocol": "http",
            "response_code": str(result.status),
            "response_flags": ",".join(flags) or "-",
            "connection_security_policy": "unknown",
        }, millis)


class Stats(runtime.Handler):
    """``/stats/prometheus`` and ``/healthz/ready`` on port 15020, as pilot-agent serves them."""

    def do_GET(self) -> None:
        if self.path.startswith("/stats/prometheus"):
            self.reply(200, METRICS.exposition().encode(), [("content-type", "text/plain; version=0.0.4")])
        elif self.path.startswith("/healthz/ready"):
            self.reply(200, b"")
        else:
            self.reply(404, b"")


def main(argv: list[str]) -> int:
    """``pilot-agent proxy sidecar ...``: serve the stats port, then the outbound listener until killed."""
    try:
        stats = ThreadingHTTPServer((runtime.pod_ip(), STATS_PORT), Stats)
    except OSError as exc:
        runtime.log_error(f"pilot-agent: cannot listen on {runtime.pod_ip()}:{STATS_PORT}: {exc}")
        return 1
    stats.daemon_threads = True
    threading.Thread(target=stats.serve_forever, daemon=True).start()

    def listening() -> None:
        runtime.log(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}.000000Z\tinfo\tEnvoy proxy is ready")
        sys.stdout.flush()

    socket.setdefaulttimeout(None)
    return runtime.serve(Outbound, OUTBOUND_PORT, program="envoy", on_listen=listening)
