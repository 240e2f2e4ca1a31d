"""Exporting lessons: one self-contained HTML page, and an istio.io (Hugo) page that follows the site's rules."""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from labkit import export, lessons
from labkit.sandbox import Sandbox

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _png(title: str | None = None) -> str:
    """A real PNG made by matplotlib, base64 as a notebook stores it (optionally with a Title text chunk)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Title": title} if title else None)
    return base64.b64encode(buffer.getvalue()).decode()


def _table_html() -> str:
    return ('<table border="1" class="dataframe">\n<thead><tr style="text-align: right;"><th></th><th>name</th>'
            "<th>ready</th><th>status</th><th>restarts</th></tr></thead>\n<tbody>"
            "<tr><th>0</th><td>details-v1-abc</td><td>1/1</td><td>Running</td><td>1</td></tr>"
            "<tr><th>1</th><td>details-v1-def</td><td>0/1</td><td>CrashLoopBackOff</td><td>0</td></tr>"
            "</tbody></table>")


def _synthetic() -> nbformat.NotebookNode:
    """A small executed lesson with every kind of output the exporter handles."""
    table = new_code_cell("lab.pods()", metadata={"labkit": {"shell": "kubectl get pods"}})
    table.outputs = [new_output("execute_result", {"text/html": _table_html(), "text/plain": "a frame"},
                                execution_count=1)]
    request = new_code_cell("lab.request(url)", metadata={"labkit": {"shell": "kubectl exec x -- curl -sS url"}})
    request.outputs = [new_output("stream", name="stdout", text='{"id":7}\n'),
                       new_output("stream", name="stderr", text="progress\r100%\n")]
    failed = new_code_cell("lab.request(bad)", metadata={"labkit": {"shell": "kubectl exec x -- curl -sS bad"}})
    failed.outputs = [new_output("execute_result", {
        "text/html": "<div>exit 6</div>",
        "text/plain": "ExecResult(args=['curl', '-sS', 'http://ratingz:9080/'], returncode=6, stdout='', "
                      "stderr='curl: (6) Could not resolve host: ratingz\\n', pod='sleep-1', container='sleep', "
                      "duration=0.004, namespace='default')",
        export.RECORD: {"kind": "exec", "pod": "sleep-1", "container": "sleep",
                        "command": ["curl", "-sS", "http://ratingz:9080/"], "stdout": "",
                        "stderr": "curl: (6) Could not resolve host: ratingz\n", "returncode": 6}},
        execution_count=3)]
    figure = new_code_cell("plots.restart_counts(lab.pods())",
                           metadata={"labkit": {"caption": "Restarts per pod, after the kill."}})
    figure.outputs = [new_output("display_data", {"image/png": _png(), "text/plain": "<Figure>"})]
    titled = new_code_cell("plots.status_timeline(rec)")
    titled.outputs = [new_output("display_data", {"image/png": _png("Pod status over time."),
                                                  "text/plain": "<LabFigure>"})]
    page = new_code_cell("lab.page()", metadata={"labkit": {
        "shell": 'curl -s http://$MYHOST/productpage | grep -oE "Book Reviews|Error fetching product [a-z]+"',
        "grep": "Book Reviews|Error fetching product [a-z]+"}})
    srcdoc = html.escape('<h4 class="x">Error fetching product details!</h4>\n<h4>Book Reviews</h4>', quote=True)
    page.outputs = [new_output("display_data", {
        "text/html": f'<div class="labkit-page"><iframe sandbox srcdoc="{srcdoc}"></iframe></div>',
        "text/plain": "<ProductPage>",
        export.RECORD: {"kind": "page", "url": "http://127.0.0.1:1/productpage", "status": 200,
                        "html": '<h4 class="x">Error fetching product details!</h4>\n<h4>Book Reviews</h4>',
                        "sections": {"details": False, "reviews": True}}})]
    hidden = new_code_cell("rec = lab.record()", metadata={"labkit": {"hugo": "skip"}})
    params = new_code_cell("RATE = 5", metadata={"tags": ["parameters"]})
    cells = [
        new_markdown_cell("# Chaos: a test lesson\n\nBreak one thing. Watch the rest."),
        new_markdown_cell("## What you will do\n\n* kill\n* look"),
        params,
        new_markdown_cell("## Step 1: Look at the pods\n\nThe table:\n\n1. first point\n   more of it\n2. second"),
        table,
        new_markdown_cell("## Step 2: Ask a service"),
        request, failed, hidden,
        new_markdown_cell("## Step 3: Plot it"),
        figure, titled,
        new_markdown_cell("## Step 4: The page"),
        page,
        new_markdown_cell("## What you saw\n\nThings. See [the next one](04-chaos-all-pods.ipynb)."),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["labkit"] = {"weight": 35}
    return nb


# ------------------------------------------------------------------------------------------------ Hugo rules


def test_hugo_page_follows_istio_rules(tmp_path: Path) -> None:
    index = export.write_hugo(_synthetic(), tmp_path, name="03-chaos-test")
    assert index == tmp_path / "chaos-test" / "index.md"
    text = index.read_text()
    assert export.hugo_problems(text, page_dir=index.parent) == []

    # front matter: the series' keys; the title quoted because it holds ": "
    front = text.split("---\n")[1]
    assert yaml.safe_load(front) == {"title": "Chaos: a test lesson", "overview": "Break one thing.", "weight": 35,
                                     "owner": "istio/wg-docs-maintainers", "test": False}
    assert front.startswith("title: ") and "\n\nweight: 35\n\nowner: istio/wg-docs-maintainers\ntest: no\n" in front

    # steps are "1." + two spaces; their content is indented 4, nested items 8
    assert "1.  Look at the pods.\n" in text
    assert "    1.  first point\n        more of it\n    1.  second\n" in text

    # commands start with "$ " and are followed by their real output; the table looks like kubectl's
    assert ("    {{< text bash >}}\n    $ kubectl get pods\n"
            "    NAME             READY   STATUS             RESTARTS\n"
            "    details-v1-abc   1/1     Running            1\n"
            "    details-v1-def   0/1     CrashLoopBackOff   0\n    {{< /text >}}") in text
    assert "    $ kubectl exec x -- curl -sS url\n    {\"id\":7}\n    {{< /text >}}" in text
    assert "progress" not in text  # stderr (progress lines) is not command output
    # a failed command result reads like kubectl exec's terminal output
    assert ("    $ kubectl exec x -- curl -sS bad\n    curl: (6) Could not resolve host: ratingz\n"
            "    command terminated with exit code 6\n") in text
    assert "rec = lab.record()" not in text and "RATE = 5" not in text

    # the page, which cannot be screenshotted, shows as the lines grep prints from it
    assert "| grep -oE \"Book Reviews|Error fetching product [a-z]+\"\n    Error fetching product details\n" \
           "    Book Reviews\n" in text

    # figures: files beside the page, captions from metadata or the PNG's title, never ending with a period
    images = re.findall(r'link="([^"]+)"', text)
    captions = re.findall(r'caption="([^"]+)"', text)
    assert captions == ["Restarts per pod, after the kill", "Pod status over time"]
    assert len(images) == 2 and all((index.parent / name).read_bytes().startswith(b"\x89PNG") for name in images)
    for n, line in enumerate(text.splitlines()):
        if "{{< text" in line or "{{< /text" in line:
            indent = len(line) - len(line.lstrip(" "))
            assert indent % 4 == 0, f"line {n}: {line!r}"

    # links to other lessons point at their pages
    assert "[the next one](../chaos-all-pods/)" in text


@pytest.mark.parametrize(("page", "problem"), [
    ("---\ntitle: x\n---\nbody\n", "front matter has no 'overview'"),
    ("---\ntitle: x\noverview: y\nweight: 1\nowner: istio/wg-docs-maintainers\ntest: maybe\n---\n", "test is"),
    ("{{< text bash >}}\nkubectl get pods\n{{< /text >}}\n", "must start with a '$ ' command line"),
    ("1.  item\n\n  {{< text bash >}}\n  $ ls\n  {{< /text >}}\n", "not a multiple of 4"),
    ("2. item\n", "ordered list items are written '1.' and two spaces"),
    ('{{< image width="80%" link="a.png" caption="A figure." >}}\n', "ends with a period"),
    ('{{< image width="80%" link="missing.png" caption="A figure" >}}\n', "is not beside the page"),
    ("{{< text bash >}}\n$ ls\n", "never closed"),
])
def test_hugo_problems_names_each_broken_rule(page: str, problem: str, tmp_path: Path) -> None:
    front = "---\ntitle: x\noverview: y\n\nweight: 1\n\nowner: istio/wg-docs-maintainers\ntest: no\n---\n\n"
    text = page if page.startswith("---") else front + page
    problems = export.hugo_problems(text, page_dir=tmp_path)
    assert any(problem in p for p in problems), problems


def test_captions_lose_their_final_period(tmp_path: Path) -> None:
    nb = _synthetic()
    nb.cells[10].metadata["labkit"]["caption"] = "Ends with dots..."
    index = export.write_hugo(nb, tmp_path, name="x")
    assert 'caption="Ends with dots"' in index.read_text()


def test_page_meta_falls_back_to_the_first_heading() -> None:
    nb = _synthetic()
    nb.metadata.pop("labkit")
    meta = export.page_meta(nb, "05-something")
    assert meta == {"title": "Chaos: a test lesson", "overview": "Break one thing.", "weight": 50}


def test_static_widgets_draw_the_saved_state() -> None:
    nb = new_notebook(cells=[new_code_cell("lab.live_pods()")])
    view = {"model_id": "box1", "version_major": 2, "version_minor": 0}
    nb.cells[0].outputs = [new_output("display_data", {"application/vnd.jupyter.widget-view+json": view,
                                                       "text/plain": "VBox()"})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0,
        "state": {
            "box1": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_html1", "IPY_MODEL_btn"]}},
            "html1": {"model_name": "HTMLModel",
                      "state": {"value": "<table><tr><td>CrashLoopBackOff</td></tr></table>"}},
            "btn": {"model_name": "ButtonModel", "state": {"description": "Kill one"}},
        }}}
    out = export.static_widgets(nb)
    data = out.cells[0].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" not in data
    assert "CrashLoopBackOff" in data["text/html"] and "<button disabled>Kill one</button>" in data["text/html"]
    assert "widgets" not in out.metadata
    assert "widgets" in nb.metadata  # the original is untouched


def test_html_of_a_synthetic_lesson_is_self_contained(tmp_path: Path) -> None:
    path = export.write_html(_synthetic(), tmp_path, "lesson")
    page = path.read_text()
    assert "<title>Chaos: a test lesson</title>" in page
    assert "data:image/png;base64," in page and re.search(r"<iframe sandbox[^>]*srcdoc=", page)
    assert 'alt="Restarts per pod, after the kill"' in page and 'alt="Pod status over time"' in page
    assert not re.search(r"<script[^>]+src=\"https?://", page), "the page loads scripts from the network"


def _with_next(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.cells.append(new_markdown_cell("## Next\n\n[Chaos in all pods](04-chaos-all-pods.ipynb): every pod."))
    return nb


def test_html_links_to_the_next_page_and_back_to_the_index(tmp_path: Path) -> None:
    page = export.write_html(_with_next(_synthetic()), tmp_path, "03-chaos-test").read_text()
    assert ".ipynb" not in page, "a link still points at a notebook (raw JSON over file://, a download over HTTP)"
    assert 'href="04-chaos-all-pods.html"' in page
    navs = re.findall(r"<nav[^>]*labkit-nav[^>]*>(.*?)</nav>", page, re.DOTALL)
    assert len(navs) == 2  # top and bottom
    for nav in navs:
        assert 'href="index.html"' in nav and "Next: Chaos in all pods" in nav
    alone = export.to_html(_synthetic(), index=None)
    assert "<nav" not in alone and 'href="index.html"' not in alone


def test_exported_product_page_is_inert_and_tall_enough() -> None:
    live = ('<html><head><base href="http://127.0.0.1:9/productpage"></head><body>'
            '<a class="btn" href="#login-modal">Sign in</a><a href=\'logout\'>sign out</a>'
            '<form method="post" action="login" name="login_form"><button formaction="x">Sign in</button></form>'
            "<h4>Book Reviews</h4></body></html>")
    nb = _synthetic()
    page_cell = next(c for c in nb.cells if c.source == "lab.page()")
    page_cell.outputs[0]["data"]["text/html"] = (
        f"<div class='labkit-page'><iframe sandbox srcdoc=\"{html.escape(live, quote=True)}\" "
        "style='width:100%;height:480px'></iframe></div>")
    out = export.to_html(nb)
    found = re.search(r"""<iframe[^>]*srcdoc=(?:"([^"]*)"|'([^']*)')""", out)
    assert found, "no iframe in the page"
    srcdoc = html.unescape(found.group(1) or found.group(2))
    assert "<base" not in srcdoc and "href" not in srcdoc and "action" not in srcdoc
    assert ">Sign in</a>" in srcdoc and "<h4>Book Reviews</h4>" in srcdoc  # looks the same
    assert re.search(r"\.labkit-page iframe\s*\{\s*height:\s*(\d+)px !important", out)
    assert int(re.search(r"\.labkit-page iframe\s*\{\s*height:\s*(\d+)px", out).group(1)) >= 535


def test_hugo_reads_labkit_records_not_reprs() -> None:
    def cell(data: dict[str, object], shell: str, **meta: str) -> nbformat.NotebookNode:
        c = new_code_cell("x", metadata={"labkit": {"shell": shell, **meta}})
        c.outputs = [new_output("execute_result", data, execution_count=1)]
        return c

    recovery = {"kind": "recovery", "columns": ["pod", "recovery_s", "restarts_after"],
                "rows": [["details-v1-a", 1.25, 1], ["details-v1-b", None, 0]]}
    chaos = {"kind": "chaos", "summary": "pkill ruby in 3 pods of app=details", "action": {"action": "kill"}}
    exec_ok = {"kind": "exec", "pod": "sleep-1", "container": None, "command": ["curl", "-sS", "u"],
               "stdout": "{\"id\": 7}\n", "stderr": "", "returncode": 0}
    nb = new_notebook(cells=[
        new_markdown_cell("# Records\n\nRead records."),
        cell({"text/plain": "a frame", "text/html": "<b>not a table</b>", export.RECORD: recovery}, "recover"),
        cell({"text/plain": "ChaosAction(action='kill', ...)", export.RECORD: chaos}, "kill"),
        cell({"text/plain": "ExecResult(args=['curl'], stdout='{}')", export.RECORD: exec_ok}, "curl u"),
        # without a record: the repr is no terminal output and is left out, a plain value stays
        cell({"text/plain": "ExecResult(args=['curl'], stdout='leaked')"}, "curl v"),
        cell({"text/plain": "'<title>Simple Bookstore App</title>'"}, "title"),
    ])
    text = export.to_hugo(nb, name="09-records").text
    assert ("$ recover\nPOD            RECOVERY_S   RESTARTS_AFTER\ndetails-v1-a   1.25         1\n"
            "details-v1-b   <none>       0\n") in text
    assert "$ kill\npkill ruby in 3 pods of app=details\n" in text
    assert '$ curl u\n{"id": 7}\n{{< /text >}}' in text
    assert "leaked" not in text and "ExecResult" not in text and "ChaosAction" not in text
    assert "$ title\n<title>Simple Bookstore App</title>\n" in text


def test_cli_export_warns_about_an_unexecuted_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labkit.cli import main

    assert main(["export", str(NOTEBOOKS / "01-connect-and-look-around.ipynb"), "--to", "hugo",
                 "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "has no outputs" in captured.err
    text = (tmp_path / "connect-and-look-around" / "index.md").read_text()
    assert export.hugo_problems(text, page_dir=tmp_path / "connect-and-look-around") == []
    assert "$ kubectl get pods -l app=details" in text


# ------------------------------------------------------------------------------------------------ a real lesson


@pytest.fixture(scope="module")
def chaos_lesson(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    """Lesson 3, executed against the session sandbox."""
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    run = lessons.run_notebook(NOTEBOOKS / "03-chaos-one-pod.ipynb", cwd=tmp_path_factory.mktemp("run"),
                               env={**os.environ, "LABKIT_SANDBOX_DIR": str(sandbox.dir)}, timeout=300)
    assert run.ok, str(run.failure)
    return run.nb


def test_hugo_export_of_an_executed_chaos_lesson(chaos_lesson: nbformat.NotebookNode, tmp_path: Path) -> None:
    index = export.write_hugo(chaos_lesson, tmp_path, name="03-chaos-one-pod")
    text = index.read_text()
    assert export.hugo_problems(text, page_dir=index.parent) == []
    head = text.split("---\n")[1]
    for key in ("title: Chaos in one pod", "overview: ", "weight: 30", "owner: istio/wg-docs-maintainers",
                "test: no"):
        assert key in head
    # the lesson's commands with their real output
    assert "    $ kubectl exec $(kubectl get pods -l app=details -o jsonpath='{.items[0].metadata.name}') " \
           "-- pkill ruby\n" in text
    table = text.split("    $ kubectl get pods\n", 1)[1].split("{{< /text >}}", 1)[0].splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len([line for line in table if line.strip().startswith("details-v1-")]) == 3
    assert "    $ curl -s http://$MYHOST/productpage | grep -oE" in text and "    Book Reviews\n" in text
    # the timeline figure, beside the page, with its caption
    assert 'link="details-one-pod-timeline.png"' in text
    assert (index.parent / "details-one-pod-timeline.png").read_bytes().startswith(b"\x89PNG")
    for caption in re.findall(r'caption="([^"]*)"', text):
        assert caption and not caption.endswith(".")
    for line in text.splitlines():
        if line.lstrip().startswith(("{{< text", "{{< /text", "{{< image")):
            assert (len(line) - len(line.lstrip())) % 4 == 0


def test_html_export_of_an_executed_chaos_lesson(chaos_lesson: nbformat.NotebookNode, tmp_path: Path) -> None:
    page = export.write_html(chaos_lesson, tmp_path, "03-chaos-one-pod").read_text()
    assert page.count("data:image/png;base64,") >= 1          # the timeline plot, embedded
    assert re.search(r"<iframe sandbox[^>]*srcdoc=", page)    # the product page, inline
    assert 'alt="The details pods over time' in page
    assert "Simple Bookstore App" in page
    assert "details-v1-" in page
    assert not re.search(r"<script[^>]+src=\"https?://", page)
    assert "application/vnd.jupyter.widget-view+json" not in page
