"""Discovery, /version and OpenAPI documents, judged by their shape and by the real kubectl and Python client.

The kubectl tests serve the documents from a throw-away HTTP server on 127.0.0.1 (plain http, no auth: kubectl
sends no credentials over http anyway), with an isolated kubeconfig, HOME and discovery cache per test.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import kubectl_binary
from kubernetes import client, config

from labkit.sandbox import discovery, printers, resources

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "discovery_recorded.json"
KUBECTL_ACCEPT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
TABLE_ACCEPT = ",".join(
    [
        "application/json;as=Table;v=v1;g=meta.k8s.io",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        "application/json",
    ]
)


def entries(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in document["resources"]}


# --- the documents ------------------------------------------------------------------------------------------


def test_api_versions_and_groups() -> None:
    assert discovery.api_versions("127.0.0.1:6443") == {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
    }
    apps = {"groupVersion": "apps/v1", "version": "v1"}
    groups = discovery.api_group_list()
    assert (groups["kind"], groups["apiVersion"]) == ("APIGroupList", "v1")
    assert groups["groups"][0] == {"name": "apps", "versions": [apps], "preferredVersion": apps}
    preferred = {gv.split("/")[0]: gv for gv in reversed(resources.GROUP_VERSIONS) if "/" in gv}
    assert [g["preferredVersion"]["groupVersion"] for g in groups["groups"]] == list(reversed(preferred.values()))
    istio = next(g for g in groups["groups"] if g["name"] == "networking.istio.io")
    assert [v["version"] for v in istio["versions"]] == ["v1", "v1beta1", "v1alpha3"]  # v1 preferred, as Istio's


@pytest.mark.parametrize("group_version", resources.GROUP_VERSIONS)
def test_resource_list_covers_the_registry(group_version: str) -> None:
    document = discovery.resource_list(group_version)
    assert document is not None
    assert (document["kind"], document["apiVersion"], document["groupVersion"]) == (
        "APIResourceList",
        "v1",
        group_version,
    )
    found = entries(document)
    served = [r for r in resources.RESOURCES if group_version in (r.group_version,
                                                                  *(f"{r.group}/{v}" for v in r.also_served))]
    assert served
    for resource in served:
        entry = found[resource.plural]
        assert entry["kind"] == resource.kind
        assert entry["namespaced"] is resource.namespaced
        assert entry["singularName"] == resource.singular
        assert entry["verbs"] == list(resource.verbs)
        assert entry.get("shortNames", []) == list(
            resource.short_names
        )  # kubectl needs them to resolve "po", "deploy"
        assert entry.get("categories", []) == list(resource.categories)
        for sub, (kind, verbs) in resource.subresources.items():
            sub_entry = found[f"{resource.plural}/{sub}"]
            assert (sub_entry["kind"], sub_entry["verbs"], sub_entry["singularName"]) == (
                kind,
                list(verbs),
                "",
            )
            assert "shortNames" not in sub_entry
    assert len(found) == sum(1 + len(r.subresources) for r in served)
    client.V1APIResourceList.from_dict(document)  # the strict client model accepts it


def test_resource_list_matches_the_recorded_payload() -> None:
    recorded = entries(json.loads(REFERENCE.read_text())["api_v1_resourcelist_excerpt"])
    ours = entries(discovery.resource_list("v1") or {})
    shared = set(recorded) & set(ours)
    assert {"pods", "pods/exec", "pods/log", "pods/status", "services"} <= shared
    for name in shared:
        assert ours[name] == recorded[name], name


def test_scale_subresource_lives_in_autoscaling() -> None:
    found = entries(discovery.resource_list("apps/v1") or {})
    for plural in ("deployments", "replicasets"):
        scale = found[f"{plural}/scale"]
        assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
        assert "group" not in found[f"{plural}/status"]


def test_unknown_group_version() -> None:
    assert discovery.resource_list("batch/v1") is None
    assert discovery.openapi_v3_document("batch/v1") is None
    assert discovery.openapi_v3_document("apis/batch/v1") is None


def test_aggregated_apis_match_the_recorded_payload() -> None:
    recorded = json.loads(REFERENCE.read_text())["aggregated_apis"]
    ours = discovery.aggregated_discovery(core=False)
    assert {k: v for k, v in ours.items() if k != "items"} == {k: v for k, v in recorded.items() if k != "items"}
    assert ours["items"][0] == recorded["items"][0]  # apps, as recorded; the other groups follow


def test_aggregated_core() -> None:
    document = discovery.aggregated_discovery(core=True)
    assert (document["kind"], document["apiVersion"]) == ("APIGroupDiscoveryList", "apidiscovery.k8s.io/v2")
    (group,) = document["items"]
    assert "name" not in group["metadata"]
    (version,) = group["versions"]
    assert (version["version"], version["freshness"]) == ("v1", "Current")
    found = {r["resource"]: r for r in version["resources"]}
    pods = found["pods"]
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert (pods["scope"], pods["singularResource"], pods["shortNames"], pods["categories"]) == (
        "Namespaced",
        "pod",
        ["po"],
        ["all"],
    )
    assert {s["subresource"] for s in pods["subresources"]} == {"exec", "log", "portforward", "status"}
    assert found["namespaces"]["scope"] == "Cluster"
    assert "subresources" not in found["configmaps"]
    for plural in ("configmaps", "endpoints", "events", "namespaces", "pods", "serviceaccounts", "services"):
        assert found[plural]["shortNames"]
    client.V2APIGroupDiscoveryList.from_dict(document)
    client.V2APIGroupDiscoveryList.from_dict(discovery.aggregated_discovery(core=False))


@pytest.mark.parametrize(
    ("accept", "aggregated"),
    [
        (KUBECTL_ACCEPT, True),
        ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", False),
        ("application/json;as=APIGroupDiscoveryList;v=v2;g=apidiscovery.k8s.io", True),
        ("application/json, */*", False),
        ("", False),
        (None, False),
    ],
)
def test_wants_aggregated(accept: str | None, aggregated: bool) -> None:
    assert discovery.wants_aggregated(accept) is aggregated


def test_version_info() -> None:
    info = discovery.version_info()
    assert (info["major"], info["minor"], info["gitVersion"]) == ("1", "33", "v1.33.0-labkit-sandbox")
    assert re.fullmatch(r"[a-z]+/[a-z0-9_]+", info["platform"])
    client.VersionInfo.from_dict(info)


def test_openapi_root_points_at_hashed_documents() -> None:
    root = discovery.openapi_v3_root()
    assert set(root["paths"]) == {f"apis/{gv}" if "/" in gv else f"api/{gv}" for gv in resources.GROUP_VERSIONS}
    for path, entry in root["paths"].items():
        url = urlsplit(entry["serverRelativeURL"])
        assert url.path == f"/openapi/v3/{path}"
        (digest,) = parse_qs(url.query)["hash"]
        document = discovery.openapi_v3_document(path)
        text = json.dumps(document, sort_keys=True, separators=(",", ":"))
        assert digest == hashlib.sha512(text.encode()).hexdigest().upper()  # changes exactly with the content
    assert discovery.openapi_v3_root() == root


@pytest.mark.parametrize("resource", resources.RESOURCES, ids=lambda r: r.plural)
def test_openapi_operations_carry_gvk_and_field_validation(resource: resources.Resource) -> None:
    document = discovery.openapi_v3_document(resource.group_version)
    assert document is not None
    assert document["openapi"].startswith("3.")
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    prefix = f"/apis/{resource.group_version}" if resource.group else f"/api/{resource.version}"
    collection = (
        f"{prefix}/namespaces/{{namespace}}/{resource.plural}"
        if resource.namespaced
        else (f"{prefix}/{resource.plural}")
    )
    paths = document["paths"]
    for path, verbs in (
        (collection, ("get", "post")),
        (f"{collection}/{{name}}", ("get", "put", "patch", "delete")),
    ):
        for verb in verbs:
            operation = paths[path][verb]
            assert operation["x-kubernetes-group-version-kind"] == gvk
            names = {(p["name"], p["in"]) for p in operation.get("parameters", [])}
            if verb in ("post", "put", "patch"):
                assert ("fieldValidation", "query") in names
                assert operation["requestBody"]["content"]
        path_params = {p["name"] for p in paths[path]["parameters"] if p["in"] == "path"}
        assert ("namespace" in path_params) is resource.namespaced
    patch_types = set(paths[f"{collection}/{{name}}"]["patch"]["requestBody"]["content"])
    assert "application/merge-patch+json" in patch_types
    assert "application/strategic-merge-patch+json" not in patch_types
    schemas = document["components"]["schemas"]
    kinds = [s["x-kubernetes-group-version-kind"][0] for s in schemas.values()
             if "x-kubernetes-group-version-kind" in s]
    assert gvk in kinds


def test_openapi_documents_are_fresh_copies() -> None:
    document = discovery.openapi_v3_document("v1")
    assert document is not None
    document["paths"].clear()
    assert discovery.openapi_v3_document("api/v1")["paths"]  # type: ignore[index]


def test_docstring_examples() -> None:
    failed, attempted = doctest.testmod(discovery)
    assert attempted and not failed


# --- a throw-away API server for the real clients ---------------------------------------------------------


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass
class FakeAPIServer:
    """Serves the discovery documents, Tables and lists from a dict store, and records every request."""

    aggregated: bool = True
    store: dict[tuple[str, str | None], dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, dict(self.headers), body)
                outer.requests.append(request)
                code, document, content_type = outer.answer(request)
                data = json.dumps(document).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-apiserver", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def answer(self, request: Request) -> tuple[int, Any, str]:
        path = urlsplit(request.path).path.rstrip("/")
        accept = request.headers.get("Accept", "")
        if path in ("/api", "/apis"):
            if self.aggregated and discovery.wants_aggregated(accept):
                return (
                    200,
                    discovery.aggregated_discovery(core=path == "/api"),
                    discovery.AGGREGATED_CONTENT_TYPE,
                )
            legacy = (
                discovery.api_versions(f"127.0.0.1:{self.port}")
                if path == "/api"
                else discovery.api_group_list()
            )
            return 200, legacy, "application/json"
        if path == "/api/v1" or path.removeprefix("/apis/") in resources.GROUP_VERSIONS:
            return 200, discovery.resource_list(path.split("/", 2)[2]), "application/json"
        if path == "/version":
            return 200, discovery.version_info(), "application/json"
        if path == "/openapi/v3":
            return 200, discovery.openapi_v3_root(), "application/json"
        if path.startswith("/openapi/v3/"):
            document = discovery.openapi_v3_document(path.removeprefix("/openapi/v3/"))
            if document is not None:
                return 200, document, "application/json"
        return self.answer_resource(request, path, accept)

    def answer_resource(self, request: Request, path: str, accept: str) -> tuple[int, Any, str]:
        parts = path.strip("/").split("/")
        not_found = (
            404,
            status(404, "NotFound", "the server could not find the requested resource"),
            "application/json",
        )
        if parts[0] == "api" and len(parts) >= 3:
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, rest = parts[1], parts[3:]
        else:
            return not_found
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        resource = resources.lookup(group, rest[0])
        if resource is None:
            return not_found
        if namespace is None:
            objects = {
                f"{ns}/{k}": v
                for (p, ns), objs in self.store.items()
                if p == resource.plural
                for k, v in objs.items()
            }
        else:
            objects = self.store.setdefault((resource.plural, namespace), {})
        name = rest[1] if len(rest) > 1 else None
        if request.method == "GET" and name is None:
            items = list(objects.values())
            if "as=Table" in accept:
                return 200, printers.to_table(resource, items, self.now(), "100"), printers.TABLE_CONTENT_TYPE
            listing = {
                "kind": resource.list_kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": "100"},
                "items": items,
            }
            return 200, listing, "application/json"
        if request.method == "POST" and name is None:
            created = json.loads(request.body)
            created["metadata"].update(
                namespace=namespace,
                uid=f"uid-{len(self.requests)}",
                resourceVersion="101",
                creationTimestamp=self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            objects[created["metadata"]["name"]] = created
            return 201, created, "application/json"
        if name in objects and request.method in ("GET", "PATCH"):
            return 200, objects[name], "application/json"
        missing = status(404, "NotFound", f'{resource.plural}.{resource.group or "core"} "{name}" not found')
        missing["details"] = {"name": name, "group": resource.group, "kind": resource.plural}
        return 404, missing, "application/json"


def ago(delta: timedelta) -> str:
    return (datetime.now(UTC) - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_store() -> dict[tuple[str, str | None], dict[str, dict[str, Any]]]:
    """One restarted pod, one crash-looping pod and a deployment, as the sandbox would hold them."""

    def pod(name: str, ip: str, container_status: dict[str, Any], ready: bool) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": f"uid-{name}",
                "resourceVersion": "50",
                "creationTimestamp": ago(timedelta(hours=2)),
                "labels": {"app": "details", "version": "v1"},
            },
            "spec": {
                "containers": [{"name": "details", "image": "bookinfo/details:1.20"}],
                "nodeName": "sandbox",
            },
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": str(ready)}],
                "containerStatuses": [container_status],
            },
        }

    restarted = {
        "name": "details",
        "ready": True,
        "restartCount": 1,
        "image": "bookinfo/details:1.20",
        "imageID": "sha",
        "state": {"running": {"startedAt": ago(timedelta(minutes=30))}},
        "lastState": {
            "terminated": {"exitCode": 143, "reason": "Error", "finishedAt": ago(timedelta(minutes=30))}
        },
    }
    crashing = {
        "name": "details",
        "ready": False,
        "restartCount": 4,
        "image": "bookinfo/details:1.20",
        "imageID": "sha",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "reviews-v1",
            "namespace": "default",
            "uid": "uid-reviews",
            "resourceVersion": "60",
            "creationTimestamp": ago(timedelta(hours=3, minutes=5)),
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "reviews", "version": "v1"}},
            "template": {
                "metadata": {"labels": {"app": "reviews", "version": "v1"}},
                "spec": {"containers": [{"name": "reviews", "image": "bookinfo/reviews-v1:1.20"}]},
            },
        },
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2},
    }
    return {
        ("pods", "default"): {
            "details-v1-abc12-x7k2p": pod("details-v1-abc12-x7k2p", "127.0.1.5", restarted, True),
            "details-v1-abc12-q9z4m": pod("details-v1-abc12-q9z4m", "127.0.1.6", crashing, False),
        },
        ("deployments", "default"): {"reviews-v1": deployment},
    }


@pytest.fixture
def fake_server() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer(store=sample_store())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_kubeconfig(fake_server: FakeAPIServer, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{fake_server.port}\n"
        "contexts:\n- name: fake\n  context: {cluster: fake, user: nobody, namespace: default}\n"
        "current-context: fake\nusers:\n- name: nobody\n  user: {}\n"
    )
    return path


KubectlRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def fake_kubectl(fake_kubeconfig: Path, tmp_path: Path) -> KubectlRunner:
    binary = kubectl_binary()
    env = {
        **os.environ,
        "KUBECONFIG": str(fake_kubeconfig),
        "KUBECACHEDIR": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [binary, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        if check and done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    return run


def table_lines(output: str) -> list[list[str]]:
    """kubectl's table output split into cells (columns are separated by at least 3 spaces)."""
    return [re.split(r"\s{3,}", line.strip()) for line in output.strip().splitlines()]


@pytest.mark.parametrize("aggregated", [True, False], ids=["aggregated", "legacy"])
def test_kubectl_get_pods(fake_server: FakeAPIServer, fake_kubectl: KubectlRunner, aggregated: bool) -> None:
    fake_server.aggregated = aggregated
    header, restarted, crashing = table_lines(fake_kubectl("get", "pods").stdout)
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert restarted == ["details-v1-abc12-x7k2p", "1/1", "Running", "1 (30m ago)", "120m"]
    assert crashing == ["details-v1-abc12-q9z4m", "0/1", "CrashLoopBackOff", "4", "120m"]
    fetched = [r.path.split("?")[0] for r in fake_server.requests]
    if aggregated:
        assert "/api/v1" not in fetched and "/apis/apps/v1" not in fetched  # no per-group-version requests
    else:
        assert {"/api/v1", "/apis/apps/v1"} <= set(fetched)
    (listing,) = [r for r in fake_server.requests if r.path.startswith("/api/v1/namespaces/default/pods")]
    assert listing.headers["Accept"] == TABLE_ACCEPT
    assert listing.query["limit"] == ["500"]


def test_kubectl_get_pods_wide_by_short_name(fake_kubectl: KubectlRunner) -> None:
    header, restarted, _ = table_lines(fake_kubectl("get", "po", "-o", "wide").stdout)
    assert header == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    assert restarted[5:] == ["127.0.1.5", "sandbox", "<none>", "<none>"]


def test_kubectl_all_namespaces_and_labels(fake_server: FakeAPIServer, fake_kubectl: KubectlRunner) -> None:
    header, first, _ = table_lines(fake_kubectl("get", "pods", "-A", "--show-labels").stdout)
    assert header == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "LABELS"]
    assert (first[0], first[-1]) == ("default", "app=details,version=v1")
    assert any(r.path.startswith("/api/v1/pods?") for r in fake_server.requests)


def test_kubectl_get_deploy(fake_kubectl: KubectlRunner) -> None:
    header, row = table_lines(fake_kubectl("get", "deploy").stdout)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row == ["reviews-v1", "2/3", "3", "2", "3h5m"]
    header, row = table_lines(fake_kubectl("get", "deployments.apps", "-o", "wide").stdout)
    assert header[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert row[5:] == ["reviews", "bookinfo/reviews-v1:1.20", "app=reviews,version=v1"]


def test_kubectl_get_empty_list(fake_kubectl: KubectlRunner) -> None:
    done = fake_kubectl("get", "rs")
    assert done.stdout == ""
    assert "No resources found in default namespace." in done.stderr


def test_kubectl_get_all_uses_categories(fake_kubectl: KubectlRunner) -> None:
    output = fake_kubectl("get", "all").stdout
    assert "pod/details-v1-abc12-x7k2p" in output
    assert "deployment.apps/reviews-v1" in output


def test_kubectl_api_resources(fake_kubectl: KubectlRunner) -> None:
    header, *rows = table_lines(fake_kubectl("api-resources").stdout)
    assert header == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    expected = [
        [c for c in (r.plural, ",".join(r.short_names), r.group_version, str(r.namespaced).lower(), r.kind) if c]
        for r in resources.RESOURCES
    ]
    assert sorted(rows) == sorted(expected)


def test_kubectl_version(fake_kubectl: KubectlRunner) -> None:
    report = json.loads(fake_kubectl("version", "-o", "json").stdout)
    assert report["serverVersion"]["gitVersion"] == discovery.GIT_VERSION


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: web
        image: {image}
        ports: [{{containerPort: 8080}}]
"""


def test_kubectl_apply_and_create_validate_on_the_server(
    fake_server: FakeAPIServer, fake_kubectl: KubectlRunner, tmp_path: Path
) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST.format(name="web", image="nginx:1"))
    done = fake_kubectl("apply", "-f", str(manifest))
    assert "failed to download openapi" not in done.stderr
    assert done.stdout.strip() == "deployment.apps/web created"
    (created,) = [r for r in fake_server.requests if r.method == "POST"]
    assert created.path.startswith("/apis/apps/v1/namespaces/default/deployments?")
    assert created.query == {"fieldManager": ["kubectl-client-side-apply"], "fieldValidation": ["Strict"]}
    openapi = [r.path for r in fake_server.requests if r.path.startswith("/openapi/")]
    assert openapi[0].startswith("/openapi/v3?")
    assert any(p.startswith("/openapi/v3/apis/apps/v1?hash=") for p in openapi)

    # Applying a change to the existing object patches it (a strategic merge patch computed by kubectl).
    fake_server.requests.clear()
    manifest.write_text(MANIFEST.format(name="web", image="nginx:2"))
    done = fake_kubectl("apply", "-f", str(manifest))
    assert done.stdout.strip() == "deployment.apps/web configured"
    assert "warning" not in done.stderr
    (patch,) = [r for r in fake_server.requests if r.method == "PATCH"]
    assert patch.headers["Content-Type"] == "application/strategic-merge-patch+json"
    assert patch.query == {"fieldManager": ["kubectl-client-side-apply"], "fieldValidation": ["Strict"]}
    assert json.loads(patch.body)["spec"]["template"]["spec"]["containers"] == [
        {"image": "nginx:2", "name": "web"}
    ]

    manifest.write_text(MANIFEST.format(name="api", image="nginx:1"))
    done = fake_kubectl("create", "-f", str(manifest))
    assert done.stdout.strip() == "deployment.apps/api created"
    (created,) = [r for r in fake_server.requests if r.method == "POST"]
    assert created.query == {"fieldManager": ["kubectl-create"], "fieldValidation": ["Strict"]}


# --- the real Python client ---------------------------------------------------------------------------------


def test_python_client_reads_discovery(fake_kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(fake_kubeconfig))
    try:
        assert client.CoreApi(api).get_api_versions().versions == ["v1"]
        groups = client.ApisApi(api).get_api_versions().groups
        assert [g.name for g in groups] == list(dict.fromkeys(gv.split("/")[0] for gv in resources.GROUP_VERSIONS
                                                              if "/" in gv))
        core = client.CoreV1Api(api).get_api_resources()
        assert {r.name: r.short_names for r in core.resources}["pods"] == ["po"]
        apps = client.AppsV1Api(api).get_api_resources()
        scale = {r.name: r for r in apps.resources}["deployments/scale"]
        assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
        assert client.VersionApi(api).get_code().git_version == discovery.GIT_VERSION
    finally:
        api.close()
