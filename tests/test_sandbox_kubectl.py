"""The real kubectl against the sandbox: the lesson's commands verbatim, and the everyday verbs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
from conftest import Kubectl, wait_all_ready
from helpers import eventually

from labkit import manifest_path
from labkit.sandbox import Sandbox

LESSON_CURL = ("kubectl exec -it $(kubectl get pod -l app=sleep -o jsonpath='{.items[0].metadata.name}') "
               "-- curl http://ratings:9080/ratings/7")


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()[1:]]


def test_lesson_curl_from_the_tester_pod(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl.shell(LESSON_CURL)
    assert out.returncode == 0, out.stderr
    assert out.stdout == '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    # Without a terminal kubectl warns, as it does on a real cluster.
    assert "Unable to use a TTY" in out.stderr


def test_get_pods_table_has_the_lesson_columns(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("get", "pods").stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    names = [r[0] for r in rows(out)]
    assert len(names) == 13
    for app in ("details-v1-", "productpage-v1-", "ratings-v1-", "reviews-v1-"):
        assert sum(n.startswith(app) for n in names) == 3
    assert sum(n.startswith("sleep-") for n in names) == 1
    # Pod names look like a Deployment's: <deployment>-<template hash>-<5 chars>.
    assert all(re.fullmatch(r"[a-z0-9-]+-[4-9bcdf]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}", n) for n in names)
    assert all(r[1] == "1/1" and r[2] == "Running" and r[3] == "0" for r in rows(out))
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[:8] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED"]


def test_exit_codes_travel_through_exec(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    tester = kubectl("get", "pod", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout
    unknown = kubectl("exec", tester, "--", "curl", "-sS", "http://no-such-service:9080/", check=False)
    assert unknown.returncode == 6
    assert "Could not resolve host: no-such-service" in unknown.stderr
    assert "command terminated with exit code 6" in unknown.stderr
    refused = kubectl("exec", tester, "--", "curl", "-sS", "http://127.0.0.1:1/", check=False)
    assert refused.returncode == 7
    missing = kubectl("exec", tester, "--", "bash", "-c", "echo hi", check=False)
    assert missing.returncode == 127
    assert 'exec: "bash": executable file not found in $PATH' in missing.stderr
    nothing = kubectl("exec", tester, "--", "pkill", "no-such-process", check=False)
    assert nothing.returncode == 1
    piped = kubectl("exec", "-i", tester, "--", "cat", input="through stdin\n")
    assert piped.stdout == "through stdin\n"
    code = kubectl("exec", tester, "--", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                   "http://productpage:9080/productpage")
    assert code.stdout == "200"


def test_pkill_ruby_in_the_first_pod_restarts_only_that_pod(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    first = kubectl("get", "pods", "-l", "app=details", "-o", "jsonpath={.items[0].metadata.name}").stdout
    out = kubectl.shell("kubectl exec -it $(kubectl get pods -l app=details -o "
                        "jsonpath='{.items[0].metadata.name}') -- pkill ruby")
    assert out.returncode == 0, out.stderr

    def restarted() -> list[list[str]]:
        table = rows(kubectl("get", "pods", "-l", "app=details").stdout)
        row = {r[0]: r for r in table}[first]
        return table if row[2] == "Running" and row[1] == "1/1" and row[3].startswith("1") else []

    table = eventually(restarted, timeout=20, what=f"{first} Running and Ready with 1 restart")
    by_name = {r[0]: r for r in table}
    assert by_name[first][3].startswith("1 ("), table  # "1 (2s ago)" as a real cluster prints it
    assert all(r[3] == "0" for n, r in by_name.items() if n != first)
    describe = kubectl("describe", "pod", first).stdout
    assert re.search(r"Last State:\s+Terminated", describe)
    assert re.search(r"Exit Code:\s+143", describe)
    assert re.search(r"Restart Count:\s+1", describe)
    assert "Controlled By:  ReplicaSet/details-v1-" in describe
    events = kubectl("get", "events", "--field-selector", f"involvedObject.name={first}").stdout
    assert "Started" in events and "Created" in events
    wait_all_ready(ready_sandbox)


def test_tables_for_deployments_services_and_events(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    deploy = kubectl("get", "deploy").stdout
    assert deploy.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert any(r[:4] == ["details-v1", "3/3", "3", "3"] for r in rows(deploy))
    svc = kubectl("get", "svc").stdout
    assert svc.splitlines()[0].split()[:5] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    ratings = next(r for r in rows(svc) if r[0] == "ratings")
    assert ratings[1] == "ClusterIP" and ratings[4] == "9080/TCP"
    assert ratings[2].startswith("127.")  # cluster addresses live on loopback
    events = kubectl("get", "events").stdout
    assert events.splitlines()[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert "Scheduled" in events and "SuccessfulCreate" in events and "ScalingReplicaSet" in events
    ep = kubectl("get", "endpoints", "details", "-o", "json").stdout
    assert len(json.loads(ep)["subsets"][0]["addresses"]) == 3


def test_logs_delete_scale_and_rollout(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    pod = kubectl("get", "pods", "-l", "app=ratings", "-o", "jsonpath={.items[0].metadata.name}").stdout
    assert "Server listening on: http://0.0.0.0:9080" in kubectl("logs", pod).stdout
    assert kubectl("logs", "--tail=1", "deploy/ratings-v1").stdout.count("\n") == 1
    deleted = kubectl("delete", "pod", pod)
    assert f'pod "{pod}" deleted' in deleted.stdout
    names = kubectl("get", "pods", "-l", "app=ratings", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    assert pod not in names and len(names) == 3  # the ReplicaSet made a replacement with a new name
    kubectl("scale", "deploy", "ratings-v1", "--replicas=1")
    kubectl("rollout", "status", "deploy/ratings-v1", "--timeout=30s")
    assert len(kubectl("get", "pods", "-l", "app=ratings", "-o", "name").stdout.split()) == 1
    kubectl("scale", "deploy", "ratings-v1", "--replicas=3")
    status = kubectl("rollout", "status", "deploy/ratings-v1", "--timeout=30s").stdout
    assert 'deployment "ratings-v1" successfully rolled out' in status
    wait_all_ready(ready_sandbox)


def test_apply_the_shipped_manifests(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", str(manifest_path("reviews-v2-v3.yaml")))
    assert "deployment.apps/reviews-v2 created" in out.stdout
    kubectl("rollout", "status", "deploy/reviews-v2", "--timeout=30s")
    kubectl("rollout", "status", "deploy/reviews-v3", "--timeout=30s")
    v2 = kubectl("get", "pod", "-l", "app=reviews,version=v2", "-o", "jsonpath={.items[0].status.podIP}").stdout
    tester = kubectl("get", "pod", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout
    body = json.loads(kubectl("exec", tester, "--", "curl", "-sS", f"{v2}:9080/reviews/7").stdout)
    assert body["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    # Re-applying the lesson's own file is a clean, warning-free update.
    again = kubectl("apply", "-f", str(manifest_path("bookinfo.yaml")), "-l", "app=details")
    assert "deployment.apps/details-v1 configured" in again.stdout
    assert "missing the kubectl.kubernetes.io/last-applied-configuration" not in again.stderr
    kubectl("delete", "-f", str(manifest_path("reviews-v2-v3.yaml")))
    kubectl("scale", "deploy", "details-v1", "--replicas=3")
    kubectl("rollout", "status", "deploy/details-v1", "--timeout=30s")
    wait_all_ready(ready_sandbox)


@pytest.mark.parametrize(("args", "message"), [
    (("get", "pod", "nope"), 'pods "nope" not found'),
    (("get", "pods", "-l", "app in (details"), "unable to parse requirement"),
    (("get", "deploy", "nope"), 'deployments.apps "nope" not found'),
    (("exec", "nope", "--", "ls"), 'pods "nope" not found'),
])
def test_errors_are_kubectl_errors(ready_sandbox: Sandbox, kubectl: Kubectl, args: tuple[str, ...],
                                   message: str) -> None:
    out = kubectl(*args, check=False)
    assert out.returncode == 1
    assert message in out.stderr


def sleep_pod(kubectl: Kubectl) -> str:
    return kubectl("get", "pod", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout


def test_services_by_name_env_and_balancing(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    t = sleep_pod(kubectl)
    for host in ("ratings", "ratings.default", "ratings.default.svc.cluster.local"):
        out = kubectl("exec", t, "--", "curl", "-sS", f"http://{host}:9080/ratings/1").stdout
        assert out == '{"id":1,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    env = kubectl("exec", t, "--", "env").stdout.splitlines()
    assert "DETAILS_SERVICE_PORT=9080" in env and f"HOSTNAME={t}" in env
    assert any(line.startswith("RATINGS_SERVICE_HOST=127.") for line in env)
    # Every request opens a new connection, and the service spreads them over the three reviews pods.
    served = {json.loads(kubectl("exec", t, "--", "curl", "-s", "http://reviews:9080/reviews/0").stdout)["podname"]
              for _ in range(24)}
    assert len(served) >= 2 and all(s.startswith("reviews-v1-") for s in served)


def test_a_down_container_leaves_the_endpoints(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    pod = kubectl("get", "pods", "-l", "app=details", "-o", "jsonpath={.items[1].metadata.name}").stdout
    ip = kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}").stdout
    # Watch the endpoints from before the kill: a restarted container is Ready again within the first back-off
    # (a quarter second here), sooner than two more kubectl runs on a busy machine.
    watch = subprocess.Popen([kubectl.binary, "get", "endpoints", "details", "--watch", "--request-timeout=30s", "-o",
                              'jsonpath={.subsets[0].addresses[*].ip}|{.subsets[0].notReadyAddresses[*].ip}{"\\n"}'],
                             env=kubectl.env, stdout=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert ip in watch.stdout.readline().split("|")[0].split()  # the current state comes first
        kubectl("exec", pod, "--", "pkill", "ruby")
        seen = []
        while not seen or not (ip not in seen[-1][0].split() and ip in seen[-1][1].split()):
            line = watch.stdout.readline()
            assert line, f"the watch ended before {ip} moved to notReadyAddresses: {seen}"
            seen.append(line.rstrip("\n").split("|"))
    finally:
        watch.kill()
        watch.wait()
    wait_all_ready(ready_sandbox)
    assert ip in kubectl("get", "endpoints", "details", "-o", "jsonpath={.subsets[0].addresses[*].ip}").stdout


def test_tty_and_follow_logs(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    t = sleep_pod(kubectl)
    if shutil.which("script"):  # a real terminal for kubectl -t
        out = kubectl.shell(f"script -qec 'kubectl exec -it {t} -- echo hi' /dev/null")
        # (script feeds its own EOF to kubectl's stdin, which kubectl may log after the close; as on real clusters)
        assert out.returncode == 0 and out.stdout.replace("\r", "").splitlines()[0] == "hi"
    pod = kubectl("get", "pods", "-l", "app=ratings", "-o", "jsonpath={.items[2].metadata.name}").stdout
    ip = kubectl("get", "pod", pod, "-o", "jsonpath={.status.podIP}").stdout
    follow = subprocess.Popen([kubectl.binary, "logs", "-f", pod], env=kubectl.env, stdout=subprocess.PIPE,
                              text=True)
    try:  # (logs -f prints the log from its start, so the request may come before it is connected)
        kubectl("exec", t, "--", "curl", "-s", f"http://{ip}:9080/ratings/424242")
        deadline = time.monotonic() + 10
        seen = ""
        assert follow.stdout is not None
        while time.monotonic() < deadline and "424242" not in seen:
            seen += follow.stdout.readline()
        assert "GET /ratings/424242" in seen
    finally:
        follow.kill()
        follow.wait()


def test_port_forward_to_a_service(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pf = subprocess.Popen([kubectl.binary, "port-forward", "svc/productpage", f"{port}:9080"], env=kubectl.env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert pf.stdout is not None
        assert f"Forwarding from 127.0.0.1:{port} -> 9080" in pf.stdout.readline()
        for _ in range(3):  # several connections through one port-forward session
            page = urllib.request.urlopen(f"http://127.0.0.1:{port}/productpage", timeout=10).read().decode()
            assert "<title>Simple Bookstore App</title>" in page
    finally:
        pf.kill()
        pf.wait()
