"""The pure parts of the furniture: defaulting, env from ConfigMaps and Secrets, the OpenAPI schemas, the Node."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from kubernetes import client

from labkit.sandbox import defaults, envfrom, node, openapi_schemas
from labkit.sandbox.controllers import equal_ignoring_hash, template_hash


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.27", "IfNotPresent"),
    ("registry:5000/team/app", "Always"), ("registry:5000/team/app:v2", "IfNotPresent"),
    ("busybox@sha256:" + "0" * 64, "IfNotPresent"),
])
def test_image_pull_policy(image: str, policy: str) -> None:
    assert defaults.image_pull_policy(image) == policy


def test_template_defaulting_is_idempotent_and_keeps_the_hash() -> None:
    raw = {"metadata": {"labels": {"app": "a"}, "creationTimestamp": None},
           "spec": {"containers": [{"name": "c", "image": "i:1", "ports": [{"containerPort": 80}],
                                    "readinessProbe": {"httpGet": {"port": 80}}}]}}
    once = defaults.template(copy.deepcopy(raw))
    twice = defaults.template(copy.deepcopy(once))
    assert once == twice and template_hash(once) == template_hash(twice)
    assert "creationTimestamp" not in once["metadata"]
    probe = once["spec"]["containers"][0]["readinessProbe"]
    assert probe == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                     "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    # What kubectl rollout undo sends back (typed re-serialisation) equals the stored template but for the hash.
    from_rs = copy.deepcopy(once)
    from_rs["metadata"]["labels"]["pod-template-hash"] = "5d8b6f7c9"
    from_rs["metadata"]["creationTimestamp"] = None
    assert equal_ignoring_hash(from_rs, once)
    from_rs["spec"]["containers"][0]["image"] = "i:2"
    assert not equal_ignoring_hash(from_rs, once)


def test_secret_data_and_string_data() -> None:
    obj = {"data": {"a": base64.b64encode(b"x").decode()}, "stringData": {"b": "y"}}
    assert defaults.secret(obj) is None
    assert obj == {"type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}}
    bad = {"data": {"k": "%%%"}}
    assert "illegal base64 data in data['k']" in (defaults.secret(bad) or "")


def test_env_resolution_order_and_errors() -> None:
    objects = {("ConfigMap", "cfg"): {"data": {"A": "1", "B": "2", "bad key": "x"}},
               ("Secret", "sec"): {"data": {"P": base64.b64encode(b"pw").decode()}}}

    def lookup(kind: str, name: str) -> dict[str, Any] | None:
        return objects.get((kind, name))

    container = {"envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "X_"}, {"secretRef": {"name": "sec"}}],
                 "env": [{"name": "X_A", "value": "override"},
                         {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "P"}}},
                         {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k",
                                                                           "optional": True}}}]}
    assert envfrom.resolve(container, "default", lookup) == {"X_A": "override", "X_B": "2", "P": "pw", "PW": "pw"}
    with pytest.raises(envfrom.ConfigError, match='configmap "none" not found'):
        envfrom.resolve({"envFrom": [{"configMapRef": {"name": "none"}}]}, "default", lookup)
    with pytest.raises(envfrom.ConfigError, match="couldn't find key Z in ConfigMap default/cfg"):
        envfrom.resolve({"env": [{"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "Z"}}}]},
                        "default", lookup)


def test_openapi_schemas_resolve_every_reference() -> None:
    every = openapi_schemas.schemas()
    pod = every["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    closure = openapi_schemas.closure(["io.k8s.api.apps.v1.Deployment"])
    assert "io.k8s.api.core.v1.Container" in closure and "io.k8s.api.core.v1.Node" not in closure
    for name, schema in every.items():
        for ref in openapi_schemas._refs(schema):
            assert ref in every, f"{name} refers to {ref}, which has no schema"
        assert schema.get("description"), name


def test_the_node_reads_in_the_strict_client_model() -> None:
    facts = node.NodeFacts(cpus=2, memory_kib=4 * 1024 * 1024, storage_kib=10 * 1024 * 1024, kernel="6.1", arch="amd64")
    obj = {"apiVersion": "v1", "kind": "Node", **node.node_object(facts, "127.1.0.0/23", "2026-01-01T00:00:00Z")}
    parsed = client.V1Node.from_dict(obj)  # the strict client model accepts it
    assert parsed.status.node_info.kubelet_version.startswith("v1.")
    assert parsed.status.capacity["memory"] == "4194304Ki"


def test_the_heartbeat_renews_the_lease_and_the_conditions() -> None:
    from labkit.sandbox.network import AddressPool
    from labkit.sandbox.registry import Registry
    from labkit.sandbox.resources import BY_PLURAL
    from labkit.sandbox.store import Store

    nodes, leases = BY_PLURAL[("", "nodes")], BY_PLURAL[("coordination.k8s.io", "leases")]
    store = Store()
    registry = Registry(store, AddressPool(["127.0.0.10"]))
    registry.create_initial_namespaces()
    registry.create_furniture(node.NodeFacts(1, 1024, 1024, "6.1", "amd64"), "127.1.0.0/23", "127.1.2.1")
    lease = store.get(leases, "kube-node-lease", "sandbox")
    assert lease is not None and lease["spec"]["holderIdentity"] == "sandbox"
    svc = store.get(BY_PLURAL[("", "services")], "default", "kubernetes")
    assert svc is not None and svc["spec"]["clusterIP"] == "127.1.2.1"
    old_node = store.get(nodes, "", "sandbox")
    assert old_node is not None
    assert all(c["lastHeartbeatTime"] == c["lastTransitionTime"] for c in old_node["status"]["conditions"])
    heartbeat = node.Heartbeat(registry, nodes, leases)
    heartbeat.beat(status=False)
    renewed = store.get(leases, "kube-node-lease", "sandbox")
    assert renewed is not None and renewed["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]
    assert store.get(nodes, "", "sandbox") is old_node  # the status is reported only now and then
