"""Unit tests of the pure guards: validation before storage, the network boundary, the container environment,
event expiry, connection and log limits."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.sandbox import dns, limits, validation
from labkit.sandbox.events import EVENTS, EventRecorder
from labkit.sandbox.images import runtime
from labkit.sandbox.network import AddressPool
from labkit.sandbox.registry import Registry
from labkit.sandbox.store import Store
from labkit.sandbox.validation import ValidationError

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}


def errors_of(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        validation.check_types(kind, obj)
        validation.validate_object(kind, obj)
    return {"code": info.value.code, "message": info.value.message,
            "fields": [c["field"] for c in info.value.details.get("causes", [])]}


# --------------------------------------------------------------------------------------------- names and labels


@pytest.mark.parametrize("name", ["a", "web-1", "a.b.c", "x" * 253, "0"])
def test_good_pod_names(name: str) -> None:
    validation.validate_object("Pod", {**POD, "metadata": {"name": name}})


@pytest.mark.parametrize(("name", "why"), [
    ("Upper", "lowercase RFC 1123 subdomain"), ("x" * 254, "no more than 253 characters"),
    ("../x", "lowercase RFC 1123 subdomain"), ("a/b", "lowercase RFC 1123 subdomain"),
    ("nul\x00", "lowercase RFC 1123 subdomain"), ("-a", "lowercase RFC 1123 subdomain"),
])
def test_bad_pod_names_name_the_field(name: str, why: str) -> None:
    got = errors_of("Pod", {**POD, "metadata": {"name": name}})
    assert got["code"] == 422 and got["fields"][0] == "metadata.name" and why in got["message"]
    assert got["message"].startswith(f'Pod "{name[:5]}')


def test_services_and_namespaces_have_their_own_name_rules() -> None:
    assert "DNS-1035" in errors_of("Service", {"metadata": {"name": "1web"}})["message"]
    assert "RFC 1123 label" in errors_of("Namespace", {"metadata": {"name": "a.b"}})["message"]
    validation.validate_object("Service", {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})


def test_a_number_as_a_name_is_a_type_error_in_the_go_decoders_words() -> None:
    got = errors_of("Pod", {**POD, "metadata": {"name": 7}})
    assert got["code"] == 400 and got["fields"] == ["metadata.name"]
    assert "json: cannot unmarshal number into Go struct field Pod.metadata.name of type string" in got["message"]


@pytest.mark.parametrize(("labels", "bad"), [
    ({"app": "a b"}, "a valid label must be"), ({"App Key": "x"}, "name part must consist"),
    ({"a/b/c": "x"}, "prefix part"), ({"k": "v" * 64}, "no more than 63"), ({"/k": "v"}, "prefix part must be"),
])
def test_labels(labels: dict[str, str], bad: str) -> None:
    got = errors_of("Pod", {**POD, "metadata": {"name": "p", "labels": labels}})
    assert got["fields"][0] == "metadata.labels" and bad in got["message"]


def test_a_whole_pod_of_mistakes_lists_every_field() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Sometimes", "containers": [
        {"name": "A", "image": "", "env": [{"name": "1X", "value": "v"}], "ports": [{"containerPort": 0}]},
        {"name": "A", "image": "x", "command": ["a\x00b"]}]}}
    fields = errors_of("Pod", pod)["fields"]
    assert fields == ["spec.containers[0].name", "spec.containers[0].image", "spec.containers[0].env[0].name",
                      "spec.containers[0].ports[0].containerPort", "spec.containers[1].name",
                      "spec.containers[1].name", "spec.containers[1].command[0]", "spec.restartPolicy"]


def test_workloads() -> None:
    spec = {"replicas": 10**6, "selector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
    fields = errors_of("Deployment", {"metadata": {"name": "d"}, "spec": spec})["fields"]
    assert fields == ["spec.replicas", "spec.selector.matchExpressions[0].values"]
    assert errors_of("Deployment", {"metadata": {"name": "d"}, "spec": {**spec, "replicas": True}})["code"] == 400


def test_nulls_in_typed_fields_are_unset() -> None:
    pod = json.loads(json.dumps({**POD, "status": None, "metadata": {"name": "p", "labels": None}}))
    validation.check_types("Pod", pod)
    assert "status" not in pod and "labels" not in pod["metadata"]


# --------------------------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(("raw", "ctype", "code", "says"), [
    (b'{"a": "\\ud800"}', "application/json", 400, "lone surrogate"),
    (b"a: &x [*x]\n", "application/apply-patch+yaml", 400, "refers to itself"),
    (b"[" * 3000 + b"]" * 3000, "application/json", 400, "nested more than"),
    (b'{"a": ' + b"[" * 150 + b"]" * 150 + b"}", "application/json", 400, "nested more than 100"),
    (b'{"n": 1' + b"0" * 30 + b"}", "application/json", 400, "out of range"),
    (b'{"n": NaN}', "application/json", 400, "non-finite"),
    (b"{1: 2}", "application/yaml", 400, "non-string key"),
    (b"[1]", "application/json", 400, "must be a JSON object"),
    (b"{", "application/json", 400, "could not be decoded"),
    (b" " * (validation.MAX_BODY_BYTES + 1), "application/json", 413, "limit is"),
])
def test_bodies_that_cannot_be_stored_are_refused(raw: bytes, ctype: str, code: int, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        validation.decode_body(raw, ctype)
    assert info.value.code == code and says in info.value.message


def test_yaml_aliases_cannot_expand_without_bound() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
    with pytest.raises(ValidationError, match="more than 200000 values"):
        validation.decode_body(laughs.encode(), "application/yaml")


def test_yaml_timestamps_stay_strings() -> None:
    assert validation.decode_body(b"when: 2026-11-29\n", "application/yaml") == {"when": "2026-11-29"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
       st.sampled_from(["application/json", "application/yaml", "application/apply-patch+yaml"]))
def test_any_body_decodes_or_is_refused_with_a_status(raw: bytes, ctype: str) -> None:
    try:
        body = validation.decode_body(raw, ctype, allow_list=True)
    except ValidationError as exc:
        assert exc.code in (400, 413) and exc.message
        return
    validation.check_storable("Thing", {"body": body})


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(validation.SCHEMAS)), st.dictionaries(
    st.sampled_from(["metadata", "spec", "status", "data", "involvedObject", "subsets", "kind"]), json_values))
def test_any_object_is_valid_or_refused_with_named_fields(kind: str, obj: dict[str, Any]) -> None:
    try:
        validation.check_json_value(obj)
        validation.check_types(kind, obj)
        validation.validate_object(kind, obj)
        validation.check_storable(kind, obj)
    except ValidationError as exc:
        assert exc.code in (400, 413, 422)
        assert exc.code == 413 or exc.details.get("causes"), exc.message


def test_storable_means_it_reads_back() -> None:
    validation.check_storable("Pod", POD)
    with pytest.raises(ValidationError, match=r"does not serialise|refers to itself"):
        loop: list[Any] = []
        loop.append(loop)
        validation.check_storable("Pod", {"x": loop})


# --------------------------------------------------------------------------------------------- query parameters


@pytest.mark.parametrize(("query", "field"), [
    ({"timeoutSeconds": "nan"}, "timeoutSeconds"), ({"timeoutSeconds": "inf"}, "timeoutSeconds"),
    ({"timeoutSeconds": "1e3"}, "timeoutSeconds"), ({"timeoutSeconds": "-1"}, "timeoutSeconds"),
    ({"gracePeriodSeconds": "99999999999999999999"}, "gracePeriodSeconds"), ({"tailLines": "x"}, "tailLines"),
    ({"limitBytes": "0"}, "limitBytes"), ({"resourceVersion": "abc"}, "resourceVersion"),
    ({"dryRun": "Some"}, "dryRun"), ({"propagationPolicy": "Sideways"}, "propagationPolicy"),
    ({"labelSelector": "app in (x"}, "labelSelector"), ({"fieldSelector": "=="}, "fieldSelector"),
])
def test_bad_query_parameters_name_themselves(query: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validation.parse_query(list(query.items()))
    assert info.value.code == 400 and info.value.details["causes"][0]["field"] == field


def test_booleans_read_as_the_api_server_reads_them() -> None:
    parsed = validation.parse_query([("watch", "1"), ("follow", "False"), ("previous", "yes"), ("limit", "500")])
    assert parsed.bools == {"watch": True, "follow": False, "previous": True} and parsed.ints == {"limit": 500}
    assert parsed.normalised == [("watch", "true"), ("follow", "false"), ("previous", "true"), ("limit", "500")]
    assert parsed.changed


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([*validation.INT_PARAMS, *validation.ENUM_PARAMS, "watch",
                                           "labelSelector", "fieldSelector", "resourceVersion", "other"]),
                          st.text(max_size=20)), max_size=5))
def test_any_query_parses_or_is_refused(items: list[tuple[str, str]]) -> None:
    try:
        parsed = validation.parse_query(items)
    except ValidationError as exc:
        assert exc.code == 400 and exc.details["causes"][0]["field"] in {k for k, _ in items}
        return
    assert all(validation.INT_PARAMS[k][0] <= v <= validation.INT_PARAMS[k][1] for k, v in parsed.ints.items())


def test_delete_options() -> None:
    opts = validation.delete_options({"gracePeriodSeconds": "5"}, {"gracePeriodSeconds": 9, "dryRun": ["All"]})
    assert (opts.grace, opts.propagation, opts.dry_run) == (5, "Background", True)
    assert validation.delete_options({}, {"gracePeriodSeconds": 10**15}).grace == validation.MAX_GRACE_SECONDS
    with pytest.raises(ValidationError, match="dryRun"):
        validation.delete_options({}, {"dryRun": ["Some"]})


# --------------------------------------------------------------------------------------------- the pod boundary


@pytest.mark.parametrize(("address", "ok"), [
    ("127.70.8.5", True), ("127.70.10.20", True), ("::ffff:127.70.8.5", True), ("127.70.8.0", False),
    ("127.0.0.1", False), ("0.0.0.0", False), ("::", False), ("::1", False), ("::ffff:127.0.0.1", False),
    ("127.70.12.1", False), ("127.71.8.5", False), ("10.0.0.1", False), ("[::ffff:127.0.0.1]", False),
    ("not an address", False),
])
def test_a_pod_reaches_only_its_sandbox_block(address: str, ok: bool) -> None:
    assert dns.reachable(address, "127.70.8.0/22") is ok
    assert dns.Resolver(None, "default", "127.70.8.0/22").reachable(address) is ok
    assert dns.reachable(address, None)  # an image run by hand has no boundary


# --------------------------------------------------------------------------------------------- container environment


def test_pod_env_is_kept_from_the_loader_and_interpreter_but_shown_to_the_pod(monkeypatch: pytest.MonkeyPatch
                                                                               ) -> None:
    pod_env = {"GREETING": "hi", "LD_PRELOAD": "/x.so", "PYTHONHOME": "/nope", "GCONV_PATH": "/g", "PATH": "/evil",
               "LABKIT_POD_IP": "1.2.3.4"}
    environ = runtime.process_environ(pod_env, {"PATH": "/usr/bin", "LABKIT_POD_IP": "127.70.8.5"})
    assert environ["GREETING"] == "hi" and environ["PATH"] == "/usr/bin" and environ["LABKIT_POD_IP"] == "127.70.8.5"
    assert not {"LD_PRELOAD", "PYTHONHOME", "GCONV_PATH"} & set(environ)
    monkeypatch.setenv(runtime.POD_ENV, environ[runtime.POD_ENV])
    assert runtime.pod_environ() == pod_env


# --------------------------------------------------------------------------------------------- events, limits


def test_events_expire_after_their_ttl_from_the_last_write() -> None:
    async def scenario() -> list[str]:
        store = Store()
        registry = Registry(store, AddressPool(["127.70.10.10"]))
        registry.create_initial_namespaces()
        recorder = EventRecorder(registry, ttl=0.3)
        pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
        recorder.record(pod, "Normal", "Started", "started", component="kubelet")
        recorder.record(pod, "Normal", "Other", "other", component="kubelet")
        gone = asyncio.Event()

        def on_change(ev: Any) -> None:
            if ev.resource is EVENTS and ev.type == "DELETED" and not store.list(EVENTS):
                gone.set()

        store.subscribe((EVENTS,), on_change)
        await asyncio.sleep(0.2)
        recorder.record(pod, "Normal", "Started", "started", component="kubelet")  # a repeat: written again
        first_left = [e["reason"] for e in store.list(EVENTS)]
        await asyncio.wait_for(gone.wait(), 5)
        recorder.close()
        assert not recorder._seen  # forgotten with the events, so memory stays bounded
        return first_left

    assert sorted(asyncio.run(scenario())) == ["Other", "Started"]


def test_repeated_log_lines_are_rate_limited() -> None:
    flt = limits.RateLimitFilter(burst=3, window=3600)
    records = [logging.LogRecord("x", logging.ERROR, __file__, 1, "internal error on %s", ("GET",), None)
               for _ in range(10)]
    assert [flt.filter(r) for r in records] == [True] * 3 + [False] * 7
    other = logging.LogRecord("x", logging.ERROR, __file__, 1, "another", (), None)
    assert flt.filter(other)


def test_the_connection_guard_makes_room_and_expires() -> None:
    class Transport:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    async def scenario() -> None:
        guard = limits.ConnectionGuard(max_unauthenticated=2, max_connections=3, auth_deadline=0.05)
        a, b, c, d = Transport(), Transport(), Transport(), Transport()
        assert guard.admit(a) and guard.admit(b)  # type: ignore[arg-type]
        guard.authenticated(b)  # type: ignore[arg-type]
        assert guard.admit(c) and guard.admit(d) is False  # type: ignore[arg-type]
        assert guard.unauthenticated == 2 and not a.aborted
        await asyncio.sleep(0.1)
        assert a.aborted and c.aborted and not b.aborted and guard.expired == 2
        guard.forget(a)  # type: ignore[arg-type]
        assert guard.admit(d)  # type: ignore[arg-type]

    asyncio.run(scenario())
