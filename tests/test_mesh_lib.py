"""The library's mesh verbs (labkit.mesh through the Lab), the page and traffic as a signed-in user, the version
split and latency plots, the reset of the Istio lessons, and the export of a rule applied from Python.

One sandbox for the module, with one replica of each Deployment (reviews v1 only until a test adds v2 and v3).
The pure parts (plots, the binomial check, the export's mesh block, the exercises) need no sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import FAST, start_sandbox
from helpers import eventually

import labkit
from labkit import checks, export, mesh, plots, traffic, workshop
from labkit.sandbox import Sandbox

REVIEWS_V3 = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
              "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews",
                                                                                    "subset": "v3"}}]}]}}
BAD_TIMEOUT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: slowpoke
spec:
  hosts: [reviews]
  http:
  - timeout: 7
    route: [{destination: {host: reviews}}]
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = start_sandbox(tmp_path_factory.mktemp("meshlib"), FAST, replicas=1)
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def meshed(sandbox: Sandbox) -> Iterator[labkit.Lab]:
    """The namespace meshed, reviews v1-v3, the DestinationRules: lesson 9's start, by reset."""
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    lab = labkit.connect(sandbox_dir=sandbox.dir)
    try:
        lab.reset("09")
        yield lab
    finally:
        lab.close()


@pytest.fixture()
def clean(meshed: labkit.Lab) -> Iterator[labkit.Lab]:
    yield meshed
    meshed.remove_rules("VirtualService")


# ------------------------------------------------------------------------------------------------ injection


def test_injection_on_and_off(sandbox: Sandbox) -> None:
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    with labkit.connect(sandbox_dir=sandbox.dir) as lab:
        assert not mesh.injection_enabled(lab)
        with pytest.raises(labkit.LabkitError, match=r"has no istio-proxy container.*enable injection first"):
            lab.access_log("app=productpage")
        before = set(lab.pod_names())
        on = lab.enable_injection(progress=False)
        assert mesh.injection_enabled(lab) and on.enabled
        assert set(on.pods["ready"]) == {"2/2"} and on.meshed == len(on.pods) == len(before)
        assert not before & set(on.pods["name"]), "every pod was replaced"
        assert set(lab.pods()["ready"]) == {"2/2"}
        assert "$ kubectl label namespace default istio-injection=enabled --overwrite" in repr(on)
        assert "deployment.apps/sleep restarted" in repr(on) and "2/2" in on._repr_html_()
        off = lab.disable_injection(progress=False)
        assert not mesh.injection_enabled(lab) and set(off.pods["ready"]) == {"1/1"} and off.meshed == 0
        assert off.commands[0] == "kubectl label namespace default istio-injection-"


# ------------------------------------------------------------------------------------------------ rules


def test_apply_from_a_sample_a_file_yaml_and_a_dict(clean: labkit.Lab, tmp_path: Path) -> None:
    lab = clean
    sample = lab.apply_rule("virtual-service-all-v1.yaml")
    assert sample == [f"virtualservice.networking.istio.io/{n} created"
                      for n in ("productpage", "reviews", "ratings", "details")]
    assert sample.command == "kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml"
    assert repr(sample).startswith("$ kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml\n")
    assert "subset: v1" in sample.yaml and "the YAML" in sample._repr_html_()
    again = lab.apply_rule(mesh.sample_path("virtual-service-all-v1.yaml").read_text())
    assert set(again) == {f"virtualservice.networking.istio.io/{n} unchanged"
                          for n in ("productpage", "reviews", "ratings", "details")}
    assert again.command.startswith("kubectl apply -f - <<EOF\n") and again.command.endswith("\nEOF")
    from_dict = lab.apply_rule(REVIEWS_V3)
    assert from_dict == ["virtualservice.networking.istio.io/reviews configured"]
    assert "subset: v3" in from_dict.command and from_dict.names == ["VirtualService/reviews"]
    bundle = from_dict._repr_mimebundle_()
    record = bundle[export.RECORD]
    assert isinstance(record, dict) and record["kind"] == "mesh" and record["steps"][0]["lines"] == list(from_dict)
    file = tmp_path / "reviews-v3.yaml"
    file.write_text(from_dict.yaml)
    assert lab.apply_rule(file).command == f"kubectl apply -f {file}"
    frame = lab.rules()
    assert list(frame.columns) == mesh.RULE_COLUMNS
    vs = frame[frame.kind == "VirtualService"].set_index("name")
    assert vs.loc["reviews", "rules"] == "* -> reviews/v3"
    dr = frame[frame.kind == "DestinationRule"].set_index("name")
    assert dr.loc["reviews", "rules"] == "v1 (version=v1), v2 (version=v2), v3 (version=v3)"


def test_rules_in_words_name_faults_timeouts_retries(clean: labkit.Lab) -> None:
    clean.apply_rule("virtual-service-ratings-test-delay.yaml")
    clean.apply_rule({**REVIEWS_V3, "spec": {"hosts": ["reviews"], "http": [
        {"timeout": "0.5s", "retries": {"attempts": 2, "perTryTimeout": "0.2s"},
         "route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}})
    vs = clean.rules().query("kind == 'VirtualService'").set_index("name")
    assert vs.loc["ratings", "rules"] == ("end-user:jason -> ratings/v1 (delay 7s 100%); * -> ratings/v1")
    assert vs.loc["reviews", "rules"] == "* -> reviews/v2 (timeout 0.5s, retries 2 x 0.2s)"


def test_a_bad_rule_gets_the_api_servers_message_naming_it(clean: labkit.Lab) -> None:
    with pytest.raises(mesh.MeshRuleError, match=r'VirtualService "slowpoke" in namespace default was refused by the '
                                                 r"API server \(422 Invalid\):.*spec\.http\[0\]\.timeout.*valid "
                                                 r"duration.*Fix that field") as caught:
        clean.apply_rule(BAD_TIMEOUT)
    assert caught.value.status == 422
    assert "slowpoke" not in set(clean.rules()["name"]), "nothing stored"
    with pytest.raises(mesh.MeshRuleError, match="not an Istio traffic rule: apiVersion 'v1' kind 'Pod'"):
        clean.apply_rule({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(mesh.MeshRuleError, match=r"has no metadata\.name"):
        clean.apply_rule({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {}})
    with pytest.raises(FileNotFoundError, match=r"no rule file 'virtual-service-all-v9.yaml'.*it has "
                                                r"bookinfo-gateway.yaml"):
        clean.apply_rule("virtual-service-all-v9.yaml")
    with pytest.raises(mesh.MeshRuleError, match="not valid YAML"):
        clean.apply_rule("kind: [VirtualService\nname: x")
    with pytest.raises(mesh.MeshRuleError, match="write it as Kubernetes does"):
        clean.remove_rules("virtualservices")


def test_remove_by_file_kind_and_name(clean: labkit.Lab) -> None:
    clean.apply_rule("virtual-service-all-v1.yaml")
    one = clean.remove_rules("VirtualService", "details")
    assert one == ["details"] and one.command == "kubectl delete virtualservice details"
    by_file = clean.remove_rules("virtual-service-all-v1.yaml")
    assert sorted(by_file) == ["productpage", "ratings", "reviews"]
    assert by_file.command.endswith("virtual-service-all-v1.yaml --ignore-not-found"), "details was already gone"
    assert 'virtualservice.networking.istio.io "reviews" deleted' in repr(by_file)
    assert clean.remove_rules() == [] and "No resources found" in repr(clean.remove_rules())
    assert set(clean.rules()["kind"]) == {"DestinationRule"}


# ------------------------------------------------------------------------------------------------ as jason


def test_page_and_traffic_as_jason(clean: labkit.Lab) -> None:
    lab = clean
    lab.apply_rule("virtual-service-all-v1.yaml")
    lab.apply_rule("virtual-service-reviews-test-v2.yaml")
    jason = lab.page(user="jason")
    assert jason.user == "jason" and jason.reviews_version == "v2" and jason.healthy
    assert "as jason" in jason.summary() and "reviews v2 (black stars)" in jason.summary()
    assert jason.to_dict()["user"] == "jason"
    assert lab.page(user="jason", via="tester").reviews_version == "v2"
    assert lab.page().reviews_version == "v1" and lab.page(user="alice").reviews_version == "v1"
    with lab.traffic(rate=20, user="jason") as as_jason:
        eventually(lambda: as_jason.requests >= 10, what="ten page loads as jason")
    assert list(as_jason.by_version()["version"]) == ["v2"] and "as jason" in repr(as_jason)
    tester = lab.traffic(rate=10, user="jason", via="tester").run(1, progress=False)
    assert list(tester.by_version()["version"]) == ["v2"]
    # productpage's sidecar logged the calls with the subset that answered
    log = lab.access_log("app=productpage")
    assert list(log.columns) == mesh.ACCESS_LOG_COLUMNS
    assert {"v1", "v2"} <= set(log[log.service == "reviews"].subset)
    assert len(lab.access_log("app=productpage", tail=3)) == 3
    # both sides of productpage's sidecar: the page requests it passed in, the calls productpage made
    assert set(log.direction) == {"inbound", "outbound"}
    inbound = lab.access_log("app=productpage", direction="inbound")
    assert set(inbound.path) >= {"/productpage"} and set(inbound.cluster) == {"inbound|9080||"}
    outbound = lab.access_log("app=productpage", direction="outbound")
    assert set(outbound.service) == {"details", "reviews"} and len(inbound) + len(outbound) == len(log)
    with pytest.raises(ValueError, match="direction must be"):
        lab.access_log("app=productpage", direction="in")
    requests = lab.mesh_requests("app=productpage")
    assert list(requests.columns) == mesh.REQUEST_COLUMNS
    assert requests.query("destination == 'reviews' and version == 'v2'")["requests"].sum() >= 10
    with pytest.raises(labkit.LabkitError, match="user must be a non-empty name"):
        lab.page(user="")


def test_fault_abort_shows_in_the_log(clean: labkit.Lab) -> None:
    clean.apply_rule("virtual-service-all-v1.yaml")
    clean.apply_rule("virtual-service-reviews-test-v2.yaml")
    clean.apply_rule("virtual-service-ratings-test-abort.yaml")
    page = clean.page(user="jason")
    assert page.sections == {"details": True, "reviews": True, "ratings": False}
    last = clean.access_log("app=reviews,version=v2", tail=1).iloc[0]
    assert (last["path"], last["code"], last["flags"], last["details"]) == ("/ratings/0", 500, "FI",
                                                                            "fault_filter_abort")


def test_a_measured_50_50_split(clean: labkit.Lab) -> None:
    clean.apply_rule("virtual-service-reviews-50-v3.yaml")
    run = clean.traffic(rate=40).run(2.5, progress=False)
    assert set(run.by_version()["version"]) == {"v1", "v3"}
    check = run.within_noise({"v1": 50, "v3": 50}, sigmas=4)  # 4 sigmas: a fair coin fails this once in 15,000
    assert check.ok, str(check)
    split = run.version_split("1s")
    assert list(split.columns)[:2] == ["time", "requests"] and {"v1", "v3"} <= set(split.columns)
    assert split["requests"].sum() == len(run.served)
    shares = split[["v1", "v3"]].sum(axis=1)
    assert ((shares - 1).abs() < 1e-9).all()


# ------------------------------------------------------------------------------------------------ pure parts


def _served(versions: list[str], start: str = "2026-01-01T00:00:00Z", step_ms: int = 100) -> pd.DataFrame:
    times = pd.date_range(start, periods=len(versions), freq=f"{step_ms}ms", tz="UTC")
    return pd.DataFrame({"time": times, "version": versions, "pod": [f"reviews-{v}-x" for v in versions]}).astype(
        traffic.SERVED_COLUMNS)


def test_version_split_bins_and_shares() -> None:
    served = _served(["v1", "v3"] * 10 + ["v3"] * 10)  # 2 s of alternation, then 1 s of v3 only
    split = traffic.version_split(served, "1s")
    assert list(split.columns) == ["time", "requests", "v1", "v3"]
    assert list(split["requests"]) == [10, 10, 10]
    assert list(split["v3"]) == [0.5, 0.5, 1.0] and list(split["v1"]) == [0.5, 0.5, 0.0]
    assert traffic.version_split(traffic.empty_frame(traffic.SERVED_COLUMNS)).empty


def test_split_within_noise() -> None:
    table = traffic.by_version(_served(["v1"] * 48 + ["v3"] * 52))
    ok = traffic.split_within_noise(table, {"v1": 50, "v3": 50})
    assert ok.ok and ok.requests == 100 and str(ok).startswith("✓ 100 page loads: v1 48 (expected 50 ± 10)")
    skewed = traffic.split_within_noise(traffic.by_version(_served(["v1"] * 80 + ["v3"] * 20)), {"v1": 50, "v3": 50})
    assert not skewed and "OUTSIDE 2 standard deviations" in str(skewed)
    unexpected = traffic.split_within_noise(traffic.by_version(_served(["v1"] * 99 + ["v2"])), {"v1": 100})
    assert not unexpected.ok, "a version the rule gives 0 % must not appear"
    with pytest.raises(ValueError, match="adding up to 100"):
        traffic.split_within_noise(table, {"v1": 0.5, "v3": 0.5})
    assert not traffic.split_within_noise(traffic.by_version(traffic.empty_frame(traffic.SERVED_COLUMNS)),
                                          {"v1": 100}).ok


def _frame(latencies: list[float], status: int = 200) -> pd.DataFrame:
    rows = [{"time": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i), "status": status,
             "latency_ms": ms, "details": True, "reviews": True, "ratings": None, "error": ""}
            for i, ms in enumerate(latencies)]
    return pd.DataFrame(rows).astype(traffic.TRAFFIC_COLUMNS)


def test_latency_percentiles() -> None:
    got = traffic.latency_percentiles(_frame([float(ms) for ms in range(1, 101)]))
    assert got == {"p50": 50.5, "p90": 90.1, "p99": 99.0, "max": 100.0}
    assert traffic.latency_percentiles(_frame([5000.0], status=0))["p50"] is None, "unanswered requests do not count"


def test_version_split_plot() -> None:
    fig = plots.version_split(_served(["v1", "v3"] * 20), weights={"v1": 50, "v3": 50})
    assert fig.get_suptitle() == "Traffic split by reviews version"
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["v1: 50% (20)", "v3: 50% (20)", "configured split"]
    assert fig._repr_png_().startswith(b"\x89PNG")
    empty = plots.version_split(traffic.empty_frame(traffic.SERVED_COLUMNS))
    assert "No data to plot" in empty.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match=r"needs a Traffic or its \.served frame"):
        plots.version_split(pd.DataFrame({"x": [1]}))


def test_latency_percentiles_plot() -> None:
    fig = plots.latency_percentiles({"2 s delay": _frame([2000.0, 2010.0, 2030.0]), "0.5 s timeout": _frame([1000.0])},
                                    expected={"2 s delay": 2.0, "0.5 s timeout": 1.0})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2 s delay\n(3 requests)", "0.5 s timeout\n(1 requests)"]
    assert len(ax.patches) == 6  # p50, p90, p99 for each phase
    assert abs(ax.containers[0][0].get_height() - 2.01) < 1e-9  # p50 of the first phase, in seconds
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert "No data to plot" in plots.latency_percentiles({}).axes[0].texts[0].get_text()


def test_export_shows_a_rules_command_and_yaml() -> None:
    rule = mesh.RuleResult(["virtualservice.networking.istio.io/reviews created"],
                           command="kubectl apply -f - <<EOF\nkind: VirtualService\nEOF",
                           yaml_text="kind: VirtualService\n", namespace="default", names=["VirtualService/reviews"])
    nb = nbformat.v4.new_notebook(metadata={"labkit": {"title": "T", "overview": "O", "weight": 1}})
    cell = nbformat.v4.new_code_cell("lab.apply_rule(RULE)")
    bundle = rule._repr_mimebundle_()
    cell.outputs = [nbformat.v4.new_output("execute_result", data=json.loads(json.dumps(bundle)), execution_count=1)]
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_markdown_cell("## Step 1: Apply it"), cell]
    page = export.to_hugo(nb, name="99-t").text
    assert "{{< text bash >}}\n    $ kubectl apply -f - <<EOF\n    kind: VirtualService\n    EOF\n    " \
           "virtualservice.networking.istio.io/reviews created\n    {{< /text >}}" in page, page


# ------------------------------------------------------------------------------------------------ lessons' data


def test_mesh_lessons_start_states() -> None:
    assert not workshop.lesson_state("08").mesh and workshop.lesson_state("08").rules == ()
    for lesson in ("09", "10", "11", "12"):
        state = workshop.lesson_state(lesson)
        assert state.mesh and state.rules == ("destination-rule-all.yaml",)
        assert "reviews-v2-v3.yaml" in state.manifests and set(state.replicas.values()) == {1}


@pytest.mark.parametrize(("lesson", "step", "right", "wrong"), [
    ("08", "sidecar", "istio-proxy", "envoy"), ("09", "header", "end-user", "user"),
    ("09", "jason-version", "v2", "v3"), ("10", "page-seconds", "6", 7), ("10", "abort-status", 500, 503),
    ("11", "red-pages", 100, 50), ("11", "canary-weights", {"v1": 90, "v3": 10}, {"v1": 0.9, "v3": 0.1}),
    ("12", "timeout-seconds", 1, 0.5), ("12", "retry-seconds", "2 s", 1),
])
def test_mesh_exercises(lesson: str, step: str, right: object, wrong: object) -> None:
    assert checks.check(lesson, step, right).ok
    result = checks.check(lesson, step, wrong)
    assert not result.ok and result.hint


def test_the_meshed_pods_exercise_reads_the_cluster(meshed: labkit.Lab) -> None:
    count = int((meshed.pods()["ready"] == "2/2").sum())
    assert count == 7 and checks.check("08", "meshed-pods", count, lab=meshed).ok
    assert "count the rows" in checks.check("08", "meshed-pods", 3, lab=meshed).message
