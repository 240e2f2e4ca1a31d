"""The image toolbox against real loopback HTTP servers and real child processes.

Every test drives :func:`labkit.sandbox.toolbox.run` with the in-memory :class:`ExecContext`, starts whatever
it talks to (asyncio servers on 127.0.0.0/8, ``sleep`` children) and stops all of it before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit.sandbox.dns import Resolver, write_hosts
from labkit.sandbox.toolbox import (
    INPUT_LIMIT,
    UNKNOWN,
    ExecContext,
    PodProcess,
    commands,
    has_command,
    not_found_message,
    regex,
    run,
)

RATINGS = b'{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
CURL_POD = "curl-88ddbcfdd-l9zq4"
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="needs all of 127.0.0.0/8 on the loopback")


# -- running commands ----------------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: bytes
    err: bytes
    ctx: ExecContext

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()


async def exec_async(argv: list[str], ctx: ExecContext | None = None, **fields: object) -> Result:
    if ctx is None:
        fields.setdefault("pod", CURL_POD)
        ctx = ExecContext(**fields)  # type: ignore[arg-type]
    code = await run(argv, ctx)
    return Result(code, bytes(ctx.stdout), bytes(ctx.stderr), ctx)


def execute(argv: list[str], **fields: object) -> Result:
    return asyncio.run(exec_async(argv, **fields))


# -- a small HTTP server -------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    peer: str


Responder = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(respond: Responder, host: str = "127.0.0.1") -> AsyncIterator[tuple[int, list[Request]]]:
    """Serve ``respond`` on a free port of ``host``; yields the port and the requests seen so far."""
    seen: list[Request] = []
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)  # type: ignore[arg-type]
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, target, headers, body, writer.get_extra_info("peername")[0])
            seen.append(request)
            await respond(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            handlers.discard(task)  # type: ignore[arg-type]
            writer.close()

    server = await asyncio.start_server(handle, host, 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await server.wait_closed()


def reply(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
          reason: str = "OK") -> Responder:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "application/json"}).items()]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(head + (b"" if request.method == "HEAD" else body))
        await writer.drain()

    return respond


def routes(table: dict[str, Responder]) -> Responder:
    async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
        await table.get(request.target, reply(404, b"not found"))(request, writer)

    return respond


async def never_answer(request: Request, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_with_server(respond: Responder, argv_for_port: Callable[[int], list[str]], host: str = "127.0.0.1",
                    **fields: object) -> tuple[Result, list[Request]]:
    """Start ``respond``, run the command built for its port, stop the server."""

    async def main() -> tuple[Result, list[Request]]:
        async with serve(respond, host) as (port, seen):
            result = await exec_async(argv_for_port(port), **fields)
        return result, seen

    return asyncio.run(main())


# -- curl ----------------------------------------------------------------------------------------------------


def test_curl_prints_the_body_unchanged_and_sends_curls_headers() -> None:
    result, seen = run_with_server(reply(200, RATINGS),
                                   lambda port: ["curl", "-sS", f"http://127.0.0.1:{port}/ratings/7"])
    assert (result.code, result.out, result.err) == (0, RATINGS, b"")
    request = seen[0]
    assert (request.method, request.target) == ("GET", "/ratings/7")
    assert request.headers["user-agent"] == "curl/8.16.0"
    assert request.headers["accept"] == "*/*"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", request.headers["host"])


def test_curl_accepts_a_url_without_scheme_and_a_path_to_the_binary() -> None:
    result, _ = run_with_server(reply(200, RATINGS),
                                lambda port: ["/usr/bin/curl", "-s", f"127.0.0.1:{port}/ratings/7"])
    assert (result.code, result.out) == (0, RATINGS)


def test_curl_resolves_service_names_through_cluster_dns(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    write_hosts(str(hosts), {"127.0.0.1": ["ratings.default.svc.cluster.local", "ratings.default.svc",
                                           "ratings.default"]})
    resolver = Resolver(str(hosts), "default")
    result, seen = run_with_server(reply(200, RATINGS),
                                   lambda port: ["curl", "-sS", f"http://ratings:{port}/ratings/7"],
                                   resolver=resolver)
    assert (result.code, result.out) == (0, RATINGS)
    assert seen[0].headers["host"].startswith("ratings:")


def test_curl_without_silent_draws_the_progress_meter_on_stderr() -> None:
    result, _ = run_with_server(reply(200, RATINGS), lambda port: ["curl", f"http://127.0.0.1:{port}/"])
    assert result.out == RATINGS
    assert result.stderr.startswith("  % Total    % Received % Xferd  Average Speed")
    assert re.search(r"\r100    48  100    48    0     0 +\d+      0 --:--:-- --:--:-- --:--:-- +\d+\n$",
                     result.stderr)


def test_curl_with_a_tty_draws_no_meter_over_the_body() -> None:
    result, _ = run_with_server(reply(200, RATINGS), lambda port: ["curl", f"http://127.0.0.1:{port}/"],
                                tty=True)
    assert (result.out, result.err) == (RATINGS, b"")


def test_curl_write_out_http_code_with_output_discarded() -> None:
    result, _ = run_with_server(
        reply(200, RATINGS),
        lambda port: ["curl", "-o", "/dev/null", "-s", "-w", "%{http_code}\\n", f"http://127.0.0.1:{port}/"])
    assert (result.code, result.out, result.err) == (0, b"200\n", b"")


def test_curl_write_out_variables() -> None:
    fmt = "%{response_code} %{size_download} %{url_effective} %{remote_ip} %{exitcode} %{time_total} %%"
    result, _ = run_with_server(
        reply(200, RATINGS),
        lambda port: ["curl", "-so", "/dev/null", "-w", fmt, f"127.0.0.1:{port}/ratings/7"])
    fields = result.stdout.split(" ")
    assert fields[:5] == ["200", "48", f"http://{fields[2].split('//')[1]}", "127.0.0.1", "0"]
    assert fields[2].startswith("http://127.0.0.1:") and fields[2].endswith("/ratings/7")
    assert re.fullmatch(r"\d+\.\d{6}", fields[5])
    assert fields[6] == "%"


def test_curl_output_file_lands_in_the_pods_files() -> None:
    result, _ = run_with_server(reply(200, RATINGS),
                                lambda port: ["curl", "-sS", "-o", "/tmp/r.json", f"http://127.0.0.1:{port}/"])
    assert (result.code, result.out) == (0, b"")
    assert result.ctx.files["/tmp/r.json"] == RATINGS


def test_curl_head_prints_only_the_headers() -> None:
    result, seen = run_with_server(reply(200, RATINGS), lambda port: ["curl", "-sI", f"http://127.0.0.1:{port}/"])
    assert result.code == 0
    assert seen[0].method == "HEAD"
    assert result.out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 48\r\n" in result.out
    assert result.out.endswith(b"\r\n\r\n")


def test_curl_include_prints_headers_then_body() -> None:
    result, _ = run_with_server(reply(200, RATINGS), lambda port: ["curl", "-si", f"http://127.0.0.1:{port}/"])
    head, _, body = result.out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body == RATINGS


def test_curl_connection_refused_is_exit_7() -> None:
    port = closed_port()
    result = execute(["curl", "-sS", f"http://127.0.0.1:{port}/ratings/7"])
    assert result.code == 7
    assert re.fullmatch(
        rf"curl: \(7\) Failed to connect to 127\.0\.0\.1 port {port} after \d+ ms: "
        r"Couldn't connect to server\n",
        result.stderr)
    assert result.out == b""


def test_curl_silent_hides_the_error_but_write_out_still_reports() -> None:
    result = execute(["curl", "-s", "-w", "%{http_code}", f"http://127.0.0.1:{closed_port()}/"])
    assert (result.code, result.out, result.err) == (7, b"000", b"")


def test_curl_unknown_host_is_exit_6() -> None:
    result = execute(["curl", "-sS", "http://details-nope:9080/details/0"])
    assert (result.code, result.stderr) == (6, "curl: (6) Could not resolve host: details-nope\n")


def test_curl_max_time_against_a_server_that_never_answers() -> None:
    result, _ = run_with_server(never_answer, lambda port: ["curl", "-sS", "-m", "1", f"http://127.0.0.1:{port}/"])
    assert result.code == 28
    message = re.fullmatch(r"curl: \(28\) Operation timed out after (\d+) milliseconds with 0 bytes received\n",
                           result.stderr)
    assert message is not None and int(message.group(1)) >= 1000


def test_curl_fail_turns_http_errors_into_exit_22() -> None:
    unavailable = reply(503, b"no healthy upstream", {"Content-Type": "text/plain"}, "Service Unavailable")
    result, _ = run_with_server(unavailable, lambda port: ["curl", "-sSf", f"http://127.0.0.1:{port}/"])
    assert (result.code, result.out) == (22, b"")
    assert result.stderr == "curl: (22) The requested URL returned error: 503\n"
    quiet, _ = run_with_server(unavailable, lambda port: ["curl", "-sf", f"http://127.0.0.1:{port}/"])
    assert (quiet.code, quiet.out, quiet.err) == (22, b"", b"")
    plain, _ = run_with_server(unavailable, lambda port: ["curl", "-sS", f"http://127.0.0.1:{port}/"])
    assert (plain.code, plain.out) == (0, b"no healthy upstream")


def test_curl_decodes_a_chunked_body_sent_in_pieces() -> None:
    async def chunked(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nHello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"7;note=x\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n")
        await writer.drain()

    result, _ = run_with_server(chunked, lambda port: ["curl", "-sS", f"http://127.0.0.1:{port}/"])
    assert (result.code, result.out, result.err) == (0, b"Hello, world", b"")


def test_curl_reads_a_body_without_length_until_the_server_closes() -> None:
    async def old_server(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<title>Simple Bookstore App</title>")
        await writer.drain()

    result, _ = run_with_server(old_server, lambda port: ["curl", "-s", f"http://127.0.0.1:{port}/productpage"])
    assert (result.code, result.out) == (0, b"<title>Simple Bookstore App</title>")


def test_curl_follows_redirects_only_with_location() -> None:
    table = {
        "/old": reply(302, b"moved", {"Location": "/productpage"}, "Found"),
        "/productpage": reply(200, b"page"),
    }
    followed, seen = run_with_server(
        routes(table),
        lambda port: ["curl", "-sSL", "-w", " %{num_redirects} %{url_effective}", f"http://127.0.0.1:{port}/old"])
    assert followed.code == 0
    assert followed.stdout.startswith("page 1 http://127.0.0.1:")
    assert followed.stdout.endswith("/productpage")
    assert [r.target for r in seen] == ["/old", "/productpage"]
    stayed, seen = run_with_server(
        routes(table), lambda port: ["curl", "-sS", "-w", " %{http_code} %{redirect_url}",
                                     f"http://127.0.0.1:{port}/old"])
    assert stayed.code == 0
    assert re.fullmatch(r"moved 302 http://127\.0\.0\.1:\d+/productpage", stayed.stdout)
    assert len(seen) == 1


def test_curl_post_becomes_get_after_303() -> None:
    table = {
        "/login": reply(303, b"", {"Location": "/productpage"}, "See Other"),
        "/productpage": reply(200, b"ok"),
    }
    result, seen = run_with_server(
        routes(table), lambda port: ["curl", "-sL", "-d", "username=jason", f"http://127.0.0.1:{port}/login"])
    assert (result.code, result.out) == (0, b"ok")
    assert [(r.method, r.body) for r in seen] == [("POST", b"username=jason"), ("GET", b"")]


def test_curl_sends_data_headers_and_methods() -> None:
    result, seen = run_with_server(
        reply(201, b"created"),
        lambda port: ["curl", "-s", "-d", "a=1", "--data-raw", "b=@2", "-H", "X-Test: yes", "-H", "Accept:",
                      f"http://127.0.0.1:{port}/ratings/7"])
    assert result.code == 0
    request = seen[0]
    assert (request.method, request.body) == ("POST", b"a=1&b=@2")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["x-test"] == "yes"
    assert "accept" not in request.headers
    _, seen = run_with_server(
        reply(200, b"{}"),
        lambda port: ["curl", "-s", "-X", "PUT", "--json", '{"Reviewer1":1}', f"http://127.0.0.1:{port}/r"])
    assert (seen[0].method, seen[0].body) == ("PUT", b'{"Reviewer1":1}')
    assert seen[0].headers["content-type"] == "application/json"


def test_curl_host_header_can_be_replaced_for_ingress_routing() -> None:
    _, seen = run_with_server(
        reply(200, b"page"),
        lambda port: ["curl", "-s", "-H", "Host: tutorial.bookinfo.com", f"http://127.0.0.1:{port}/productpage"])
    assert seen[0].headers["host"] == "tutorial.bookinfo.com"


def test_curl_empty_reply_and_reset_connection() -> None:
    async def hang_up(request: Request, writer: asyncio.StreamWriter) -> None:
        return

    async def reset(request: Request, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    empty, _ = run_with_server(hang_up, lambda port: ["curl", "-sS", f"http://127.0.0.1:{port}/"])
    assert (empty.code, empty.stderr) == (52, "curl: (52) Empty reply from server\n")
    broken, _ = run_with_server(reset, lambda port: ["curl", "-sS", f"http://127.0.0.1:{port}/"])
    assert (broken.code, broken.stderr) == (56, "curl: (56) Recv failure: Connection reset by peer\n")


CURL_TRY = "curl: try 'curl --help' for more information\n"


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["curl", "--bogus", "x"], 2, "curl: option --bogus: is unknown\n" + CURL_TRY),
        (["curl", "-sS", "-o"], 2, "curl: option -o: requires parameter\n" + CURL_TRY),
        (["curl", "-m", "soon", "x"], 2,
         "curl: option -m: expected a proper numerical parameter\n" + CURL_TRY),
        (["curl"], 2,
         "curl: no URL specified\ncurl: try 'curl --help' or 'curl --manual' for more information\n"),
        (["curl", "-sS", "https://productpage:9080/"], 1, 'curl: (1) Protocol "https" not supported\n'),
        (["curl", "-sS", "http://ratings:90x0/"], 3,
         "curl: (3) URL rejected: Port number was not a decimal number between 0 and 65535\n"),
        (["curl", "-sS", "http:///x"], 3, "curl: (3) URL rejected: No host part in the URL\n"),
    ],
)
def test_curl_usage_and_url_errors(argv: list[str], code: int, stderr: str) -> None:
    result = execute(argv)
    assert (result.code, result.stderr, result.out) == (code, stderr, b"")


@linux_only
def test_curl_connects_from_the_pod_address_and_localhost_is_the_pod() -> None:
    # A service address answers; the server sees the pod's address as the peer.
    _, seen = run_with_server(reply(200, b"ok"), lambda port: ["curl", "-s", f"http://127.0.0.3:{port}/"],
                              host="127.0.0.3", pod_ip="127.0.0.5")
    assert seen[0].peer == "127.0.0.5"
    # Inside the pod, localhost is the pod's own address.
    hosts = {"/etc/hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.5\tdetails-v1-abc\n"}
    result, seen = run_with_server(reply(200, b"me"), lambda port: ["curl", "-s", f"localhost:{port}/"],
                                   host="127.0.0.5", pod_ip="127.0.0.5", files=hosts, pod="details-v1-abc")
    assert (result.code, result.out) == (0, b"me")
    result, _ = run_with_server(reply(200, b"me"), lambda port: ["curl", "-s", f"details-v1-abc:{port}/"],
                                host="127.0.0.5", pod_ip="127.0.0.5", files=hosts, pod="details-v1-abc")
    assert (result.code, result.out) == (0, b"me")


async def stops_when_cancelled(task: asyncio.Task[int]) -> bool:
    """Cancel a command that would run for an hour or more; True when it ended (a generous deadline)."""
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    await asyncio.wait({task}, timeout=30)
    return task.cancelled()


def test_curl_stops_promptly_when_cancelled() -> None:
    async def main() -> bool:
        async with serve(never_answer) as (port, _):
            ctx = ExecContext(pod=CURL_POD)
            return await stops_when_cancelled(asyncio.create_task(run(["curl", "-s", f"http://127.0.0.1:{port}/"],
                                                                      ctx)))

    assert asyncio.run(main())


# -- pkill and kill against real processes -------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts ``sleep 100`` children; every one is killed and reaped at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        # Default dispositions: under nohup (or a harness that ignores signals) an ignored SIGHUP or SIGTERM
        # would be inherited, and the child would outlive the signal the test sends.
        proc = subprocess.Popen(["sleep", "100"], preexec_fn=_default_signals)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _default_signals() -> None:
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def pod_processes(*members: tuple[subprocess.Popen[bytes], str, list[str]]) -> list[PodProcess]:
    """A pod made of real children, each shown under the given name and command line (pids 1, 2, ...)."""
    now = time.time()
    return [
        PodProcess(pid=i, host_pid=proc.pid, comm=comm, args=args, container=f"c{i}", started=now - 60 + i)
        for i, (proc, comm, args) in enumerate(members, 1)
    ]


def ended_by(proc: subprocess.Popen[bytes]) -> int:
    return -proc.wait(timeout=5)


DETAILS = ["ruby", "/opt/microservices/details.rb", "9080"]


def test_pkill_ruby_terminates_the_details_process_and_nothing_else(
        spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details, outsider = spawn(), spawn()
    procs = pod_processes((details, "ruby", DETAILS))
    result = execute(["pkill", "ruby"], process_lister=lambda: procs)
    assert (result.code, result.out, result.err) == (0, b"", b"")
    assert ended_by(details) == signal.SIGTERM
    assert outsider.poll() is None


@pytest.mark.parametrize("option", [["-9"], ["-KILL"], ["-SIGKILL"], ["--signal", "KILL"], ["--signal", "9"]])
def test_pkill_signal_options(spawn: Callable[[], subprocess.Popen[bytes]], option: list[str]) -> None:
    details = spawn()
    procs = pod_processes((details, "ruby", DETAILS))
    result = execute(["pkill", *option, "ruby"], process_lister=lambda: procs)
    assert result.code == 0
    assert ended_by(details) == signal.SIGKILL


def test_pkill_never_reaches_processes_outside_the_pod(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details, outsider = spawn(), spawn()
    procs = pod_processes((details, "ruby", DETAILS))
    # The outsider really is called "sleep" on the host, but it is not one of the pod's processes.
    result = execute(["pkill", "-9", "sleep"], process_lister=lambda: procs)
    assert (result.code, result.out, result.err) == (1, b"", b"")
    stale = PodProcess(pid=1, host_pid=outsider.pid, comm="ruby", args=DETAILS, container="c", started=0.0)
    with pytest.raises(ProcessLookupError):
        ExecContext(process_lister=lambda: procs).send_signal(stale, signal.SIGKILL)
    assert details.poll() is None and outsider.poll() is None


def test_pkill_goes_through_the_kubelets_signaller(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details = spawn()
    procs = pod_processes((details, "ruby", DETAILS))
    delivered: list[tuple[int, int]] = []
    result = execute(["pkill", "-HUP", "ruby"], process_lister=lambda: procs,
                     signaller=lambda proc, sig: delivered.append((proc.pid, sig)))
    assert result.code == 0
    assert delivered == [(1, signal.SIGHUP)]
    assert details.poll() is None


def test_pkill_full_command_line_exact_and_echo(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details, envoy = spawn(), spawn()
    procs = pod_processes((details, "ruby", DETAILS), (envoy, "envoy", ["envoy", "-c", "envoy.yaml"]))
    assert execute(["pkill", "-x", "rub"], process_lister=lambda: procs).code == 1
    assert execute(["pkill", "details.rb"], process_lister=lambda: procs).code == 1
    result = execute(["pkill", "-e", "-f", "details.rb"], process_lister=lambda: procs)
    assert (result.code, result.stdout) == (0, "ruby killed (pid 1)\n")
    assert ended_by(details) == signal.SIGTERM
    assert envoy.poll() is None


PKILL_TRY = "Try `pkill --help' for more information.\n"


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (["pkill"], "pkill: no matching criteria specified\n" + PKILL_TRY),
        (["pkill", "ruby", "node"], "pkill: only one pattern can be provided\n" + PKILL_TRY),
        (["pkill", "--signal", "BOGUS", "ruby"], 'pkill: Unknown signal "BOGUS".\n' + PKILL_TRY),
    ],
)
def test_pkill_bad_usage_is_exit_2(argv: list[str], stderr: str) -> None:
    result = execute(argv)
    assert (result.code, result.stderr) == (2, stderr)


def test_pkill_bad_regex_is_exit_2() -> None:
    result = execute(["pkill", "ruby("])
    assert result.code == 2
    assert result.stderr.startswith("pkill: regex error: ")


def test_pgrep_lists_matching_pids(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    procs = pod_processes((spawn(), "ruby", DETAILS), (spawn(), "envoy", ["envoy"]))
    assert execute(["pgrep", "-l", "."], process_lister=lambda: procs).stdout == "1 ruby\n2 envoy\n"
    listed = execute(["pgrep", "-a", "ruby"], process_lister=lambda: procs).stdout
    assert listed == "1 ruby /opt/microservices/details.rb 9080\n"
    assert execute(["pgrep", "node"], process_lister=lambda: procs).code == 1


def test_kill_by_in_pod_pid(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    first, second, third = spawn(), spawn(), spawn()
    procs = pod_processes((first, "ruby", DETAILS), (second, "envoy", ["envoy"]), (third, "agent", ["agent"]))
    assert execute(["kill", "1"], process_lister=lambda: procs).code == 0
    assert execute(["kill", "-9", "2"], process_lister=lambda: procs).code == 0
    assert execute(["/bin/kill", "-s", "HUP", "3"], process_lister=lambda: procs).code == 0
    endings = (ended_by(first), ended_by(second), ended_by(third))
    assert endings == (signal.SIGTERM, signal.SIGKILL, signal.SIGHUP)


def test_kill_reports_missing_pids_and_bad_arguments(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details = spawn()
    procs = pod_processes((details, "ruby", DETAILS))
    result = execute(["kill", "123"], process_lister=lambda: procs)
    assert (result.code, result.stderr) == (1, "kill: (123): No such process\n")
    result = execute(["kill", "abc"], process_lister=lambda: procs)
    assert (result.code, result.stderr) == (1, "kill: failed to parse argument: 'abc'\n")
    result = execute(["kill"])
    assert result.code == 1 and "Usage:\n kill [options] <pid> [...]" in result.stderr
    assert details.poll() is None


def test_kill_lists_signals() -> None:
    listing = execute(["kill", "-l"]).stdout
    first_line = "HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV USR2 PIPE ALRM TERM STKFLT\n"
    assert listing.startswith(first_line + "CHLD CONT")
    assert listing.endswith("PROF WINCH POLL PWR SYS\n")
    assert execute(["kill", "-l", "9"]).stdout == "KILL\n"
    assert execute(["kill", "-l", "TERM"]).stdout == "15\n"


# -- ps ------------------------------------------------------------------------------------------------------


def test_ps_lists_the_pods_processes_and_itself_last(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    procs = pod_processes((spawn(), "ruby", DETAILS), (spawn(), "envoy", ["envoy", "-c", "e.yaml"]))
    lines = execute(["ps"], process_lister=lambda: procs).stdout.splitlines()
    assert lines[0] == "    PID TTY          TIME CMD"
    assert re.fullmatch(r"      1 \?        \d\d:\d\d:\d\d ruby", lines[1])
    assert re.fullmatch(r"      2 \?        \d\d:\d\d:\d\d envoy", lines[2])
    assert re.fullmatch(r"      3 \?        00:00:00 ps", lines[3])
    assert len(lines) == 4


def test_ps_aux_and_ef_show_command_lines(spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    procs = pod_processes((spawn(), "ruby", DETAILS))
    aux = execute(["ps", "aux"], process_lister=lambda: procs).stdout.splitlines()
    assert aux[0] == "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND"
    assert re.fullmatch(r"root +1 +\d+\.\d +\d+\.\d +\d+ +\d+ \? +\S+ +\d\d:\d\d +\d+:\d\d "
                        r"ruby /opt/microservices/details\.rb 9080", aux[1])
    assert aux[2].endswith(" ps aux") and aux[2].split()[1] == "2"
    ef = execute(["ps", "-ef"], process_lister=lambda: procs).stdout.splitlines()
    assert ef[0] == "UID          PID    PPID  C STIME TTY          TIME CMD"
    assert ef[1].endswith(" ruby /opt/microservices/details.rb 9080")
    custom = execute(["ps", "-o", "pid=,comm="], process_lister=lambda: procs).stdout.splitlines()
    assert [line.split() for line in custom] == [["1", "ruby"], ["2", "ps"]]


def test_ps_rejects_unknown_options() -> None:
    result = execute(["ps", "-Q"])
    assert result.code == 1
    assert result.stderr.startswith("error: unsupported SysV option\n\nUsage:\n ps [options]\n")
    result = execute(["ps", "-o", "bogus"])
    assert result.stderr.startswith('error: unknown user-defined format specifier "bogus"\n')


# -- files, stdin and the small tools ------------------------------------------------------------------------


def test_cat_copies_stdin_until_eof() -> None:
    assert execute(["cat"], stdin=b"line 1\nline 2").out == b"line 1\nline 2"
    assert execute(["cat", "-"], stdin=b"x\n").out == b"x\n"


def test_cat_reads_stdin_through_the_servers_reader() -> None:
    async def main() -> Result:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for piece in (b"he", b"llo\n", b""):
            queue.put_nowait(piece)

        async def reader(n: int) -> bytes:
            return await queue.get()

        written: list[bytes] = []

        async def writer(data: bytes) -> None:
            written.append(data)

        ctx = ExecContext(pod=CURL_POD, stdin_reader=reader, stdout_writer=writer)
        code = await run(["cat"], ctx)
        return Result(code, b"".join(written), bytes(ctx.stderr), ctx)

    result = asyncio.run(main())
    assert (result.code, result.out) == (0, b"hello\n")


def test_cat_files_and_missing_files() -> None:
    files = {"/etc/hostname": b"details-v1-6d86fd9949-fr59p\n"}
    assert execute(["cat", "/etc/hostname"], files=files).out == b"details-v1-6d86fd9949-fr59p\n"
    missing = execute(["cat", "/etc/nope"], files=files)
    assert (missing.code, missing.stderr) == (1, "cat: /etc/nope: No such file or directory\n")
    folder = execute(["cat", "/etc"], files=files)
    assert (folder.code, folder.stderr) == (1, "cat: /etc: Is a directory\n")


def test_unknown_commands_fail_like_the_container_runtime() -> None:
    result = execute(["bash", "-c", "curl ratings:9080 | grep id"])
    assert result.code == 127
    assert result.stderr == ('OCI runtime exec failed: exec failed: unable to start container process: '
                             'exec: "bash": executable file not found in $PATH: unknown\n')
    message = not_found_message("/opt/tool")
    assert message.endswith('exec: "/opt/tool": stat /opt/tool: no such file or directory: unknown')
    assert execute(["/opt/curl", "x"]).code == 127
    assert has_command("curl") and has_command("/usr/bin/curl") and has_command("/bin/sleep")
    assert not has_command("bash") and not has_command("./curl")
    assert {"curl", "pkill", "kill", "ps", "cat", "sleep", "grep"} <= set(commands())


def test_sleep_stops_as_soon_as_it_is_cancelled() -> None:
    async def main(argv: list[str]) -> bool:
        return await stops_when_cancelled(asyncio.create_task(run(argv, ExecContext(pod=CURL_POD))))

    assert asyncio.run(main(["sleep", "100000"]))
    assert asyncio.run(main(["/bin/sleep", "infinity"]))


def test_sleep_durations_and_bad_intervals() -> None:
    started = time.monotonic()
    assert execute(["sleep", "0.05", "0.05s"]).code == 0
    assert time.monotonic() - started >= 0.1
    bad = execute(["sleep", "x"])
    assert bad.code == 1
    assert bad.stderr == "sleep: invalid time interval 'x'\nTry 'sleep --help' for more information.\n"
    assert execute(["sleep"]).code == 1


def test_echo_env_printenv_and_hostname() -> None:
    assert execute(["echo", "terminating", "details-v1"]).out == b"terminating details-v1\n"
    assert execute(["echo", "-n", "x"]).out == b"x"
    assert execute(["echo", "-e", "a\\tb\\c ignored"]).out == b"a\tb"
    env = {"PATH": "/usr/bin:/bin", "HOSTNAME": CURL_POD, "RATINGS_SERVICE_PORT": "9080"}
    printed = execute(["env"], env=env).stdout
    assert printed == f"PATH=/usr/bin:/bin\nHOSTNAME={CURL_POD}\nRATINGS_SERVICE_PORT=9080\n"
    assert execute(["printenv", "RATINGS_SERVICE_PORT"], env=env).stdout == "9080\n"
    assert execute(["printenv", "NOPE"], env=env).code == 1
    assert execute(["env", "A=1", "printenv", "A"], env=env).stdout == "1\n"
    assert execute(["hostname"]).stdout == f"{CURL_POD}\n"
    assert execute(["hostname", "-i"], pod_ip="127.64.0.7").stdout == "127.64.0.7\n"
    assert execute(["true"]).code == 0 and execute(["false"]).code == 1


def test_grep_on_files_and_stdin() -> None:
    page = b"<html>\n<head><title>Simple Bookstore App</title></head>\n<body>Book Details</body>\n"
    title = execute(["grep", "-o", "<title>.*</title>"], stdin=page).out
    assert title == b"<title>Simple Bookstore App</title>\n"
    hosts = {"/etc/hosts": b"127.0.0.1\tlocalhost\n127.64.0.5\tdetails-v1-abc\n"}
    assert execute(["grep", "details", "/etc/hosts"], files=hosts).out == b"127.64.0.5\tdetails-v1-abc\n"
    assert execute(["grep", "-c", "127", "/etc/hosts"], files=hosts).out == b"2\n"
    inverted = execute(["grep", "-iv", "LOCALHOST", "/etc/hosts"], files=hosts).out
    assert inverted == b"127.64.0.5\tdetails-v1-abc\n"
    assert execute(["grep", "-q", "Details"], stdin=page + b"x" * 10).code == 0
    assert execute(["grep", "ratings", "/etc/hosts"], files=hosts).code == 1
    missing = execute(["grep", "x", "/nope"])
    assert (missing.code, missing.stderr) == (2, "grep: /nope: No such file or directory\n")
    assert execute(["grep", "a+b"], stdin=b"a+b\naab\n").out == b"a+b\n"  # a basic regex, as grep reads it
    assert execute(["grep", "-E", "a+b"], stdin=b"a+b\naab\n").out == b"aab\n"


def test_head_wc_and_ls() -> None:
    assert execute(["head", "-n", "2"], stdin=b"1\n2\n3\n").out == b"1\n2\n"
    assert execute(["head", "-c", "3"], stdin=b"abcdef").out == b"abc"
    assert execute(["wc", "-l"], stdin=b"a\nb\n").out == b"2\n"
    files = {"/etc/hosts": b"x\n", "/etc/hostname": b"pod\n", "/etc/resolv.conf": b"search x\n"}
    assert execute(["ls", "/etc"], files=files).out == b"hostname\nhosts\nresolv.conf\n"
    missing = execute(["ls", "/nope"])
    assert (missing.code, missing.stderr) == (2, "ls: cannot access '/nope': No such file or directory\n")


def test_unknown_is_the_exit_code_of_a_command_that_never_finished() -> None:
    assert UNKNOWN == -1


def test_wc_reports_missing_files_like_coreutils() -> None:
    missing = execute(["wc", "/nope"])
    assert (missing.code, missing.out, missing.stderr) == (1, b"", "wc: /nope: No such file or directory\n")
    assert execute(["wc", "-l", "/nope"]).stderr == "wc: /nope: No such file or directory\n"
    files = {"/etc/hostname": b"details-v1-abc\n"}
    mixed = execute(["wc", "/nope", "/etc/hostname"], files=files)
    assert mixed.code == 1
    assert mixed.stderr == "wc: /nope: No such file or directory\n"
    assert mixed.stdout == " 1  1 15 /etc/hostname\n 1  1 15 total\n"
    folder = execute(["wc", "/etc"], files=files)
    assert (folder.code, folder.stderr) == (1, "wc: /etc: Is a directory\n")


def test_wc_counts_stdin_as_it_streams() -> None:
    text = b"one two\nthree  four five\n\xc3\xa9t\xc3\xa9\n"
    assert execute(["wc"], stdin=text).stdout == "      3       6      31\n"
    assert execute(["wc", "-m"], stdin=text).stdout == "29\n"

    async def in_pieces() -> bytes:
        pieces = [b"one tw", b"o\nthree", b"  four five\n\xc3", b"\xa9t\xc3\xa9\n", b""]

        async def reader(n: int) -> bytes:
            return pieces.pop(0)

        ctx = ExecContext(pod=CURL_POD, stdin_reader=reader)
        await run(["wc", "-lwm"], ctx)
        return bytes(ctx.stdout)

    assert asyncio.run(in_pieces()) == b"      3       6      29\n"


def test_head_reads_only_the_lines_it_prints_from_stdin() -> None:
    async def main() -> tuple[bytes, int]:
        pieces = [b"1\n2\n", b"3\n4\n", b"5\n"]

        async def reader(n: int) -> bytes:
            return pieces.pop(0) if pieces else b""

        ctx = ExecContext(pod=CURL_POD, stdin_reader=reader)
        await run(["head", "-n", "3"], ctx)
        return bytes(ctx.stdout), len(pieces)

    assert asyncio.run(main()) == (b"1\n2\n3\n", 1)


# -- the pod boundary and the limits -------------------------------------------------------------------------

HOST_PATHS = ["/etc/passwd", "/proc/self/environ", "/proc/1/cmdline", "../../../../etc/passwd", __file__]


@pytest.mark.parametrize("path", HOST_PATHS)
def test_no_host_file_is_readable_from_a_pod(path: str) -> None:
    for argv, code in ((["cat", path], 1), (["head", path], 1), (["wc", path], 1), (["grep", "-c", "", path], 2),
                       (["ls", path], 2)):
        result = execute(argv)
        assert (result.code, result.out) == (code, b""), argv
        assert "No such file or directory" in result.stderr
    assert execute(["curl", "-sS", f"file://{path}"]).code == 1


def test_curl_output_files_are_capped_per_container() -> None:
    body = b"x" * 300
    files = {"/etc/hosts": b"127.0.0.1\tlocalhost\n"}
    result, _ = run_with_server(reply(200, body),
                                lambda port: ["curl", "-sS", "-o", "/tmp/big", f"http://127.0.0.1:{port}/"],
                                files=files, files_limit=200)
    assert result.code == 23
    assert result.stderr == ("curl: (23) Failure writing output to destination: /tmp/big: File too large "
                             "(a container keeps at most 0.000190735 MiB of files in memory)\n")
    assert sum(len(v) for v in result.ctx.files.values()) == 200
    assert result.ctx.files["/etc/hosts"] == b"127.0.0.1\tlocalhost\n"
    fits, _ = run_with_server(reply(200, body[:100]),
                              lambda port: ["curl", "-sS", "-o", "/tmp/small", f"http://127.0.0.1:{port}/"],
                              files_limit=200)
    assert (fits.code, fits.ctx.files["/tmp/small"]) == (0, body[:100])


def test_a_whole_stdin_past_the_input_limit_is_refused() -> None:
    line = b"y" * 1023 + b"\n"
    big = line * (INPUT_LIMIT // len(line) + 1)
    result = execute(["head", "-n", "-1"], stdin=big)  # all but the last line: head must hold all of it
    assert (result.code, result.out) == (1, b"")
    assert result.stderr == "head: cannot open '-' for reading: File too large\n"
    # Tools that stream have no limit.
    assert execute(["wc", "-l"], stdin=big).stdout == f"{INPUT_LIMIT // len(line) + 1}\n"
    assert execute(["cat", "-n"], stdin=big).out.endswith(f"{INPUT_LIMIT // len(line) + 1}\t".encode() + line)


RUNAWAY = ["grep", "-E", "(a+)+$"]
RUNAWAY_INPUT = b"a" * 64 + b"!\n"


def test_a_backtracking_grep_is_cut_while_other_commands_run() -> None:
    async def main() -> tuple[Result, Result, bool]:
        grep = asyncio.create_task(exec_async(RUNAWAY, stdin=RUNAWAY_INPUT))
        echo = await exec_async(["echo", "still here"])
        grep_was_running = not grep.done()
        return await grep, echo, grep_was_running

    grep, echo, grep_was_running = asyncio.run(main())
    assert (echo.code, echo.out) == (0, b"still here\n")
    assert grep_was_running
    assert grep.code == 2
    assert grep.stderr.startswith("grep: regular expression stopped after 2 s of CPU time")
    assert grep.out == b""


def test_a_cut_grep_leaves_a_working_engine_and_plain_patterns_need_none() -> None:
    assert execute(RUNAWAY, stdin=RUNAWAY_INPUT).code == 2
    assert execute(["grep", "-E", "(a+)+!$"], stdin=RUNAWAY_INPUT).out == RUNAWAY_INPUT
    assert execute(["grep", "-E", "a{2,"], stdin=b"a{2,\n").code == 0  # Python reads it as a literal too
    bad = execute(["grep", "-E", "(unclosed"], stdin=b"x\n")
    assert (bad.code, bad.stderr) == (2, "grep: missing ), unterminated subpattern at position 0\n")
    assert execute(["grep", "-io", "details"], stdin=b"Book Details\n").out == b"Details\n"


def test_a_backtracking_pkill_pattern_is_cut_and_kills_nothing(
        spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
    details = spawn()
    procs = pod_processes((details, "ruby", ["ruby", "a" * 64 + "!"]))
    result = execute(["pkill", "-f", "(a+)+$"], process_lister=lambda: procs)
    assert result.code == 3
    assert result.stderr.startswith("pkill: regular expression stopped after 2 s of CPU time")
    assert details.poll() is None


def test_a_cancelled_grep_stops_its_worker() -> None:
    regex.shutdown()  # start from no worker, so the one this grep uses is known

    async def main() -> tuple[bool, int]:
        pieces = [RUNAWAY_INPUT]

        async def reader(n: int) -> bytes:
            return pieces.pop() if pieces else b""

        ctx = ExecContext(pod=CURL_POD, stdin_reader=reader)
        task = asyncio.create_task(run(RUNAWAY, ctx))
        while not regex.worker_pids():
            await asyncio.sleep(0.01)
        worker = regex.worker_pids()[0]
        return await stops_when_cancelled(task), worker

    stopped, worker = asyncio.run(main())
    assert stopped
    deadline = time.monotonic() + 30
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{worker}").exists(), "the cancelled grep's worker was killed and reaped"


def test_cat_numbers_and_head_cuts_lines_split_across_chunks() -> None:
    async def main(argv: list[str], pieces: list[bytes]) -> bytes:
        async def reader(n: int) -> bytes:
            return pieces.pop(0) if pieces else b""

        ctx = ExecContext(pod=CURL_POD, stdin_reader=reader)
        await run(argv, ctx)
        return bytes(ctx.stdout)

    numbered = asyncio.run(main(["cat", "-nE"], [b"a\nb", b"c\n\nd"]))
    assert numbered == b"     1\ta$\n     2\tbc$\n     3\t$\n     4\td"
    assert asyncio.run(main(["head", "-c", "4"], [b"ab", b"cd", b"ef"])) == b"abcd"
    assert execute(["head", "-n", "-1"], stdin=b"1\n2\n3\n").out == b"1\n2\n"
    assert execute(["head", "-n", "-2"], stdin=b"1\n2\n3").out == b"1\n"
    assert execute(["head", "-n", "-5"], stdin=b"1\n2\n3").out == b""
    assert execute(["head", "-c", "-2"], stdin=b"abcd").out == b"ab"
    files = {"/tmp/f": b"".join(f"{i}\n".encode() for i in range(100000))}
    assert execute(["head", "-n", "2", "/tmp/f"], files=files).out == b"0\n1\n"
    assert execute(["grep", "-c", "7", "/tmp/f"], files=files).out == b"40951\n"
    assert execute(["grep", "-cE", "^9+$", "/tmp/f"], files=files).out == b"5\n"
