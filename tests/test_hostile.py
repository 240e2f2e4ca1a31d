"""Hostile and careless input: one regression test per example of issue 8 ("the sandbox's API server breaks").

Each test sends what a careless or hostile user sent and checks that the request is refused with a ``Status``
naming the field, that nothing is half stored, and that the cluster carries on (lists, restarts, exec, ingress).
The exec toolbox's own examples (a runaway ``grep -E``, ``wc`` on a missing file) are tested with the toolbox.

The module's sandbox is started the way the examples hit it: in a folder that already exists (mode 0755, like a
shared folder) and with the common default of 1024 open files.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST, Kubectl, start_sandbox, wait_all_ready
from helpers import eventually
from rawapi import RawApi, Reply

import labkit
from labkit.sandbox import Sandbox

PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's sandbox: in an existing 0755 folder, started with a soft limit of 1024 open files."""
    root = tmp_path_factory.mktemp("shared") / "lab"
    root.mkdir()
    os.chmod(root, 0o755)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        sb = start_sandbox(root, FAST)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture()
def api(ready_sandbox: Sandbox) -> Iterator[RawApi]:
    raw = RawApi(ready_sandbox)
    try:
        yield raw
    finally:
        raw.close()


def refused(reply: Reply, field: str, codes: tuple[int, ...] = (400, 422)) -> dict[str, Any]:
    """The reply is a 4xx ``Status`` that names ``field`` (in its message or its causes)."""
    assert reply.status in codes, (reply.status, reply.body[:500])
    assert reply.is_status(), reply.body[:500]
    doc: dict[str, Any] = reply.json()
    causes = [c.get("field") for c in (doc.get("details") or {}).get("causes") or []]
    assert field in doc["message"] or field in causes, doc
    return doc


def pod_body(name: Any, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "docker.io/curlimages/curl:8.16.0",
                                     "command": ["sleep", "3600"]}], "terminationGracePeriodSeconds": 0, **spec}}


def a_pod(api: RawApi, app: str) -> str:
    items = api.get(PODS, labelSelector=f"app={app}").json()["items"]
    return str(items[0]["metadata"]["name"])


def lists_work(api: RawApi, kubectl: Kubectl) -> None:
    for path in (PODS, CONFIGMAPS, "/api/v1/pods", "/api/v1/namespaces/default/events"):
        reply = api.get(path)
        assert reply.status == 200, (path, reply.body[:300])
    kubectl("get", "pods")


def test_a_number_as_a_pod_name_is_refused_and_lists_keep_working(api: RawApi, kubectl: Kubectl,
                                                                   ready_sandbox: Sandbox) -> None:
    doc = refused(api.request("POST", PODS, pod_body(7)), "metadata.name")
    assert "cannot unmarshal number" in doc["message"]
    lists_work(api, kubectl)
    assert all(p["status"] for p in ready_sandbox.pods())  # what `labkit sandbox status` reads


@pytest.mark.parametrize(("how", "field"), [
    ("a JSON string with a lone surrogate", "data.k"),
    ("a YAML apply patch with an alias cycle", "extra"),
])
def test_a_body_that_fails_half_way_is_not_stored(api: RawApi, kubectl: Kubectl, how: str, field: str) -> None:
    if how.startswith("a JSON"):
        body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"half"},"data":{"k":"\\ud800"}}'
        reply = api.request("POST", CONFIGMAPS, body)
    else:
        body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: half\nextra: &a [*a]\n"
        reply = api.request("PATCH", f"{CONFIGMAPS}/half", body, content_type="application/apply-patch+yaml",
                            query={"fieldManager": "hostile"})
    refused(reply, field)
    assert api.get(f"{CONFIGMAPS}/half").status == 404
    lists_work(api, kubectl)
    watch = api.get(CONFIGMAPS, watch="true", timeoutSeconds="1")
    assert watch.status == 200 and all(json.loads(line)["type"] == "ADDED" for line in watch.body.splitlines())


def test_a_watch_with_a_nan_timeout_is_refused_and_killed_containers_still_restart(
        api: RawApi, kubectl: Kubectl) -> None:
    refused(api.get(PODS, watch="true", timeoutSeconds="nan"), "timeoutSeconds")
    refused(api.get(PODS, watch="true", timeoutSeconds="inf"), "timeoutSeconds")
    pod = a_pod(api, "details")

    def restarts() -> int:
        status = api.get(f"{PODS}/{pod}").json()["status"]
        return int(status["containerStatuses"][0]["restartCount"])

    before = restarts()
    kubectl("exec", pod, "--", "pkill", "ruby")
    eventually(lambda: restarts() == before + 1, what=f"{pod} to restart")
    kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=60s")


def test_delete_of_a_pod_collection_with_dry_run_deletes_nothing(api: RawApi, ready_sandbox: Sandbox) -> None:
    before = {p["metadata"]["uid"] for p in api.get(PODS, labelSelector="app=ratings").json()["items"]}
    reply = api.request("DELETE", PODS, query={"labelSelector": "app=ratings", "dryRun": "All"})
    assert reply.status == 200 and {p["metadata"]["uid"] for p in reply.json()["items"]} == before
    after = api.get(PODS, labelSelector="app=ratings").json()["items"]
    assert {p["metadata"]["uid"] for p in after} == before
    assert not any(p["metadata"].get("deletionTimestamp") for p in after)


@pytest.mark.parametrize(("case", "field"), [
    ("log?tailLines=abc", "tailLines"),
    ("log?limitBytes=x", "limitBytes"),
    ("watch?resourceVersion=abc", "resourceVersion"),
    ("watch?timeoutSeconds=abc", "timeoutSeconds"),
    ("delete?gracePeriodSeconds=abc", "gracePeriodSeconds"),
    ("create with metadata a string", "metadata"),
    ("create with spec a list", "spec"),
    ("create nested 5000 deep", "<root>"),
    ("delete with a giant grace period", "gracePeriodSeconds"),
    ("put a service whose spec is a string", "spec"),
    ("json patch turning a deployment's spec into a number", "spec"),
])
def test_malformed_parameters_and_bodies_get_a_4xx_status_naming_the_field(
        api: RawApi, kubectl: Kubectl, case: str, field: str) -> None:
    details = a_pod(api, "details")
    if case.startswith("log?"):
        key, value = case[4:].split("=")
        reply = api.get(f"{PODS}/{details}/log", **{key: value})
    elif case.startswith("watch?"):
        key, value = case[6:].split("=")
        reply = api.get(PODS, watch="true", **{key: value})
    elif case.startswith("delete?"):
        reply = api.request("DELETE", f"{PODS}/{details}", query={"gracePeriodSeconds": "abc"})
    elif case == "create with metadata a string":
        reply = api.request("POST", PODS, {**pod_body("x"), "metadata": "x"})
    elif case == "create with spec a list":
        reply = api.request("POST", PODS, {**pod_body("x"), "spec": [1]})
    elif case == "create nested 5000 deep":
        reply = api.request("POST", PODS, b'{"a":' * 5000 + b"1" + b"}" * 5000)
    elif case == "delete with a giant grace period":
        reply = api.request("DELETE", f"{PODS}/{details}", {"gracePeriodSeconds": 10**30})
    elif case == "put a service whose spec is a string":
        reply = api.request("PUT", "/api/v1/namespaces/default/services/ratings",
                            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ratings"}, "spec": "x"})
    else:
        reply = api.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/ratings-v1",
                            [{"op": "replace", "path": "/spec", "value": 1}],
                            content_type="application/json-patch+json")
    refused(reply, field)
    assert api.get(f"{PODS}/{details}").json()["metadata"].get("deletionTimestamp") is None
    lists_work(api, kubectl)
    wait_all_ready_via(kubectl)


def wait_all_ready_via(kubectl: Kubectl) -> None:
    kubectl("wait", "--for=condition=Ready", "pods", "--all", "--timeout=60s")


def test_a_thousand_idle_connections_leave_the_api_ingress_and_exec_working(
        api: RawApi, ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    log = ready_sandbox.dir / "sandbox.log"
    log_before = log.stat().st_size
    port = int(ready_sandbox.api_url.rsplit(":", 1)[1])
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):  # no TLS handshake, no token: just held open
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        ctx = ssl.create_default_context(cafile=None)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        for _ in range(100):  # a TLS handshake, then nothing: the guard closes what exceeds its cap
            with_tls = socket.create_connection(("127.0.0.1", port), timeout=5)
            try:
                idle.append(ctx.wrap_socket(with_tls))
            except OSError:
                with_tls.close()
        lists_work(api, kubectl)
        sleep_pod = a_pod(api, "sleep")
        out = kubectl("exec", sleep_pod, "--", "curl", "-s", "http://ratings:9080/ratings/7").stdout
        assert '"id":7' in out.replace(" ", "")
        import urllib.request
        with urllib.request.urlopen(ready_sandbox.productpage_url, timeout=10) as page:
            assert page.status == 200
    finally:
        for s in idle:
            s.close()
    assert log.stat().st_size - log_before < 200_000


@pytest.mark.parametrize("name", ["../../../../escaped", "a/b", "Upper", "x" * 300, "nul\x00name", ""])
def test_pod_names_follow_kubernetes_rules(api: RawApi, kubectl: Kubectl, ready_sandbox: Sandbox,
                                           name: str) -> None:
    outside = ready_sandbox.dir.parent
    before = set(os.listdir(outside)) | set(os.listdir(ready_sandbox.dir))
    refused(api.request("POST", PODS, pod_body(name)), "metadata.name", (422,))
    assert set(os.listdir(outside)) | set(os.listdir(ready_sandbox.dir)) == before
    assert not any("escaped" in p["name"] or "/" in p["name"] for p in ready_sandbox.pods())
    lists_work(api, kubectl)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture()
def host_servers() -> Iterator[dict[str, int]]:
    """An HTTP server on the host's loopback and one on another sandbox's kind of address."""
    servers = {"127.0.0.1": ThreadingHTTPServer(("127.0.0.1", 0), _Hello),
               "127.251.0.2": ThreadingHTTPServer(("127.251.0.2", 0), _Hello)}
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        yield {host: s.server_address[1] for host, s in servers.items()}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def test_pods_reach_only_their_own_cluster_network(api: RawApi, ready_sandbox: Sandbox, kubectl: Kubectl,
                                                   host_servers: dict[str, int]) -> None:
    lab = labkit.connect(sandbox_dir=ready_sandbox.dir)
    try:
        tester = a_pod(api, "sleep")
        port = host_servers["127.0.0.1"]
        api_port = int(ready_sandbox.api_url.rsplit(":", 1)[1])
        for url in (f"http://0.0.0.0:{port}/", f"http://[::ffff:127.0.0.1]:{port}/", f"http://127.0.0.1:{port}/",
                    f"http://[::]:{port}/", f"http://0.0.0.0:{api_port}/version",
                    f"http://127.251.0.2:{host_servers['127.251.0.2']}/"):
            result = lab.exec(tester, ["curl", "-sS", "--max-time", "5", url])
            assert result.returncode == 7 and "hello" not in result.stdout, (url, result)
        # The pod's own network still works: a Service by name and a pod by its address.
        assert lab.exec(tester, ["curl", "-s", "http://ratings:9080/ratings/7"]).returncode == 0
        ip = api.get(f"{PODS}/{a_pod(api, 'ratings')}").json()["status"]["podIP"]
        assert lab.exec(tester, ["curl", "-s", f"http://{ip}:9080/ratings/7"]).returncode == 0
    finally:
        lab.close()


def test_pod_env_never_reaches_the_hosts_loader_or_interpreter(api: RawApi, ready_sandbox: Sandbox,
                                                               kubectl: Kubectl) -> None:
    env = [{"name": "LD_PRELOAD", "value": "/nonexistent/labkit-preload.so"},
           {"name": "PYTHONHOME", "value": "/nonexistent"}, {"name": "PYTHONSTARTUP", "value": "/nonexistent.py"},
           {"name": "GREETING", "value": "hello"}]
    body = pod_body("envpod")
    body["spec"]["containers"][0]["env"] = env
    assert api.request("POST", PODS, body).status == 201
    try:
        kubectl("wait", "--for=condition=Ready", "pod/envpod", "--timeout=30s")
        shown = kubectl("exec", "envpod", "--", "env").stdout
        for item in env:
            assert f"{item['name']}={item['value']}" in shown
        logs = kubectl("logs", "envpod").stdout
        assert "LD_PRELOAD" not in logs and "preload" not in logs.lower()
        assert api.get(f"{PODS}/envpod").json()["status"]["containerStatuses"][0]["restartCount"] == 0
    finally:
        api.request("DELETE", f"{PODS}/envpod", query={"gracePeriodSeconds": "0"})
        eventually(lambda: api.get(f"{PODS}/envpod").status == 404, what="envpod to go")


def test_an_existing_state_folder_keeps_its_permissions(ready_sandbox: Sandbox) -> None:
    assert stat.S_IMODE(os.stat(ready_sandbox.dir).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(ready_sandbox.kubeconfig).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ready_sandbox.dir / "pki").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(ready_sandbox.dir / "pki" / "apiserver.key").st_mode) == 0o600


def test_a_folder_labkit_creates_is_private(tmp_path: Path) -> None:
    from labkit.sandbox.state import make_private_dirs

    target = tmp_path / "new" / "deeper"
    make_private_dirs(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700
    os.chmod(target, 0o750)
    make_private_dirs(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o750


def test_everything_is_ready_at_the_end(ready_sandbox: Sandbox) -> None:
    wait_all_ready(ready_sandbox)


def test_exec_stdin_that_the_command_never_reads_is_bounded(api: RawApi, ready_sandbox: Sandbox) -> None:
    from kubernetes import client, config
    from kubernetes.stream import stream

    from labkit.sandbox.apiserver import EXEC_STDIN_LIMIT

    api_client = config.new_client_from_config(config_file=str(ready_sandbox.kubeconfig))
    try:
        core = client.CoreV1Api(api_client)
        resp = stream(core.connect_get_namespaced_pod_exec, a_pod(api, "sleep"), "default",
                      command=["sleep", "30"], stdin=True, stdout=True, stderr=True, tty=False,
                      _preload_content=False)
        chunk = b"x" * (1 << 20)
        for _ in range(EXEC_STDIN_LIMIT // len(chunk) + 2):
            if not resp.is_open():
                break
            resp.write_stdin(chunk)
        resp.run_forever(timeout=20)
        assert "bytes of stdin left unread" in resp.read_stderr()
        assert resp.returncode not in (None, 0)
        resp.close()
    finally:
        api_client.close()
