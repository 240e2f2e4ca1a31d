"""The sandbox's container images, run as the real processes the kubelet starts.

Every service here is a child process started exactly as the kubelet starts it
(``python -S -m labkit.sandbox.images.run <image> <argv...>`` with the LABKIT_* environment), on its own
loopback address, found through a hosts file written with :func:`labkit.sandbox.dns.write_hosts`. Readiness is
the byte the process writes on LABKIT_READY_FD. Every process is killed by pid at teardown.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

import labkit
from labkit.sandbox import dns
from labkit.sandbox.images import ImageSpec, match_image, process_name_for
from labkit.sandbox.images import details as details_image
from labkit.sandbox.images import productpage as productpage_image
from labkit.sandbox.images import ratings as ratings_image
from labkit.sandbox.images import reviews as reviews_image

REPO = Path(labkit.__file__).resolve().parent.parent
RUN = [sys.executable, "-S", "-m", "labkit.sandbox.images.run"]  # as the kubelet starts them
READY_TIMEOUT = 10.0

DETAILS_0 = (
    b'{"id":0,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,'
    b'"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}'
)
TEXT1 = "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"
TEXT2 = "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."


def reviews_json(pid: str, pod: str, cluster: str, r1: str = "", r2: str = "") -> bytes:
    """The byte-exact reviews body from the contract, with optional rating fragments."""
    return (
        f'{{"id": "{pid}","podname": "{pod}","clustername": "{cluster}","reviews": ['
        f'{{  "reviewer": "Reviewer1",  "text": "{TEXT1}"{r1}}},'
        f'{{  "reviewer": "Reviewer2",  "text": "{TEXT2}"{r2}}}]}}'
    ).encode()


def stars(n: int, color: str) -> str:
    return f', "rating": {{"stars": {n}, "color": "{color}"}}'


RATING_ERROR = ', "rating": {"error": "Ratings service is currently unavailable"}'


# --- process harness ------------------------------------------------------------------------------


def _addresses() -> Iterator[str]:
    # A random /16 inside 127/8 per run, so parallel runs and a live sandbox never share an address.
    a, b = random.randint(100, 199), random.randint(1, 254)
    for n in range(2, 255):
        yield f"127.{a}.{b}.{n}"


_ADDRESSES = _addresses()


def port_is_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


@dataclass
class Container:
    """One started container process."""

    image: str
    ip: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    ready: bool
    startup: float
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://{self.ip}:{self.port}{path}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def comm(self) -> str:
        return Path(f"/proc/{self.pid}/comm").read_text().strip()

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(status.split("VmRSS:")[1].split()[0])


class Cluster:
    """Starts containers the way the kubelet does and kills every one of them at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts_file = str(root / "hosts")
        self.services: dict[str, list[str]] = {}
        self.containers: list[Container] = []
        dns.write_hosts(self.hosts_file, {})

    def service(self, name: str, ip: str) -> None:
        """Point the cluster name ``name`` at ``ip`` (a Service with one endpoint, as far as DNS goes)."""
        self.services[ip] = [f"{name}.default.svc.cluster.local", f"{name}.default.svc", f"{name}.default"]
        dns.write_hosts(self.hosts_file, self.services)

    def start(
        self,
        image: str,
        argv: list[str],
        *,
        port: int,
        ip: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        parent_pid: int | None = None,
        process_name: str | None = None,
    ) -> Container:
        spec = match_image(image)
        assert spec is not None, image
        ip = ip or next(_ADDRESSES)
        log = self.root / f"{spec.name}-{ip}-{len(self.containers)}.log"
        ready_r, ready_w = os.pipe()
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(REPO),
            "HOSTNAME": f"{spec.name}-test-pod",
            **spec.env,
            **(env or {}),
            "LABKIT_POD_IP": ip,
            "LABKIT_NAMESPACE": "default",
            "LABKIT_HOSTS_FILE": self.hosts_file,
            "LABKIT_READY_FD": str(ready_w),
            "LABKIT_PARENT_PID": str(os.getpid() if parent_pid is None else parent_pid),
            "LABKIT_PROCESS_NAME": process_name or process_name_for(spec, argv),
        }
        began = time.monotonic()
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [*RUN, spec.name, *argv],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                pass_fds=(ready_w,),
            )
        os.close(ready_w)
        container = Container(image, ip, port, proc, log, False, 0.0, full_env)
        self.containers.append(container)
        try:
            if wait:
                readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
                data = os.read(ready_r, 1) if readable else b""
                container.ready = data == b"R"
                container.startup = time.monotonic() - began
                assert readable, f"{image} did not report ready in {READY_TIMEOUT} s; log:\n{container.logs()}"
        finally:
            os.close(ready_r)
        return container

    def stop(self) -> None:
        for c in self.containers:
            if c.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(timeout=5)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def start_details(c: Cluster, **kw: Any) -> Container:
    ip = next(_ADDRESSES)
    port = free_port(ip)
    return c.start(
        "docker.io/istio/examples-bookinfo-details-v1:1.19.1",
        ["ruby", "/opt/microservices/details.rb", str(port)],
        ip=ip,
        port=port,
        **kw,
    )


def start_ratings(c: Cluster, version: str = "v1", **kw: Any) -> Container:
    ip = next(_ADDRESSES)
    port = free_port(ip)
    return c.start(
        f"registry.istio.io/release/examples-bookinfo-ratings-{version}:1.20.3",
        ["node", "/opt/microservices/ratings.js", str(port)],
        ip=ip,
        port=port,
        **kw,
    )


def start_reviews(c: Cluster, version: str, ratings_port: int | None = None, **kw: Any) -> Container:
    ip = next(_ADDRESSES)
    if not port_is_free(ip, 9080):
        pytest.skip("port 9080 is taken on every loopback address (something listens on 0.0.0.0:9080)")
    env = dict(kw.pop("env", None) or {})
    if ratings_port is not None:
        env["RATINGS_SERVICE_PORT"] = str(ratings_port)
    spec = match_image(f"istio/examples-bookinfo-reviews-{version}")
    assert spec is not None
    return c.start(
        f"istio/examples-bookinfo-reviews-{version}",
        list(spec.default_command),
        ip=ip,
        port=9080,
        env=env,
        **kw,
    )


def start_productpage(c: Cluster, env: dict[str, str], **kw: Any) -> Container:
    ip = next(_ADDRESSES)
    port = free_port(ip)
    argv = [
        "gunicorn",
        "-b",
        f"[::]:{port}",
        "productpage:app",
        "-w",
        "8",
        "--keep-alive",
        "2",
        "-k",
        "gevent",
    ]
    return c.start(
        "registry.istio.io/release/examples-bookinfo-productpage-v1:1.20.3",
        argv,
        ip=ip,
        port=port,
        env=env,
        **kw,
    )


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> Response:
    """One HTTP request on a fresh connection (no proxies, unlike urllib)."""
    m = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url)
    assert m, url
    conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=timeout)
    try:
        conn.request(method, m.group(3), body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class Stub:
    """A capturing HTTP server standing in for a downstream service: records headers, answers as told."""

    def __init__(self, ip: str, status: int = 200, body: bytes = b"{}", delay: float = 0.0) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.status, self.body, self.delay = status, body, delay
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                time.sleep(stub.delay)
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((ip, 0), Handler)
        self.server.daemon_threads = True
        self.ip, self.port = ip, int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stubs() -> Iterator[list[Stub]]:
    made: list[Stub] = []
    yield made
    for s in made:
        s.close()


# --- the image registry ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "name", "comm", "env"),
    [
        (
            "registry.istio.io/release/examples-bookinfo-details-v1:1.20.3",
            "details",
            "ruby",
            {"SERVICE_VERSION": "v1"},
        ),
        ("docker.io/istio/examples-bookinfo-details-v1:1.19.1", "details", "ruby", {"SERVICE_VERSION": "v1"}),
        ("istio/examples-bookinfo-ratings-v1", "ratings", "node", {"SERVICE_VERSION": "v1"}),
        (
            "istio/examples-bookinfo-ratings-v-faulty:1.20.3",
            "ratings",
            "node",
            {"SERVICE_VERSION": "v-faulty"},
        ),
        ("istio/examples-bookinfo-ratings-v-delayed", "ratings", "node", {"SERVICE_VERSION": "v-delayed"}),
        (
            "istio/examples-bookinfo-ratings-v-unavailable",
            "ratings",
            "node",
            {"SERVICE_VERSION": "v-unavailable"},
        ),
        (
            "istio/examples-bookinfo-ratings-v-unhealthy",
            "ratings",
            "node",
            {"SERVICE_VERSION": "v-unhealthy"},
        ),
        (
            "istio/examples-bookinfo-reviews-v1",
            "reviews",
            "java",
            {"SERVICE_VERSION": "v1", "ENABLE_RATINGS": "false", "STAR_COLOR": "black"},
        ),
        (
            "istio/examples-bookinfo-reviews-v2@sha256:" + "a" * 64,
            "reviews",
            "java",
            {"SERVICE_VERSION": "v2", "ENABLE_RATINGS": "true", "STAR_COLOR": "black"},
        ),
        (
            "localhost:5000/istio/examples-bookinfo-reviews-v3:1.19.1",
            "reviews",
            "java",
            {"SERVICE_VERSION": "v3", "ENABLE_RATINGS": "true", "STAR_COLOR": "red"},
        ),
        ("docker.io/istio/examples-bookinfo-productpage-v1:1.20.1", "productpage", "gunicorn", {}),
        ("docker.io/curlimages/curl:8.16.0", "curl", "curl", {}),
        ("curlimages/curl", "curl", "curl", {}),
    ],
)
def test_match_image_knows_every_lesson_image(image: str, name: str, comm: str, env: dict[str, str]) -> None:
    spec = match_image(image)
    assert spec is not None
    assert (spec.name, spec.module, spec.env) == (name, f"labkit.sandbox.images.{name}", env)
    assert process_name_for(spec, list(spec.default_command)) == comm
    assert spec.ports == (() if name == "curl" else (9080,))


def test_match_image_knows_busybox_and_nginx() -> None:
    for image, name in (("busybox", "busybox"), ("docker.io/library/busybox:1.36", "busybox"),
                        ("nginx", "nginx"), ("nginx:1.27-alpine", "nginx")):
        spec = match_image(image)
        assert spec is not None and spec.name == name, image
    nginx = match_image("nginx")
    assert nginx is not None and nginx.command_line([], []) == ["nginx", "-g", "daemon off;"]
    assert nginx.command_line(["sleep"], ["60"]) == ["sleep", "60"]


def test_match_image_rejects_unknown_images() -> None:
    for image in (
        "httpd",
        "docker.io/library/redis:7",
        "someone/busybox",
        "istio/examples-bookinfo-details-v9",
        "curl",
        "",
    ):
        assert match_image(image) is None, image


def test_default_commands_and_specs_are_independent_copies() -> None:
    spec = match_image("istio/examples-bookinfo-productpage-v1")
    assert isinstance(spec, ImageSpec)
    assert spec.default_command == (
        "gunicorn", "-b", "[::]:9080", "productpage:app", "-w", "8", "--keep-alive", "2", "-k", "gevent",
    )  # fmt: skip
    spec.env["X"] = "1"  # a caller merging env must not change the registry
    again = match_image("istio/examples-bookinfo-productpage-v1")
    assert again is not None and "X" not in again.env
    reviews = match_image("istio/examples-bookinfo-reviews-v1")
    assert reviews is not None and reviews.default_command == (
        "/opt/ol/wlp/bin/server",
        "run",
        "defaultServer",
    )


def test_process_name_for_curl_follows_the_command() -> None:
    curl = match_image("curlimages/curl")
    details = match_image("istio/examples-bookinfo-details-v1")
    assert curl is not None and details is not None
    assert process_name_for(curl, ["/bin/sleep", "infinity"]) == "sleep"
    assert process_name_for(curl, ["sleep", "3650d"]) == "sleep"
    assert process_name_for(curl, ["curl"]) == "curl"
    assert process_name_for(details, ["/usr/local/bin/ruby", "details.rb", "9080"]) == "ruby"
    assert process_name_for(curl, ["a-very-long-command-name"]) == "a-very-long-com"


# --- details --------------------------------------------------------------------------------------


def test_details_routes(cluster: Cluster) -> None:
    d = start_details(cluster)
    r = request(d.url("/details/0"))
    assert (r.status, r.headers["Content-Type"], r.body) == (200, "application/json", DETAILS_0)
    assert len(r.body) == 178
    assert request(d.url("/details/7")).body == DETAILS_0.replace(b'"id":0', b'"id":7')
    assert request(d.url("/details/-3?x=1")).body.startswith(b'{"id":-3,"author"')
    assert request(d.url("/details/7/")).body.startswith(b'{"id":7,')
    for path in ("/details/abc", "/details", "/details/", "/details/7/extra", "/details/1.5"):
        r = request(d.url(path))
        assert (r.status, r.body) == (400, b'{"error":"please provide numeric product id"}'), path
    r = request(d.url("/health"))
    assert (r.status, r.headers["Content-Type"], r.body) == (
        200,
        "application/json",
        b'{"status":"Details is healthy"}',
    )
    r = request(d.url("/nothere"))
    assert r.status == 404 and r.headers["Content-Type"].startswith("text/html")
    assert "<TITLE>Not Found</TITLE>" in r.text and "`/nothere' not found." in r.text
    assert request(d.url("/detailsX/0")).status == 404  # WEBrick mounts match whole path segments
    head = request(d.url("/details/0"), method="HEAD")
    assert (head.status, head.headers["Content-Length"], head.body) == (200, "178", b"")
    assert "WEBrick" in d.logs() and '"GET /details/0 HTTP/1.1" 200 178' in d.logs()


def test_ruby_integer_parses_like_ruby() -> None:
    cases = {"7": 7, " 7 ": 7, "-7": -7, "+7": 7, "010": 8, "0x1A": 26, "0b101": 5, "0o17": 15, "1_000": 1000}
    for text, value in cases.items():
        assert details_image.ruby_integer(text) == value, text
    for text in ("", "abc", "08", "1__0", "_1", "1_", "7a", "1.5", "0x"):
        assert details_image.ruby_integer(text) is None, text


def test_details_start_up_errors(cluster: Cluster) -> None:
    missing = cluster.start("istio/examples-bookinfo-details-v1", ["ruby", "details.rb"], port=0, wait=False)
    assert missing.proc.wait(timeout=10) == 255
    assert "usage: details.rb port" in missing.logs()


# --- ratings --------------------------------------------------------------------------------------


def test_ratings_routes(cluster: Cluster) -> None:
    r7 = start_ratings(cluster)
    assert f"Server listening on: http://0.0.0.0:{r7.port}" in r7.logs()
    cases = {"/ratings/0": 0, "/ratings/7": 7, "/ratings/123456": 123456, "/ratings/-1": -1,
             "/ratings/7?x=1": 7, "/ratings/0x1A": 26, "/ratings/12abc": 12}  # fmt: skip
    for path, pid in cases.items():
        r = request(r7.url(path))
        assert r.status == 200, path
        assert r.body == f'{{"id":{pid},"ratings":{{"Reviewer1":5,"Reviewer2":4}}}}'.encode(), path
        assert r.headers["Content-type"] == "application/json"
        assert r.headers["Transfer-Encoding"] == "chunked"
    for path in ("/ratings/abc", "/ratings/", "/ratings/7/extra"):
        r = request(r7.url(path))
        assert (r.status, r.body) == (400, b'{"error":"please provide numeric product ID"}'), path
    for path in ("/ratings", "/", "/nothere"):
        r = request(r7.url(path))
        assert (r.status, r.body, r.headers["Content-Type"]) == (404, b"", None), path
    r = request(r7.url("/health"))
    assert (r.status, r.body) == (200, b'{"status":"Ratings is healthy"}')
    assert "GET /ratings/7?x=1" in r7.logs().splitlines()


def test_ratings_post_is_kept_per_process(cluster: Cluster) -> None:
    a, b = start_ratings(cluster), start_ratings(cluster)
    r = request(a.url("/ratings/7"), "POST", b'{"Reviewer1":1,"Reviewer2":1}')
    assert (r.status, r.body) == (200, b'{"id":7,"ratings":{"Reviewer1":1,"Reviewer2":1}}')
    assert request(a.url("/ratings/7")).body == b'{"id":7,"ratings":{"Reviewer1":1,"Reviewer2":1}}'
    assert request(a.url("/ratings/8")).body == b'{"id":8,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    # Another replica never saw the POST: the lesson's point about in-memory state.
    assert request(b.url("/ratings/7")).body == b'{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    r = request(a.url("/ratings/7"), "POST", b"not json")
    assert (r.status, r.body) == (400, b'{"error":"please provide valid ratings JSON"}')
    r = request(a.url("/ratings/abc"), "POST", b'{"Reviewer1":1}')
    assert (r.status, r.body) == (400, b'{"error":"please provide numeric product ID"}')
    r = request(a.url("/ratings/9"), "POST", b'{"b":2.0,"10":1,"a":1e21}')
    assert r.body == b'{"id":9,"ratings":{"10":1,"b":2,"a":1e+21}}'  # JavaScript's key order and numbers


def test_ratings_never_answers_other_methods(cluster: Cluster) -> None:
    r = start_ratings(cluster)
    for method in ("PUT", "DELETE", "PATCH", "HEAD"):
        with pytest.raises(TimeoutError):
            request(r.url("/ratings/7"), method, b"{}" if method != "HEAD" else None, timeout=0.5)
    # The hung requests do not block the server.
    assert request(r.url("/ratings/7")).status == 200
    assert "PUT /ratings/7" in r.logs()


def test_ratings_v2_refuses_post(cluster: Cluster) -> None:
    r = start_ratings(cluster, env={"SERVICE_VERSION": "v2"})
    resp = request(r.url("/ratings/7"), "POST", b'{"Reviewer1":1}')
    assert (resp.status, resp.body) == (501, b'{"error":"Post not implemented for database backed ratings"}')


def test_ratings_v_faulty_fails_about_half_the_calls(cluster: Cluster) -> None:
    r = start_ratings(cluster, "v-faulty")
    statuses = [request(r.url("/ratings/7")) for _ in range(60)]
    assert {s.status for s in statuses} == {200, 503}
    assert next(s for s in statuses if s.status == 503).body == b'{"error":"Service unavailable"}'


@pytest.mark.slow
def test_ratings_v_delayed_delays_about_half_the_calls(cluster: Cluster) -> None:
    r = start_ratings(cluster, "v-delayed")
    times: list[float] = []

    def timed() -> None:
        began = time.monotonic()
        assert request(r.url("/ratings/7"), timeout=15).status == 200
        times.append(time.monotonic() - began)

    threads = [threading.Thread(target=timed) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 12
    # some calls were delayed (a sleep lasts at least its time) and some were not: a bimodal split at the delay,
    # not a claim about how fast the others were
    delayed = [t for t in times if t >= ratings_image.DELAY_SECONDS - 0.1]
    assert 0 < len(delayed) < len(times), times


def test_ratings_toggling_versions_follow_the_clock() -> None:
    unavailable = ratings_image.Ratings("v-unavailable", started=0.0)
    assert [unavailable.unavailable(t) for t in (0, 59, 60, 119, 120)] == [False, False, True, True, False]
    assert unavailable.healthy(70)
    unhealthy = ratings_image.Ratings("v-unhealthy", started=0.0)
    assert [unhealthy.healthy(t) for t in (0, 899, 900, 1799, 1800)] == [True, True, False, False, True]
    assert unhealthy.unavailable(900) and not unhealthy.unavailable(10)
    assert not ratings_image.Ratings("v1", started=0.0).unavailable(90)


def test_javascript_number_formatting() -> None:
    js = ratings_image.js_number
    assert [js(7.0), js(-1.0), js(0.5), js(1e21), js(1e-7), js(1e-6), js(123456789012345680000.0)] == [
        "7", "-1", "0.5", "1e+21", "1e-7", "0.000001", "123456789012345680000",
    ]  # fmt: skip
    assert js(float("inf")) == "null"
    assert ratings_image.js_parse_int("  42abc") == 42.0 and ratings_image.js_parse_int("-") is None


# --- reviews --------------------------------------------------------------------------------------


def test_reviews_v1_body_is_byte_exact(cluster: Cluster) -> None:
    r = start_reviews(cluster, "v1", env={"HOSTNAME": "reviews-v1-77c65dc5c6-kjvxs"})
    resp = request(r.url("/reviews/0"))
    assert (resp.status, resp.headers["Content-Type"]) == (200, "application/json")
    assert resp.body == reviews_json("0", "reviews-v1-77c65dc5c6-kjvxs", "null")
    json.loads(resp.body)
    assert request(r.url("/reviews/007")).body == reviews_json("7", "reviews-v1-77c65dc5c6-kjvxs", "null")
    health = request(r.url("/health"))
    assert (health.status, health.body) == (200, b'{"status": "Reviews is healthy"}')
    for path in ("/reviews/abc", "/reviews/99999999999", "/reviews", "/"):
        assert request(r.url(path)).status == 404, path
    assert "CWWKF0011I" in r.logs()


def test_reviews_v2_and_v3_show_stars_from_ratings(cluster: Cluster) -> None:
    ratings = start_ratings(cluster)
    cluster.service("ratings", ratings.ip)
    v2 = start_reviews(cluster, "v2", ratings.port, env={"HOSTNAME": "reviews-v2-1", "CLUSTER_NAME": "east"})
    v3 = start_reviews(cluster, "v3", ratings.port, env={"HOSTNAME": "reviews-v3-1"})
    assert request(v2.url("/reviews/7")).body == reviews_json(
        "7", "reviews-v2-1", "east", stars(5, "black"), stars(4, "black")
    )
    assert request(v3.url("/reviews/0")).body == reviews_json(
        "0", "reviews-v3-1", "null", stars(5, "red"), stars(4, "red")
    )


def test_reviews_v2_reports_ratings_errors(cluster: Cluster, stubs: list[Stub]) -> None:
    down = next(_ADDRESSES)
    cluster.service("ratings", down)  # the name resolves, but nothing listens there
    v2 = start_reviews(cluster, "v2", free_port(down), env={"HOSTNAME": "reviews-v2-1"})
    body = reviews_json("0", "reviews-v2-1", "null", RATING_ERROR, RATING_ERROR)
    resp = request(v2.url("/reviews/0"))
    assert (resp.status, resp.body) == (200, body)
    assert "Error: unable to contact http://ratings:" in v2.logs()
    # A ratings answer that is not 200 counts as a failure too.
    stub = Stub(down, status=503, body=b'{"error":"Service unavailable"}')
    stubs.append(stub)
    v2b = start_reviews(cluster, "v2", stub.port, env={"HOSTNAME": "reviews-v2-1"})
    assert request(v2b.url("/reviews/0")).body == body
    assert "got status of 503" in v2b.logs()


def test_reviews_forwards_tracing_and_identity_headers_to_ratings(cluster: Cluster, stubs: list[Stub]) -> None:
    stub = Stub(next(_ADDRESSES), body=b'{"id":0,"ratings":{"Reviewer1":3,"Reviewer2":1}}')
    stubs.append(stub)
    cluster.service("ratings", stub.ip)
    v3 = start_reviews(cluster, "v3", stub.port, env={"HOSTNAME": "r"})
    incoming = {
        "x-request-id": "req-1",
        "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        "x-b3-parentspanid": "05e3ac9a4f6e3b90",
        "end-user": "jason",
        "user-agent": "curl/8.16.0",
        "x-custom": "dropped",
    }
    resp = request(v3.url("/reviews/0"), headers=incoming)
    assert resp.body == reviews_json("0", "r", "null", stars(3, "red"), stars(1, "red"))
    path, seen = stub.requests[-1]
    assert path == "/ratings/0"
    assert seen["host"] == f"ratings:{stub.port}"
    for name, value in incoming.items():
        if name != "x-custom":
            assert seen[name] == value, name
    assert "x-custom" not in seen


def test_java_int() -> None:
    assert [reviews_image.java_int(t) for t in ("7", "+7", "-7", "007", "2147483647")] == [
        7,
        7,
        -7,
        7,
        2**31 - 1,
    ]
    assert [reviews_image.java_int(t) for t in ("2147483648", "7a", "", " 7")] == [None] * 4


# --- productpage ----------------------------------------------------------------------------------


@dataclass
class Bookinfo:
    details: Container
    ratings: Container
    reviews: Container
    productpage: Container


def start_bookinfo(c: Cluster, reviews_version: str = "v2") -> Bookinfo:
    details, ratings = start_details(c), start_ratings(c)
    c.service("details", details.ip)
    c.service("ratings", ratings.ip)
    reviews = start_reviews(c, reviews_version, ratings.port, env={"HOSTNAME": f"reviews-{reviews_version}-abc"})
    c.service("reviews", reviews.ip)
    page = start_productpage(
        c,
        {
            "DETAILS_SERVICE_PORT": str(details.port),
            "REVIEWS_SERVICE_PORT": "9080",
            "RATINGS_SERVICE_PORT": str(ratings.port),
        },
    )
    return Bookinfo(details, ratings, reviews, page)


def glyphs(html: str, kind: str) -> int:
    return len(re.findall(rf'class="glyphicon glyphicon-{kind}"', html))


def test_productpage_healthy_page(cluster: Cluster) -> None:
    b = start_bookinfo(cluster)
    r = request(b.productpage.url("/productpage?u=normal"))
    assert (r.status, r.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    page = r.text
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>Simple Bookstore App</title>" in page
    assert '<h3 class="text-center text-primary">The Comedy of Errors</h3>' in page
    assert '<p>Summary: <a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>' in page
    assert '<h4 class="text-center text-primary">Book Details</h4>' in page
    shown = {"Type": "paperback", "Pages": "200", "Publisher": "PublisherA", "Language": "English",
             "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"}  # fmt: skip
    for label, value in shown.items():
        assert f"<dt>{label}:</dt>{value}" in page
    assert '<h4 class="text-center text-primary">Book Reviews</h4>' in page
    assert TEXT1 in page and TEXT2 in page and "<small>Reviewer1</small>" in page
    assert glyphs(page, "star") == 9 and glyphs(page, "star-empty") == 1  # 5 + 4 stars
    assert page.count('<font color="black">') == 2
    assert "<dt>Reviews served by:</dt>\n<u>reviews-v2-abc</u>" in page
    assert 'data-section="details" data-status="ok"' in page
    assert 'data-section="reviews" data-status="ok"' in page
    assert page.count('data-ratings="ok"') == 2
    assert "Error fetching" not in page
    # Self-contained: inline style, nothing loaded from anywhere.
    assert "<style>" in page and not re.search(r'<(link|script)\b|src="', page)
    assert "Sign in" in page and 'placeholder="User Name"' in page
    logs = b.productpage.logs()
    assert "Starting gunicorn" in logs and f"Listening at: http://[::]:{b.productpage.port}" in logs
    assert '"GET /details/0 HTTP/1.1" 200 178' in logs


def test_productpage_v1_and_v3_pages(cluster: Cluster) -> None:
    b = start_bookinfo(cluster, "v3")
    page = request(b.productpage.url("/productpage")).text
    assert page.count('<font color="red">') == 2 and glyphs(page, "star") == 9
    v1 = start_reviews(cluster, "v1", env={"HOSTNAME": "reviews-v1-x"})
    cluster.service("reviews", v1.ip)
    page = request(b.productpage.url("/productpage")).text
    assert glyphs(page, "star") == 0 and "<font" not in page and page.count('data-ratings="none"') == 2
    assert "<u>reviews-v1-x</u>" in page


def test_productpage_degrades_when_details_dies(cluster: Cluster) -> None:
    b = start_bookinfo(cluster)
    os.kill(b.details.pid, signal.SIGKILL)
    b.details.proc.wait(timeout=5)
    r = request(b.productpage.url("/productpage"))
    assert r.status == 200
    page = r.text
    assert '<h4 class="text-center text-primary">Error fetching product details!</h4>' in page
    assert "<p>Sorry, product details are currently unavailable for this book.</p>" in page
    assert 'data-section="details" data-status="error"' in page
    assert "Book Details" not in page
    # Gradual degradation: the title, summary and reviews are still there.
    assert "The Comedy of Errors" in page and "Summary: " in page
    assert "Book Reviews" in page and glyphs(page, "star") == 9
    api = request(b.productpage.url("/api/v1/products/0"))
    assert (api.status, api.body) == (
        500,
        b'{"error": "Sorry, product details are currently unavailable for this book."}',
    )
    metrics = request(b.productpage.url("/metrics")).text
    assert 'request_result_total{destination_app="details",response_code="500"} 2.0' in metrics


def test_productpage_degrades_when_reviews_and_ratings_die(cluster: Cluster) -> None:
    b = start_bookinfo(cluster)
    os.kill(b.ratings.pid, signal.SIGKILL)
    b.ratings.proc.wait(timeout=5)
    page = request(b.productpage.url("/productpage")).text
    assert page.count("<p><i>Ratings service is currently unavailable</i></p>") == 2
    assert glyphs(page, "star") == 0 and page.count('data-ratings="error"') == 2
    assert "Book Details" in page
    os.kill(b.reviews.pid, signal.SIGKILL)
    b.reviews.proc.wait(timeout=5)
    page = request(b.productpage.url("/productpage")).text
    assert '<h4 class="text-center text-primary">Error fetching product reviews!</h4>' in page
    assert "<p>Sorry, product reviews are currently unavailable for this book.</p>" in page
    assert 'data-section="reviews" data-status="error"' in page
    assert "Book Details" in page and "<dt>ISBN-13:</dt>123-1234567890" in page


def test_productpage_api(cluster: Cluster) -> None:
    b = start_bookinfo(cluster)
    r = request(b.productpage.url("/api/v1/products"))
    assert (r.status, r.headers["Content-Type"]) == (200, "application/json")
    assert r.body == (
        b'[{"id": 0, "title": "The Comedy of Errors", "descriptionHtml": '
        b'"<a href=\\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\\">Wikipedia Summary</a>: '
        b"The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. "
        b"It is his shortest and one of his most farcical comedies, "
        b"with a major part of the humour coming from slapstick and mistaken identity, "
        b'in addition to puns and word play."}]'
    )
    r = request(b.productpage.url("/api/v1/products/0"))
    assert (r.status, r.body) == (200, json.dumps(json.loads(DETAILS_0)).encode())
    r = request(b.productpage.url("/api/v1/products/abc"))
    assert (r.status, r.body) == (
        400,
        b'{"error": "Sorry, product details are currently unavailable for this book."}',
    )
    r = request(b.productpage.url("/api/v1/products/7/reviews"))
    assert r.status == 200 and json.loads(r.body)["id"] == "7"
    assert json.loads(r.body)["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    r = request(b.productpage.url("/api/v1/products/7/ratings"))
    assert (r.status, r.body) == (200, b'{"id": 7, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}')
    r = request(b.productpage.url("/api/v1/products/x/reviews"))
    assert (r.status, r.body) == (
        404,
        b'{"error": "Sorry, product reviews are currently unavailable for this book."}',
    )
    os.kill(b.ratings.pid, signal.SIGKILL)
    b.ratings.proc.wait(timeout=5)
    r = request(b.productpage.url("/api/v1/products/7/ratings"))
    assert (r.status, r.body) == (
        500,
        b'{"error": "Sorry, product ratings are currently unavailable for this book."}',
    )
    metrics = request(b.productpage.url("/metrics"))
    assert metrics.headers["Content-Type"] == "text/html; charset=utf-8"
    for line in (
        "# HELP request_result_total Results of requests",
        "# TYPE request_result_total counter",
        'request_result_total{destination_app="details",response_code="200"} 1.0',
        'request_result_total{destination_app="details",response_code="400"} 1.0',
        'request_result_total{destination_app="reviews",response_code="404"} 1.0',
        'request_result_total{destination_app="ratings",response_code="500"} 1.0',
        "# TYPE request_result_created gauge",
    ):
        assert line in metrics.text.splitlines(), line
    assert "process_resident_memory_bytes " in metrics.text


def test_productpage_other_routes(cluster: Cluster) -> None:
    b = start_bookinfo(cluster)
    r = request(b.productpage.url("/health"))
    assert (r.status, r.headers["Content-Type"], r.body) == (
        200,
        "text/html; charset=utf-8",
        b"Product page is healthy",
    )
    for path in ("/", "/index.html"):
        r = request(b.productpage.url(path))
        assert r.status == 200
        assert "Hello! This is a simple bookstore application consisting of three services as shown below" in r.text
        assert 'class="table table-condensed table-bordered table-hover"' in r.text
        assert '<a href="/productpage?u=normal">Normal user</a>' in r.text
        assert '<a href="/productpage?u=test">Test user</a>' in r.text
    assert request(b.productpage.url("/productpage"), "POST", b"").status == 405
    assert request(b.productpage.url("/login")).status == 405
    assert request(b.productpage.url("/nothere")).status == 404
    assert request(b.productpage.url("/productpage/")).status == 404
    assert request(b.productpage.url("/static/bootstrap/css/bootstrap.min.css")).status == 404


def test_productpage_login_session_and_header_propagation(cluster: Cluster, stubs: list[Stub]) -> None:
    details_stub = Stub(next(_ADDRESSES), body=DETAILS_0)
    reviews_stub = Stub(next(_ADDRESSES), body=reviews_json("0", "p", "null"))
    stubs += [details_stub, reviews_stub]
    cluster.service("details", details_stub.ip)
    cluster.service("reviews", reviews_stub.ip)
    page = start_productpage(
        cluster,
        {"DETAILS_SERVICE_PORT": str(details_stub.port), "REVIEWS_SERVICE_PORT": str(reviews_stub.port)},
    )
    form = b"username=jason&passwd=anything"
    login = request(
        page.url("/login"),
        "POST",
        form,
        {"Content-Type": "application/x-www-form-urlencoded", "Referer": "http://bookinfo/productpage"},
    )
    assert (login.status, login.headers["Location"]) == (302, "http://bookinfo/productpage")
    cookie = login.headers["Set-Cookie"]
    assert re.fullmatch(r"session=[^;]+; HttpOnly; Path=/", cookie), cookie
    session = cookie.split(";")[0]
    nowhere = request(page.url("/login"), "POST", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert nowhere.headers["Location"] == "None"

    incoming = {
        "Cookie": session,
        "x-request-id": "abc-123",
        "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
        "x-b3-spanid": "e457b5a2e4d86bd1",
        "x-b3-parentspanid": "05e3ac9a4f6e3b90",
        "x-b3-sampled": "1",
        "end-user": "mallory",
        "User-Agent": "Mozilla/5.0",
        "x-custom": "dropped",
        "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
    }
    html = request(page.url("/productpage"), headers=incoming).text
    assert 'jason ( <a href="logout">sign out</a> )' in html and 'href="#login-modal"' not in html
    for stub, path in ((details_stub, "/details/0"), (reviews_stub, "/reviews/0")):
        got_path, seen = stub.requests[-1]
        assert got_path == path
        assert seen["host"] == f"{path.split('/')[1]}:{stub.port}"
        assert seen["end-user"] == "jason"  # from the session, never from the request
        for name in ("x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "traceparent"):
            assert seen[name] == incoming[name], name
        assert (seen["cookie"], seen["user-agent"]) == (session, "Mozilla/5.0")
        assert "x-b3-parentspanid" not in seen and "x-custom" not in seen

    # A forged cookie is ignored, and an incoming end-user is never forwarded.
    request(page.url("/productpage"), headers={"Cookie": session[:-3] + "abc", "end-user": "mallory"})
    assert "end-user" not in details_stub.requests[-1][1]

    logout = request(page.url("/logout"), headers={"Cookie": session, "Referer": "/productpage"})
    assert (logout.status, logout.headers["Location"]) == (302, "/productpage")
    assert logout.headers["Set-Cookie"].startswith("session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0")


def test_productpage_b3_propagation_rules() -> None:
    b3 = productpage_image.b3_headers
    assert b3({"x-b3-traceid": "463ac35c9f6413ad", "x-b3-spanid": "a2fb4a1d1a96d312"}) == {
        "x-b3-traceid": "0000000000000000463ac35c9f6413ad",
        "x-b3-spanid": "a2fb4a1d1a96d312",
        "x-b3-sampled": "0",
    }
    assert b3({"x-b3-traceid": "nothex", "x-b3-spanid": "a2fb4a1d1a96d312"}) == {}
    assert b3({"x-b3-sampled": "1"}) == {}
    session = productpage_image.decode_session(productpage_image.encode_session({"user": "jason"}))
    assert session == {"user": "jason"}
    assert productpage_image.decode_session("e30.forged") == {}


@pytest.mark.slow
def test_productpage_retries_a_slow_reviews_once(cluster: Cluster, stubs: list[Stub]) -> None:
    details = Stub(next(_ADDRESSES), body=DETAILS_0)
    slow = Stub(next(_ADDRESSES), body=reviews_json("0", "p", "null"), delay=4.0)
    stubs += [details, slow]
    cluster.service("details", details.ip)
    cluster.service("reviews", slow.ip)
    page = start_productpage(
        cluster, {"DETAILS_SERVICE_PORT": str(details.port), "REVIEWS_SERVICE_PORT": str(slow.port)}
    )
    began = time.monotonic()
    html = request(page.url("/productpage"), timeout=20).text
    elapsed = time.monotonic() - began
    assert "Error fetching product reviews!" in html and "Book Details" in html
    assert len(slow.requests) == 2  # two attempts ...
    assert elapsed >= 2 * productpage_image.CALL_TIMEOUT - 0.5  # ... each waited for its timeout (a lower bound)


# --- the container contract: readiness, names, signals, parent death, the curl image --------------


def test_processes_show_the_real_programs_names(cluster: Cluster) -> None:
    assert start_details(cluster).comm() == "ruby"
    assert start_ratings(cluster).comm() == "node"
    page = start_productpage(cluster, {})
    assert page.comm() == "gunicorn"
    reviews = start_reviews(cluster, "v1")
    assert reviews.comm() == "java"
    tester = cluster.start("curlimages/curl", ["/bin/sleep", "infinity"], port=0)
    assert tester.comm() == "sleep"


def test_sigterm_and_sigkill_end_the_process_by_signal(cluster: Cluster) -> None:
    d, r = start_details(cluster), start_ratings(cluster)
    os.kill(d.pid, signal.SIGTERM)
    os.kill(r.pid, signal.SIGKILL)
    assert d.proc.wait(timeout=5) == -signal.SIGTERM
    assert r.proc.wait(timeout=5) == -signal.SIGKILL
    tester = cluster.start("curlimages/curl", ["sleep", "infinity"], port=0)
    os.kill(tester.pid, signal.SIGTERM)
    assert tester.proc.wait(timeout=5) == -signal.SIGTERM


def test_a_process_whose_parent_is_gone_exits_at_once(cluster: Cluster) -> None:
    c = start_details(cluster, wait=False, parent_pid=1)
    assert c.proc.wait(timeout=10) == -signal.SIGKILL
    assert "WEBrick" not in c.logs()  # it died before doing anything


def test_parent_death_kills_the_container(tmp_path: Path) -> None:
    """The real guarantee: when the kubelet dies, its containers die with it (no orphans)."""
    hosts = tmp_path / "hosts"
    dns.write_hosts(str(hosts), {})
    launcher = (
        "import os, subprocess, sys, time\n"
        "r, w = os.pipe()\n"
        "env = {'PATH': os.environ['PATH'], 'PYTHONPATH': sys.argv[1], 'LABKIT_POD_IP': '127.0.0.1',\n"
        "       'LABKIT_PARENT_PID': str(os.getpid()), 'LABKIT_PROCESS_NAME': 'sleep',\n"
        "       'LABKIT_HOSTS_FILE': sys.argv[2], 'LABKIT_READY_FD': str(w)}\n"
        "p = subprocess.Popen(sys.argv[3:], env=env, pass_fds=(w,))\n"
        "os.read(r, 1)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    kubelet = subprocess.Popen(
        [sys.executable, "-c", launcher, str(REPO), str(hosts), *RUN, "curl", "sleep", "infinity"],
        stdout=subprocess.PIPE,
    )
    child = 0
    try:
        assert kubelet.stdout is not None
        child = int(kubelet.stdout.readline())  # printed once the container is ready, its death signal armed
        assert Path(f"/proc/{child}/comm").read_text().strip() == "sleep"
        kubelet.kill()
        kubelet.wait(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state in ("Z", "X"):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"container {child} outlived its parent")
    finally:
        kubelet.kill()
        kubelet.wait(timeout=5)
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_the_curl_image(cluster: Cluster) -> None:
    for argv in (["sleep", "infinity"], ["/bin/sleep", "infinity"], ["sleep", "3650d"]):
        c = cluster.start("docker.io/curlimages/curl:8.16.0", argv, port=0)
        assert c.ready and c.proc.poll() is None
    short = cluster.start("curlimages/curl", ["sleep", "0.2"], port=0)
    assert short.proc.wait(timeout=5) == 0
    default = cluster.start("curlimages/curl", ["curl"], port=0, wait=False)
    assert default.proc.wait(timeout=10) == 2
    assert "curl: try 'curl --help' for more information" in default.logs()
    missing = cluster.start("curlimages/curl", ["nosuchcommand", "x"], port=0, wait=False)
    assert missing.proc.wait(timeout=10) == 127
    assert 'exec: "nosuchcommand": executable file not found in $PATH' in missing.logs()
    bad = cluster.start("curlimages/curl", ["sleep", "soon"], port=0, wait=False)
    assert bad.proc.wait(timeout=10) == 1
    assert "sleep: invalid time interval 'soon'" in bad.logs()


def test_curl_as_a_one_shot_container_command(cluster: Cluster) -> None:
    ratings = start_ratings(cluster)
    cluster.service("ratings", ratings.ip)
    job = cluster.start("curlimages/curl", ["curl", "-sS", f"http://ratings:{ratings.port}/ratings/7"], port=0)
    assert job.proc.wait(timeout=10) == 0
    assert job.logs() == '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'


def test_containers_import_light_and_stay_lean(cluster: Cluster) -> None:
    # Every container imports the labkit package first; its __init__ files must not pull in the library's heavy
    # dependencies, or 13 containers each pay for them.
    probe = (
        "import sys, labkit.sandbox.images; print(*[m for m in ('pandas', 'kubernetes', 'numpy') if m in sys.modules])"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)}
    heavy = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=env).stdout
    assert not heavy.strip(), f"importing labkit.sandbox.images loads {heavy.strip()}: keep labkit's __init__ lazy"
    d = start_details(cluster)
    r = start_ratings(cluster)
    assert d.ready and r.ready  # how fast they start is measured by benchmarks/run.py (up), not here
    # Budget ~15 MB each; allow some slack for the labkit package __init__ files every container imports first.
    assert d.rss_kb() < 25_000 and r.rss_kb() < 25_000, (d.rss_kb(), r.rss_kb())
