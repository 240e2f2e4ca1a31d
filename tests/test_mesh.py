"""Istio's Bookinfo traffic tasks on the sandbox, judged with the real kubectl applying istio.io's sample YAML.

One sandbox for the module (one replica of each Deployment plus reviews v2 and v3), with the default namespace
labelled for injection and every Deployment restarted, as the lessons do; each test applies its rules and
removes them at the end.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import FAST, Kubectl, start_sandbox
from helpers import bookstore_title_at, eventually, every_pod_meshed
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

import labkit
from labkit import mesh as labmesh
from labkit.sandbox import Sandbox

ISTIO = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests" / "istio"
V2_V3 = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests" / "reviews-v2-v3.yaml"
APPS = ("details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "sleep")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox(tmp_path_factory.mktemp("mesh"), FAST, replicas=1)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def mesh(sandbox: Sandbox, kubectl: Kubectl) -> Kubectl:
    """Bookinfo with reviews v1-v3, every pod injected (the "enable Istio" lesson), destination-rule-all applied."""
    kubectl("apply", "-f", str(V2_V3))
    kubectl("label", "namespace", "default", "istio-injection=enabled")
    kubectl("rollout", "restart", "deployment")
    eventually(lambda: every_pod_meshed(kubectl, len(APPS)), timeout=90,
               what="every pod at 2/2 with an istio-proxy sidecar")
    kubectl("apply", "-f", str(ISTIO / "destination-rule-all.yaml"))
    return kubectl


@pytest.fixture()
def rules(mesh: Kubectl) -> Iterator[Kubectl]:
    yield mesh
    mesh("delete", "virtualservice", "--all")


def _pod(kubectl: Kubectl, selector: str) -> str:
    return kubectl("get", "pod", "-l", selector, "-o", "jsonpath={.items[0].metadata.name}").stdout


def _page(sandbox: Sandbox, user: str | None = None) -> str:
    """productpage through the host ingress, signed in as ``user`` (POST /login, then the session cookie)."""
    url = urlsplit(sandbox.productpage_url)
    headers: dict[str, str] = {}
    if user:
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        conn.request("POST", "/login", f"username={user}&passwd=x",
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        headers["Cookie"] = (response.getheader("Set-Cookie") or "").split(";", 1)[0]
        conn.close()
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
    conn.request("GET", "/productpage", headers=headers)
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def _stars(page: str) -> set[str]:
    """The star colours on a page ({"black"}, {"red"}, or empty for reviews v1)."""
    return set(re.findall(r'<font color="(\w+)">', page))


def _proxy_log(kubectl: Kubectl, selector: str) -> list[str]:
    return [line for line in kubectl("logs", _pod(kubectl, selector), "-c", "istio-proxy").stdout.splitlines()
            if line.startswith("[")]


def test_injection_adds_a_sidecar_with_its_own_restart_accounting(mesh: Kubectl) -> None:
    out = mesh("get", "pods").stdout
    assert all(re.search(rf"^{app}-\S+\s+2/2\s+Running", out, re.M) for app in APPS), out
    pod = json.loads(mesh("get", "pod", _pod(mesh, "app=ratings"), "-o", "json").stdout)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["ratings", "istio-proxy"]
    assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "ratings"
    assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    name = pod["metadata"]["name"]
    assert "Envoy proxy is ready" in mesh("logs", name, "-c", "istio-proxy").stdout
    mesh("exec", name, "-c", "istio-proxy", "--", "pkill", "pilot-agent")

    def restarts() -> dict[str, int] | None:
        statuses = json.loads(mesh("get", "pod", name, "-o", "json").stdout)["status"]["containerStatuses"]
        counts = {cs["name"]: cs["restartCount"] for cs in statuses}
        return counts if counts["istio-proxy"] >= 1 and all(cs["ready"] for cs in statuses) else None

    assert eventually(restarts, timeout=60, what="istio-proxy restarted and Ready") == {"ratings": 0,
                                                                                        "istio-proxy": 1}
    # A pod in a namespace without the label, or opting out, keeps one container.
    mesh("create", "namespace", "plain")
    mesh("run", "solo", "-n", "plain", "--image=curlimages/curl", "--", "sleep", "infinity")
    pod = json.loads(mesh("get", "pod", "solo", "-n", "plain", "-o", "json").stdout)
    assert [c["name"] for c in pod["spec"]["containers"]] == ["solo"]


def test_mesh_objects_with_kubectl(rules: Kubectl) -> None:
    created = rules("apply", "-f", str(ISTIO / "virtual-service-all-v1.yaml")).stdout
    assert "virtualservice.networking.istio.io/reviews created" in created
    gw = rules("apply", "-f", str(ISTIO / "bookinfo-gateway.yaml")).stdout
    assert "gateway.networking.istio.io/bookinfo-gateway created" in gw
    table = rules("get", "vs,dr,gw").stdout
    assert re.search(r"virtualservice.networking.istio.io/bookinfo\s+\[\"bookinfo-gateway\"\]\s+\[\"\*\"\]", table)
    assert re.search(r"destinationrule.networking.istio.io/reviews\s+reviews\s", table)
    assert "gateway.networking.istio.io/bookinfo-gateway" in table
    assert re.search(r"^reviews\s+\[\"reviews\"\]", rules("get", "virtualservices").stdout, re.M)
    out = rules("get", "vs", "reviews", "-o", "yaml").stdout
    assert "apiVersion: networking.istio.io/v1" in out and "subset: v1" in out
    assert "Subset:  v1" in rules("describe", "vs", "reviews").stdout
    deleted = rules("delete", "-f", str(ISTIO / "bookinfo-gateway.yaml")).stdout
    assert 'gateway.networking.istio.io "bookinfo-gateway" deleted' in deleted
    assert "bookinfo-gateway" not in rules("get", "gw").stdout


def test_invalid_rules_are_rejected_naming_the_field(rules: Kubectl) -> None:
    bad_timeout = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n"
                   "  hosts: [reviews]\n  http:\n  - timeout: 7\n    route: [{destination: {host: reviews}}]\n")
    proc = rules("apply", "-f", "-", input=bad_timeout, check=False)
    assert proc.returncode != 0
    assert "spec.http[0].timeout" in proc.stderr and "must be a valid duration greater than 1ms" in proc.stderr
    bad_abort = bad_timeout.replace("timeout: 7", "fault: {abort: {httpStatus: 700, percentage: {value: 100}}}")
    proc = rules("apply", "-f", "-", input=bad_abort, check=False)
    assert 'admission webhook "validation.istio.io" denied the request' in proc.stderr
    assert "spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599" in proc.stderr
    assert "bad" not in rules("get", "vs").stdout


def test_request_routing_all_v1_then_jason_to_v2(rules: Kubectl, sandbox: Sandbox) -> None:
    rules("apply", "-f", str(ISTIO / "virtual-service-all-v1.yaml"))
    for _ in range(6):
        assert _stars(_page(sandbox)) == set()
    rules("apply", "-f", str(ISTIO / "virtual-service-reviews-test-v2.yaml"))
    eventually(lambda: _stars(_page(sandbox, "jason")) == {"black"}, what="black stars for jason")
    for _ in range(4):
        assert _stars(_page(sandbox, "jason")) == {"black"}
        assert _stars(_page(sandbox, "alice")) == set()
        assert _stars(_page(sandbox)) == set()
    lines = _proxy_log(rules, "app=productpage")
    v2 = [line for line in lines if "outbound|9080|v2|reviews.default.svc.cluster.local" in line]
    assert v2 and re.match(r'\[\S+Z\] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ ', v2[-1])


def test_fault_abort_for_jason(rules: Kubectl, sandbox: Sandbox) -> None:
    rules("apply", "-f", str(ISTIO / "virtual-service-all-v1.yaml"))
    rules("apply", "-f", str(ISTIO / "virtual-service-reviews-test-v2.yaml"))
    rules("apply", "-f", str(ISTIO / "virtual-service-ratings-test-abort.yaml"))
    eventually(lambda: "Ratings service is currently unavailable" in _page(sandbox, "jason"),
               what="the ratings error for jason")
    assert "Ratings service is currently unavailable" not in _page(sandbox)
    aborts = [line for line in _proxy_log(rules, "app=reviews,version=v2") if " 500 FI fault_filter_abort " in line]
    assert aborts and '"GET /ratings/0 HTTP/1.1"' in aborts[-1]


def test_fault_delay_exposes_productpage_timeout(rules: Kubectl, sandbox: Sandbox) -> None:
    rules("apply", "-f", str(ISTIO / "virtual-service-all-v1.yaml"))
    rules("apply", "-f", str(ISTIO / "virtual-service-reviews-test-v2.yaml"))
    rules("apply", "-f", str(ISTIO / "virtual-service-ratings-test-delay.yaml"))
    eventually(lambda: "Error fetching product reviews" in _page(sandbox, "jason"), timeout=60,
               what="productpage giving up on reviews for jason")
    # The reviews-v2 sidecar writes its line when the delayed call completes, after productpage gave up.
    delayed = eventually(lambda: [line for line in _proxy_log(rules, "app=reviews,version=v2") if " DI " in line],
                         what="the delayed ratings call in the reviews-v2 sidecar's log")
    assert "outbound|9080|v1|ratings.default.svc.cluster.local" in delayed[-1]


def test_traffic_shifting_50_50_then_all_to_v3(rules: Kubectl, sandbox: Sandbox) -> None:
    rules("apply", "-f", str(ISTIO / "virtual-service-all-v1.yaml"))
    rules("apply", "-f", str(ISTIO / "virtual-service-reviews-50-v3.yaml"))
    seen: set[str] = set()

    def both() -> bool:
        seen.update(_stars(_page(sandbox)) or {"none"})
        return seen == {"none", "red"}

    eventually(both, what="reviews v1 and v3 both served")
    rules("apply", "-f", str(ISTIO / "virtual-service-reviews-v3.yaml"))
    eventually(lambda: _stars(_page(sandbox)) == {"red"}, what="red stars")
    for _ in range(6):
        assert _stars(_page(sandbox)) == {"red"}


def test_request_timeout_and_retries(rules: Kubectl, sandbox: Sandbox) -> None:
    rules("apply", "-f", "-", input="""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - fault: {delay: {percentage: {value: 100}, fixedDelay: 2s}}
    route: [{destination: {host: ratings, subset: v1}}]
""")
    eventually(lambda: _stars(_page(sandbox)) == {"black"}, what="black stars (slowly)")
    rules("patch", "vs", "reviews", "--type=json", "-p",
          '[{"op": "add", "path": "/spec/http/0/timeout", "value": "0.5s"}]')
    eventually(lambda: "Error fetching product reviews" in _page(sandbox), what="reviews unavailable")
    timeouts = [line for line in _proxy_log(rules, "app=productpage") if " 504 UT response_timeout " in line]
    assert timeouts and "outbound|9080|v2|reviews.default.svc.cluster.local" in timeouts[-1]
    # Retries with a per-try timeout, from the tester pod: three tries, all timed out.
    rules("patch", "vs", "reviews", "--type=json", "-p", '[{"op": "replace", "path": "/spec/http/0", "value": '
          '{"retries": {"attempts": 2, "perTryTimeout": "0.2s", "retryOn": "gateway-error"}, '
          '"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}}]')
    sleep = _pod(rules, "app=sleep")

    def retried() -> str | None:
        out = rules("exec", sleep, "-c", "sleep", "--", "curl", "-s", "http://reviews:9080/reviews/0").stdout
        last = _proxy_log(rules, "app=sleep")[-1]
        return last if out == "upstream request timeout" and " 504 UT,URX upstream_per_try_timeout " in last else None

    eventually(retried, what="a request retried twice after per-try timeouts")


def test_library_verbs_rules_access_log_and_metrics(rules: Kubectl, sandbox: Sandbox) -> None:
    lab = labkit.connect(sandbox_dir=sandbox.dir)
    try:
        assert labmesh.apply(lab, (ISTIO / "virtual-service-all-v1.yaml").read_text())[1] == \
            "virtualservice.networking.istio.io/reviews created"
        assert labmesh.apply(lab, {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                   "metadata": {"name": "reviews"},
                                   "spec": {"hosts": ["reviews"], "http": [{"route": [
                                       {"destination": {"host": "reviews", "subset": "v3"}}]}]}}) == \
            ["virtualservice.networking.istio.io/reviews configured"]
        frame = labmesh.rules(lab)
        vs = frame[frame.kind == "VirtualService"].set_index("name")
        assert vs.loc["reviews", "rules"] == "* -> reviews/v3" and vs.loc["reviews", "hosts"] == "reviews"
        assert set(frame[frame.kind == "DestinationRule"].name) == {"productpage", "reviews", "ratings", "details"}
        with pytest.raises(labmesh.MeshRuleError, match="not an Istio traffic rule"):
            labmesh.apply(lab, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
        eventually(lambda: _stars(_page(sandbox)) == {"red"}, what="red stars")
        log = labmesh.access_log(lab, "app=productpage")
        last = log[log.service == "reviews"].iloc[-1]
        assert (last.code, last.subset, last.method, last.path) == (200, "v3", "GET", "/reviews/0")
        requests = labmesh.metrics(lab, "app=productpage")
        v3 = requests[(requests.destination_service_name == "reviews") & (requests.destination_version == "v3")]
        assert v3.value.sum() >= 1 and set(v3.reporter) == {"source"} and set(v3.response_code) == {"200"}
        assert sorted(labmesh.remove(lab, "VirtualService")) == ["details", "productpage", "ratings", "reviews"]
        assert labmesh.rules(lab).query("kind == 'VirtualService'").empty
    finally:
        lab.close()


def _request_id(line: str) -> str:
    found = re.search(r'"([0-9a-f]{8}-[0-9a-f-]{27})"', line)
    assert found, line
    return found[1]


def test_inbound_side_logs_and_reports_as_destination(mesh: Kubectl) -> None:
    sleep, ratings = _pod(mesh, "app=sleep"), _pod(mesh, "app=ratings")
    out = mesh("exec", sleep, "-c", "sleep", "--", "curl", "-s", "http://ratings:9080/ratings/0").stdout
    assert '"Reviewer1"' in out
    outbound = [line for line in _proxy_log(mesh, "app=sleep") if '"GET /ratings/0 HTTP/1.1" 200 ' in line][-1]
    assert "outbound|9080||ratings.default.svc.cluster.local" in outbound
    rid = _request_id(outbound)
    inbound = eventually(lambda: [line for line in _proxy_log(mesh, "app=ratings") if rid in line],
                         what="the same request in ratings' sidecar")
    ip = json.loads(mesh("get", "pod", ratings, "-o", "json").stdout)["status"]["podIP"]
    sleep_ip = json.loads(mesh("get", "pod", sleep, "-o", "json").stdout)["status"]["podIP"]
    assert re.match(r'\[\S+Z\] "GET /ratings/0 HTTP/1\.1" 200 - via_upstream - "-" 0 \d+ \d+ \d+ ', inbound[0])
    # Passed to the app from the caller's address (the app sees who called, as without the mesh).
    assert f'"{ip}:9080" inbound|9080|| {sleep_ip}:' in inbound[0]
    assert inbound[0].endswith(" outbound_.9080_._.ratings.default.svc.cluster.local default")
    stats = mesh("exec", sleep, "-c", "sleep", "--", "curl", "-s", f"http://{ip}:15020/stats/prometheus").stdout
    dest = [line for line in stats.splitlines() if line.startswith("istio_requests_total{")
            and 'reporter="destination"' in line and 'source_workload="sleep"' in line]
    assert dest and 'destination_workload="ratings-v1"' in dest[0] and 'response_code="200"' in dest[0]
    assert 'connection_security_policy="mutual_tls"' in dest[0] and 'destination_service_name="ratings"' in dest[0]
    assert any(line.startswith("istio_request_duration_milliseconds_count{") and 'reporter="destination"' in line
               for line in stats.splitlines())


def test_a_pod_without_sidecar_is_reached_directly(mesh: Kubectl) -> None:
    mesh("run", "plain", "--image=nginx", "--labels=app=plain", "--annotations=sidecar.istio.io/inject=false")
    mesh("expose", "pod", "plain", "--port=80")
    try:
        eventually(lambda: "1/1" in mesh("get", "pod", "plain").stdout, what="the plain pod Ready, one container")
        sleep = _pod(mesh, "app=sleep")
        eventually(lambda: "Welcome to nginx!" in mesh("exec", sleep, "-c", "sleep", "--", "curl", "-s",
                                                        "http://plain/", check=False).stdout,
                   what="nginx answering through the sleep pod's sidecar")
        assert any("outbound|80||plain.default.svc.cluster.local" in line for line in _proxy_log(mesh, "app=sleep"))
        assert '"GET / HTTP/1.1" 200' in mesh("logs", "plain").stdout  # nginx's own log: reached directly
    finally:
        mesh("delete", "service", "plain", "--ignore-not-found")
        mesh("delete", "pod", "plain", "--ignore-not-found", "--wait=false")


OLD_VERSIONS = """apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v3
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: old-reviews
spec:
  host: reviews
  subsets:
  - name: v3
    labels:
      version: v3
"""


def test_older_api_versions_serve_the_same_objects(rules: Kubectl, sandbox: Sandbox) -> None:
    out = rules("apply", "-f", "-", input=OLD_VERSIONS).stdout
    assert "virtualservice.networking.istio.io/reviews created" in out
    assert "destinationrule.networking.istio.io/old-reviews created" in out
    try:
        assert "unchanged" in rules("apply", "-f", "-", input=OLD_VERSIONS).stdout
        assert re.search(r"virtualservice.networking.istio.io/reviews\s+\[\"reviews\"\]", rules("get", "vs,dr").stdout)
        assert "apiVersion: networking.istio.io/v1\n" in rules("get", "vs", "reviews", "-o", "yaml").stdout
        for version in ("v1beta1", "v1alpha3"):
            obj = json.loads(rules("get", f"virtualservices.{version}.networking.istio.io", "reviews",
                                   "-o", "json").stdout)
            assert obj["apiVersion"] == f"networking.istio.io/{version}" and obj["spec"]["hosts"] == ["reviews"]
        versions = rules("api-versions").stdout.split()
        assert {"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"} <= \
            set(versions)
        assert re.search(r"^virtualservices\s+vs\s+networking.istio.io/v1\s+true\s+VirtualService$",
                         rules("api-resources", "--api-group=networking.istio.io").stdout, re.M)
        assert "VERSION:    v1alpha3" in rules("explain", "vs", "--api-version=networking.istio.io/v1alpha3").stdout
        # The official client at v1beta1: list, and a watch that starts with the object at that version.
        api_client = k8s_config.new_client_from_config(config_file=str(sandbox.kubeconfig))
        try:
            api = k8s.CustomObjectsApi(api_client)
            items = api.list_namespaced_custom_object("networking.istio.io", "v1beta1", "default",
                                                      "destinationrules")["items"]
            assert {i["apiVersion"] for i in items} == {"networking.istio.io/v1beta1"}
            stream = k8s_watch.Watch().stream(api.list_namespaced_custom_object, "networking.istio.io", "v1alpha3",
                                              "default", "virtualservices", timeout_seconds=1)
            events = list(stream)
            assert events and {e["object"]["apiVersion"] for e in events} == {"networking.istio.io/v1alpha3"}
        finally:
            api_client.close()
        # Red stars: the rule applied at v1alpha3 routes like any other.
        eventually(lambda: _stars(_page(sandbox)) == {"red"}, what="red stars")
    finally:
        rules("delete", "-f", "-", input=OLD_VERSIONS)


def _cli_status(sb: Sandbox) -> str:
    return subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "status", "--dir", str(sb.dir)],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def test_the_gateway_starts_only_with_the_mesh(tmp_path_factory: pytest.TempPathFactory) -> None:
    sb = start_sandbox(tmp_path_factory.mktemp("plain"), FAST, replicas=1)
    try:
        kubectl = Kubectl(sb.kubeconfig, tmp_path_factory.mktemp("kubecache-plain"))
        assert "istio-system" not in kubectl("get", "namespaces").stdout
        assert all(len(p["ready"]) and p["ready"] == "1/1" for p in sb.pods())
        assert "gateway_url" not in sb.status() and sb.gateway_url() is None
        assert "istio-ingressgateway" not in _cli_status(sb)
        kubectl("apply", "-f", str(ISTIO / "bookinfo-gateway.yaml"))
        eventually(lambda: re.search(r"istio-ingressgateway-\S+\s+1/1\s+Running",
                                     kubectl("get", "pods", "-n", "istio-system").stdout),
                   what="the ingress gateway started by the Gateway")
        port = kubectl("get", "svc", "istio-ingressgateway", "-n", "istio-system", "-o",
                       'jsonpath={.spec.ports[?(@.name=="http2")].nodePort}').stdout
        # Started after boot: the status finds it through the API, and the CLI says where it is.
        assert sb.status()["gateway_url"] == f"http://127.0.0.1:{port}"
        assert f"  istio-ingressgateway http://127.0.0.1:{port}\n" in _cli_status(sb)

        eventually(lambda: bookstore_title_at(int(port)), what="productpage through the gateway", ignore=(OSError,))
        # No sidecars here: the gateway reached productpage directly; its access log has the request.
        assert "outbound|9080||productpage.default.svc.cluster.local" in kubectl(
            "logs", "-n", "istio-system", "-l", "istio=ingressgateway").stdout
    finally:
        sb.stop()
