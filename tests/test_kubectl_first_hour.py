"""A workshop's first hour, typed by hand with the real kubectl and judged by what a real cluster prints.

The wire (trailing slashes, the API server's boolean parsing, Status details, Tables with
``includeObject=Object``, TTY exec, log timestamps and ``since``), ``kubectl run`` with the images every tutorial
uses, and the commands a real cluster refuses here with the real server's message (``debug``, ``cp``).
"""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import select
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import Kubectl
from helpers import eventually

from labkit.sandbox import Sandbox

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$")


class Api:
    """Raw HTTPS requests to the sandbox's API server with its kubeconfig's token and CA, as curl would send."""

    def __init__(self, sandbox: Sandbox, tmp: Path) -> None:
        doc = yaml.safe_load(sandbox.kubeconfig.read_text())
        cluster = doc["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.ca = tmp / "ca.pem"
        self.ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        self.headers = {"Authorization": f"Bearer {doc['users'][0]['user']['token']}"}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.server + path, headers={**self.headers, **kw.pop("headers", {})},
                            verify=str(self.ca), timeout=30, **kw)


@pytest.fixture(scope="module")
def api(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Api:
    return Api(sandbox, tmp_path_factory.mktemp("api"))


def sleep_pod(kubectl: Kubectl) -> str:
    return kubectl("get", "pods", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout


# --------------------------------------------------------------------------------------------- the wire


def test_discovery_paths_answer_with_a_trailing_slash(ready_sandbox: Sandbox, api: Api) -> None:
    for path in ("/version", "/api", "/apis", "/api/v1", "/apis/apps", "/apis/apps/v1"):
        plain, slashed = api.get(path), api.get(path + "/")
        assert slashed.status_code == 200, (path, slashed.text)
        assert slashed.json() == plain.json()
    assert api.get("/api/").json()["kind"] == "APIVersions"
    assert api.get("/version/").json()["major"] == "1"
    assert api.get("/apis/").json()["kind"] == "APIGroupList"


def test_boolean_query_parameters_parse_as_the_api_server_does(ready_sandbox: Sandbox, api: Api) -> None:
    """Only ``0`` and ``false`` (any case) are false; ``True`` (kubernetes_asyncio) and any other value are true."""
    for spelling in ("1", "t", "TRUE", "true", "True", "yes"):
        resp = api.get("/api/v1/namespaces/default/pods", params={"watch": spelling, "timeoutSeconds": "1"})
        first = json.loads(resp.text.splitlines()[0])
        assert first["type"] == "ADDED", (spelling, resp.text[:200])
    for spelling in ("0", "FALSE", "false", "False"):
        listed = api.get("/api/v1/namespaces/default/pods", params={"watch": spelling}).json()
        assert listed["kind"] == "PodList", spelling
    # previous=True asks for the last terminated container: none yet, as the real kubelet answers.
    pod = api.get("/api/v1/namespaces/default/pods", params={"labelSelector": "app=details"}).json()["items"][0]
    name = pod["metadata"]["name"]
    previous = api.get(f"/api/v1/namespaces/default/pods/{name}/log", params={"previous": "True"})
    assert previous.status_code == 400
    assert previous.json()["message"] == f'previous terminated container "details" in pod "{name}" not found'
    stamped = api.get(f"/api/v1/namespaces/default/pods/{name}/log", params={"timestamps": "True"}).text
    assert stamped and all(STAMP.match(line) for line in stamped.splitlines())


def test_status_bodies_are_shaped_and_ordered_like_the_api_servers(ready_sandbox: Sandbox, api: Api,
                                                                   kubectl: Kubectl) -> None:
    missing = api.get("/apis/apps/v1/namespaces/default/deployments/nope")
    assert missing.status_code == 404
    assert missing.text == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
                            '"deployments.apps \\"nope\\" not found","reason":"NotFound","details":{"name":"nope",'
                            '"group":"apps","kind":"deployments"},"code":404}')
    assert list(api.get("/api/v1/namespaces/default/pods/nope").json()["details"]) == ["name", "kind"]
    unknown = api.get("/api/v1/namespaces/default/pods/nope/ephemeralcontainers")
    assert unknown.status_code == 404 and unknown.json()["details"] == {}
    assert list(unknown.json()) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details",
                                    "code"]
    again = kubectl("create", "deployment", "details-v1", "--image=nginx", check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == 'error: failed to create deployment: deployments.apps "details-v1" already exists'


def test_kubectl_debug_fails_with_the_real_servers_message(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    """A cluster without ephemeral containers: kubectl must explain, not panic on a Status without details."""
    out = kubectl("debug", sleep_pod(kubectl), "-it", "--image=busybox", check=False)
    assert out.returncode == 1
    assert "panic" not in out.stderr
    assert out.stderr.strip().endswith('error: ephemeral containers are disabled for this cluster (error from '
                                       'server: "the server could not find the requested resource")')


def test_sort_by_reads_the_objects_in_table_rows(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    events = kubectl("get", "events", "--sort-by=.lastTimestamp").stdout
    assert events.splitlines()[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert len(events.splitlines()) > 10 and "Scheduled" in events
    pods = kubectl("get", "pods", "--sort-by=.status.startTime").stdout.splitlines()
    order = [line.split()[0] for line in pods[1:]]
    started = json.loads(kubectl("get", "pods", "-o", "json").stdout)["items"]
    expected = [p["metadata"]["name"] for p in sorted(started, key=lambda p: p["status"]["startTime"])]
    assert sorted(order) == sorted(expected) and len(order) == 13
    times = {p["metadata"]["name"]: p["status"]["startTime"] for p in started}
    assert [times[n] for n in order] == sorted(times[n] for n in order)


def run_in_terminal(kubectl: Kubectl, *args: str) -> str:
    """Run kubectl with a pseudo-terminal as its stdin/stdout/stderr, as a person at a terminal does."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([kubectl.binary, *args], env=kubectl.env, stdin=secondary, stdout=secondary,
                            stderr=secondary, close_fds=True)
    os.close(secondary)
    out = bytearray()
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.wait(timeout=60)
        os.close(primary)
    return out.decode(errors="replace")


def test_tty_exec_shows_error_text(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    """Under ``-it`` a terminal has one stream: the command's stderr reaches it (kubectl drops channel 2)."""
    out = run_in_terminal(kubectl, "exec", "-it", sleep_pod(kubectl), "--", "cat", "/etc/no-such-file")
    assert "cat: /etc/no-such-file: No such file or directory" in out
    assert "command terminated with exit code 1" in out
    # Without a terminal, stderr stays on its own stream.
    plain = kubectl("exec", sleep_pod(kubectl), "--", "cat", "/etc/no-such-file", check=False)
    assert plain.stderr.startswith("cat: /etc/no-such-file: No such file or directory") and plain.stdout == ""


def test_kubectl_cp_fails_with_the_real_message(ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    """kubectl cp runs tar in the container; the curl image has none here, and kubectl says what containerd says."""
    pod = sleep_pod(kubectl)
    for args in ((f"{pod}:/etc/hostname", str(tmp_path / "hostname")), (str(tmp_path), f"{pod}:/tmp/x")):
        out = kubectl("cp", *args, check=False)
        assert out.returncode == 1
        # kubectl itself may log that its copy of stdin (the tar stream) met the closed socket: a klog line, not ours
        stderr = re.sub(r'(?m)^[EWI]\d{4} [^\n]*"Copying stdin failed"[^\n]*\n', "", out.stderr)
        assert re.fullmatch(r'error: Internal error occurred: error executing command in container: failed to exec '
                            r'in container: failed to start exec "[0-9a-f]{64}": OCI runtime exec failed: exec '
                            r'failed: unable to start container process: exec: "tar": executable file not found in '
                            r'\$PATH: unknown\n', stderr), out.stderr


# --------------------------------------------------------------------------------------------- kubectl run


@pytest.fixture(scope="module")
def run_pods(sandbox: Sandbox, kubectl: Kubectl) -> Iterator[None]:
    kubectl("run", "x", "--image=curlimages/curl", "--", "sleep", "infinity")
    kubectl("run", "b", "--image=busybox", "--", "sleep", "3600")
    kubectl("run", "nginx", "--image=nginx")
    kubectl("run", "unknown", "--image=registry.example.com/team/unknown:1.0")
    kubectl("run", "loop", "--image=busybox", "--", "sh", "-c",
            "for i in 1 2 3; do echo tick $i; done; while true; do sleep 3600; done")
    kubectl("wait", "--for=condition=Ready", "pod/x", "pod/b", "pod/nginx", "--timeout=60s")
    yield
    kubectl("delete", "pod", "x", "b", "nginx", "unknown", "loop", "--wait=false")
    kubectl("delete", "service", "nginx", "--ignore-not-found")


def test_kubectl_run_pods_run_their_commands(run_pods: None, kubectl: Kubectl) -> None:
    for pod, command in (("x", "sleep infinity"), ("b", "sleep 3600")):
        status = json.loads(kubectl("get", "pod", pod, "-o", "json").stdout)["status"]["containerStatuses"][0]
        assert "running" in status["state"] and status["restartCount"] == 0, (pod, status)
        ps = kubectl("exec", pod, "--", "ps", "-o", "args").stdout.splitlines()
        assert command in [line.strip() for line in ps], (pod, ps)
    listed = {line.split()[0]: line.split() for line in kubectl("get", "pods").stdout.splitlines()[1:]}
    assert listed["x"][1:3] == ["1/1", "Running"] and listed["b"][1:3] == ["1/1", "Running"]
    eventually(lambda: kubectl("logs", "loop").stdout == "tick 1\ntick 2\ntick 3\n", what="busybox sh's loop")
    eventually(lambda: kubectl("get", "pod", "unknown", "-o",
                               "jsonpath={.status.containerStatuses[0].state.waiting.reason}").stdout
               in ("ErrImagePull", "ImagePullBackOff"), what="the unknown image failing to pull")


def test_nginx_serves_its_welcome_page_by_pod_ip_and_service(run_pods: None, kubectl: Kubectl) -> None:
    ip = kubectl("get", "pod", "nginx", "-o", "jsonpath={.status.podIP}").stdout
    page = kubectl("exec", "x", "--", "curl", "-s", f"http://{ip}/").stdout
    assert "<title>Welcome to nginx!</title>" in page
    kubectl("expose", "pod", "nginx", "--port=80")
    head = kubectl("exec", "x", "--", "curl", "-sI", "http://nginx/").stdout
    assert head.startswith("HTTP/1.1 200 OK") and re.search(r"^Server: nginx/1\.\d+\.\d+", head, re.M)
    assert kubectl("exec", "x", "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                   "http://nginx/missing").stdout == "404"
    access = kubectl("logs", "nginx").stdout.splitlines()
    assert any('"GET / HTTP/1.1" 200 615' in line for line in access), access


# --------------------------------------------------------------------------------------------- logs


def test_log_timestamps_are_write_times_and_since_filters_on_them(run_pods: None, kubectl: Kubectl,
                                                                   api: Api) -> None:
    ip = kubectl("get", "pod", "nginx", "-o", "jsonpath={.status.podIP}").stdout
    kubectl("exec", "x", "--", "curl", "-s", "-o", "/dev/null", f"http://{ip}/stamped")
    eventually(lambda: "/stamped" in kubectl("logs", "nginx").stdout, what="the request in nginx's log")
    first = kubectl("logs", "nginx", "--timestamps").stdout.splitlines()
    second = kubectl("logs", "nginx", "--timestamps").stdout.splitlines()
    assert second[: len(first)] == first  # the write time, not the read time: the same on every read
    stamps = [STAMP.match(line) for line in first]
    assert all(stamps), first
    times = [m.group(1) for m in stamps if m]
    assert times == sorted(times)
    request_time = next(m.group(1) for m in stamps if m and "/stamped" in m.group(2))
    startup = next(m.group(1) for m in stamps if m and "Configuration complete" in m.group(2))
    assert startup < request_time
    path = "/api/v1/namespaces/default/pods/nginx/log"
    since = api.get(path, params={"sinceTime": request_time, "timestamps": "True"}).text.splitlines()
    assert since and all(line.split(" ", 1)[0] >= request_time for line in since)
    assert not any("Configuration complete" in line for line in since)
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert kubectl("logs", "nginx", f"--since-time={future}").stdout == ""
    assert kubectl("logs", "nginx", "--since=1h").stdout == kubectl("logs", "nginx").stdout
    both = api.get(path, params={"sinceTime": request_time, "sinceSeconds": "10"})
    assert both.status_code == 422



def test_container_logs_on_disk_are_cri_records_with_their_stream(run_pods: None, sandbox: Sandbox) -> None:
    """The kubelet writes ``TIME stream F text`` as containerd does: nginx's notices go to stderr, access to stdout."""
    [log_file] = sandbox.dir.glob("**/logs/default_nginx_*/nginx/0.log")
    records = [line.split(" ", 3) for line in log_file.read_text().splitlines()]
    assert all(STAMP.match(f"{r[0]} x") and r[1] in ("stdout", "stderr") and r[2] in ("P", "F") for r in records)
    streams = {r[3]: r[1] for r in records}
    assert streams["/docker-entrypoint.sh: Configuration complete; ready for start up"] == "stdout"
    assert {stream for text, stream in streams.items() if "[notice]" in text} == {"stderr"}
