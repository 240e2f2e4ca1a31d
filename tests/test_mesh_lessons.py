"""Lessons 08-12 (Istio's Bookinfo tasks) run end to end on their own sandbox, and what they show.

They mesh the namespace (sidecars in every pod, one replica each, reviews v1-v3), which other test modules do not
expect: this module has its own sandbox (conftest's ``sandbox`` is per module), started as lesson 7 ends. The runs
use ``LABKIT_SOLVE=1`` as the tour does, so every exercise is answered by its solution and must pass.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

import labkit
from labkit import checks, export, lessons
from labkit.sandbox import Sandbox

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MESH_LESSONS = ["08-enable-istio", "09-request-routing", "10-fault-injection", "11-traffic-shifting",
                "12-request-timeouts"]


def _match(pattern: str, text: str) -> re.Match[str]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text[:300]!r}"
    return found


def _cell(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert len(cells) > nth, f"no code cell starting with {source_start!r}"
    return cells[nth]


def _plain(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> str:
    """The text a cell showed: its result's text/plain and its printed lines."""
    out = []
    for o in _cell(nb, source_start, nth).outputs:
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "text/plain" in o.get("data", {}):
            out.append(o["data"]["text/plain"])
    return "\n".join(out)


def _table(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> list[dict[str, str]]:
    """A DataFrame result as rows, read from its HTML table (as the exports read it)."""
    shown = next(o["data"]["text/html"] for o in _cell(nb, source_start, nth).outputs
                 if o.get("output_type") == "execute_result")
    table = export._html_table(shown)
    assert table is not None, shown[:300]
    header, rows = table
    return [dict(zip(header, row, strict=False)) for row in rows]


def _record(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> dict[str, Any]:
    for o in _cell(nb, source_start, nth).outputs:
        record = o.get("data", {}).get(export.RECORD)
        if record:
            return dict(record)
    raise AssertionError(f"the cell {source_start!r} shows no labkit record")


def _headline(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> str:
    """The line above a product page (its summary)."""
    block = "".join(o.get("data", {}).get("text/html", "") for o in _cell(nb, source_start, nth).outputs)
    return html.unescape(re.sub(r"<[^>]+>", " ", block.split("<iframe", 1)[0]))


def _versions(nb: nbformat.NotebookNode, source_start: str) -> dict[str, float]:
    return {r["version"]: float(r["share"]) for r in _table(nb, source_start)}


@pytest.fixture(scope="module")
def runs(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, lessons.LessonRun]:
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    cwd = tmp_path_factory.mktemp("mesh-lessons")
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(sandbox.dir), "LABKIT_SOLVE": "1",
           "LABKIT_PROGRESS": str(cwd / "progress.jsonl")}
    env.pop("LABKIT_KUBECONFIG", None)
    out = {}
    for name in MESH_LESSONS:
        out[name] = lessons.run_notebook(NOTEBOOKS / f"{name}.ipynb", cwd=cwd, env=env, timeout=300, progress=None)
    return out


@pytest.mark.parametrize("name", MESH_LESSONS)
def test_mesh_lesson_runs_and_its_exercises_pass(runs: dict[str, lessons.LessonRun], name: str) -> None:
    run = runs[name]
    assert run.ok, str(run.failure)
    lesson = name[:2]
    answered = [c for c in run.nb.cells if c.cell_type == "code" and "checks.check(" in c.source]
    asked = {_match(r'checks\.check\("(\d\d)", "([\w-]+)"', c.source).groups() for c in answered}
    assert asked == {key for key in checks.EXERCISES if key[0] == lesson}
    for cell in answered:
        text = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
        assert text.startswith("✓") and "(solved by the solution)" in text, text


def test_lesson_8_meshes_every_pod(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["08-enable-istio"].nb
    before = _table(nb, 'lab.pods()[["name", "ready", "status", "containers"]]', 0)
    after = _table(nb, 'lab.pods()[["name", "ready", "status", "containers"]]', 1)
    assert {p["ready"] for p in before} == {"1/1"} and len(before) == 7
    assert {(p["ready"], p["status"], p["containers"]) for p in after} == {("2/2", "Running", "2")}
    assert len(after) == 7 and not {p["name"] for p in before} & {p["name"] for p in after}, "the restart made new pods"
    injection = _record(nb, "injection = lab.enable_injection()")
    assert [s["command"] for s in injection["steps"]] == [
        "kubectl label namespace default istio-injection=enabled --overwrite", "kubectl rollout restart deployment"]
    # without rules the three versions take turns
    assert set(_versions(nb, "turns = ")) == {"v1", "v2", "v3"}
    log = _table(nb, 'lab.access_log("app=productpage"')
    assert {r["path"] for r in log} == {"/details/0", "/reviews/0"} and {r["code"] for r in log} == {"200"}
    requests = _table(nb, "lab.mesh_requests()")
    assert {(r["source"], r["destination"]) for r in requests} >= {("productpage", "reviews"), ("reviews", "ratings")}
    assert {r["version"] for r in requests if r["destination"] == "reviews"} == {"v1", "v2", "v3"}
    assert "7 of 7 pods meshed" in _plain(nb, 'print(f"{injection.meshed}')


def test_lesson_9_routes_jason_to_v2(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["09-request-routing"].nb
    assert _versions(nb, "all_v1 = ") == {"v1": 1.0}
    assert _versions(nb, "as_jason = ") == {"v2": 1.0}
    assert _versions(nb, "anonymous = ") == {"v1": 1.0}
    jason = _headline(nb, "lab.page(user=USER)")
    assert "as jason" in jason and "reviews v2 (black stars)" in jason and "healthy" in jason
    assert "reviews v1 (no stars)" in _headline(nb, "lab.page()")
    counts = {(r["service"], r["subset"])
              for r in _table(nb, 'lab.access_log("app=productpage", direction="outbound").value_counts(')}
    assert {("reviews", "v1"), ("reviews", "v2"), ("details", "v1")} <= counts
    removed = _record(nb, 'lab.remove_rules("virtual-service-all-v1.yaml")')
    assert removed["steps"][0]["command"] == "kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml"
    assert len(removed["steps"][0]["lines"]) == 4


def test_lesson_10_delay_exposes_the_timeout_bug_then_the_abort(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["10-fault-injection"].nb
    delayed = _headline(nb, "delayed = lab.page(")
    assert "as jason" in delayed and "reviews FAILING" in delayed and "details ok" in delayed
    page = _record(nb, "delayed = lab.page(")
    assert "Error fetching product reviews" in page["html"]
    assert "Sorry, product reviews are currently unavailable for this book." in page["html"]
    # productpage gave up after two 3 s attempts: never sooner (a lower bound is behaviour, not speed)
    elapsed = float(_match(r"HTTP 200 in (\d+) ms", delayed).group(1))
    assert elapsed >= 5900, delayed
    assert "reviews ok" in _headline(nb, "lab.page()")
    fixed = _headline(nb, "fixed = lab.page(")
    assert "reviews v3 (red stars)" in fixed and "healthy" in fixed
    aborted = _headline(nb, "aborted = lab.page(")
    assert "ratings FAILING" in aborted and "reviews ok" in aborted
    assert "Ratings service is currently unavailable" in _record(nb, "aborted = lab.page(")["html"]
    log = _table(nb, 'lab.access_log("app=reviews,version=v2"')
    assert {"code": "500", "flags": "FI", "details": "fault_filter_abort"}.items() <= log[-1].items()
    # the Python dict rule is shown as the kubectl heredoc istio.io would write
    fix = _record(nb, "lab.apply_rule({")
    assert fix["steps"][0]["command"].startswith("kubectl apply -f - <<EOF\napiVersion: networking.istio.io/v1\n")
    assert "fixedDelay: 2s" in fix["yaml"]


def test_lesson_11_splits_within_binomial_noise(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["11-traffic-shifting"].nb
    half = _versions(nb, "half = ")
    assert set(half) == {"v1", "v3"}
    assert _plain(nb, "half.within_noise(WEIGHTS)").startswith("✓")
    assert any("image/png" in o.get("data", {}) for o in _cell(nb, "plots.version_split(").outputs)
    assert _versions(nb, "all_v3 = ") == {"v3": 1.0}


def test_lesson_12_timeout_cuts_the_page_and_retries_cost(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["12-request-timeouts"].nb
    cut = _headline(nb, "cut = lab.page(")
    assert "reviews FAILING" in cut and "details ok" in cut
    log = _table(nb, 'lab.access_log("app=productpage"')
    assert {(r["path"], r["code"], r["flags"]) for r in log} == {("/reviews/0", "504", "UT")}
    p50 = {name: float(_match(r"'p50': ([\d.]+)", _plain(nb, f"{name} = lab.traffic(")).group(1))
           for name in ("slow", "timed_out", "retried")}
    # the order the rules imply: 1 s (timeout) < 2 s (delay) < 3 s (three tries of 0.5 s, twice)
    assert p50["timed_out"] < p50["slow"] < p50["retried"], p50
    assert any("image/png" in o.get("data", {}) for o in _cell(nb, "plots.latency_percentiles(").outputs)


def test_the_lessons_clean_up_their_rules(sandbox: Sandbox, runs: dict[str, lessons.LessonRun]) -> None:
    """Each lesson removes its VirtualServices at its end, as istio.io's tasks do: only the DestinationRules stay."""
    assert all(r.ok for r in runs.values())
    with labkit.connect(sandbox_dir=sandbox.dir) as lab:
        rules = lab.rules()
        assert set(rules["kind"]) == {"DestinationRule"} and len(rules) == 4
        assert lab.reset("12", dry_run=True).steps == (), "lesson 12 ends where lesson 12 starts (bar its own rules)"


ISTIO_REQUEST_ROUTING = [
    "kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml",
    "kubectl get virtualservices",
    "kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml",
    "kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml",
]


def test_hugo_pages_show_the_kubectl_commands_and_yaml(runs: dict[str, lessons.LessonRun]) -> None:
    page = export.to_hugo(runs["09-request-routing"].nb, name="09-request-routing")
    assert export.hugo_problems(page.text, images=set(page.images)) == []
    commands = [line.strip()[2:] for line in page.text.splitlines() if line.strip().startswith("$ ")]
    found = [commands.index(c) if c in commands else -1 for c in ISTIO_REQUEST_ROUTING]
    assert -1 not in found and found == sorted(found), commands
    assert "virtualservice.networking.istio.io/reviews configured" in page.text
    timeouts = export.to_hugo(runs["12-request-timeouts"].nb, name="12-request-timeouts")
    assert export.hugo_problems(timeouts.text, images=set(timeouts.images)) == []
    assert "$ kubectl apply -f - <<EOF" in timeouts.text and "timeout: 0.5s" in timeouts.text
    assert "timeouts-latency.png" in timeouts.images
    enable = export.to_hugo(runs["08-enable-istio"].nb, name="08-enable-istio").text
    assert "$ kubectl label namespace default istio-injection=enabled --overwrite" in enable
    assert "deployment.apps/productpage-v1 restarted" in enable
