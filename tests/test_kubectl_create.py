"""The real kubectl's typed creates against a real sandbox: kubectl 1.32+ sends them as protobuf.

``kubectl create namespace|deployment|configmap|secret|service|serviceaccount`` send
``application/vnd.kubernetes.protobuf`` bodies; ``run`` and ``expose`` send JSON. Both paths must give the same
objects, and a protobuf body of a kind the sandbox cannot read gets a 415 naming it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml
from conftest import Kubectl

from labkit.sandbox import Sandbox
from labkit.sandbox import protobuf as pb

DETAILS = "docker.io/istio/examples-bookinfo-details-v1:1.20.2"
RATINGS = "docker.io/istio/examples-bookinfo-ratings-v1:1.20.2"
FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"


def get(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def served(kubectl: Kubectl, plural: str) -> bool:
    return plural in kubectl("api-resources", "--no-headers", "-o", "name").stdout.split()


def post(sb: Sandbox, path: str, body: bytes, ctype: str = pb.CONTENT_TYPE) -> requests.Response:
    """A raw request as kubectl makes it, with the sandbox's own kubeconfig credentials."""
    cfg = yaml.safe_load(sb.kubeconfig.read_text())
    token = cfg["users"][0]["user"]["token"]
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return requests.post(sb.api_url.rstrip("/") + path, data=body, verify=False, timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": ctype,
                                  "Accept": "application/vnd.kubernetes.protobuf,application/json"})


def test_create_namespace(sandbox: Sandbox, kubectl: Kubectl) -> None:
    assert kubectl("create", "namespace", "pb-team").stdout.strip() == "namespace/pb-team created"
    ns = get(kubectl, "namespace", "pb-team")
    assert ns["metadata"]["name"] == "pb-team"
    assert ns["status"]["phase"] == "Active"
    dry = kubectl("create", "namespace", "pb-dry", "--dry-run=server")
    assert dry.stdout.strip() == "namespace/pb-dry created (server dry run)"
    assert "NotFound" in kubectl("get", "namespace", "pb-dry", check=False).stderr


def test_create_deployment_runs_its_pods_like_an_applied_one(sandbox: Sandbox, kubectl: Kubectl) -> None:
    args = ["--image", DETAILS, "--replicas=2", "--port=9080"]
    assert kubectl("create", "deployment", "pb-web", *args).stdout.strip() == "deployment.apps/pb-web created"
    # The same object through the JSON path: what kubectl would send, renamed, applied.
    manifest = kubectl("create", "deployment", "pb-web", *args, "--dry-run=client", "-o", "json").stdout
    kubectl("apply", "-f", "-", input=manifest.replace("pb-web", "pb-json"))
    for name in ("pb-web", "pb-json"):
        kubectl("rollout", "status", f"deployment/{name}", "--timeout=60s", timeout=90)
    by_protobuf, by_json = get(kubectl, "deployment", "pb-web"), get(kubectl, "deployment", "pb-json")
    assert by_protobuf["spec"]["replicas"] == 2
    # Stored defaulted, as a real API server stores it.
    assert by_protobuf["spec"]["template"]["spec"]["containers"] == [
        {"name": "examples-bookinfo-details-v1", "image": DETAILS,
         "ports": [{"containerPort": 9080, "protocol": "TCP"}], "resources": {}, "imagePullPolicy": "IfNotPresent",
         "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}]
    assert json.loads(json.dumps(by_protobuf["spec"]).replace("pb-web", "X")) == \
        json.loads(json.dumps(by_json["spec"]).replace("pb-json", "X"))
    assert by_protobuf["metadata"]["labels"] == {"app": "pb-web"}
    for name in ("pb-web", "pb-json"):
        pods = get(kubectl, "pods", "-l", f"app={name}")["items"]
        assert len(pods) == 2
        for pod in pods:
            assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
            assert "pod-template-hash" in pod["metadata"]["labels"]
            assert pod["spec"]["containers"][0]["image"] == DETAILS
            assert pod["status"]["phase"] == "Running"


def test_create_configmap_with_text_and_binary_data(sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)))
    out = kubectl("create", "configmap", "pb-cfg", "--from-literal=greeting=hello world", "--from-literal=n=1",
                  f"--from-file=blob={blob}")
    assert out.stdout.strip() == "configmap/pb-cfg created"
    cm = get(kubectl, "configmap", "pb-cfg")
    assert cm["data"] == {"greeting": "hello world", "n": "1"}
    assert base64.b64decode(cm["binaryData"]["blob"]) == bytes(range(256))


def test_create_secret_generic(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("create", "secret", "generic", "pb-db", "--from-literal=password=hunter2", check=False)
    if not served(kubectl, "secrets"):
        # Secrets are not served (yet): kubectl's request reaches no resource, and says so.
        assert out.returncode == 1
        assert "the server could not find the requested resource" in out.stderr
        return
    assert out.stdout.strip() == "secret/pb-db created", out.stderr
    secret = get(kubectl, "secret", "pb-db")
    assert base64.b64decode(secret["data"]["password"]) == b"hunter2"
    assert secret["type"] == "Opaque"


def test_create_service_and_serviceaccount(sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("create", "service", "clusterip", "pb-svc", "--tcp=5678:8080")
    assert out.stdout.strip() == "service/pb-svc created"
    svc = get(kubectl, "service", "pb-svc")
    port = svc["spec"]["ports"][0]
    assert {k: port[k] for k in ("name", "port", "targetPort", "protocol")} == {
        "name": "5678-8080", "port": 5678, "targetPort": 8080, "protocol": "TCP"}
    assert svc["spec"]["selector"] == {"app": "pb-svc"}
    assert svc["spec"]["clusterIP"] not in ("", "None", None)
    assert kubectl("create", "serviceaccount", "pb-robot").stdout.strip() == "serviceaccount/pb-robot created"
    assert get(kubectl, "serviceaccount", "pb-robot")["metadata"]["name"] == "pb-robot"


def test_expose_and_run_still_work_through_json(sandbox: Sandbox, kubectl: Kubectl) -> None:
    kubectl("create", "deployment", "pb-exposed", "--image", DETAILS, "--port=9080")
    assert kubectl("expose", "deployment", "pb-exposed", "--port=9080").stdout.strip() == \
        "service/pb-exposed exposed"
    svc = get(kubectl, "service", "pb-exposed")
    assert svc["spec"]["selector"] == {"app": "pb-exposed"}
    assert svc["spec"]["ports"][0]["port"] == 9080
    assert kubectl("run", "pb-one", "--image", RATINGS, "--port=9080").stdout.strip() == "pod/pb-one created"
    kubectl("wait", "--for=condition=Ready", "pod/pb-one", "--timeout=60s", timeout=90)
    pod = get(kubectl, "pod", "pb-one")
    assert pod["metadata"]["labels"] == {"run": "pb-one"}
    assert [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]] == [9080]


def test_a_protobuf_kind_it_cannot_decode_gets_a_415_naming_it(sandbox: Sandbox) -> None:
    # kubectl create job's real body, sent to a resource the sandbox serves.
    resp = post(sandbox, "/api/v1/namespaces/default/configmaps", (FIXTURES / "job.pb").read_bytes())
    assert resp.status_code == 415
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "UnsupportedMediaType" and status["code"] == 415
    assert status["message"].startswith("cannot decode batch/v1 Job from protobuf")
    assert status["details"] == {"kind": "Job", "group": "batch"}


def test_a_field_it_cannot_decode_gets_a_415_and_garbage_a_400(sandbox: Sandbox) -> None:
    # A Namespace whose metadata carries a field the decoder does not know, with a value: refused, not dropped.
    meta = b"\x0a\x05pb-zz" + b"\x9a\x06\x01x"  # name "pb-zz", field 99 = "x"
    raw = b"\x0a" + bytes([len(meta)]) + meta
    type_meta = b"\x0a\x02v1\x12\x09Namespace"
    body = pb.MAGIC + b"\x0a" + bytes([len(type_meta)]) + type_meta + b"\x12" + bytes([len(raw)]) + raw
    resp = post(sandbox, "/api/v1/namespaces", body)
    assert resp.status_code == 415, resp.text
    assert "field 99 of ObjectMeta at metadata of v1 Namespace" in resp.json()["message"]
    bad = post(sandbox, "/api/v1/namespaces", pb.MAGIC + b"\x0a\x7f")
    assert bad.status_code == 400
    assert bad.json()["message"].startswith("the request body could not be decoded: ")


def test_debug_copy_to_sends_the_whole_pod_as_protobuf(sandbox: Sandbox, kubectl: Kubectl) -> None:
    # kubectl debug reads the created pod's spec.securityContext without a nil check: a real API server always
    # defaults it to {}; the sandbox does not default it (yet), so the pod here sets one.
    kubectl("run", "pb-orig", "--image", RATINGS, "--port=9080", "--labels=app=pb-orig", "--env=MODE=test",
            '--overrides={"spec": {"securityContext": {"runAsUser": 1000}}}')
    out = kubectl("debug", "pb-orig", "--copy-to=pb-copy", "--image", RATINGS, "--container=dbg", "--keep-labels",
                  "--", "node", "ratings.js", "9081")
    assert out.returncode == 0, out.stderr
    orig, copy = get(kubectl, "pod", "pb-orig"), get(kubectl, "pod", "pb-copy")
    assert copy["metadata"]["labels"] == {"app": "pb-orig"}
    assert copy["spec"]["containers"][0] == orig["spec"]["containers"][0]
    assert copy["spec"]["containers"][1]["name"] == "dbg"
    assert copy["spec"]["containers"][1]["command"] == ["node", "ratings.js", "9081"]
