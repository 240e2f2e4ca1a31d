"""What every sandbox container process shares: start-up, readiness, logging, serving HTTP, calling services.

A container here is a plain OS process started by the kubelet as ``python -m labkit.sandbox.images.run <image>
<argv...>``. :func:`setup` ties the process to the kubelet and gives it the name the real image's process has;
:func:`serve` runs an HTTP server on the pod's address and tells the kubelet when it listens; :func:`http_get`
is how one service calls another through cluster DNS.

The kubelet passes its side of the contract in the environment; every variable has a default so that an image
can be run by hand::

    LABKIT_POD_IP=127.0.0.1 python -m labkit.sandbox.images.run ratings node ratings.js 9080

Only the standard library is used: 13 of these processes run at once and each must start in about 100 ms.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socketserver
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from labkit.sandbox.dns import Resolver
from labkit.sandbox.images.environ import HOST_SENSITIVE as HOST_SENSITIVE
from labkit.sandbox.images.environ import HOST_SENSITIVE_PREFIXES as HOST_SENSITIVE_PREFIXES
from labkit.sandbox.images.environ import POD_ENV as POD_ENV
from labkit.sandbox.images.environ import host_sensitive as host_sensitive
from labkit.sandbox.images.environ import pod_environ as pod_environ
from labkit.sandbox.images.environ import process_environ as process_environ

if TYPE_CHECKING:
    from labkit.sandbox import toolbox

# prctl(2) options, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15

DEFAULT_POD_IP = "127.0.0.1"


# --- start-up -------------------------------------------------------------------------------------


# Tracing headers every Bookinfo service copies from its request onto its own calls, when present.
TRACE_HEADERS = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
)


def _prctl(option: int, arg: int | bytes) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the sandbox only promises these guarantees on Linux


def setup() -> None:
    """Bind this process's life to the kubelet's and take the image's process name.

    Order matters. The death signal is armed first; only then is the parent checked, because the kubelet may
    have died between our fork and the ``prctl`` call, in which case no signal will ever come and we would be
    an orphan.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = os.environ.get("LABKIT_PARENT_PID", "")
    if parent.isdigit() and os.getppid() != int(parent):
        # Die the way the death signal would have killed us, so the outcome is the same either way.
        os.kill(os.getpid(), signal.SIGKILL)
    name = os.environ.get("LABKIT_PROCESS_NAME")
    if name:
        # ``pkill ruby`` and ``ps`` read /proc/<pid>/comm, which the kernel caps at 15 bytes.
        _prctl(_PR_SET_NAME, name.encode()[:15])
    # Logs go to files that ``kubectl logs`` reads while the process runs, so each line must land at once.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    # Python turns SIGINT into KeyboardInterrupt; a real server just dies. SIGTERM keeps its default action on
    # purpose: the kubelet reports "killed by SIGTERM" as exit code 143.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def notify_ready() -> None:
    """Tell the kubelet the container has started (for a server: it listens). Only the first call writes."""
    fd = os.environ.pop("LABKIT_READY_FD", None)
    if fd is None or not fd.isdigit():
        return
    try:
        os.write(int(fd), b"R")
        os.close(int(fd))
    except OSError:
        pass  # the kubelet stopped waiting; it will see the process running anyway


# --- environment ----------------------------------------------------------------------------------


# (the environment helpers live in labkit.sandbox.images.environ, which the kubelet imports without this module)


def pod_ip() -> str:
    """The address this container listens on and calls from (the pod IP)."""
    return os.environ.get("LABKIT_POD_IP") or DEFAULT_POD_IP


def listen_ip(port: int) -> str:
    """The address a server on ``port`` listens on: the pod IP, or in a pod with Istio's sidecar, for its declared
    app ports, the private address the kubelet gives (the sandbox then serves the pod IP, through the sidecar)."""
    app_ip = os.environ.get("LABKIT_APP_IP")
    if app_ip and str(port) in os.environ.get("LABKIT_APP_PORTS", "").split(","):
        return app_ip
    return pod_ip()


def env(name: str, default: str) -> str:
    """An environment variable, with ``default`` when it is unset (an empty value counts as set)."""
    value = os.environ.get(name)
    return default if value is None else value


# --- logging --------------------------------------------------------------------------------------


def log(line: str) -> None:
    """One line on stdout (``kubectl logs``)."""
    sys.stdout.write(line + "\n")


def log_error(line: str) -> None:
    """One line on stderr (``kubectl logs`` shows both streams)."""
    sys.stderr.write(line + "\n")


def utc_now(fmt: str) -> str:
    """The current UTC time formatted with ``time.strftime``."""
    return time.strftime(fmt, time.gmtime())


# --- commands every image has ---------------------------------------------------------------------

_SLEEP_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _sleep_seconds(operand: str) -> float | None:
    """GNU sleep's interval syntax: ``infinity``, ``5``, ``0.5``, ``10m``, ``3650d``. None when invalid."""
    if operand.lower() in ("inf", "infinity"):
        return float("inf")
    number, scale = operand, 1.0
    if operand and operand[-1] in _SLEEP_UNITS:
        number, scale = operand[:-1], _SLEEP_UNITS[operand[-1]]
    try:
        seconds = float(number) * scale
    except ValueError:
        return None
    return seconds if seconds >= 0 and number.lower() not in ("nan", "inf", "infinity") else None


def sleep_command(args: list[str]) -> int:
    """``sleep`` as coreutils has it: the operands are summed; ``infinity`` never returns."""
    if not args:
        log_error("sleep: missing operand")
        log_error("Try 'sleep --help' for more information.")
        return 1
    total = 0.0
    for operand in args:
        seconds = _sleep_seconds(operand)
        if seconds is None:
            log_error(f"sleep: invalid time interval '{operand}'")
            log_error("Try 'sleep --help' for more information.")
            return 1
        total += seconds
    notify_ready()
    deadline = time.monotonic() + total
    # Sleep in bounded steps: time.sleep rejects infinity, and a long sleep would overflow on some platforms.
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 3600.0))
    return 0


def command_not_found(argv: list[str]) -> int:
    """What the container runtime reports when the command does not exist in the image (exit code 127)."""
    program = argv[0] if argv else ""
    missing = f"stat {program}: no such file or directory"
    reason = missing if "/" in program else "executable file not found in $PATH"
    log_error(
        "OCI runtime create failed: runc create failed: unable to start container process: "
        f'exec: "{program}": {reason}: unknown'
    )
    return 127


def _toolbox_context() -> toolbox.ExecContext:
    from labkit.sandbox import dns, toolbox

    async def write(fd: int, data: bytes) -> None:
        os.write(fd, data)

    hostname = env("HOSTNAME", "localhost")
    return toolbox.ExecContext(
        pod=hostname,
        namespace=env("LABKIT_NAMESPACE", "default"),
        pod_ip=pod_ip(),
        hostname=hostname,
        env=pod_environ(),
        files={
            "/etc/hostname": f"{hostname}\n".encode(),
            "/etc/hosts": f"127.0.0.1\tlocalhost\n{pod_ip()}\t{hostname}\n".encode(),
            "/etc/resolv.conf": dns.resolv_conf(env("LABKIT_NAMESPACE", "default")).encode(),
        },
        resolver=resolver(),
        stdout_writer=lambda data: write(1, data),
        stderr_writer=lambda data: write(2, data),
    )


def run_command(argv: list[str]) -> int:
    """Run a command other than the image's own program, as the container's main process.

    ``sleep`` is handled here, without loading anything, because a tester pod runs ``sleep infinity`` for
    hours. The other tools (``curl``, ``echo``, ``env``, ...) are the sandbox's exec toolbox, the same code
    that ``kubectl exec`` runs, so a container command behaves as it would in an exec. The container counts as
    started as soon as the command runs. Any other command is not in the image (exit code 127).

    Returns:
        The command's exit code.
    """
    if argv and os.path.basename(argv[0]) == "sleep":
        return sleep_command(argv[1:])
    from labkit.sandbox import toolbox  # imported only here: it brings asyncio with it

    if not argv or not toolbox.has_command(argv[0]):
        return command_not_found(argv)
    import asyncio

    notify_ready()
    return asyncio.run(toolbox.run(list(argv), _toolbox_context()))


# --- serving HTTP ---------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1 keep-alive, the image's ``Server`` header, no default stderr log.

    Images log in their own program's format instead of http.server's, so :meth:`log_message` is silent.
    """

    protocol_version = "HTTP/1.1"
    server_header: str | None = None
    """The ``Server`` response header of the real program (None: the program sends none)."""
    timeout = 5.0
    """Idle keep-alive connections are closed after this many seconds, so threads do not pile up."""

    _body_read = False

    def log_message(self, format: str, *args: object) -> None:
        return

    def parse_request(self) -> bool:
        # One handler object serves every request of a keep-alive connection; reset the per-request state.
        self._body_read = False
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.send_response_only(code, message)
        if self.server_header:
            self.send_header("Server", self.server_header)
        self.send_header("Date", self.date_time_string())

    def reply(
        self,
        status: int,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        chunked: bool = False,
    ) -> None:
        """Send a complete response.

        Args:
            status: The HTTP status code.
            body: The body; left out for HEAD requests, though its length is still announced.
            headers: Extra headers, in order, with the exact spelling the real program uses.
            chunked: Use chunked transfer coding (HTTP/1.1 clients only), as Node.js does.
        """
        chunked = chunked and self.request_version == "HTTP/1.1"
        if not self._body_read and (self.headers.get("Content-Length") or "0") != "0":
            # An unread request body would be parsed as the next request on this connection.
            self.close_connection = True
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if chunked:
            framed = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
            self.wfile.write(framed)
        else:
            self.wfile.write(body)

    def read_body(self, limit: int = 1 << 20) -> bytes:
        """The request body (``Content-Length`` bodies only), at most ``limit`` bytes."""
        self._body_read = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(min(max(length, 0), limit)) if length > 0 else b""

    @property
    def client_ip(self) -> str:
        """The address the request came from (a pod IP, or a Service address when a proxy relayed it)."""
        return str(self.client_address[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the traffic loop and load tests open many short connections at once

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up with socket.getfqdn, a reverse DNS query that can stall
        # start-up for seconds; the pod IP is all the handlers need.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def serve(handler: type[Handler], port: int, *, program: str, on_listen: Callable[[], None] | None = None) -> int:
    """Listen on ``(pod IP, port)``, report ready, and serve until the process is killed.

    Args:
        handler: The image's request handler class.
        port: The TCP port from the program's command line.
        program: Names the program in the error printed when the port cannot be bound.
        on_listen: Called once the socket listens and before readiness is reported; images print their
            "listening" log line here, so the line is in the log by the time the pod is Ready.

    Returns:
        1 when the address cannot be bound (the container then exits with that code); otherwise never returns.
    """
    try:
        server = _Server((listen_ip(port), port), handler)
    except OSError as exc:
        log_error(f"{program}: cannot listen on {pod_ip()}:{port}: {exc.strerror or exc}")
        return 1
    if on_listen is not None:
        on_listen()
    notify_ready()
    server.serve_forever()
    return 0


# --- calling other services -----------------------------------------------------------------------


class DownstreamError(Exception):
    """A call to another service got no response: unknown name, refused, reset or timed out."""


_resolver: Resolver | None = None


def resolver() -> Resolver:
    """This container's cluster DNS resolver (one per process; it rereads the hosts file when it changes)."""
    global _resolver
    if _resolver is None:
        _resolver = Resolver.from_env()
    return _resolver


def http_get(host: str, port: int, path: str, headers: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
    """GET ``http://host:port/path`` over a new connection, the way the Bookinfo services call each other.

    A new connection per call is deliberate (productpage does the same): each call picks a backend afresh, so
    traffic to a Service spreads over its pods and a dead pod affects only the calls that land on it.

    Args:
        host: A cluster name such as ``details`` or ``ratings.default.svc.cluster.local``.
        port: The service port.
        path: The request target, already percent-encoded.
        headers: Headers to send besides ``Host``.
        timeout: Seconds allowed for connecting and for each read, like the requests library's timeout.

    Returns:
        The status code and the whole body.

    Raises:
        DownstreamError: The name does not resolve, or the connection failed or timed out.
    """
    ip = resolver().resolve(host)
    if ip is None:
        raise DownstreamError(f"Failed to resolve '{host}' ([Errno -2] Name or service not known)")
    if not resolver().reachable(ip):
        raise DownstreamError(f"Connection to {host}:{port} failed: [Errno 111] Connection refused")
    conn = http.client.HTTPConnection(ip, port, timeout=timeout, source_address=(pod_ip(), 0))
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"{host}:{port}")
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    except TimeoutError as exc:
        raise DownstreamError(f"Timed out (host='{host}', port={port}, timeout={timeout})") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownstreamError(f"Connection to {host}:{port} failed: {exc or type(exc).__name__}") from exc
    finally:
        conn.close()
