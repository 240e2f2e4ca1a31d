"""The lessons: committed clean, written to the template, and run end to end against the sandbox."""

from __future__ import annotations

import ast
import html
import json
import os
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest

import labkit
from labkit import export, lessons
from labkit.sandbox import Sandbox

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob(lessons.NOTEBOOK_PATTERN))
EXPECTED = ["01-connect-and-look-around", "02-test-one-service", "03-chaos-one-pod", "04-chaos-all-pods",
            "05-measure-it", "06-your-own-experiment", "07-new-version-of-reviews", "08-enable-istio",
            "09-request-routing", "10-fault-injection", "11-traffic-shifting", "12-request-timeouts"]


def test_the_lessons_are_there() -> None:
    assert [p.stem for p in PATHS] == EXPECTED
    assert lessons.find_notebooks() == PATHS


# ------------------------------------------------------------------------------------------------ committed form


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} of {path.name} has outputs"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_template(path: Path) -> None:
    """Title, "What you will do", a parameters cell, Step N + one code cell each, "What you saw", "Next"."""
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# ")
    assert cells[1].source.startswith("## What you will do")
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and params[0] is cells[2], "the parameters cell comes right after the introduction"
    names = {t.id for t in ast.walk(ast.parse(params[0].source)) if isinstance(t, ast.Name)}
    assert {"KUBECONFIG", "NAMESPACE"} <= names
    steps = [(i, int(m.group(1))) for i, c in enumerate(cells)
             if c.cell_type == "markdown" and (m := re.match(r"## Step (\d+): \S", c.source))]
    assert [n for _, n in steps] == list(range(1, len(steps) + 1)), "steps are numbered 1, 2, 3..."
    for i, n in steps:
        following = cells[i + 1]
        assert following.cell_type == "code", f"step {n} of {path.name} is not followed by a code cell"
        assert len(following.source.splitlines()) <= 8, f"step {n} of {path.name}: keep code cells short"
    text = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "## What you saw" in text and "## Next" in text
    meta = nb.metadata["labkit"]
    assert meta["title"] == cells[0].source.splitlines()[0][2:] and meta["overview"] and meta["weight"]


_LOGIC = (ast.For, ast.While, ast.If, ast.IfExp, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With,
          ast.Try, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_no_logic_in_notebooks(path: Path) -> None:
    """Loops, conditions and definitions belong in labkit; a notebook cell only calls it."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        logic = [type(node).__name__ for node in ast.walk(tree) if isinstance(node, _LOGIC)]
        assert not logic, f"cell {i} of {path.name} has {logic}: move it into the library"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("sleep",), f"cell {i} of {path.name} sleeps; use the library's waits"


def test_opening_a_lesson_changes_nothing() -> None:
    """The kernel's language_info is already in the file, so JupyterLab does not mark a lesson modified on open."""
    from ipykernel.ipkernel import IPythonKernel

    kernel_info = dict(IPythonKernel.language_info)
    for path in PATHS:
        info = nbformat.read(path, as_version=4).metadata["language_info"]
        assert {k: v for k, v in info.items() if k != "version"} == \
            {k: v for k, v in kernel_info.items() if k != "version"}, path.name


@pytest.mark.parametrize(("stem", "names"), [("04-chaos-all-pods", {"CONFIRM"}), ("05-measure-it", {"CONFIRM"}),
                                             ("06-your-own-experiment", {"PRODUCTPAGE_URL"})])
def test_real_cluster_parameters(stem: str, names: set[str]) -> None:
    """Lessons that hit every pod take CONFIRM (passed to confirm=); lesson 6 takes the page's URL."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert names <= {t.id for t in ast.walk(ast.parse(params.source)) if isinstance(t, ast.Name)}
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for name in names:
        assert re.search(rf"\w+={name}\)", code), f"{stem} never passes {name}"
    for call in re.findall(r"lab\.kill\([^)]*mode=\"all\"[^)]*\)", code):
        assert "confirm=CONFIRM" in call, call


def test_prose_states_no_numbers_that_depend_on_history() -> None:
    """Restart counts and times that depend on what ran before are printed by the run, not written in prose."""
    for path in PATHS:
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        assert not re.search(r"\b\d/\d/\d\b", text), f"{path.name} writes restart counts in prose"
    lesson6 = nbformat.read(NOTEBOOKS / "06-your-own-experiment.ipynb", as_version=4)
    prose = "\n".join(c.source for c in lesson6.cells if c.cell_type == "markdown")
    assert "details dips until" not in prose  # the plot often shows it at 100 %: the run's numbers say


def test_shell_equivalents_are_commands() -> None:
    """The Hugo export shows these as `$ ` lines: they must be single commands, kubectl or curl."""
    for path in PATHS:
        for cell in nbformat.read(path, as_version=4).cells:
            shell = cell.get("metadata", {}).get("labkit", {}).get("shell")
            for command in [shell] if isinstance(shell, str) else list(shell or []):
                assert isinstance(command, str), command
                first = command.split()[0]
                # istio.io's own forms: a command, a loop, or a variable set from kubectl and echoed
                assert first in ("kubectl", "curl", "for", "echo") or re.match(r"^[A-Z_0-9]+=\$\(kubectl ", command), \
                    command
                assert "kubectl exec -it" not in command  # istio.io's snippet tooling refuses -it


# ------------------------------------------------------------------------------------------------ the run


def _outputs(nb: nbformat.NotebookNode, source_start: str, nth: int = 0) -> list[dict[str, Any]]:
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    assert len(cells) > nth, f"no code cell starting with {source_start!r}"
    return list(cells[nth].outputs)


def _plain_table(outputs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """A DataFrame's text/plain output as rows (the lessons' tables have no spaces inside values)."""
    text = next(o["data"]["text/plain"] for o in outputs if o.get("output_type") == "execute_result")
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0].split()
    # an empty value (sleep has no app label) shortens its row: the columns before it still line up
    return [dict(zip(header, line.split()[1:], strict=False)) for line in lines[1:]]


def _html(outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs)


def _page_text(outputs: list[dict[str, Any]]) -> tuple[str, str]:
    """(the health line above the product page, the page's HTML inside the iframe)."""
    block = _html(outputs)
    match = re.search(r'srcdoc="([^"]*)"', block)
    assert match, f"no product page in {block[:300]!r}"
    return html.unescape(re.sub(r"<[^>]+>", " ", block.split("<iframe", 1)[0])), html.unescape(match.group(1))


@pytest.fixture(scope="module")
def lesson_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernels' working folder (where lesson 6 saves its journal)."""
    return tmp_path_factory.mktemp("lessons")


@pytest.fixture(scope="module")
def runs(sandbox: Sandbox, lesson_dir: Path) -> dict[str, lessons.LessonRun]:
    """Every lesson, in order, against the session sandbox, starting from details pods that never restarted."""
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    # Earlier tests may have crashed details: new pods start the lessons from RESTARTS 0, as on a fresh cluster.
    with labkit.connect(sandbox_dir=sandbox.dir) as lab:
        rec = lab.record("app=details")
        try:
            fresh = lab.delete_pods("app=details", mode="all")
            lessons.wait_recovered(rec, fresh, progress=False)
        finally:
            rec.stop()
    wait_all_ready(sandbox)
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(sandbox.dir)}
    env.pop("LABKIT_KUBECONFIG", None)
    out: dict[str, lessons.LessonRun] = {}
    for path in PATHS:
        # more requests per second make the short outages of the fast time scale visible in the traffic
        out[path.stem] = lessons.run_notebook(path, cwd=lesson_dir, env=env, timeout=300, params={"RATE": 20})
    wait_all_ready(sandbox)
    return out


@pytest.mark.parametrize("name", EXPECTED)
def test_lesson_runs(runs: dict[str, lessons.LessonRun], name: str) -> None:
    run = runs[name]
    assert run.ok, str(run.failure)
    injected = [c for c in run.nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "RATE = 20" in injected[0].source


def test_lesson_1_shows_bookinfo(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["01-connect-and-look-around"].nb
    deployments = _plain_table(_outputs(nb, "lab.deployments()"))
    assert {d["name"]: d["ready"] for d in deployments} == {"details-v1": "3", "productpage-v1": "3",
                                                            "ratings-v1": "3", "reviews-v1": "3", "sleep": "1"}
    pods = _plain_table(_outputs(nb, "lab.pods()"))
    assert len(pods) == 13 and all(p["status"] == "Running" for p in pods)
    headline, page = _page_text(_outputs(nb, "lab.page()"))
    assert "healthy" in headline and "Simple Bookstore App" in page


def test_lesson_2_shows_answers_and_failures(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["02-test-one-service"].nb
    assert "stdout='{\"id\":7,\"ratings\":{\"Reviewer1\":5,\"Reviewer2\":4}}'" in \
        _outputs(nb, "lab.request(RATINGS_URL)")[0]["data"]["text/plain"]
    title = _outputs(nb, "lessons.grep(")[0]["data"]["text/plain"]
    assert title == "'<title>Simple Bookstore App</title>'"
    assert "exit 6" in _html(_outputs(nb, 'lab.request("http://ratingz:9080/ratings/7")'))
    assert "exit 7" in _html(_outputs(nb, 'lab.request("http://ratings:9090'))
    error = _outputs(nb, 'lab.request("http://ratingz:9080/ratings/7", check=True)')[0]
    assert error["output_type"] == "error" and error["ename"] == "ExecError" and "code 6" in error["evalue"]


def test_lesson_3_restarts_the_first_details_pod_once(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["03-chaos-one-pod"].nb
    pods = _plain_table(_outputs(nb, "lab.pods()["))
    details = [p for p in pods if p["name"].startswith("details-")]
    assert [p["restarts"] for p in details] == ["1", "0", "0"], details
    assert all(p["status"] == "Running" and p["ready"] == "1/1" for p in pods)
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "plots.status_timeline("))
    headline, page = _page_text(_outputs(nb, "lab.page()"))
    assert "healthy" in headline and "Error fetching product details" not in page


def test_lesson_4_degrades_the_page(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["04-chaos-all-pods"].nb
    for nth in (0, 1):  # right after the kill, and during the back-off
        headline, page = _page_text(_outputs(nb, "lab.page()", nth))
        assert "details FAILING" in headline and "reviews ok" in headline, headline
        assert "Error fetching product details" in page
        assert "Sorry, product details are currently unavailable for this book." in page
        assert "Book Reviews" in page and "Reviewer1" in page
    statuses = {p["status"] for p in _plain_table(_outputs(nb, 'lessons.wait_status(rec, "CrashLoopBackOff"'))}
    assert "CrashLoopBackOff" in statuses and "Running" not in statuses
    # the restart plot and the timeline
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "plots.restart_counts("))
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "plots.status_timeline("))
    # a deleted pod is replaced by a new name with no restarts
    deleted = re.search(r"(details-v1-[\w-]+)", _html(_outputs(nb, "deleted = lab.delete_pods("))).group(1)
    after = _plain_table(_outputs(nb, "lessons.wait_recovered(rec, deleted)"))
    assert deleted not in [p["name"] for p in after] and len(after) == 3
    assert "0" in [p["restarts"] for p in after]
    assert _outputs(nb, "live.stop()")[0]["data"]["text/plain"] == "True"  # it saw CrashLoopBackOff


def test_lesson_5_tells_degradation_from_healthy(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["05-measure-it"].nb

    def verdict(outputs: list[dict[str, Any]]) -> str:
        return html.unescape(re.sub(r"<[^>]+>", " ", _html(outputs)))

    assert "→ healthy" in verdict(_outputs(nb, "baseline = "))
    details = verdict(next(c.outputs for c in nb.cells if c.cell_type == "code" and c.source == "traffic"))
    assert "details failed" in details and "→ gradual degradation" in details
    reviews = verdict(_outputs(nb, "traffic = lab.traffic(rate=RATE).start()\nlessons.pause(2", 0))
    assert "reviews failed" in reviews and "→ gradual degradation" in reviews
    ratings = verdict(_outputs(nb, "traffic = lab.traffic(rate=RATE).start()\nlessons.pause(2", 1))
    assert "→ healthy" in ratings
    assert sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])) == 3


def test_lesson_6_gives_a_verdict_and_a_journal(runs: dict[str, lessons.LessonRun], lesson_dir: Path) -> None:
    run = runs["06-your-own-experiment"]
    journal_out = _outputs(run.nb, "journal = experiment.Experiment(")
    assert "COMPLETED" in _html(journal_out)
    assert any("completed in" in o.get("data", {}).get("text/plain", "") for o in journal_out)
    assert "held before, during and after" in html.unescape(_html(journal_out))
    saved = json.loads((lesson_dir / "journal-lose-details.json").read_text())
    assert saved["status"] == "completed"
    # the exercise checks answer (unanswered in the committed notebook: a ✗ with a hint, not an error)
    for start in ("my_selector", "my_process", "my_prediction", "my_count"):
        text = _outputs(run.nb, start)[0]["data"]["text/plain"]
        assert text.startswith("✗ not answered yet") and "Hint:" in text


def test_lesson_5_shows_no_stray_values(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["05-measure-it"].nb
    for out in _outputs(nb, 'lessons.pause(2, "traffic before the kill")\ndetails_down'):
        assert out.get("output_type") != "execute_result", out  # e.g. "Out: 2.0", the return of a pause


def test_lesson_4_live_table_and_panel_keep_their_last_state(runs: dict[str, lessons.LessonRun]) -> None:
    """The saved widget state (what an exported page shows) is the final state, not a stale redraw."""
    nb = runs["04-chaos-all-pods"].nb
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    view = _outputs(nb, "rec = lab.record(f\"app={TARGET_APP}\")\nlive = ")[0]["data"]
    live_id = view["application/vnd.jupyter.widget-view+json"]["model_id"]
    table = state[live_id]["state"]["value"]
    final = _plain_table(_outputs(nb, "lessons.wait_recovered(rec, deleted)"))
    for pod in final:
        assert pod["name"] in table, f"{pod['name']} (the replacement) is missing from the saved live table"
    deleted = re.search(r"(details-v1-[\w-]+)", _html(_outputs(nb, "deleted = lab.delete_pods("))).group(1)
    assert deleted not in table and "Terminating" not in table
    exported = export.static_widgets(nb)
    panel_html = next(o["data"]["text/html"] for c in exported.cells if c.source.startswith("panel = widgets.")
                      for o in c.outputs if "text/html" in o.get("data", {}))
    assert "productpage" in panel_html and "restarted: RESTARTS" in html.unescape(panel_html)


def test_lesson_6_without_a_page_url_stops_with_a_clear_error(ready_sandbox: Sandbox) -> None:
    from labkit import experiment
    from labkit.errors import LabkitError

    with labkit.connect(sandbox_dir=ready_sandbox.dir) as lab:
        lab.productpage_url = None  # as on a real cluster without LABKIT_PRODUCTPAGE_URL
        hypothesis = experiment.Hypothesis("page up", [experiment.http_ok(), experiment.section_healthy("reviews")])
        broken: list[str] = []
        exp = experiment.Experiment(lab, "Lose details", hypothesis, [lambda: broken.append("details")])
        with pytest.raises(LabkitError, match=r"cannot run: its probes request the product page.*PRODUCTPAGE_URL"):
            exp.run()
        assert broken == [], "nothing is broken when the experiment cannot look at the page"


def test_lesson_7_releases_one_pod_of_v2(runs: dict[str, lessons.LessonRun]) -> None:
    nb = runs["07-new-version-of-reviews"].nb

    def text(source_start: str) -> str:
        return "".join(o.get("data", {}).get("text/plain", "") for o in _outputs(nb, source_start))

    assert text("lab.apply(MANIFEST, selector=\"app=reviews_test") == "deployment.apps/reviews-v2 created"
    hidden = _plain_table(_outputs(nb, "hidden = "))
    assert [(r["version"], r["share"]) for r in hidden] == [("v1", "1.0")]  # nobody reaches v2 through the Service
    assert '"rating": {"stars": 5, "color": "black"}' in text("lab.request(f\"http://{v2_ip}")
    assert text("lessons.status_codes(").split() == ["200"] * 10
    assert re.fullmatch(r"pod/reviews-v2-\S+ labeled", text("lab.label("))
    owners = text("lab.wait_rollout(\"reviews-v2\")\nlab.owners(")
    assert "reviews_test" in owners and re.search(r"reviews-v2-\S+\s+reviews\s+v2\s+<NA>|reviews\s+v2\s*$", owners,
                                                  re.MULTILINE), owners
    released = {r["version"]: r for r in _plain_table(_outputs(nb, "released = "))}
    assert set(released) == {"v1", "v2"} and released["v2"]["pods"] == "1" and 0 < float(released["v2"]["share"]) < 1
    scaled = {r["version"]: r for r in _plain_table(_outputs(nb, "scaled = "))}
    assert scaled["v2"]["pods"] == "3" and scaled["v1"]["pods"] == "3"
    only_v2 = _plain_table(_outputs(nb, "lab.delete_deployment(\"reviews-v1\")"))
    assert [(r["version"], r["share"]) for r in only_v2] == [("v2", "1.0")]
    final = _plain_table(_outputs(nb, "lab.apply(\"bookinfo.yaml\""))
    assert [r["version"] for r in final] == ["v1"] * 3 and all(r["status"] == "Running" for r in final)
    for start in ("my_selector", "my_share", "my_answer"):
        shown = _outputs(nb, start)[0]["data"]["text/plain"]
        assert shown.startswith("✗ not answered yet") and "Hint:" in shown



LESSON_CHECKS = {"01-connect-and-look-around": ["my_count", "my_selector", "my_tester", "my_service"],
                 "02-test-one-service": ["my_stars", "my_result", "my_code"],
                 "05-measure-it": ["my_verdict", "my_process", "my_ratings_verdict"],
                 "07-new-version-of-reviews": ["my_selector", "my_answer", "my_share"]}


@pytest.mark.parametrize("name", sorted(LESSON_CHECKS))
def test_lessons_1_2_5_7_check_themselves(runs: dict[str, lessons.LessonRun], name: str) -> None:
    """Unanswered (as committed): each check shows ✗ with a hint, the solution collapsed and, in the kernel, a
    Solve it button; an exported page keeps the collapsed solution and drops the button."""
    nb = runs[name].nb
    exported = export.static_widgets(nb)
    for start in LESSON_CHECKS[name]:
        data = _outputs(nb, f"{start} = ...")[0]["data"]
        assert data["text/plain"].startswith("✗ not answered yet") and "Hint:" in data["text/plain"], start
        assert "<summary>Show solution</summary>" in data["text/html"] and "<details open" not in data["text/html"]
        assert "application/vnd.jupyter.widget-view+json" in data, f"{name}: no Solve it button for {start}"
        page = _html(_outputs(exported, f"{start} = ..."))
        assert "<summary>Show solution</summary>" in page and "Solve it" not in page, page
    # a check follows the step it is about: the markdown before it is "Step N: Exercise: ..."
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.split(" = ...")[0] in LESSON_CHECKS[name]:
            assert re.match(r"## Step \d+: Exercise: ", nb.cells[i - 1].source), (name, i)


ISTIO_ADD_VERSION_COMMANDS = [
    "sed 's/app: reviews/app: reviews_test/' | kubectl apply -l app=reviews_test,version=v2 -f -",
    "REVIEWS_V2_POD_IP=$(kubectl get pod -l app=reviews_test,version=v2 -o jsonpath='{.items[0].status.podIP}')",
    "echo $REVIEWS_V2_POD_IP",
    '-- curl -sS "$REVIEWS_V2_POD_IP:9080/reviews/7"',
    "-- sh -c \"for i in 1 2 3 4 5 6 7 8 9 10; do curl -o /dev/null -s -w '%{http_code}\\n' "
    "$REVIEWS_V2_POD_IP:9080/reviews/7; done\"",
    "kubectl label pods -l version=v2 app=reviews --overwrite",
    "kubectl delete deployment reviews-v2",
    "kubectl delete pod -l app=reviews,version=v2",
    "kubectl apply -l app=reviews,version=v2 -f ",
    "kubectl scale deployment reviews-v2 --replicas=3",
    "kubectl delete deployment reviews-v1",
]
"""The commands of istio.io's "Add a new version of reviews", in its order (the tester pod is ``sleep`` here)."""


def test_lesson_7_hugo_page_shows_istios_commands(runs: dict[str, lessons.LessonRun]) -> None:
    from labkit import export

    page = export.to_hugo(runs["07-new-version-of-reviews"].nb)
    assert export.hugo_problems(page.text, images=set(page.images)) == []
    commands = [line.strip()[2:] for line in page.text.splitlines() if line.strip().startswith("$ ")]
    found = [next((i for i, c in enumerate(commands) if wanted in c), -1) for wanted in ISTIO_ADD_VERSION_COMMANDS]
    assert -1 not in found, [w for w, i in zip(ISTIO_ADD_VERSION_COMMANDS, found, strict=True) if i < 0]
    assert found == sorted(found), "the commands come in istio.io's order"
    text = page.text
    assert "deployment.apps/reviews-v2 created" in text and re.search(r"pod/reviews-v2-\S+ labeled", text)
    assert '"rating": {"stars": 5, "color": "black"}' in text and "<none>" in text  # the released pod's owner


# ------------------------------------------------------------------------------------------------ the checks


def test_exercise_checks(ready_sandbox: Sandbox) -> None:
    with labkit.connect(sandbox_dir=ready_sandbox.dir) as lab:
        assert lessons.check_selector(lab, "app=details").ok
        assert lessons.check_selector(lab, {"app": "details"}).ok
        assert lessons.check_selector(lab, "app=details,version=v1").ok
        wrong = lessons.check_selector(lab, "version=v1")
        assert not wrong.ok and "including ones that are not details" in wrong.message and wrong.hint
        assert "matches no pod" in lessons.check_selector(lab, "app=detail").message
        assert "cannot use" in lessons.check_selector(lab, "app in (details").message
        assert "not answered yet" in str(lessons.check_selector(lab, ...))
        first = lab.pods("app=details").iloc[0]
        assert lessons.check_restarts(lab, int(first.restarts)).ok
        assert not lessons.check_restarts(lab, int(first.restarts) + 1).ok
        assert not lessons.check_restarts(lab, "many").ok
    assert lessons.check_process("reviews", "java").ok
    assert not lessons.check_process("reviews", "ruby").ok and "Java" in lessons.check_process("reviews", "x").hint
    assert lessons.check_verdict("productpage-down", "Cascading failure").ok
    assert lessons.check_verdict("ratings-down", "healthy").ok
    assert not lessons.check_verdict("reviews-down", "cascading failure").ok
    assert "is not one of" in lessons.check_verdict("reviews-down", "fine").message
    with pytest.raises(ValueError, match="no question 'x'; questions: ratings-down"):
        lessons.check_verdict("x", "healthy")
    shown = lessons.check_process("details", "ruby")._repr_html_()
    assert "✓" in shown and "#2e7d32" in shown
