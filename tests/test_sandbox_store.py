"""The sandbox's store, registry and route table as pure parts: no processes, no network.

The store's indexes must give the same answers as a full scan; the registry is the one writer (defaulting, graceful
pod deletion, garbage collection, finalizing); the API server's route table serves every kind discovery announces.
"""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.sandbox import discovery
from labkit.sandbox.apiserver import ApiServer
from labkit.sandbox.cluster import Cluster
from labkit.sandbox.registry import Registry, controller_of, owner_ref
from labkit.sandbox.resources import BY_PLURAL, RESOURCES
from labkit.sandbox.store import (
    Store,
    StoreError,
    WatchEvent,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)

PODS = BY_PLURAL[("", "pods")]
SERVICES = BY_PLURAL[("", "services")]
ENDPOINTS = BY_PLURAL[("", "endpoints")]
NAMESPACES = BY_PLURAL[("", "namespaces")]
DEPLOYMENTS = BY_PLURAL[("apps", "deployments")]
REPLICASETS = BY_PLURAL[("apps", "replicasets")]


class Addresses:
    """A Service address pool like the network's."""

    def __init__(self) -> None:
        self.n = 0

    def take(self) -> str:
        self.n += 1
        return f"127.1.2.{self.n}"


def pod(name: str, ns: str = "default", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "curl"}]}}


def registry() -> Registry:
    reg = Registry(Store(), Addresses())
    reg.create_initial_namespaces()
    return reg


def scan(store: Store, ns: str | None, selector: str, fields: str = "") -> list[str]:
    """What a list must return: every pod checked one by one, sorted by namespace and name."""
    labels, fsel = parse_label_selector(selector), parse_field_selector(fields)
    everything = store.list(PODS)
    return [f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}' for p in everything
            if (ns is None or p["metadata"]["namespace"] == ns) and labels_match(labels, p["metadata"]["labels"])
            and all(f.matches(p) for f in fsel)]


def names(objs: list[dict[str, Any]]) -> list[str]:
    return [f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}' for o in objs]


# --- the store's indexes ----------------------------------------------------------------------------------------

SELECTORS = ["", "app=details", "app=details,version=v1", "app in (details,ratings)", "app!=details",
             "app,!canary", "version notin (v1)", "app=nothing", "app in (details),version in (v1,v2)"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_indexed_lists_match_a_full_scan_through_creates_relabels_and_deletes(seed: int) -> None:
    rng = random.Random(seed)
    reg = registry()
    for ns in ("a", "b"):
        reg.create(NAMESPACES, {"metadata": {"name": ns}}, None)
    store = reg.store
    live: list[tuple[str, str]] = []
    for i in range(60):
        op = rng.random()
        if op < 0.6 or not live:
            ns = rng.choice(["default", "a", "b"])
            labels = {k: rng.choice(vals) for k, vals in
                      (("app", ["details", "ratings", "reviews"]), ("version", ["v1", "v2"]), ("canary", ["y"]))
                      if rng.random() < 0.7}
            reg.create(PODS, pod(f"p{i}", ns, **labels), ns)
            live.append((ns, f"p{i}"))
        elif op < 0.8:
            ns, name = rng.choice(live)
            new_app = rng.choice(["details", "ratings", None])
            reg.mutate(PODS, ns, name, lambda p, a=new_app: p["metadata"]["labels"].update(app=a)
                       if a else p["metadata"]["labels"].pop("app", None))
        else:
            ns, name = live.pop(rng.randrange(len(live)))
            reg.delete(PODS, ns, name)
    for ns, selector in itertools.product([None, "default", "a", "b", "nowhere"], SELECTORS):
        got = names(store.list(PODS, ns, parse_label_selector(selector)))
        assert got == scan(store, ns, selector), (ns, selector)
    field = "metadata.name=p3"
    assert names(store.list(PODS, None, [], parse_field_selector(field))) == scan(store, None, "", field)


def test_list_is_sorted_and_cluster_scoped_kinds_ignore_the_namespace() -> None:
    reg = registry()
    for name in ("zz", "aa", "mm"):
        reg.create(PODS, pod(name), "default")
    assert [p["metadata"]["name"] for p in reg.store.list(PODS, "default")] == ["aa", "mm", "zz"]
    assert [n["metadata"]["name"] for n in reg.store.list(NAMESPACES, "default")] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]


def test_a_relabelled_object_leaves_its_old_label_index() -> None:
    reg = registry()
    reg.create(PODS, pod("p", app="details"), "default")
    reg.mutate(PODS, "default", "p", lambda p: p["metadata"]["labels"].update(app="ratings"))
    assert reg.store.list(PODS, "default", parse_label_selector("app=details")) == []
    assert names(reg.store.list(PODS, "default", parse_label_selector("app=ratings"))) == ["default/p"]
    reg.delete(PODS, "default", "p")
    assert reg.store.list(PODS, None, parse_label_selector("app=ratings")) == []


# --- watches and the watch cache ------------------------------------------------------------------------------

def test_watch_replays_history_of_its_own_resource_after_a_version() -> None:
    reg = registry()
    store = reg.store
    start = store.rv
    reg.create(PODS, pod("p1", app="details"), "default")
    reg.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default")
    reg.mutate(PODS, "default", "p1", lambda p: p["metadata"]["labels"].update(app="ratings"))
    _, replay = store.watch(PODS, "default", parse_label_selector("app=details"), [], start)
    # Leaving the selection is a DELETED for this watcher; the Service is another resource's history.
    assert [(e.type, e.object["metadata"]["name"]) for e in replay] == [("ADDED", "p1"), ("DELETED", "p1")]


def test_a_version_older_than_the_history_is_gone() -> None:
    reg = registry()
    with pytest.raises(StoreError) as info:
        reg.store.watch(PODS, None, [], [], -1)
    assert info.value.code == 410 and info.value.reason == "Expired"
    _, replay = reg.store.watch(PODS, None, [], [], 1)  # "1" is the beginning: everything is kept
    assert replay == []


def test_compacted_history_answers_410_only_for_versions_it_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.sandbox import store as store_module

    monkeypatch.setattr(store_module, "HISTORY", 3)
    reg = registry()
    rvs = [int(reg.create(PODS, pod(f"p{i}"), "default")["metadata"]["resourceVersion"]) for i in range(6)]
    _, replay = reg.store.watch(PODS, None, [], [], rvs[2])
    assert [e.object["metadata"]["name"] for e in replay] == ["p3", "p4", "p5"]
    with pytest.raises(StoreError, match="too old resource version"):
        reg.store.watch(PODS, None, [], [], rvs[1])


def test_watchers_get_only_their_namespace_and_listeners_only_their_resources() -> None:
    reg = registry()
    reg.create(NAMESPACES, {"metadata": {"name": "other"}}, None)
    seen: list[WatchEvent] = []
    reg.store.subscribe((SERVICES,), seen.append)
    w, _ = reg.store.watch(PODS, "other", [], [], None)
    everywhere, _ = reg.store.watch(PODS, None, [], [], None)
    namespaces, _ = reg.store.watch(NAMESPACES, "ignored-for-a-cluster-scoped-kind", [], [], None)
    reg.create(PODS, pod("here"), "default")
    reg.create(PODS, pod("there", "other"), "other")
    reg.create(NAMESPACES, {"metadata": {"name": "third"}}, None)
    assert w.queue.qsize() == 1 and w.queue.get_nowait() is not None
    assert everywhere.queue.qsize() == 2 and namespaces.queue.qsize() == 1
    reg.store.unwatch(w)
    reg.create(PODS, pod("again", "other"), "other")
    assert w.queue.get_nowait() is None and w.queue.empty()  # the end-of-watch mark, nothing after it
    assert seen == []
    reg.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default")
    assert [e.type for e in seen] == ["ADDED"]


# --- the registry ----------------------------------------------------------------------------------------------

def test_create_defaults_and_allocates_a_service_address_once() -> None:
    reg = registry()
    p = reg.create(PODS, pod("p"), None)
    assert p["spec"]["restartPolicy"] == "Always" and p["status"]["phase"] == "Pending"
    svc = reg.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default")
    assert svc["spec"]["clusterIP"] == "127.1.2.1" and svc["spec"]["ports"][0]["targetPort"] == 80
    with pytest.raises(StoreError, match="already exists"):
        reg.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default")
    assert isinstance(reg.service_ips, Addresses) and reg.service_ips.n == 1  # no address leaked by the 409
    dry = reg.create(PODS, pod("dry"), "default", dry_run=True)
    assert dry["metadata"]["name"] == "dry" and reg.store.get(PODS, "default", "dry") is None


def test_create_in_a_missing_namespace_names_it() -> None:
    with pytest.raises(StoreError, match='namespaces "nowhere" not found'):
        registry().create(PODS, pod("p", "nowhere"), "nowhere")


def test_update_keeps_identity_pod_spec_and_status() -> None:
    reg = registry()
    old = reg.create(PODS, pod("p"), "default")
    new = copy.deepcopy(old)
    new["metadata"]["uid"] = "forged"
    new["metadata"]["labels"] = {"app": "x"}
    new["spec"]["containers"][0]["image"] = "other"
    new["status"] = {"phase": "Running"}
    stored = reg.update(PODS, old, new)
    assert stored["metadata"]["uid"] == old["metadata"]["uid"] and stored["metadata"]["labels"] == {"app": "x"}
    assert stored["spec"] == old["spec"] and stored["status"] == old["status"]
    assert reg.update(PODS, stored, copy.deepcopy(stored)) is stored  # no change, no new version


def test_a_pod_no_node_took_goes_at_once_a_running_one_waits_for_the_kubelet() -> None:
    reg = registry()
    reg.create(PODS, pod("unscheduled"), "default")
    gone = reg.delete(PODS, "default", "unscheduled")
    assert reg.store.get(PODS, "default", "unscheduled") is None and gone["metadata"]["name"] == "unscheduled"
    bound = reg.create(PODS, pod("bound"), "default")
    reg.mutate(PODS, "default", "bound", lambda p: p["spec"].update(nodeName="sandbox"))
    marked = reg.delete(PODS, "default", "bound", grace=5)
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 5 and marked["metadata"]["deletionTimestamp"]
    reg.finalize_pod("default", "bound", "another-uid")  # another instance of the name: not this one
    assert reg.store.get(PODS, "default", "bound") is not None
    reg.finalize_pod("default", "bound", bound["metadata"]["uid"])
    assert reg.store.get(PODS, "default", "bound") is None


def test_deleting_an_owner_collects_what_it_controls_unless_orphaned() -> None:
    reg = registry()
    template = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "curl"}]}}
    spec = {"selector": {"matchLabels": {"app": "a"}}, "template": template}
    for orphan in (False, True):
        rs = reg.create(REPLICASETS, {"metadata": {"name": f"rs-{orphan}"}, "spec": copy.deepcopy(spec)}, "default")
        child = pod(f"child-{orphan}", app="a")
        child["metadata"]["ownerReferences"] = [owner_ref(rs)]
        created = reg.create(PODS, child, "default")
        assert controller_of(created) == owner_ref(rs)
        reg.delete(REPLICASETS, "default", f"rs-{orphan}", propagation="Orphan" if orphan else "Background")
    assert [p["metadata"]["name"] for p in reg.store.list(PODS, "default")] == ["child-True"]


def test_deleting_a_namespace_takes_its_objects_and_system_namespaces_stay() -> None:
    reg = registry()
    reg.create(NAMESPACES, {"metadata": {"name": "tmp"}}, None)
    reg.create(PODS, pod("p", "tmp"), "tmp")
    reg.create(SERVICES, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "tmp")
    reg.delete(NAMESPACES, "", "tmp")
    assert reg.store.list(PODS, "tmp") == [] and reg.store.list(SERVICES, "tmp") == []
    with pytest.raises(StoreError) as info:
        reg.delete(NAMESPACES, "", "kube-system")
    assert info.value.code == 403
    with pytest.raises(StoreError, match=r'deployments\.apps "nope" not found'):
        reg.delete(DEPLOYMENTS, "default", "nope")


# --- the route table ---------------------------------------------------------------------------------------------

def test_every_kind_and_subresource_discovery_announces_has_a_route(tmp_path: Path) -> None:
    cluster = Cluster(str(tmp_path), subnet=(127, 0))
    server = ApiServer(cluster.store, cluster.registry, cluster.kubelet, cluster.network, "token")
    # An object's name is any path segment ({name:[^/]+}: RBAC names may hold braces).
    served = {(r.method, r.path.replace("{name:[^/]+}", "{name}")) for r in server.routes()}
    for group_version in ("v1", "apps/v1"):
        doc = discovery.resource_list(group_version)
        assert doc is not None
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        for entry in doc["resources"]:
            plural, _, sub = entry["name"].partition("/")
            res = BY_PLURAL[("" if group_version == "v1" else group_version.split("/")[0], plural)]
            base = f"{prefix}/namespaces/{{namespace}}/{plural}" if res.namespaced else f"{prefix}/{plural}"
            path = f"{base}/{{name}}/{sub}" if sub else base
            methods = {m for m, p in served if p == path}
            assert methods, f"discovery announces {entry['name']} in {group_version} but no route serves {path}"
            if not sub:
                assert {"GET", "POST", "DELETE"} <= methods
                assert {"GET", "PUT", "PATCH", "DELETE"} <= {m for m, p in served if p == f"{base}/{{name}}"}
    assert len(RESOURCES) == len({r.plural for r in RESOURCES})
