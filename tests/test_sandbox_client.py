"""The official kubernetes Python client against the sandbox, and the API's error shapes."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import wait_all_ready
from helpers import eventually
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from labkit.sandbox import Sandbox
from labkit.sandbox.control import _read_kubeconfig


def raw(sb: Sandbox, method: str, path: str, body: Any = None, token: str | None = "kubeconfig",
        content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    kc = _read_kubeconfig(sb.kubeconfig)
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {kc['token'] if token == 'kubeconfig' else token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(sb.api_url + path, data=data, method=method, headers=headers)
    ctx = ssl.create_default_context(cadata=kc["ca"])
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_list_read_and_the_strict_models(ready_sandbox: Sandbox, core: client.CoreV1Api) -> None:
    pods = core.list_namespaced_pod("default", label_selector="app=details")
    assert len(pods.items) == 3
    pod = core.read_namespaced_pod(pods.items[0].metadata.name, "default")
    st = pod.status.container_statuses[0]
    assert st.ready is True and st.restart_count == 0 and st.image_id
    assert pod.status.pod_ip.startswith("127.") and pod.status.phase == "Running"
    assert pod.metadata.owner_references[0].kind == "ReplicaSet"
    apps = client.AppsV1Api(core.api_client)
    assert {d.metadata.name for d in apps.list_namespaced_deployment("default").items} >= {"details-v1", "sleep"}
    services = {s.metadata.name for s in core.list_namespaced_service("default").items}
    assert services == {"details", "kubernetes", "productpage", "ratings", "reviews", "sleep"}
    assert core.list_namespaced_endpoints("default").items
    assert core.list_namespaced_event("default").items
    assert {n.metadata.name for n in core.list_namespace().items} >= {"default", "kube-system"}


def test_exec_with_returncode_and_stdin(ready_sandbox: Sandbox, core: client.CoreV1Api) -> None:
    tester = core.list_namespaced_pod("default", label_selector="app=sleep").items[0].metadata.name
    out = stream(core.connect_get_namespaced_pod_exec, tester, "default",
                 command=["curl", "-sS", "http://ratings:9080/ratings/7"], stderr=True, stdin=False, stdout=True,
                 tty=False)
    assert out == '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    ws = stream(core.connect_get_namespaced_pod_exec, tester, "default", command=["curl", "-sS", "http://nope/"],
                stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=10)
    assert ws.returncode == 6
    ws = stream(core.connect_get_namespaced_pod_exec, tester, "default", command=["cat"], stderr=True, stdin=True,
                stdout=True, tty=False, _preload_content=False)
    ws.write_stdin("text frames work\n")
    ws.close_channel(0)
    ws.run_forever(timeout=10)
    assert ws.read_stdout() == "text frames work\n" and ws.returncode == 0
    tty = stream(core.connect_get_namespaced_pod_exec, tester, "default", command=["echo", "a"], stderr=True,
                 stdin=False, stdout=True, tty=True)
    assert tty == "a\r\n"


def test_watch_sees_a_restart_and_delete_returns_the_pod(ready_sandbox: Sandbox, core: client.CoreV1Api) -> None:
    target = core.list_namespaced_pod("default", label_selector="app=ratings").items[0].metadata.name
    seen: list[tuple[str, int, bool]] = []
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, "default", field_selector=f"metadata.name={target}",
                           timeout_seconds=20):
            cs = (ev["object"].status.container_statuses or [None])[0]
            if cs is not None:
                seen.append((ev["type"], cs.restart_count, bool(cs.ready)))
            if ev["type"] == "DELETED" or done.is_set():
                w.stop()

    th = threading.Thread(target=watcher)
    th.start()
    eventually(lambda: seen, timeout=20, what="the watch to deliver the pod (it is established)")
    tester = core.list_namespaced_pod("default", label_selector="app=sleep").items[0].metadata.name
    exec_client = client.CoreV1Api(client.ApiClient(core.api_client.configuration))
    stream(exec_client.connect_get_namespaced_pod_exec, target, "default", command=["pkill", "node"],
           stderr=True, stdin=False, stdout=True, tty=False)
    eventually(lambda: any(r == 1 and ok for _, r, ok in seen), timeout=20, what=f"{target} Ready, restarted once")
    assert seen[0][0] == "ADDED"
    assert any(not ok for _, _, ok in seen), seen  # it was seen down...
    assert any(r == 1 and ok for _, r, ok in seen), seen  # ...and back, restarted once
    deleted = core.delete_namespaced_pod(target, "default")
    assert isinstance(deleted, client.V1Pod) and deleted.metadata.name == target
    th.join(25)
    assert seen[-1][0] == "DELETED"
    assert tester


def test_service_proxy_and_logs(ready_sandbox: Sandbox, core: client.CoreV1Api) -> None:
    resp = core.connect_get_namespaced_service_proxy_with_path("ratings:9080", "default", "ratings/7",
                                                               _preload_content=False)
    assert json.loads(resp.data) == {"id": 7, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    page = core.connect_get_namespaced_service_proxy_with_path("productpage:http", "default", "productpage")
    assert "<title>Simple Bookstore App</title>" in page
    pod = core.list_namespaced_pod("default", label_selector="app=ratings").items[0].metadata.name
    assert "Server listening on" in core.read_namespaced_pod_log(pod, "default")
    assert core.read_namespaced_pod_log(pod, "default", tail_lines=1).count("\n") == 1
    wait_all_ready(ready_sandbox)


def test_unauthenticated_requests_get_401(sandbox: Sandbox) -> None:
    for token in (None, "wrong-token"):
        code, body = raw(sandbox, "GET", "/api/v1/namespaces/default/pods", token=token)
        assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"


@pytest.mark.parametrize(("method", "path", "body", "code", "reason"), [
    ("GET", "/api/v1/namespaces/default/pods/nope", None, 404, "NotFound"),
    ("GET", "/api/v1/namespaces/default/pods?labelSelector=app%20in%20(x", None, 400, "BadRequest"),
    ("GET", "/api/v1/namespaces/default/pods?fieldSelector=%3D%3D", None, 400, "BadRequest"),
    ("POST", "/api/v1/namespaces/default/pods/nope", {}, 405, "MethodNotAllowed"),
    ("POST", "/api/v1/namespaces/default/services",
     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "details"}, "spec": {"ports": [{"port": 1}]}},
     409, "AlreadyExists"),
    ("POST", "/api/v1/namespaces/default/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                                 "spec": {"containers": []}}, 422, "Invalid"),
    ("POST", "/apis/apps/v1/namespaces/default/deployments",
     {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
      "spec": {"selector": {"matchLabels": {"app": "a"}},
               "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c",
                                                                                           "image": "i"}]}}}},
     422, "Invalid"),
    ("GET", "/api/v1/namespaces/default/nothings", None, 404, "NotFound"),
    ("GET", "/api/v1/persistentvolumes", None, 404, "NotFound"),
    ("GET", "/apis/batch/v1/namespaces/default/jobs", None, 404, "NotFound"),
    ("GET", "/api/v1/namespaces/default/pods/nope/attach", None, 404, "NotFound"),
    ("PUT", "/api/v1/namespaces/default/pods/nope/log", {}, 405, "MethodNotAllowed"),
    ("POST", "/apis/apps/v1/namespaces/default/deployments/nope/scale", {}, 405, "MethodNotAllowed"),
    ("DELETE", "/apis/apps/v1/namespaces/default/deployments/nope?dryRun=All", None, 404, "NotFound"),
])
def test_bad_requests_get_status_errors(sandbox: Sandbox, method: str, path: str, body: Any, code: int,
                                        reason: str) -> None:
    got, doc = raw(sandbox, method, path, body)
    assert got == code, doc
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["reason"] == reason and doc["code"] == code
    assert doc["message"] and "Traceback" not in doc["message"]


def test_client_errors_are_api_exceptions(sandbox: Sandbox, core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as info:
        core.read_namespaced_pod("nope", "default")
    assert info.value.status == 404 and json.loads(info.value.body)["reason"] == "NotFound"


def test_port_forward_with_the_python_client(ready_sandbox: Sandbox, core: client.CoreV1Api) -> None:
    from kubernetes.stream import portforward

    pod = core.list_namespaced_pod("default", label_selector="app=ratings").items[0].metadata.name
    api = client.CoreV1Api(client.ApiClient(core.api_client.configuration))  # stream() swaps its client's request
    pf = portforward(api.connect_get_namespaced_pod_portforward, pod, "default", ports="9080")
    try:
        sock = pf.socket(9080)
        sock.setblocking(True)
        sock.sendall(b"GET /ratings/7 HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b'{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}' in data
    finally:
        pf.close()
