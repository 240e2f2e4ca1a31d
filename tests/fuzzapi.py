"""The sandbox's own API fuzzer, shared by ``tests/test_fuzz_api.py`` (bounded) and ``benchmarks/fuzz.py`` (long).

Two sources of requests:

- **schemathesis over the served OpenAPI**: every operation of ``/openapi/v3`` (create, read, replace, patch,
  delete of every kind), with generated path parameters, query parameters and bodies;
- **hypothesis strategies** that go deeper: near-valid Pods, Services, Deployments, ConfigMaps, Events and
  Namespaces with hostile names, labels, types and numbers; list, watch, log and delete requests with hostile
  query parameters and selectors; exec with generated arguments.

What every answer must satisfy (a violation is a *finding*): no 5xx (but a service proxy's 503); every 4xx is a
``Status``; every 400/422 names the field it refuses; every object a write stores reads back (GET, LIST, and the
official Python client's strict models); no request goes unanswered. Objects of the lesson are only ever touched
with ``dryRun=All``, and the fuzzer deletes what it made, so that afterwards the lesson can be checked.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as with_seed
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from rawapi import RawApi, Reply

from labkit.sandbox import Sandbox, discovery
from labkit.sandbox.resources import GROUP_VERSIONS

CURL = "docker.io/curlimages/curl:8.16.0"
RATINGS = "docker.io/istio/examples-bookinfo-ratings-v1:1.20.3"
FUZZ_NS = "fz-ns"
COLLECTIONS = {
    "Pod": "/api/v1/namespaces/{ns}/pods", "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps", "Event": "/api/v1/namespaces/{ns}/events",
    "Endpoints": "/api/v1/namespaces/{ns}/endpoints", "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "Namespace": "/api/v1/namespaces",
}
QUERY_NAMES = ("timeoutSeconds", "gracePeriodSeconds", "limit", "tailLines", "limitBytes", "sinceSeconds",
               "resourceVersion", "resourceVersionMatch", "watch", "allowWatchBookmarks", "sendInitialEvents",
               "dryRun", "labelSelector", "fieldSelector", "propagationPolicy", "fieldValidation", "previous",
               "container", "timestamps", "fieldManager", "pretty")
SAFE_EXEC = ("cat", "curl", "echo", "env", "false", "head", "hostname", "ls", "pgrep", "printenv", "ps", "true")
"""Exec commands the fuzz runs: not the ones that kill or sleep; grep and wc are fuzzed with the toolbox's own
limits (a runaway regex, ``wc`` of a folder), which are another change's work."""


# --------------------------------------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
hostile_text = st.sampled_from([
    "", "a", "../../../x", "a/b", "UPPER", "x" * 254, "nul\x00name", "\ud800", "é", "-a", "a-", "a..b", "1.2.3",
    "%2F", " ", "a" * 64, "kube-system", "default", ".", "..", "a_b", "9", "1e400"])
valid_names = st.from_regex(r"\Afz-[a-z0-9]{1,6}\Z")
names = st.integers(0, 4).flatmap(
    lambda i: valid_names if i < 3 else st.one_of(hostile_text, st.text(max_size=70), st.integers()))
label_maps = st.dictionaries(
    st.one_of(st.from_regex(r"\A[a-z]{1,5}(/[a-z]{1,5})?\Z"), hostile_text, st.text(max_size=10)),
    st.one_of(st.from_regex(r"\A[a-z0-9]{0,5}\Z"), hostile_text, json_values), max_size=3)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes any JSON value (a wrong type, a null)."""
    return st.integers(0, 7).flatmap(lambda i: strategy if i else json_values)


metadata = st.fixed_dictionaries(
    {"name": names},
    optional={"labels": maybe(label_maps), "annotations": maybe(label_maps), "generateName": names,
              "namespace": maybe(st.sampled_from(["default", FUZZ_NS, "nope"])),
              "ownerReferences": maybe(st.lists(st.fixed_dictionaries({"uid": maybe(st.text(max_size=5))}),
                                                max_size=1))})
env_vars = st.lists(st.fixed_dictionaries({
    "name": maybe(st.sampled_from(["A", "LD_PRELOAD", "PYTHONHOME", "1X", "a=b", ""])),
    "value": maybe(st.text(max_size=10))}), max_size=2)
container = st.fixed_dictionaries(
    {"name": maybe(st.sampled_from(["c", "main"]) | names), "image": maybe(st.sampled_from([CURL, RATINGS, "nope:1"]))},
    optional={"command": maybe(st.just(["sleep", "3600"]) | st.lists(st.text(max_size=8), max_size=3)),
              "env": maybe(env_vars),
              "ports": maybe(st.lists(st.fixed_dictionaries({"containerPort": maybe(st.integers(-5, 70000))}),
                                      max_size=2))})
pod_spec = st.fixed_dictionaries(
    {"containers": maybe(st.lists(container, max_size=2))},
    optional={"restartPolicy": maybe(st.sampled_from(["Always", "Never", "Sometimes"])),
              "terminationGracePeriodSeconds": maybe(st.integers(-2, 2**64))})
selector = st.fixed_dictionaries({}, optional={
    "matchLabels": maybe(label_maps),
    "matchExpressions": maybe(st.lists(st.fixed_dictionaries({
        "key": maybe(st.sampled_from(["app", "A/b", ""])), "operator": maybe(st.sampled_from(["In", "Exists", "X"])),
        "values": maybe(st.lists(st.text(max_size=4), max_size=2))}), max_size=2))})


def _body(kind: str, api_version: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"apiVersion": maybe(st.just(api_version)), "kind": maybe(st.just(kind)),
                                  "metadata": maybe(metadata)}, optional=fields)


BODIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "Pod": _body("Pod", "v1", spec=maybe(pod_spec)),
    "Service": _body("Service", "v1", spec=maybe(st.fixed_dictionaries({}, optional={
        "ports": maybe(st.lists(st.fixed_dictionaries({"port": maybe(st.integers(-1, 70000))}, optional={
            "targetPort": maybe(st.integers(-1, 70000) | st.text(max_size=16)), "name": names,
            "protocol": maybe(st.sampled_from(["TCP", "XTP"]))}), max_size=2)),
        "selector": maybe(label_maps), "type": maybe(st.sampled_from(["ClusterIP", "Weird"]))}))),
    "Deployment": _body("Deployment", "apps/v1", spec=maybe(st.fixed_dictionaries({}, optional={
        "replicas": maybe(st.integers(-1, 2**64)), "selector": maybe(selector),
        "template": maybe(st.fixed_dictionaries({"metadata": maybe(metadata), "spec": maybe(pod_spec)}))}))),
    "ConfigMap": _body("ConfigMap", "v1", data=maybe(label_maps)),
    "Event": _body("Event", "v1", involvedObject=maybe(st.fixed_dictionaries({}, optional={
        "name": names, "namespace": maybe(st.sampled_from(["default", "other"]))})), count=maybe(st.integers()),
        reason=maybe(st.text(max_size=8))),
    "Namespace": _body("Namespace", "v1"),
}
query_values = st.one_of(st.sampled_from([
    "nan", "inf", "-1", "0", "1", "1e3", "99999999999999999999", "9223372036854775807", "-9223372036854775809",
    "true", "false", "All", "x", "", "app=details", "app in (x", "metadata.name=x", "==", "!", "a,b", "\ud800",
    "Orphan", "Strict"]), st.text(max_size=12))
queries = st.dictionaries(st.sampled_from(QUERY_NAMES), query_values, max_size=4)
patch_types = st.sampled_from(["application/merge-patch+json", "application/strategic-merge-patch+json",
                               "application/json-patch+json", "application/apply-patch+yaml"])
json_patches = st.lists(st.fixed_dictionaries({"op": maybe(st.sampled_from(["add", "replace", "remove", "test",
                                                                             "move", "copy"])),
                                               "path": maybe(st.sampled_from(["/spec", "/metadata/labels/x",
                                                                              "/metadata", "", "/spec/replicas",
                                                                              "/x/0"])),
                                               "value": json_values}), max_size=3)
exec_args = st.lists(st.one_of(st.sampled_from(["-n", "-c", "--", "-1", "/etc/hosts", "/nonexistent", "-o",
                                                "/tmp/x", "http://ratings:9080/ratings/7", "-9999999999999",
                                                "--max-time", "0.1", "-w", "%{http_code}"]),
                               st.text(max_size=10)), max_size=4)


# --------------------------------------------------------------------------------------------- the fuzzer


def served_openapi() -> dict[str, Any]:
    """The OpenAPI v3 documents the sandbox serves, merged into one (what ``/openapi/v3`` points at)."""
    doc = discovery.openapi_v3_document("v1")
    assert doc is not None
    for gv in GROUP_VERSIONS[1:]:
        more = discovery.openapi_v3_document(gv)
        assert more is not None
        doc["paths"].update(more["paths"])
        doc["components"]["schemas"].update(more["components"]["schemas"])
    return doc


def names_a_field(doc: dict[str, Any]) -> bool:
    causes = (doc.get("details") or {}).get("causes") or []
    return any(isinstance(c, dict) and c.get("field") for c in causes)


@dataclass
class Fuzzer:
    """Sends generated requests to one sandbox and records every finding."""

    sandbox: Sandbox
    budget: float = 60.0
    findings: list[str] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    created: dict[str, str] = field(default_factory=dict)  # object path -> kind

    def __post_init__(self) -> None:
        self.api = RawApi(self.sandbox, timeout=30)
        self.deadline = time.monotonic() + self.budget
        self.protected = self._object_paths()
        self.pod_names = sorted(p.rsplit("/", 1)[1] for p in self.protected if "/pods/" in p)
        self._client: Any = None
        self._since_models = 0
        self.send("POST", COLLECTIONS["Namespace"], {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": FUZZ_NS}})

    # -- plumbing
    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def _object_paths(self) -> set[str]:
        paths = set()
        for kind, coll in COLLECTIONS.items():
            listing = coll.replace("/namespaces/{ns}", "") if kind != "Namespace" else coll
            for obj in self.api.get(listing).json().get("items", []):
                paths.add(self.object_path(kind, obj))
        return paths

    @staticmethod
    def object_path(kind: str, obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        base = COLLECTIONS[kind].format(ns=meta.get("namespace", ""))
        return f"{base}/{quote(str(meta['name']), safe='')}"

    def finding(self, text: str) -> None:
        if len(self.findings) < 200:
            self.findings.append(text)

    def send(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             content_type: str = "application/json") -> Reply | None:
        if self.out_of_time():
            return None
        query = dict(query or {})
        base = path.split("/proxy", 1)[0]
        target = "/".join(base.split("/")[:7]) if base.startswith("/api/") else "/".join(base.split("/")[:8])
        mutating = method in ("PUT", "PATCH", "DELETE")
        if mutating and (target in self.protected or path.rstrip("/") in {c.format(ns="default")
                                                                          for c in COLLECTIONS.values()}):
            query["dryRun"] = "All"  # the lesson's objects are only ever touched without persisting
        if method == "DELETE" and path.rstrip("/") == COLLECTIONS["Namespace"]:
            query["dryRun"] = "All"
        watch = query.get("watch")
        if watch is not None and not (watch == "0" or str(watch).lower() == "false"):
            # A valid timeout is shortened to one second so that the watch ends; an invalid one is kept.
            given = str(query.get("timeoutSeconds", ""))
            if not given or re.fullmatch(r"[-+]?[0-9]{1,19}", given):
                query["timeoutSeconds"] = "1"
        if "follow" in query:
            query["follow"] = "false"
        what = f"{method} {path}?{urlencode(query, errors='surrogatepass')} {content_type} {str(body)[:300]!s}"
        try:
            reply = self.api.request(method, path, body, query=query or None, content_type=content_type)
        except Exception as exc:  # no answer at all: the worst finding
            self.finding(f"no answer ({type(exc).__name__}: {exc}) to {what}")
            self.api.close()
            return None
        self.requests += 1
        self.codes[reply.status] += 1
        self.judge(reply, what, path)
        if 200 <= reply.status < 300 and method in ("POST", "PUT", "PATCH") and query.get("dryRun") != "All":
            self.read_back(reply, what)
        return reply

    def judge(self, reply: Reply, what: str, path: str) -> None:
        code = reply.status
        if code >= 500 and not (code == 503 and "/proxy" in path and reply.is_status()):
            self.finding(f"{code} {reply.body[:300]!r} for {what}")
        elif 400 <= code < 500:
            if not reply.is_status():
                self.finding(f"{code} that is not a Status: {reply.body[:200]!r} for {what}")
            elif code in (400, 422) and not names_a_field(reply.json()):
                self.finding(f"{code} Status naming no field: {reply.json().get('message')!r} for {what}")

    def read_back(self, reply: Reply, what: str) -> None:
        try:
            obj = reply.json()
        except ValueError:
            self.finding(f"a 2xx body that is not JSON for {what}")
            return
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind not in COLLECTIONS:
            return
        path = self.object_path(kind, obj)
        if path not in self.protected:
            self.created[path] = kind
        got = self.api.get(path)
        if got.status != 200 and not (kind == "Pod" and got.status == 404):
            self.finding(f"stored {kind} cannot be read back ({got.status} {got.body[:200]!r}) after {what}")
        coll = COLLECTIONS[kind].format(ns=obj["metadata"].get("namespace", ""))
        listing = self.api.get(coll)
        if listing.status != 200:
            self.finding(f"the {kind} list fails ({listing.status}) after {what}")
        self._since_models += 1
        if self._since_models >= 50:
            self.check_models()

    def check_models(self) -> None:
        """List every kind with the official client, whose strict models refuse malformed objects."""
        self._since_models = 0
        from kubernetes import client, config

        if self._client is None:
            self._client = config.new_client_from_config(config_file=str(self.sandbox.kubeconfig))
        core, apps = client.CoreV1Api(self._client), client.AppsV1Api(self._client)
        calls: list[Callable[[], Any]] = [
            core.list_pod_for_all_namespaces, core.list_service_for_all_namespaces,
            core.list_config_map_for_all_namespaces, core.list_event_for_all_namespaces,
            core.list_endpoints_for_all_namespaces, core.list_namespace,
            core.list_service_account_for_all_namespaces, apps.list_deployment_for_all_namespaces,
            apps.list_replica_set_for_all_namespaces]
        for call in calls:
            try:
                call()
            except Exception as exc:
                self.finding(f"the Python client cannot read {call.__name__}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}")

    # -- request makers
    def openapi_case(self, case: Any, ns: str, name: str) -> None:
        if "namespace" in case.path_parameters and ns:
            case.path_parameters["namespace"] = ns
        if "name" in case.path_parameters and name:
            case.path_parameters["name"] = name
        kw = case.as_transport_kwargs(base_url="")
        body: Any = None
        if "json" in kw:
            body = kw["json"]
        elif kw.get("data") is not None:
            body = kw["data"] if isinstance(kw["data"], bytes) else str(kw["data"]).encode("utf-8", "surrogatepass")
        ctype = kw["headers"].get("Content-Type", "application/json")
        query = {k: str(v) for k, v in (kw.get("params") or {}).items()}
        self.send(kw["method"], kw["url"], body, query, ctype)

    def create(self, kind: str, body: dict[str, Any], ns: str, query: dict[str, Any]) -> None:
        self.send("POST", COLLECTIONS[kind].format(ns=ns), body, query)
        self.trim()

    def change(self, target: str, method: str, body: Any, ctype: str, query: dict[str, Any]) -> None:
        self.send(method, target, body, query, ctype if method == "PATCH" else "application/json")

    def read(self, path: str, query: dict[str, Any]) -> None:
        self.send("GET", path, None, query)

    def exec(self, command: list[str]) -> None:
        from kubernetes import client, config
        from kubernetes.stream import stream

        if self._client is None:
            self._client = config.new_client_from_config(config_file=str(self.sandbox.kubeconfig))
        core = client.CoreV1Api(self._client)
        pod = next((p for p in self.pod_names if p.startswith("sleep-")), None)
        if pod is None or self.out_of_time():
            return
        try:
            resp = stream(core.connect_get_namespaced_pod_exec, pod, "default", command=command, stderr=True,
                          stdin=False, stdout=True, tty=False, _preload_content=False)
            resp.run_forever(timeout=20)
            code = resp.returncode
            err = resp.read_stderr()
            resp.close()
        except Exception as exc:
            self.finding(f"exec {command!r} failed: {type(exc).__name__}: {exc}")
            return
        self.requests += 1
        if code is None or code == 126 or "Traceback" in err:
            self.finding(f"exec {command!r} ended badly: code {code}, stderr {err[:300]!r}")

    def trim(self, keep: int = 6) -> None:
        """Delete the oldest objects the fuzzer made beyond ``keep`` (pods run real processes)."""
        while len(self.created) > keep:
            path = next(iter(self.created))
            del self.created[path]
            self.api.request("DELETE", path, query={"gracePeriodSeconds": "0"})

    def clean_up(self) -> None:
        """Delete everything the fuzzer made, its namespace last, and wait until it is gone."""
        self.trim(0)
        for kind, coll in COLLECTIONS.items():
            if kind == "Namespace":
                continue
            for obj in self.api.get(coll.replace("/namespaces/{ns}", "")).json().get("items", []):
                path = self.object_path(kind, obj)
                if path not in self.protected and not (obj["metadata"].get("ownerReferences")):
                    self.api.request("DELETE", path, query={"gracePeriodSeconds": "0"})
        for obj in self.api.get(COLLECTIONS["Namespace"]).json().get("items", []):
            path = self.object_path("Namespace", obj)
            if path not in self.protected:
                self.api.request("DELETE", path)
        self.check_models()

    def close(self) -> None:
        self.api.close()
        if self._client is not None:
            self._client.close()

    # -- one hypothesis run
    def run(self, examples: int, seed: int | None = None) -> None:
        """Run ``examples`` generated requests of each source (or until the budget is spent)."""
        schema = schemathesis.openapi.from_dict(served_openapi())
        operations = [result.ok() for result in schema.get_all_operations()]
        openapi = st.one_of([op.as_strategy() for op in operations])
        namespaces = st.sampled_from(["default", FUZZ_NS, "", "nope"])
        config = settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                          suppress_health_check=list(HealthCheck), report_multiple_bugs=False)

        def seeded(test: Callable[[], None]) -> Callable[[], None]:
            return with_seed(seed)(test) if seed is not None else test

        @seeded
        @config
        @given(case=openapi, ns=namespaces, data=st.data())
        def from_openapi(case: Any, ns: str, data: st.DataObject) -> None:
            name = pick(data, ["", *self.pod_names[:3], "details", "fz-x"])
            self.openapi_case(case, ns, name)

        @seeded
        @config
        @given(data=st.data())
        def from_strategies(data: st.DataObject) -> None:
            action = data.draw(st.sampled_from(["create", "create", "change", "read", "delete", "exec"]))
            query = data.draw(queries)
            if action == "create":
                kind = data.draw(st.sampled_from(sorted(BODIES)))
                ns = data.draw(st.sampled_from(["default", FUZZ_NS]))
                self.create(kind, data.draw(BODIES[kind]), ns, query)
            elif action == "change":
                targets = sorted(self.created) or sorted(self.protected)
                target = pick(data, targets + sorted(self.protected)[:5])
                method = data.draw(st.sampled_from(["PUT", "PATCH"]))
                ctype = data.draw(patch_types)
                kind = data.draw(st.sampled_from(sorted(BODIES)))
                body = data.draw(json_patches) if ctype == "application/json-patch+json" and method == "PATCH" \
                    else data.draw(BODIES[kind])
                self.change(target, method, body, ctype, query)
            elif action == "read":
                paths = [c.format(ns="default") for c in COLLECTIONS.values()]
                paths += [f"/api/v1/namespaces/default/pods/{p}/log" for p in self.pod_names[:3]]
                path = pick(data, paths)
                self.read(path, query)
            elif action == "delete":
                targets = sorted(self.created) + [c.format(ns=FUZZ_NS) for c in COLLECTIONS.values()][:8]
                target = pick(data, [*targets, COLLECTIONS["Pod"].format(ns="default")])
                body = data.draw(st.none() | st.fixed_dictionaries({}, optional={
                    "gracePeriodSeconds": maybe(st.integers(-5, 2**64)), "dryRun": maybe(st.just(["All"])),
                    "propagationPolicy": maybe(st.sampled_from(["Orphan", "Sideways"]))}))
                self.send("DELETE", target, body, query)
            else:
                self.exec([data.draw(st.sampled_from(SAFE_EXEC)), *data.draw(exec_args)])

        # Draws never depend on the clock or on what exists (hypothesis replays examples); past the budget the
        # examples are still drawn, but nothing is sent.
        for test in (from_openapi, from_strategies):
            try:
                test()
            except (FlakyStrategyDefinition, Unsatisfiable) as exc:
                self.finding(f"the fuzzer itself: {type(exc).__name__}: {str(exc)[:200]}")


def pick(data: st.DataObject, choices: list[str]) -> str:
    """One of ``choices``, a list that changes as the run goes (drawn as an index: hypothesis needs draws that
    do not depend on outside state)."""
    return choices[data.draw(st.integers(0, 1 << 16)) % len(choices)]


def summary(fuzzer: Fuzzer, seconds: float) -> dict[str, Any]:
    return {"requests": fuzzer.requests, "seconds": round(seconds, 1), "codes": dict(sorted(fuzzer.codes.items())),
            "findings": len(fuzzer.findings)}


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
