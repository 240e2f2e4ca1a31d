"""The protobuf decoder: real bodies captured from kubectl, hand-built bodies for the rest, and a fuzzer.

The fixtures in tests/fixtures/protobuf/ were captured from the real kubectl by ``capture.py`` beside them: each
``<name>.pb`` is what a ``kubectl create ...`` sent, and ``<name>.json`` what the same command prints with
``--dry-run=client -o json`` (the object a JSON body would have held).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.sandbox import protobuf as pb
from labkit.sandbox.store import StoreError

FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"
CAPTURED = sorted(p.stem for p in FIXTURES.glob("*.pb"))
WITH_JSON = [n for n in CAPTURED if (FIXTURES / f"{n}.json").exists()]


# -- a tiny encoder, to build the bodies kubectl was not asked to send ------------------------------------------

def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def num(field: int, v: int) -> bytes:
    return varint(field << 3) + varint(v)


def text(field: int, v: str | bytes) -> bytes:
    data = v.encode() if isinstance(v, str) else v
    return varint(field << 3 | 2) + varint(len(data)) + data


def msg(field: int, *parts: bytes) -> bytes:
    return text(field, b"".join(parts))


def entry(field: int, key: str, value: bytes) -> bytes:
    """A map entry: {1 key, 2 value} where value is already an encoded field 2."""
    return msg(field, text(1, key), value)


def envelope(api_version: str, kind: str, *raw: bytes) -> bytes:
    return pb.MAGIC + msg(1, text(1, api_version), text(2, kind)) + msg(2, *raw) + text(3, "") + text(4, "")


def prune(v: Any) -> Any:
    """The JSON object without its nulls (``creationTimestamp: null``), which the decoder leaves out."""
    if isinstance(v, dict):
        return {k: prune(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [prune(x) for x in v]
    return v


# -- real bodies ------------------------------------------------------------------------------------------------

def test_fixtures_come_from_a_protobuf_sending_kubectl() -> None:
    index = json.loads((FIXTURES / "index.json").read_text())
    major, minor = (int(x) for x in index["kubectl"].lstrip("v").split(".")[:2])
    assert (major, minor) >= (1, 32)
    sent = {r["command"]: r["content_type"] for r in index["requests"]}
    assert sent["deployment"] == sent["namespace"] == sent["configmap"] == pb.CONTENT_TYPE
    # run and expose still send JSON: they must keep working through the JSON path.
    assert sent["run"] == sent["expose"] == "application/json"
    assert {"namespace", "deployment", "configmap", "secret-generic", "service-clusterip",
            "serviceaccount"} <= set(CAPTURED)


@pytest.mark.parametrize("name", [n for n in WITH_JSON if n not in ("job", "quota")])
def test_a_captured_body_decodes_to_what_the_json_body_holds(name: str) -> None:
    got = pb.decode((FIXTURES / f"{name}.pb").read_bytes())
    want = prune(json.loads((FIXTURES / f"{name}.json").read_text()))
    assert got == want
    assert list(got)[:2] == ["apiVersion", "kind"]


def test_create_deployment_body_in_full() -> None:
    got = pb.decode((FIXTURES / "deployment.pb").read_bytes())
    assert got == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "resources": {}}]}},
                 "strategy": {}},
        "status": {},
    }


def test_configmap_binary_data_and_secret_data_are_base64() -> None:
    cm = pb.decode((FIXTURES / "configmap.pb").read_bytes())
    assert cm["data"] == {"a": "1", "greeting": "hello world"}
    assert base64.b64decode(cm["binaryData"]["blob"]) == bytes(range(256))
    secret = pb.decode((FIXTURES / "secret-generic.pb").read_bytes())
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {"password": b"hunter2", "user": b"admin"}


def test_a_pod_copied_by_kubectl_debug_keeps_every_podspec_field() -> None:
    """rich-pod.yaml (most of PodSpec) was created as JSON; kubectl debug --copy-to sent its copy as protobuf."""
    want = yaml.safe_load((FIXTURES / "rich-pod.yaml").read_text())["spec"]
    got = pb.decode((FIXTURES / "debug-copy.pb").read_bytes())
    assert got["kind"] == "Pod"
    assert got["metadata"] == {"name": "rich-copy", "namespace": "default", "labels": {"app": "rich", "tier": "back"},
                               "annotations": {"note": "a: b"}}
    spec = dict(got["spec"])
    app, plain, debugger = spec.pop("containers")
    # What changed on the way: the sandbox defaulted imagePullPolicy, Go wrote the empty resources, kubectl added
    # its debugging container.
    assert app == want["containers"][0]
    assert plain == {**want["containers"][1], "imagePullPolicy": "IfNotPresent", "resources": {}}
    assert debugger["name"] == "dbg" and debugger["command"] == ["sleep", "1"]
    assert spec["initContainers"] == [{**want["initContainers"][0], "resources": {}}]
    spec.pop("initContainers")
    assert spec == {k: v for k, v in want.items() if k not in ("containers", "initContainers")}


def test_auth_can_i_and_create_token_bodies() -> None:
    review = pb.decode((FIXTURES / "auth-can-i.pb").read_bytes())
    assert review == {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "metadata": {},
                      "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
                      "status": {}}
    token = pb.decode((FIXTURES / "token.pb").read_bytes())
    assert token["spec"] == {"audiences": ["lab"], "expirationSeconds": 3600}
    scale = pb.decode((FIXTURES / "auth-can-i-subresource.pb").read_bytes())["spec"]["resourceAttributes"]
    assert scale == {"namespace": "demo", "verb": "get", "group": "apps", "resource": "deployments",
                     "subresource": "scale", "name": "web"}
    path = pb.decode((FIXTURES / "auth-can-i-path.pb").read_bytes())["spec"]
    assert path == {"nonResourceAttributes": {"path": "/logs", "verb": "get"}}
    bound = pb.decode((FIXTURES / "token-bound.pb").read_bytes())["spec"]
    assert bound == {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "rich",
                                        "uid": "0b6a8d2e-1111-4c3b-9a57-6f0c5d1e2f3a"}}
    whoami = pb.decode((FIXTURES / "auth-whoami.pb").read_bytes())
    assert whoami == {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
                      "status": {"userInfo": {}}}


def test_user_info_extra_is_a_map_of_string_lists() -> None:
    info = msg(1, text(1, "admin"), text(3, "system:masters"), entry(4, "scopes", msg(2, text(1, "a"), text(1, "b"))))
    obj = pb.decode(envelope("authentication.k8s.io/v1", "SelfSubjectReview", msg(2, info)))
    assert obj["status"]["userInfo"] == {"username": "admin", "groups": ["system:masters"],
                                         "extra": {"scopes": ["a", "b"]}}


@pytest.mark.parametrize(("name", "named"), [("job", "batch/v1 Job"), ("quota", "v1 ResourceQuota"),
                                             ("auth-whoami-2", "authentication.k8s.io/v1beta1 SelfSubjectReview")])
def test_a_kind_it_cannot_decode_is_named(name: str, named: str) -> None:
    with pytest.raises(pb.UnsupportedKindError, match=f"cannot decode {named} from protobuf.*v1/ConfigMap.*JSON"):
        pb.decode((FIXTURES / f"{name}.pb").read_bytes())


# -- hand-built bodies -------------------------------------------------------------------------------------------

def deployment(spec: bytes, meta: bytes = text(1, "web")) -> bytes:
    return envelope("apps/v1", "Deployment", msg(1, meta), msg(2, spec), msg(3))


def test_pointer_zeros_are_kept_and_plain_zeros_dropped() -> None:
    obj = pb.decode(deployment(num(1, 0) + num(6, 0) + num(5, 0) + num(7, 0) + num(9, 600)))
    assert obj["spec"] == {"replicas": 0, "revisionHistoryLimit": 0, "progressDeadlineSeconds": 600}
    cm = pb.decode(envelope("v1", "ConfigMap", msg(1, text(1, "c")), entry(2, "empty", text(2, "")), num(4, 0)))
    assert cm == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"empty": ""},
                  "immutable": False}


def test_object_meta_labels_annotations_owner_references_and_times() -> None:
    meta = (text(1, "web-1") + text(3, "lab") + text(5, "u-1") + num(7, 3)
            + msg(8, num(1, 1_700_000_000)) + msg(9, num(1, 1_700_000_060), num(2, 5))
            + num(10, 30) + entry(11, "app", text(2, "web")) + entry(11, "tier", text(2, "front"))
            + entry(12, "note", text(2, "a: b"))
            + msg(13, text(1, "ReplicaSet"), text(3, "web-abc"), text(4, "u-rs"), text(5, "apps/v1"),
                  num(6, 1), num(7, 0))
            + text(14, "example.com/guard") + text(14, "second"))
    obj = pb.decode(envelope("v1", "Pod", msg(1, meta), msg(2)))
    assert obj["metadata"] == {
        "name": "web-1", "namespace": "lab", "uid": "u-1", "generation": 3,
        "creationTimestamp": "2023-11-14T22:13:20Z", "deletionTimestamp": "2023-11-14T22:14:20Z",
        "deletionGracePeriodSeconds": 30, "labels": {"app": "web", "tier": "front"}, "annotations": {"note": "a: b"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "uid": "u-rs", "apiVersion": "apps/v1",
                             "controller": True, "blockOwnerDeletion": False}],
        "finalizers": ["example.com/guard", "second"],
    }


def test_pod_template_with_probes_env_resources_and_volumes() -> None:
    container = (
        text(1, "app") + text(2, "img") + text(3, "sh") + text(4, "-c") + text(4, "run")
        + msg(6, text(1, "http"), num(3, 9080), text(4, "TCP"))
        + msg(7, text(1, "PLAIN"), text(2, "1"))
        + msg(7, text(1, "PASS"), msg(3, msg(4, msg(1, text(1, "db")), text(2, "password"), num(3, 1))))
        + msg(7, text(1, "NODE"), msg(3, msg(1, text(1, "v1"), text(2, "spec.nodeName"))))
        + msg(8, entry(1, "cpu", msg(2, text(1, "500m"))), entry(2, "memory", msg(2, text(1, "64Mi"))))
        + msg(9, text(1, "data"), text(3, "/data"), num(2, 1))
        + msg(10, msg(1, msg(2, text(1, "/healthz"), msg(2, num(1, 1), text(3, "http")))), num(4, 5))
        + msg(11, msg(1, msg(3, msg(1, num(1, 0), num(2, 9080)))), num(2, 0), num(6, 3))
        + msg(22, msg(1, msg(1, text(1, "cat"), text(1, "/tmp/ok"))))
        + msg(19, msg(2, msg(1, text(1, "cfg")), num(2, 0)), text(1, "CFG_"))
        + text(14, "IfNotPresent") + num(16, 0)
    )
    spec = (msg(1, text(1, "data"), msg(2, msg(2))) + msg(1, text(1, "conf"), msg(2, msg(19, msg(1, text(1, "cfg")),
                                                                                     num(3, 0o644))))
            + msg(2, container) + text(3, "Always") + num(4, 0) + entry(7, "disk", text(2, "ssd"))
            + msg(14, num(2, 1000), text(4, varint(1) + varint(2)), num(4, 3)))
    tmpl = msg(3, msg(1, entry(11, "app", text(2, "web"))), msg(2, spec))
    strategy = msg(4, text(1, "RollingUpdate"), msg(2, msg(1, num(1, 1), text(3, "25%")), msg(2, num(2, 1))))
    obj = pb.decode(deployment(num(1, 3) + msg(2, entry(1, "app", text(2, "web"))) + tmpl + strategy))
    pod = obj["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "data", "emptyDir": {}},
                              {"name": "conf", "configMap": {"name": "cfg", "defaultMode": 0o644}}]
    assert pod["restartPolicy"] == "Always" and pod["terminationGracePeriodSeconds"] == 0
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["securityContext"] == {"runAsUser": 1000, "supplementalGroups": [1, 2, 3]}  # packed and not
    (c,) = pod["containers"]
    assert c["command"] == ["sh"] and c["args"] == ["-c", "run"]
    assert c["ports"] == [{"name": "http", "containerPort": 9080, "protocol": "TCP"}]
    assert c["env"] == [
        {"name": "PLAIN", "value": "1"},
        {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password", "optional": True}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}},
    ]
    assert c["envFrom"] == [{"prefix": "CFG_", "configMapRef": {"name": "cfg", "optional": False}}]
    assert c["resources"] == {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}
    assert c["volumeMounts"] == [{"name": "data", "readOnly": True, "mountPath": "/data"}]
    assert c["livenessProbe"] == {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    assert c["readinessProbe"] == {"tcpSocket": {"port": 9080}, "failureThreshold": 3}
    assert c["startupProbe"] == {"exec": {"command": ["cat", "/tmp/ok"]}}
    assert c["imagePullPolicy"] == "IfNotPresent" and "stdin" not in c
    assert obj["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}


def test_service_ports_with_named_target_port() -> None:
    spec = (msg(1, text(1, "http"), text(2, "TCP"), num(3, 80), msg(4, num(1, 1), text(3, "web")))
            + entry(2, "app", text(2, "web")) + text(4, "ClusterIP") + text(17, "SingleStack") + text(19, "IPv4"))
    obj = pb.decode(envelope("v1", "Service", msg(1, text(1, "web")), msg(2, spec), msg(3, msg(1))))
    assert obj["spec"] == {"ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "web"}],
                           "selector": {"app": "web"}, "type": "ClusterIP", "ipFamilyPolicy": "SingleStack",
                           "ipFamilies": ["IPv4"]}
    assert obj["status"] == {"loadBalancer": {}}  # as Go's JSON encoder writes an empty status


def test_negative_numbers_and_delete_options() -> None:
    obj = pb.decode(envelope("v1", "DeleteOptions", num(1, -1), msg(2, text(1, "u-1")), text(4, "Foreground"),
                             text(5, "All")))
    assert obj == {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": -1,
                   "preconditions": {"uid": "u-1"}, "propagationPolicy": "Foreground", "dryRun": ["All"]}


def test_managed_fields_carry_their_json() -> None:
    meta = text(1, "x") + msg(17, text(1, "kubectl"), text(2, "Update"), text(6, "FieldsV1"),
                              msg(7, text(1, b'{"f:data":{".":{}}}')))
    obj = pb.decode(envelope("v1", "ConfigMap", msg(1, meta)))
    assert obj["metadata"]["managedFields"] == [{"manager": "kubectl", "operation": "Update",
                                                 "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}}}}]


def test_an_unknown_field_with_a_value_is_named_and_one_without_is_ignored() -> None:
    assert pb.decode(deployment(num(1, 1) + num(99, 0) + text(98, "")))["spec"] == {"replicas": 1}
    body = deployment(msg(3, msg(2, msg(2, text(1, "c")) + msg(99, text(1, "zone")))))
    with pytest.raises(pb.UnsupportedKindError,
                       match=r"field 99 of PodSpec at spec\.template\.spec of apps/v1 Deployment"):
        pb.decode(body)
    with pytest.raises(pb.UnsupportedKindError, match=r"^cannot decode field 9 of v1 Namespace from protobuf"):
        pb.decode(envelope("v1", "Namespace", msg(1, text(1, "x")), text(9, "surprise")))


@pytest.mark.parametrize(("body", "says"), [
    (b"{\"kind\": \"Namespace\"}", "starts with the 4 bytes"),
    (pb.MAGIC + b"\x0a\x05ab", "says 5 bytes, 2 remain"),
    (pb.MAGIC + b"\x0b", "wire type 3"),
    (pb.MAGIC + b"\x08\xff", "truncated varint"),
    (pb.MAGIC + msg(1, text(1, "v1")), "names no kind"),
    (envelope("v1", "Namespace", msg(1, text(1, b"\xff\xfe"))), "metadata.name: not UTF-8"),
    (envelope("v1", "Namespace", msg(1, num(1, 5))), "metadata.name: expected a length-delimited field"),
    (envelope("apps/v1", "Deployment", msg(2, text(1, "two"))), "spec.replicas: expected a varint"),
])
def test_malformed_bodies_say_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(pb.ProtobufError, match=says) as info:
        pb.decode(body)
    assert not isinstance(info.value, pb.UnsupportedKindError)


def test_decode_request_gives_the_status_codes_the_api_server_answers() -> None:
    assert pb.decode_request((FIXTURES / "namespace.pb").read_bytes())["metadata"] == {"name": "demo"}
    with pytest.raises(StoreError) as info:
        pb.decode_request((FIXTURES / "job.pb").read_bytes())
    assert (info.value.code, info.value.reason, info.value.details) == (
        415, "UnsupportedMediaType", {"kind": "Job", "group": "batch"})
    with pytest.raises(StoreError, match="the request body could not be decoded: ") as info:
        pb.decode_request(b"k8s")
    assert info.value.code == 400


@pytest.mark.parametrize(("ctype", "yes"), [
    ("application/vnd.kubernetes.protobuf", True), ("Application/Vnd.Kubernetes.Protobuf; charset=x", True),
    ("application/vnd.kubernetes.protobuf;stream=watch", True), ("application/json", False), ("", False),
])
def test_is_protobuf(ctype: str, yes: bool) -> None:
    assert pb.is_protobuf(ctype) is yes


def test_the_schema_refers_only_to_messages_it_defines() -> None:
    known = set(pb.MESSAGES) | pb.SCALARS | pb.SPECIAL
    for name, fields in pb.MESSAGES.items():
        for number, (key, typ, flags) in fields.items():
            assert typ.removeprefix("map:") in known, f"{name}.{key} ({number}) has unknown type {typ}"
            assert set(flags) <= set("*!^"), f"{name}.{key}"
    assert set(pb.KINDS.values()) <= set(pb.MESSAGES)


# -- the fuzzer -------------------------------------------------------------------------------------------------

def decodes_or_refuses(body: bytes) -> None:
    try:
        obj = pb.decode(body)
    except pb.ProtobufError:
        return
    json.dumps(obj)  # whatever decodes is plain JSON


# FUZZ_EXAMPLES=6000 for a longer run (the default keeps the suite quick).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    decodes_or_refuses(data)
    decodes_or_refuses(pb.MAGIC + data)
    try:
        pb.decode_request(pb.MAGIC + data)
    except StoreError as exc:  # what the API server turns into a Status
        assert (exc.code, exc.reason) in ((400, "BadRequest"), (415, "UnsupportedMediaType"))


@FUZZ
@given(st.sampled_from(CAPTURED), st.data())
def test_fuzz_mutated_real_bodies(name: str, data: st.DataObject) -> None:
    body = bytearray((FIXTURES / f"{name}.pb").read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, len(body)))
        if op == "flip" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del body[at:]
        elif op == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and at < len(body):
            del body[at]
    decodes_or_refuses(bytes(body))


wire_fields = st.recursive(
    st.one_of(st.builds(num, st.integers(1, 40), st.integers(-(2 ** 63), 2 ** 64 - 1)),
              st.builds(text, st.integers(1, 40), st.binary(max_size=12))),
    lambda inner: st.builds(lambda n, parts: msg(n, *parts), st.integers(1, 40), st.lists(inner, max_size=4)),
    max_leaves=30,
)


@FUZZ
@given(st.sampled_from(sorted(pb.KINDS)), st.lists(wire_fields, max_size=8))
def test_fuzz_well_formed_wire_of_every_kind(kind: tuple[str, str], fields: list[bytes]) -> None:
    decodes_or_refuses(envelope(kind[0], kind[1], *fields))
