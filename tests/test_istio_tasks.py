"""istio.io's Bookinfo traffic-management tasks, their commands run verbatim through bash with the real kubectl.

The commands are the task pages' own (request routing, fault injection, traffic shifting, request timeouts), with
``samples/bookinfo/networking/`` a local copy of labkit's samples (Istio's, in a folder of that name under the
test's working directory). The pages' checks are "look at the page in a browser" or "log in as jason"; here the
page comes through the sidecars from a pod (``kubectl exec ... curl ... productpage:9080/productpage``) or through
the ingress gateway found the istio.io way (``INGRESS_HOST``/``INGRESS_PORT``). Signing in as jason is the page's
``POST /login`` with curl, its session cookie sent back with ``-H``.

One sandbox for the module: one replica of each Deployment plus reviews v2 and v3, the default namespace labelled
for injection and every Deployment restarted (as istio.io's "enable Istio" step), then ``bookinfo-gateway.yaml``
and ``destination-rule-all.yaml`` applied, as the tasks' "Before you begin" asks. Each test removes its rules.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST, Kubectl, start_sandbox
from helpers import eventually, every_pod_meshed

from labkit.sandbox import Sandbox

MANIFESTS = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests"
APPS = ("details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "sleep")
TITLE = "<title>Simple Bookstore App</title>"
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"

# The page from a pod, through its sidecar and productpage's (istio.io's "verify the app is running" command).
PAGE = ("kubectl exec \"$(kubectl get pod -l app=ratings -o jsonpath='{.items[0].metadata.name}')\" -c ratings -- "
        "curl -sS productpage:9080/productpage")
# Signed in as jason: productpage's login form, then its session cookie.
AS_JASON = """
SLEEP=$(kubectl get pod -l app=sleep -o jsonpath='{.items[0].metadata.name}')
COOKIE=$(kubectl exec "$SLEEP" -c sleep -- curl -s -i -d "username=jason&passwd=password" \
  productpage:9080/login | grep -o 'session=[^;]*')
kubectl exec "$SLEEP" -c sleep -- curl -s -H "Cookie: $COOKIE" productpage:9080/productpage
"""
GATEWAY_URL = """
export INGRESS_HOST=$(kubectl get po -l istio=ingressgateway -n istio-system -o jsonpath='{.items[0].status.hostIP}')
export INGRESS_PORT=$(kubectl -n istio-system get service istio-ingressgateway \
  -o jsonpath='{.spec.ports[?(@.name=="http2")].nodePort}')
export GATEWAY_URL=$INGRESS_HOST:$INGRESS_PORT
echo "$GATEWAY_URL"
"""


class Shell:
    """bash in a folder holding ``samples/bookinfo/networking/``, with the sandbox's kubectl first on PATH."""

    def __init__(self, kubectl: Kubectl, cwd: Path) -> None:
        self.kubectl = kubectl
        self.cwd = cwd

    def __call__(self, script: str, check: bool = True, timeout: float = 120) -> str:
        bindir = str(Path(self.kubectl.binary).parent)
        env = {**self.kubectl.env, "PATH": f"{bindir}:{self.kubectl.env.get('PATH', '')}"}
        proc = subprocess.run(["bash", "-o", "pipefail", "-c", script], env=env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"bash exited {proc.returncode}: {script}\nstdout: {proc.stdout}\n"
                                 f"stderr: {proc.stderr}")
        return proc.stdout


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox(tmp_path_factory.mktemp("tasks"), FAST, replicas=1)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def sh(sandbox: Sandbox, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    """Bookinfo meshed, the gateway and the destination rules applied, as each task's "Before you begin"."""
    cwd = tmp_path_factory.mktemp("istio")
    shutil.copytree(MANIFESTS / "istio", cwd / "samples" / "bookinfo" / "networking")
    shutil.copy(MANIFESTS / "reviews-v2-v3.yaml", cwd / "reviews-v2-v3.yaml")
    shell = Shell(kubectl, cwd)
    shell("kubectl apply -f reviews-v2-v3.yaml")
    shell("kubectl label namespace default istio-injection=enabled --overwrite")
    shell("kubectl rollout restart deployment")
    eventually(lambda: every_pod_meshed(kubectl, len(APPS)), timeout=90,
               what="every pod at 2/2 with an istio-proxy sidecar")
    out = shell("kubectl apply -f samples/bookinfo/networking/bookinfo-gateway.yaml")
    assert "gateway.networking.istio.io/bookinfo-gateway created" in out
    assert "virtualservice.networking.istio.io/bookinfo created" in out
    shell("kubectl apply -f samples/bookinfo/networking/destination-rule-all.yaml")
    return shell


@pytest.fixture()
def task(sh: Shell) -> Iterator[Shell]:
    yield sh
    sh("kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml --ignore-not-found")
    sh("kubectl delete virtualservice reviews ratings --ignore-not-found")


def _stars(page: str) -> str:
    """``black``, ``red`` or ``none``: the star colour on one page load."""
    colours = set(re.findall(r'<font color="(\w+)">', page))
    assert len(colours) <= 1, colours
    return colours.pop() if colours else "none"


def _proxy_log(sh: Shell, selector: str) -> list[str]:
    return [line for line in sh(f"kubectl logs -l {selector} -c istio-proxy --tail=-1").splitlines()
            if line.startswith("[")]


def test_ingress_gateway_found_the_istio_io_way(sh: Shell) -> None:
    out = sh("kubectl get svc istio-ingressgateway -n istio-system")
    assert re.search(r"istio-ingressgateway\s+LoadBalancer\s+\S+\s+<pending>\s+15021/TCP,80:\d+/TCP", out), out
    gateway_url = sh(GATEWAY_URL).strip()
    host, port = gateway_url.split(":")
    assert host == "127.0.0.1" and 30000 <= int(port) <= 32767

    def get(path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    status, page = get("/productpage")
    assert status == 200 and TITLE in page
    assert get("/api/v1/products")[1].startswith('[{"id": 0')
    assert get("/static/nothing")[0] == 404  # routed (prefix /static) to productpage, which has no such file
    assert get("/nothing")[0] == 404  # no rule of the bound VirtualService matches: the gateway's own 404
    # istio.io's own test helper reaches the gateway from the sleep pod by its Service name.
    sleep = ("kubectl exec \"$(kubectl get pod -l app=sleep -o jsonpath='{.items..metadata.name}')\" -c sleep -- "
             "curl -s http://istio-ingressgateway.istio-system/productpage | grep -o \"<title>.*</title>\"")
    assert sh(sleep).strip() == TITLE
    lines = [line for line in sh("kubectl logs -n istio-system -l istio=ingressgateway").splitlines()
             if line.startswith("[")]
    assert any('"GET /nothing HTTP/1.1" 404 NR route_not_found ' in line for line in lines), lines
    served = [line for line in lines if '"GET /productpage HTTP/1.1" 200 - via_upstream ' in line]
    assert served and "outbound|9080||productpage.default.svc.cluster.local" in served[-1]
    # The request went on through productpage's own sidecar, which logged it as inbound.
    inbound = [line for line in _proxy_log(sh, "app=productpage") if " inbound|9080|| " in line]
    assert any('"GET /productpage HTTP/1.1" 200 ' in line for line in inbound)


def test_request_routing(task: Shell) -> None:
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml")
    listed = task("kubectl get virtualservices -o yaml")
    assert listed.count("subset: v1") == 4 and "- details" in listed and "- productpage" in listed
    rules = task("kubectl get destinationrules -o yaml")
    assert all(name in rules for name in ("productpage", "reviews", "ratings", "details"))
    assert task(f'{PAGE} | grep -o "<title>.*</title>"').strip() == TITLE
    eventually(lambda: _stars(task(PAGE)) == "none", what="reviews v1 only")
    assert {_stars(task(PAGE)) for _ in range(6)} == {"none"}

    task("kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml")
    assert "exact: jason" in task("kubectl get virtualservice reviews -o yaml")
    eventually(lambda: _stars(task(AS_JASON)) == "black", what="black stars for jason")
    for _ in range(3):
        assert _stars(task(AS_JASON)) == "black"
        assert _stars(task(PAGE)) == "none"
    assert 'virtualservice.networking.istio.io "reviews" deleted' in task(
        "kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml")


def test_fault_injection_delay_then_abort(task: Shell) -> None:
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml\n"
         "kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml")
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-ratings-test-delay.yaml")
    assert "fixedDelay: 7s" in task("kubectl get virtualservice ratings -o yaml")
    # productpage gives up on reviews after 3 s, twice, before the 7 s delay ends: the reviews error, for jason.
    page = eventually(lambda: (p := task(AS_JASON)) and REVIEWS_UNAVAILABLE in p and p, timeout=60,
                      what="productpage's reviews error for jason")
    assert "Error fetching product reviews" in page and TITLE in page
    assert REVIEWS_UNAVAILABLE not in task(PAGE)  # other users: reviews v1, no ratings call, no delay
    request_id = eventually(
        lambda: [re.search(r'"([0-9a-f-]{36})"', line)[1]  # type: ignore[index]
                 for line in _proxy_log(task, "app=reviews,version=v2") if " DI " in line
                 and "outbound|9080|v1|ratings.default.svc.cluster.local" in line],
        timeout=30, what="the delayed ratings calls in reviews-v2's sidecar")[-1]
    # productpage's sidecar saw both of its tries at reviews abandoned by productpage (no response code, DC).
    tries = eventually(lambda: [line for line in _proxy_log(task, "app=productpage")
                                if request_id in line and '"GET /reviews/0 ' in line and " 0 DC " in line],
                       timeout=30, what="productpage's abandoned tries in its sidecar's log")
    assert all("outbound|9080|v2|reviews.default.svc.cluster.local" in line for line in tries)

    task("kubectl apply -f samples/bookinfo/networking/virtual-service-ratings-test-abort.yaml")
    assert "httpStatus: 500" in task("kubectl get virtualservice ratings -o yaml")
    eventually(lambda: RATINGS_UNAVAILABLE in task(AS_JASON), what="the ratings error for jason")
    assert RATINGS_UNAVAILABLE not in task(PAGE)
    aborts = [line for line in _proxy_log(task, "app=reviews,version=v2") if " 500 FI fault_filter_abort " in line]
    assert aborts and '"GET /ratings/0 HTTP/1.1"' in aborts[-1]
    task("kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml")


def test_traffic_shifting_50_50_then_v3(task: Shell) -> None:
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml")
    eventually(lambda: _stars(task(PAGE)) == "none", what="reviews v1 only")
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-50-v3.yaml")
    assert task("kubectl get virtualservice reviews -o yaml").count("weight: 50") == 2
    seen: set[str] = set()

    def both() -> bool:
        seen.add(_stars(task(PAGE)))
        return seen == {"none", "red"}

    eventually(both, timeout=60, what="red stars and no stars both served")
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-v3.yaml")
    eventually(lambda: _stars(task(PAGE)) == "red", what="red stars")
    assert {_stars(task(PAGE)) for _ in range(6)} == {"red"}
    task("kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml")


REVIEWS_V2 = """kubectl apply -f - <<EOF
apiVersion: networking.istio.io/v1alpha3
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
        subset: v2
EOF
"""
RATINGS_DELAY = """kubectl apply -f - <<EOF
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
EOF
"""
REVIEWS_TIMEOUT = """kubectl apply -f - <<EOF
apiVersion: networking.istio.io/v1alpha3
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
        subset: v2
    timeout: 0.5s
EOF
"""


def test_request_timeouts(task: Shell) -> None:
    task("kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml")
    assert "virtualservice.networking.istio.io/reviews configured" in task(REVIEWS_V2)
    task(RATINGS_DELAY)
    # Objects applied at v1alpha3 are read back at the preferred version, as from Istio's CRDs.
    assert "apiVersion: networking.istio.io/v1\n" in task("kubectl get virtualservice ratings -o yaml")
    assert "fixedDelay: 2s" in task("kubectl get virtualservices.v1alpha3.networking.istio.io ratings -o yaml")
    eventually(lambda: _stars(task(PAGE)) == "black", what="black stars, after the 2 s delay")
    task(REVIEWS_TIMEOUT)
    assert "timeout: 0.5s" in task("kubectl get virtualservice reviews -o yaml")
    page = eventually(lambda: (p := task(PAGE)) and REVIEWS_UNAVAILABLE in p and p, what="reviews unavailable")
    assert TITLE in page
    timeouts = [line for line in _proxy_log(task, "app=productpage") if " 504 UT response_timeout " in line]
    assert timeouts and "outbound|9080|v2|reviews.default.svc.cluster.local" in timeouts[-1]
    # productpage tried twice: two timed-out tries with one request id.
    request_id = re.search(r'"([0-9a-f-]{36})"', timeouts[-1])[1]  # type: ignore[index]
    assert sum(request_id in line for line in timeouts) == 2
    task("kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml")
