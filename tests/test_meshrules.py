"""Istio's traffic rules as pure functions: validation messages and the per-request routing decision."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.sandbox import meshrules
from labkit.sandbox.meshrules import Endpoint, MeshConfig

SAMPLES = Path(__file__).parent.parent / "labkit" / "sandbox" / "manifests" / "istio"


def _objects(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]
    for d in docs:
        d["metadata"].setdefault("namespace", "default")
        d["metadata"].setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    return docs


def _config(*files: str) -> MeshConfig:
    cfg = MeshConfig()
    for app, versions in (("reviews", ("v1", "v2", "v3")), ("ratings", ("v1",)), ("details", ("v1",)),
                          ("productpage", ("v1",))):
        cfg.services[f"default/{app}"] = {9080: [Endpoint(f"127.1.{i}.{n}", 9080, {"app": app, "version": v})
                                                 for n, v in enumerate(versions, start=2)
                                                 for i in (len(app),)]}
    cfg.pods["127.9.9.9"] = ("default", {"app": "productpage", "version": "v1"})
    for f in files:
        for obj in _objects(f):
            (cfg.virtual_services if obj["kind"] == "VirtualService" else cfg.destination_rules).append(obj)
    return cfg


def _route(cfg: MeshConfig, key: str, headers: dict[str, str] | None = None, path: str = "/reviews/0",
           rng: random.Random | None = None) -> meshrules.Decision:
    return meshrules.route(cfg, "127.9.9.9", key, 9080, "GET", path, headers or {}, rng or random.Random(1))


def test_every_sample_manifest_is_valid() -> None:
    for f in sorted(SAMPLES.glob("*.yaml")):
        for obj in _objects(f.name):
            assert meshrules.validate(obj["kind"], obj) == [], f.name


def test_no_virtual_service_means_the_whole_service() -> None:
    d = _route(_config(), "default/reviews")
    assert d.status == 0 and d.cluster == "outbound|9080||reviews.default.svc.cluster.local"
    assert len(d.endpoints) == 3 and d.route_name == "default" and d.timeout is None
    assert d.retry == meshrules.DEFAULT_RETRY


def test_jason_goes_to_v2_and_everyone_else_to_v1() -> None:
    cfg = _config("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml")
    jason = _route(cfg, "default/reviews", {"end-user": "jason"})
    assert jason.cluster == "outbound|9080|v2|reviews.default.svc.cluster.local"
    assert next(e for e in cfg.services["default/reviews"][9080] if (e.ip, e.port) in jason.endpoints) \
        .labels["version"] == "v2"
    for headers in ({}, {"end-user": "Jason"}, {"end-user": "jason2"}):
        assert _route(cfg, "default/reviews", headers).cluster.split("|")[2] == "v1"


def test_a_subset_without_destination_rule_is_cluster_not_found() -> None:
    d = _route(_config("virtual-service-all-v1.yaml"), "default/reviews")
    assert (d.status, d.flags, d.details, d.body) == (503, "NC", "cluster_not_found", b"")


def test_a_subset_without_ready_pods_is_no_healthy_upstream() -> None:
    cfg = _config("destination-rule-all.yaml")
    cfg.virtual_services.append({"metadata": {"name": "details", "namespace": "default"},
                                 "spec": {"hosts": ["details"], "http": [{"route": [
                                     {"destination": {"host": "details", "subset": "v2"}}]}]}})
    d = _route(cfg, "default/details")
    assert (d.status, d.flags, d.body) == (503, "UH", b"no healthy upstream")


def test_no_matching_rule_is_404_no_route() -> None:
    cfg = _config("destination-rule-all.yaml")
    cfg.virtual_services.append({"metadata": {"name": "r", "namespace": "default"}, "spec": {
        "hosts": ["reviews"], "http": [{"match": [{"uri": {"prefix": "/other"}}],
                                        "route": [{"destination": {"host": "reviews"}}]}]}})
    assert (_route(cfg, "default/reviews").status, _route(cfg, "default/reviews").flags) == (404, "NR")
    assert _route(cfg, "default/reviews", path="/other/1").status == 0


def test_matches_on_uri_method_regex_and_presence() -> None:
    cfg = _config("destination-rule-all.yaml")
    cfg.virtual_services.append({"metadata": {"name": "r", "namespace": "default"}, "spec": {
        "hosts": ["reviews.default.svc.cluster.local"], "http": [
            {"name": "regex", "match": [{"headers": {"x-tier": {"regex": "gold|silver"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
            {"name": "post", "match": [{"method": {"exact": "POST"}, "uri": {"exact": "/reviews/0"}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"name": "present", "match": [{"headers": {"x-canary": {}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"name": "rest", "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]}})
    assert _route(cfg, "default/reviews", {"x-tier": "gold"}).route_name == "regex"
    assert _route(cfg, "default/reviews", {"x-tier": "golden"}).route_name == "rest"  # a whole-value match
    assert meshrules.route(cfg, "127.9.9.9", "default/reviews", 9080, "POST", "/reviews/0?x=1", {}).route_name \
        == "post"
    assert _route(cfg, "default/reviews", {"x-canary": ""}).route_name == "present"
    assert _route(cfg, "default/reviews").route_name == "rest"


def test_a_50_50_split_over_1000_requests_is_within_binomial_noise() -> None:
    cfg = _config("destination-rule-all.yaml", "virtual-service-reviews-50-v3.yaml")
    rng = random.Random(7)
    v3 = sum(_route(cfg, "default/reviews", rng=rng).cluster.split("|")[2] == "v3" for _ in range(1000))
    assert 500 - 4 * 16 <= v3 <= 500 + 4 * 16  # 4 standard deviations of Binomial(1000, 0.5)


def test_faults_apply_only_to_the_matching_user_and_need_a_percentage() -> None:
    delay = _config("destination-rule-all.yaml", "virtual-service-ratings-test-delay.yaml")
    assert _route(delay, "default/ratings", {"end-user": "jason"}).delay == 7.0
    assert _route(delay, "default/ratings").delay == 0.0
    abort = _config("destination-rule-all.yaml", "virtual-service-ratings-test-abort.yaml")
    d = _route(abort, "default/ratings", {"end-user": "jason"})
    assert (d.status, d.body, d.flags, d.details) == (500, b"fault filter abort", "FI", "fault_filter_abort")
    del abort.virtual_services[-1]["spec"]["http"][0]["fault"]["abort"]["percentage"]
    assert _route(abort, "default/ratings", {"end-user": "jason"}).status == 0


def test_timeout_and_retries_are_read_from_the_rule() -> None:
    cfg = _config("destination-rule-all.yaml")
    cfg.virtual_services.append({"metadata": {"name": "r", "namespace": "default"}, "spec": {
        "hosts": ["reviews"], "http": [{"timeout": "0.5s", "retries": {"attempts": 3, "perTryTimeout": "200ms",
                                                                       "retryOn": "gateway-error,503"},
                                        "route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}})
    d = _route(cfg, "default/reviews")
    assert d.timeout == 0.5
    assert d.retry.attempts == 3 and d.retry.per_try_timeout == pytest.approx(0.2)
    assert d.retry.codes == {503} and {"gateway-error", "retriable-status-codes"} <= d.retry.retry_on


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"hosts": ["r"], "http": [{"timeout": "7", "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].timeout", "must be a valid duration greater than 1ms"),
    ({"hosts": ["r"], "http": [{"fault": {}, "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].fault", "HTTP fault injection must have an abort and/or a delay"),
    ({"hosts": ["r"], "http": [{"fault": {"abort": {"httpStatus": 700, "percentage": {"value": 100}}},
                                "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599"),
    ({"hosts": ["r"], "http": [{"fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 150}}},
                                "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].fault.delay.percentage.value", "percentage 150 is neither 0.0, nor in range [0.0001, 100.0]"),
    ({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r", "subset": "v_1"}}]}]},
     "spec.http[0].route[0].destination.subset", "subset name is invalid: v_1"),
    ({"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}, "weight": -15},
                                          {"destination": {"host": "r"}, "weight": 115}]}]},
     "spec.http[0].route[0].weight", "weight -15 < 0"),
    ({"hosts": ["r"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]},
     "spec.http[0].route", "HTTP route, redirect or direct_response is required"),
    ({"hosts": ["*"], "http": [{"route": [{"destination": {"host": "r"}}]}]},
     "spec.hosts", "wildcard host * is not allowed for virtual services bound to the mesh gateway"),
    ({"hosts": ["r"], "http": [{"retries": {"attempts": 2, "retryOn": "foo"},
                                "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].retries.retryOn", '"foo" is not a valid retryOn policy'),
    ({"hosts": ["r"], "http": [{"retries": {"attempts": -1}, "route": [{"destination": {"host": "r"}}]}]},
     "spec.http[0].retries.attempts", "attempts cannot be negative"),
])
def test_invalid_virtual_services_name_the_field(spec: dict[str, Any], field: str, message: str) -> None:
    problems = meshrules.validate("VirtualService", {"metadata": {"name": "x"}, "spec": spec})
    assert any(p.field == field and message in p.message for p in problems), problems


def test_invalid_destination_rules_and_gateways_name_the_field() -> None:
    assert [p.field for p in meshrules.validate("DestinationRule", {"spec": {"subsets": [{"name": "v1"}]}})] \
        == ["spec.host"]
    assert [p.field for p in meshrules.validate("DestinationRule", {"spec": {
        "host": "r", "subsets": [{"name": "v1"}, {"name": "v1"}]}})] == ["spec.subsets[1].name"]
    assert [p.field for p in meshrules.validate("Gateway", {"spec": {"servers": [{"port": {
        "number": 80, "protocol": "HTTP"}}]}})] == ["spec.servers[0].hosts"]


def test_durations() -> None:
    assert meshrules.parse_duration("0.5s") == 0.5
    assert meshrules.parse_duration("1m30s") == 90.0
    assert meshrules.parse_duration("500ms") == pytest.approx(0.5)
    assert meshrules.parse_duration("7") is None


def _gateway_config() -> MeshConfig:
    cfg = _config("destination-rule-all.yaml", "bookinfo-gateway.yaml")
    cfg.gateways = [o for o in _objects("bookinfo-gateway.yaml") if o["kind"] == "Gateway"]
    cfg.virtual_services = [o for o in cfg.virtual_services if o["kind"] == "VirtualService"]
    cfg.destination_rules = [o for o in cfg.destination_rules if o["kind"] == "DestinationRule"]
    return cfg


def test_the_gateway_routes_by_the_bound_virtual_service() -> None:
    cfg = _gateway_config()
    labels = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    gateways = meshrules.gateways_for(cfg, labels, 8080)
    assert [g["metadata"]["name"] for g in gateways] == ["bookinfo-gateway"]
    assert meshrules.gateways_for(cfg, {"istio": "ingress"}, 8080) == []  # the Helm install's label
    assert meshrules.gateways_for(cfg, labels, 8443) == []
    vs = meshrules.gateway_virtual_service(cfg, gateways, "127.0.0.1:31380")
    assert vs is not None and vs["metadata"]["name"] == "bookinfo"
    caller = ("istio-system", labels)
    for path in ("/productpage", "/static/x.css", "/login", "/logout", "/api/v1/products/0"):
        d = meshrules.route_with(cfg, vs, caller, 8080, "GET", path, {})
        assert d.cluster == "outbound|9080||productpage.default.svc.cluster.local", path
    for path in ("/", "/productpage/x", "/details/0"):
        assert meshrules.route_with(cfg, vs, caller, 8080, "GET", path, {}).flags == "NR", path
    # A mesh VirtualService is not the gateway's, and the gateway's is not the mesh's.
    assert meshrules.find_virtual_service(cfg, "default/productpage", "default") is None


def test_gateway_names_and_hosts() -> None:
    assert meshrules.gateway_key("bookinfo-gateway", "default") == "default/bookinfo-gateway"
    assert meshrules.gateway_key("tutorial/bookinfo-gateway", "default") == "tutorial/bookinfo-gateway"
    assert meshrules.gateway_key("bookinfo-gateway.tutorial.svc.cluster.local", "x") == "tutorial/bookinfo-gateway"
    cfg = _gateway_config()
    cfg.gateways[0]["spec"]["servers"][0]["hosts"] = ["istio.tutorial.bookinfo.com"]
    cfg.virtual_services[0]["spec"]["hosts"] = ["istio.tutorial.bookinfo.com"]
    gateways = meshrules.gateways_for(cfg, {"istio": "ingressgateway"}, 8080)
    assert meshrules.gateway_virtual_service(cfg, gateways, "istio.tutorial.bookinfo.com:80") is not None
    assert meshrules.gateway_virtual_service(cfg, gateways, "other.example.com") is None


def test_a_server_on_port_80_is_the_gateway_pod_s_8080() -> None:
    cfg = _gateway_config()
    cfg.gateways[0]["spec"]["servers"][0]["port"]["number"] = 80  # bookinfo-gateway.yaml before Istio 1.19
    assert meshrules.gateways_for(cfg, {"istio": "ingressgateway"}, 8080)


def test_lookups_are_cached_per_configuration() -> None:
    cfg = _config("destination-rule-all.yaml", "virtual-service-reviews-test-v2.yaml")
    first = _route(cfg, "default/reviews")
    assert ("vs", "default/reviews", "default") in cfg.cache
    assert ("subset", "default/reviews", "v1", "default") in cfg.cache
    assert _route(cfg, "default/reviews").cluster == first.cluster
    assert cfg.service_of("127.1.7.3", 9080) == "default/reviews"
    assert MeshConfig.from_json(cfg.to_json()).cache == {}
    assert MeshConfig.from_json(cfg.to_json()).to_json() == cfg.to_json()
