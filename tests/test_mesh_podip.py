"""Traffic to a meshed pod's own address goes through its sidecars, as Istio's iptables redirect sends it.

One sandbox started meshed (``LABKIT_SANDBOX_MESH=1``: every pod of ``default`` has an ``istio-proxy``), judged
with the real kubectl: ``curl POD_IP:9080`` from the tester pod (meshed) leaves through its outbound sidecar as
``PassthroughCluster`` and arrives through the callee's inbound listener (access-log line, ``reporter="destination"``
metric); from a pod without a sidecar it arrives through the inbound listener only; a pod without a sidecar is
reached directly, as before. The CLI says where the ingress gateway is.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST, Kubectl, start_sandbox
from helpers import bookstore_title_at, eventually, kubectl_port_forward

from labkit.sandbox import Sandbox

ISTIO = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests" / "istio"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    saved = os.environ.get("LABKIT_SANDBOX_MESH")
    os.environ["LABKIT_SANDBOX_MESH"] = "1"
    try:
        sb = start_sandbox(tmp_path_factory.mktemp("podip"), FAST, replicas=1)
    finally:
        if saved is None:
            os.environ.pop("LABKIT_SANDBOX_MESH", None)
        else:
            os.environ["LABKIT_SANDBOX_MESH"] = saved
    try:
        yield sb
    finally:
        sb.stop()


def _pod(kubectl: Kubectl, selector: str, namespace: str = "default") -> dict[str, object]:
    items = json.loads(kubectl("get", "pod", "-n", namespace, "-l", selector, "-o", "json").stdout)["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    assert live, f"no pod with {selector}"
    return dict(live[0])


def _name_ip(pod: dict[str, object]) -> tuple[str, str]:
    meta, status = pod["metadata"], pod["status"]
    assert isinstance(meta, dict) and isinstance(status, dict)
    return str(meta["name"]), str(status["podIP"])


def _proxy_lines(kubectl: Kubectl, name: str, marker: str, namespace: str = "default") -> list[str]:
    out = kubectl("logs", name, "-n", namespace, "-c", "istio-proxy").stdout
    return [line for line in out.splitlines() if marker in line]


def _stats(kubectl: Kubectl, ip: str) -> str:
    return kubectl("exec", "deploy/sleep", "--", "curl", "-s", f"{ip}:15020/stats/prometheus").stdout


def _metric(stats: str, **labels: str) -> int:
    """The sum of ``istio_requests_total`` over the series having all ``labels``."""
    total = 0
    for line in stats.splitlines():
        if line.startswith("istio_requests_total{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += int(line.rsplit(" ", 1)[1])
    return total


def test_pod_ip_from_the_meshed_tester_goes_through_both_sidecars(sandbox: Sandbox, kubectl: Kubectl) -> None:
    reviews, reviews_ip = _name_ip(_pod(kubectl, "app=reviews"))
    sleep, sleep_ip = _name_ip(_pod(kubectl, "app=sleep"))
    rid = f"podip-{uuid.uuid4()}"
    out = kubectl("exec", "deploy/sleep", "--", "curl", "-s", "-H", f"x-request-id: {rid}",
                  f"{reviews_ip}:9080/reviews/0").stdout
    assert json.loads(out)["id"] == "0", out
    # The callee's inbound listener logged it, as Envoy's inbound|9080|| cluster, the caller's address downstream.
    inbound = eventually(lambda: _proxy_lines(kubectl, reviews, rid), what="the inbound access-log line")
    assert re.match(r'\[\S+Z\] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ ', inbound[-1])
    assert " inbound|9080|| " in inbound[-1] and f"{reviews_ip}:9080 {sleep_ip}:" in inbound[-1]
    # The caller's sidecar sent it as Istio does a pod address: PassthroughCluster, route allow_any.
    outbound = eventually(lambda: _proxy_lines(kubectl, sleep, rid), what="the outbound access-log line")
    assert f'"{reviews_ip}:9080" PassthroughCluster ' in outbound[-1] and outbound[-1].endswith(" allow_any")
    # Metrics: the destination's report names the workloads; the source's names PassthroughCluster.
    dest = _metric(_stats(kubectl, reviews_ip), reporter="destination", source_workload="sleep",
                   destination_workload="reviews-v1", destination_service_name="reviews",
                   connection_security_policy="none", response_code="200")
    assert dest >= 1
    src = _metric(_stats(kubectl, sleep_ip), reporter="source", source_workload="sleep",
                  destination_workload="reviews-v1", destination_service_name="PassthroughCluster",
                  destination_service=f"{reviews_ip}:9080")
    assert src >= 1


def test_the_app_still_sees_the_callers_address(kubectl: Kubectl) -> None:
    details, details_ip = _name_ip(_pod(kubectl, "app=details"))
    _, sleep_ip = _name_ip(_pod(kubectl, "app=sleep"))
    kubectl("exec", "deploy/sleep", "--", "curl", "-s", f"{details_ip}:9080/details/42")
    # details (WEBrick) logs each request with the client's address: the tester's, through both sidecars.
    lines = eventually(lambda: [line for line in kubectl("logs", details, "-c", "details").stdout.splitlines()
                                if "GET /details/42 " in line], what="details' own log line")
    assert lines[-1].startswith(f"{sleep_ip} - - ["), lines[-1]


def test_from_a_pod_without_a_sidecar_only_the_inbound_sidecar(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "plain")
    kubectl("run", "tester", "-n", "plain", "--image=curlimages/curl", "--", "sleep", "infinity")
    tester = eventually(lambda: _ready(kubectl, "tester", "plain"), what="the plain tester Ready")
    ratings, ratings_ip = _name_ip(_pod(kubectl, "app=ratings"))
    rid = f"plain-{uuid.uuid4()}"
    out = kubectl("exec", "tester", "-n", "plain", "--", "curl", "-s", "-H", f"x-request-id: {rid}",
                  f"{ratings_ip}:9080/ratings/0").stdout
    assert json.loads(out)["id"] == 0, out
    inbound = eventually(lambda: _proxy_lines(kubectl, ratings, rid), what="the inbound access-log line")
    assert " inbound|9080|| " in inbound[-1] and f" {tester}:" in inbound[-1]
    assert _metric(_stats(kubectl, ratings_ip), reporter="destination", source_workload="unknown",
                   destination_workload="ratings-v1", response_code="200") >= 1


def test_a_pod_without_a_sidecar_is_reached_directly(kubectl: Kubectl) -> None:
    kubectl("run", "web", "--image=nginx", "--port=80", "--annotations=sidecar.istio.io/inject=false")
    web_ip = eventually(lambda: _ready(kubectl, "web", "default"), what="the unmeshed nginx Ready")
    pod = json.loads(kubectl("get", "pod", "web", "-o", "json").stdout)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["web"]
    _, sleep_ip = _name_ip(_pod(kubectl, "app=sleep"))
    page = kubectl("exec", "deploy/sleep", "--", "curl", "-s", f"{web_ip}:80/").stdout
    assert "Welcome to nginx!" in page
    # nginx, reached directly as before, saw the tester's address.
    logged = eventually(lambda: [line for line in kubectl("logs", "web").stdout.splitlines() if '"GET / ' in line],
                        what="nginx's access log")
    assert logged[-1].startswith(f"{sleep_ip} - - ")


def _ready(kubectl: Kubectl, name: str, namespace: str) -> str | None:
    """The pod's IP once it is Ready."""
    pod = json.loads(kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return pod["status"].get("podIP") if statuses and all(cs.get("ready") for cs in statuses) else None


def test_the_cli_and_the_status_say_where_the_gateway_is(sandbox: Sandbox, kubectl: Kubectl) -> None:
    url = sandbox.status().get("gateway_url")
    port = kubectl("get", "svc", "istio-ingressgateway", "-n", "istio-system", "-o",
                   'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout
    assert url == f"http://127.0.0.1:{port}"
    assert sandbox.gateway_url() == url
    out = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "status", "--dir", str(sandbox.dir)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert re.search(rf"^\s+istio-ingressgateway\s+{re.escape(url)}$", out, re.M), out
    kubectl("apply", "-f", str(ISTIO / "bookinfo-gateway.yaml"))

    eventually(lambda: bookstore_title_at(int(port)), what="productpage through the gateway's URL",
               ignore=(OSError,))


def test_port_forward_to_a_meshed_pod_reaches_its_app(kubectl: Kubectl) -> None:
    with kubectl_port_forward(kubectl.binary, kubectl.env, "deploy/ratings-v1", 9080) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", "/ratings/7")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["id"] == 7
        finally:
            conn.close()


def test_lesson_7s_hidden_v2_by_pod_ip_is_inbound_passthrough(kubectl: Kubectl) -> None:
    """Add-a-new-version's step 2 with the mesh on: a pod no Service selects, tested by its address."""
    v2_v3 = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests" / "reviews-v2-v3.yaml"
    applied = kubectl.shell(f"sed 's/app: reviews/app: reviews_test/' {v2_v3} | "
                            "kubectl apply -l app=reviews_test,version=v2 -f -")
    assert "deployment.apps/reviews-v2 created" in applied.stdout, applied.stderr
    eventually(lambda: _ready(kubectl, _name_ip(_pod(kubectl, "app=reviews_test"))[0], "default"), timeout=60,
               what="the hidden reviews v2 pod Ready (2/2)")
    name, ip = _name_ip(_pod(kubectl, "app=reviews_test"))
    sleep, _ = _name_ip(_pod(kubectl, "app=sleep"))
    out = kubectl.shell(f'kubectl exec deploy/sleep -- curl -sS "{ip}:9080/reviews/7"').stdout
    assert json.loads(out)["reviews"][0]["rating"]["color"] == "black", out
    inbound = eventually(lambda: _proxy_lines(kubectl, name, '"GET /reviews/7 '), what="the inbound line")
    assert f'"{ip}:9080" InboundPassthroughClusterIpv4 ' in inbound[-1]
    outbound = eventually(lambda: _proxy_lines(kubectl, sleep, '"GET /reviews/7 '), what="the outbound line")
    assert f'"{ip}:9080" PassthroughCluster ' in outbound[-1]


def test_sandbox_up_started_meshed_prints_the_gateway(tmp_path: Path) -> None:
    env = {**os.environ, "LABKIT_SANDBOX_MESH": "1"}
    cli = [sys.executable, "-m", "labkit.cli", "sandbox"]
    try:
        up = subprocess.run([*cli, "up", "--dir", str(tmp_path), "--replicas", "1", "--time-scale", str(FAST)],
                            env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        found = re.search(r"^\s+istio-ingressgateway\s+(http://127\.0\.0\.1:(\d+))$", up.stdout, re.M)
        assert found, up.stdout
        assert 30000 <= int(found[2]) < 32768
        # Started at boot: recorded in the sandbox's state, where the library finds it without asking the API.
        assert json.loads((tmp_path / "state.json").read_text())["gateway_url"] == found[1]
        assert Sandbox.attach(tmp_path).gateway_url() == found[1]
    finally:
        subprocess.run([*cli, "down", "--dir", str(tmp_path)], env=env, capture_output=True, timeout=60)
