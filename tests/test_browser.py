"""What attendees and readers see, in a real browser: the exported site, and JupyterLab running a lesson.

Debian's ``chromium`` driven by Playwright for Python (launched with that executable: Playwright's own browser
download is not used). ``.ci/run`` installs chromium; on a machine without it these tests are skipped, except in
CI (``CI`` set), where a missing browser fails them.

On a failure the page's screenshot is kept in ``test-artifacts/`` (or ``$LABKIT_TEST_ARTIFACTS``). With
``LABKIT_SCREENSHOTS=docs`` the tests also write the README's pictures of the site and of the chaos panel there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import alive, chromium, eventually, free_port

import labkit
from labkit import lessons
from labkit.sandbox import Sandbox
from labkit.sandbox.state import descendants

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = Path(os.environ.get("LABKIT_TEST_ARTIFACTS") or ROOT / "test-artifacts")
SCREENSHOTS = os.environ.get("LABKIT_SCREENSHOTS")  # a folder (e.g. docs) for the README's pictures
FAST = os.environ.get("LABKIT_TEST_TIME_SCALE", "0.25")
LESSONS = sorted(p.stem for p in NOTEBOOKS.glob(lessons.NOTEBOOK_PATTERN))

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                               "(pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


class Page:
    """A browser page that remembers its console errors and uncaught exceptions."""

    def __init__(self, browser: Any, width: int = 1280, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(f"console {msg.type}: {msg.text}")
                     if msg.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def screenshot_on_failure(page: Any, name: str) -> Iterator[None]:
    """Keep a full-page screenshot in the artifacts folder when the block fails."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        raise


# ------------------------------------------------------------------------------------------------ the site


@pytest.fixture(scope="module")
def site(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tour's site: every lesson run against the module's sandbox and exported, as `make tour` does."""
    from conftest import wait_all_ready

    wait_all_ready(sandbox)
    out = tmp_path_factory.mktemp("site")
    result = lessons.tour(out, sandbox_dir=sandbox.dir, params={"RATE": 20}, timeout=300, progress=None)
    assert result.ok, "\n".join(str(f) for f in result.failures)
    return out


def _open(browser: Any, path: Path) -> Page:
    page = Page(browser)
    page.page.goto(path.as_uri(), wait_until="load")
    return page


def test_every_page_loads_without_errors_and_its_images_load(browser: Any, site: Path) -> None:
    for name in ["index", *LESSONS]:
        page = _open(browser, site / f"{name}.html")
        try:
            with screenshot_on_failure(page.page, f"site-{name}"):
                assert page.page.title(), f"{name}.html has no title"
                broken = page.page.evaluate(
                    "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)")
                assert broken == [], f"{name}.html: images that did not load: {broken}"
                scripts = page.page.evaluate("() => [...document.scripts].map(s => s.src).filter(s => s)")
                assert scripts == [], f"{name}.html loads scripts: {scripts}"
                assert page.errors == [], f"{name}.html: {page.errors}"
        finally:
            page.close()


def test_product_pages_render_whole_and_inert(browser: Any, site: Path) -> None:
    """Every product page in an iframe shows its sections and the last line of the page; "Sign in" (or "sign out")
    goes nowhere."""
    seen = 0
    for name in LESSONS:
        page = _open(browser, site / f"{name}.html")
        try:
            with screenshot_on_failure(page.page, f"iframe-{name}"):
                frames = page.page.locator("iframe")
                for i in range(frames.count()):
                    element = frames.nth(i)
                    element.scroll_into_view_if_needed()
                    frame = element.content_frame
                    text = frame.locator("body").inner_text()
                    assert re.search(r"Book Details|Error fetching product details", text), text[:300]
                    assert re.search(r"Book Reviews|Error fetching product reviews", text), text[:300]
                    # the page's last line is inside the iframe's box, not cut off below it
                    box = element.bounding_box()
                    # (with reviews failing, as in lessons 10 and 12, its error notice is the last line)
                    last_line = frame.get_by_text("Reviews served by")
                    if not last_line.count():
                        last_line = frame.get_by_text("Sorry, product reviews are currently unavailable")
                    last = last_line.first.bounding_box()
                    assert box and last and last["y"] + last["height"] <= box["y"] + box["height"], \
                        f"{name}.html: the product page is cut: its last line ends at " \
                        f"{last and last['y'] + last['height']}, the iframe at {box and box['y'] + box['height']}"
                    # the cluster that served the page is gone: its links must not lead there
                    # "Sign in", or "sign out" on a page fetched signed in as jason (lessons 9 and 10)
                    frame.get_by_text(re.compile(r"^(Sign in|sign out)$")).first.click()
                    time.sleep(0.3)  # a navigation would start now; none must have
                    handle = element.element_handle().content_frame()
                    assert handle is not None and handle.url == "about:srcdoc", \
                        f"{name}.html: a click in the product page went to {handle and handle.url}"
                    assert "Book" in frame.locator("body").inner_text()
                    seen += 1
                # Playwright reading inside a sandboxed iframe makes Chromium log "Blocked script execution in
                # 'about:srcdoc'": that is the test's own probing (the page itself loads clean, tested above)
                errors = [e for e in page.errors if "Blocked script execution in 'about:srcdoc'" not in e]
                assert errors == [], f"{name}.html: {errors}"
                if SCREENSHOTS and name.startswith("04") and frames.count():
                    frames.first.scroll_into_view_if_needed()
                    page.page.evaluate("window.scrollBy(0, -120)")
                    page.page.screenshot(path=str(Path(SCREENSHOTS) / "site-lesson-page.png"))
        finally:
            page.close()
    assert seen >= 4, f"only {seen} product pages in the site"


def test_links_lead_from_the_index_through_every_lesson_and_back(browser: Any, site: Path) -> None:
    page = _open(browser, site / "index.html")
    p = page.page
    try:
        with screenshot_on_failure(p, "links"):
            lesson_links = p.locator("ol a[href$='.html']")
            assert [lesson_links.nth(i).get_attribute("href") for i in range(lesson_links.count())] == \
                [f"{name}.html" for name in LESSONS]
            lesson_links.first.click()
            for i, name in enumerate(LESSONS):
                p.wait_for_load_state()
                assert p.url.endswith(f"/{name}.html"), p.url
                assert p.locator("a[href$='.ipynb']").count() == 0, f"{name}.html links to a notebook"
                nav = p.locator("nav.labkit-nav.top")
                assert nav.locator("a.index").get_attribute("href") == "index.html"
                following = nav.locator("a.next")
                if i + 1 < len(LESSONS):
                    assert following.get_attribute("href") == f"{LESSONS[i + 1]}.html", name
                    following.click()
                else:
                    assert following.count() == 0
            p.locator("nav.labkit-nav.bottom a.index").click()
            p.wait_for_load_state()
            assert p.url.endswith("/index.html") and p.locator("h1").inner_text() == "Test in production"
            assert page.errors == []
    finally:
        page.close()


def test_lesson_4_page_shows_the_final_state_of_its_widgets(browser: Any, site: Path) -> None:
    import nbformat

    nb = nbformat.read(site / "04-chaos-all-pods.ipynb", as_version=4)
    final = next(c for c in nb.cells if c.source.startswith("lessons.wait_recovered(rec, deleted)"))
    final_pods = re.findall(r"details-v1-[a-z0-9]+-[a-z0-9]+", final.outputs[-1]["data"]["text/plain"])
    assert len(final_pods) == 3
    page = _open(browser, site / "04-chaos-all-pods.html")
    p = page.page
    try:
        with screenshot_on_failure(p, "widgets-04"):
            live = p.locator(".labkit-widget table", has=p.locator("th", has_text="CHANGED"))
            assert live.count() == 1
            text = live.inner_text()
            assert sorted(set(re.findall(r"details-v1-[a-z0-9]+-[a-z0-9]+", text))) == sorted(final_pods), text
            assert "Terminating" not in text
            panel = p.locator(".labkit-widget", has_text="Chaos panel")
            assert panel.count() == 1
            panel_text = panel.inner_text()
            assert "restarted: RESTARTS" in panel_text and "productpage" in panel_text
            # the table's cells stand apart: RESTARTS and AGE do not run together
            cell = panel.locator("table.labkit-pods td").first
            assert float(cell.evaluate("e => parseFloat(getComputedStyle(e).paddingRight)")) >= 8
    finally:
        page.close()


# ------------------------------------------------------------------------------------------------ JupyterLab


def _jupyterlab_settings(folder: Path) -> None:
    """User settings for the test's JupyterLab: every cell in the DOM (no windowing), no news pop-up, terminals
    that keep their screen's text in the DOM (xterm.js's screen-reader buffer: its WebGL/canvas screen has none)."""
    notebook = folder / "@jupyterlab" / "notebook-extension"
    notebook.mkdir(parents=True)
    (notebook / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    apputils = folder / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    terminal = folder / "@jupyterlab" / "terminal-extension"
    terminal.mkdir(parents=True)
    (terminal / "plugin.jupyterlab-settings").write_text('{"screenReaderMode": true}')


@contextlib.contextmanager
def _labkit_lab(tmp_path: Path, *, bare: bool = False) -> Iterator[dict[str, Any]]:
    """`labkit lab` with its own sandbox, stopped with Ctrl-C (SIGINT) unless the test already stopped it.

    By default it opens a copy of the lessons (``--notebooks``) with the test's environment. ``bare``: as a user
    starts it, from an empty folder (where it copies the lessons), with ``PATH=/usr/bin:/bin``, a ``KUBECONFIG``
    that points nowhere and an empty ``HOME``: whatever its kernels and terminals reach, they got from `labkit lab`.
    """
    _jupyterlab_settings(tmp_path / "settings")
    port, token, state, cwd = free_port(), "labkit-browser-test", tmp_path / "sandbox", tmp_path / "work"
    cwd.mkdir()
    dirs = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    args = ["--token", token, "--dir", str(state), "--time-scale", FAST]
    if bare:
        folder = cwd / lessons.LESSONS_FOLDER
        (tmp_path / "home").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "JUPYTER"))}
        env.update(dirs, PATH="/usr/bin:/bin", KUBECONFIG=str(tmp_path / "no-such-kubeconfig"),
                   HOME=str(tmp_path / "home"), JUPYTER_DATA_DIR=str(tmp_path / "data"), SHELL="/bin/bash")
    else:
        folder = tmp_path / "lessons"
        shutil.copytree(NOTEBOOKS, folder)
        env = {**os.environ, **dirs}
        env.pop("LABKIT_KUBECONFIG", None)
        args += ["--notebooks", str(folder)]
    log = (tmp_path / "lab.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "lab", "--port", str(port), "--no-browser", *args],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    info = {"proc": proc, "url": f"http://127.0.0.1:{port}", "token": token, "state": state,
            "log": Path(log.name), "folder": folder}
    try:
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture()
def jupyterlab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`labkit lab` on a copy of the lessons, with its own sandbox; stopped with Ctrl-C (SIGINT) by the test."""
    with _labkit_lab(tmp_path) as info:
        yield info


@pytest.fixture()
def bare_jupyterlab(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`labkit lab` started as a user does, with a PATH and KUBECONFIG that know nothing of the kit or the sandbox."""
    with _labkit_lab(tmp_path, bare=True) as info:
        yield info


def _wait_for_server(info: dict[str, Any]) -> None:
    import urllib.error
    import urllib.request

    def up() -> bool:
        assert info["proc"].poll() is None, info["log"].read_text()
        try:
            with urllib.request.urlopen(f"{info['url']}/api/status?token={info['token']}", timeout=2):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    eventually(up, 120, "JupyterLab to answer")


def _prompts(p: Any) -> list[str]:
    return [t.strip() for t in p.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def test_jupyterlab_runs_lesson_4_and_ctrl_c_stops_everything(browser: Any, jupyterlab: dict[str, Any]) -> None:
    info = jupyterlab
    _wait_for_server(info)
    page = Page(browser, 1400, 2000)  # tall enough for the whole panel in one picture
    p = page.page
    try:
        with screenshot_on_failure(p, "jupyterlab-04"):
            p.goto(f"{info['url']}/lab/tree/04-chaos-all-pods.ipynb?token={info['token']}")
            p.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
            p.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            # Opening a lesson changes nothing in it: once the kernel has told its language_info (about a second
            # after it is idle), saving writes the very file that was committed. (A lesson without the kernel's
            # language_info gets it added: the tab shows modified and the saved file differs.)
            time.sleep(3)  # the kernel_info reply has no event on the page to wait for
            copy = info["folder"] / "04-chaos-all-pods.ipynb"
            written = copy.stat().st_mtime_ns
            p.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
            p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Save( Notebook)?$")).first.click()
            eventually(lambda: copy.stat().st_mtime_ns != written, 15, "JupyterLab to save the lesson")
            saved = copy.read_text()
            diff = subprocess.run(["diff", str(NOTEBOOKS / "04-chaos-all-pods.ipynb"),
                                   str(info["folder"] / "04-chaos-all-pods.ipynb")], capture_output=True,
                                  text=True).stdout
            # (the Python version is the one thing a kernel on another Python would change: it is not compared)
            committed = json.loads((NOTEBOOKS / "04-chaos-all-pods.ipynb").read_text())
            reopened = json.loads(saved)
            for nb in (committed, reopened):
                nb["metadata"].get("language_info", {}).pop("version", None)
            assert reopened == committed, f"opening the lesson changed it; saved, it differs:\n{diff[:3000]}"

            # Run All, from the Run menu
            p.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            count = len(_prompts(p))

            def finished() -> bool:
                prompts = _prompts(p)
                return len(prompts) == count and all(re.fullmatch(r"\[\d+\]:", t) for t in prompts)

            eventually(finished, 300, "every cell of lesson 4 to run", interval=1)
            errors = p.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()

            # the live table ends at the cluster's final state: the replacement pod there, nothing Terminating
            with labkit.connect(sandbox_dir=info["state"]) as lab:
                final = sorted(lab.pods("app=details")["name"])
            live = p.locator(".widget-html-content table", has=p.locator("th", has_text="CHANGED"))

            def live_is_final() -> bool:
                text = live.inner_text()
                return sorted(set(re.findall(r"details-v1-[a-z0-9]+-[a-z0-9]+", text))) == final and \
                    "Terminating" not in text

            eventually(live_is_final, 30, f"the live table to show {final}")

            # the panel's buttons: kill productpage in one pod, then refresh until its RESTARTS went up
            panel = p.locator(".widget-vbox", has=p.locator(".widget-html-content", has_text="Chaos panel")).last
            panel.scroll_into_view_if_needed()
            before = _restarts(panel)
            panel.locator("button", has_text="kill in one pod").click()
            # (the lesson stopped the panel's watch: it says to click refresh)
            eventually(lambda: re.search(r"Click refresh to see the restart|Not done|Failed", panel.inner_text()), 30,
                       "the panel to report the kill")
            assert "Click refresh to see the restart" in panel.inner_text(), panel.inner_text()

            def restarted() -> bool:
                panel.locator("button", has_text="refresh").click()
                now = _restarts(panel)
                return any(now.get(pod, 0) > n for pod, n in before.items() if pod.startswith("productpage-"))

            eventually(restarted, 60, "a productpage pod's RESTARTS to go up", interval=0.5)
            cells = panel.locator("table.labkit-pods td")
            assert float(cells.first.evaluate("e => parseFloat(getComputedStyle(e).paddingRight)")) >= 8
            if SCREENSHOTS:
                panel.screenshot(path=str(Path(SCREENSHOTS) / "chaos-panel.png"))
    finally:
        page.close()

    _ctrl_c_stops_everything(info)


def _ctrl_c_stops_everything(info: dict[str, Any]) -> set[int]:
    """Ctrl-C `labkit lab`: JupyterLab, its kernels, its terminals and the sandbox with every pod's process end.
    Returns the processes that were running before (all now gone)."""
    proc = info["proc"]
    tree = descendants(proc.pid)
    assert len(tree) > 13, f"expected JupyterLab, a kernel and the sandbox's processes; found {len(tree)}"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, info["log"].read_text()
    eventually(lambda: not any(alive(pid) for pid in tree), 20, "every process labkit lab started to end")
    assert not Sandbox(info["state"]).running()
    return tree


def _restarts(panel: Any) -> dict[str, int]:
    rows = panel.locator("tr[data-pod]")
    return {str(rows.nth(i).get_attribute("data-pod")): int(rows.nth(i).get_attribute("data-restarts") or 0)
            for i in range(rows.count())}


def _terminal_screen(p: Any) -> str:
    """The text on the Terminal's screen, one line a row: xterm.js's DOM rows, else its screen-reader buffer (the
    same rows, kept in the DOM when the screen itself is drawn with WebGL or a canvas)."""
    for selector in (".jp-Terminal .xterm-rows", ".jp-Terminal .xterm-accessibility-tree"):
        rows = p.locator(selector)
        if rows.count():
            return str(rows.first.evaluate("e => [...e.children].map(row => row.textContent).join('\\n')"))
    return ""


def _running_pods(text: str, pods: list[str]) -> dict[str, str]:
    """The STATUS shown beside each of ``pods`` in ``kubectl get pods`` output (pods not shown are left out)."""
    shown: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] in pods:
            shown[fields[0]] = fields[2]
    return shown


def test_jupyterlab_terminal_and_a_cell_run_kubectl_against_the_sandbox(
        browser: Any, bare_jupyterlab: dict[str, Any]) -> None:
    """The lesson's `kubectl get pods`, typed in JupyterLab's Terminal and as `!kubectl` in a new notebook's cell,
    lists the sandbox's 13 pods Running, though `labkit lab` was started with PATH=/usr/bin:/bin and a KUBECONFIG
    pointing nowhere: the kit's kubectl and the sandbox's kubeconfig came from `labkit lab` itself."""
    from conftest import wait_all_ready

    info = bare_jupyterlab
    _wait_for_server(info)
    sandbox = Sandbox.attach(info["state"])
    wait_all_ready(sandbox, timeout=120)
    pods = sorted(pod["name"] for pod in sandbox.pods())
    assert len(pods) == 13, pods
    everything_running = dict.fromkeys(pods, "Running")
    kit_kubectl = str(Path(sys.executable).parent / "kubectl")
    page = Page(browser)
    p = page.page
    try:
        with screenshot_on_failure(p, "jupyterlab-terminal"):
            p.goto(f"{info['url']}/lab?token={info['token']}")
            p.wait_for_selector(".jp-Launcher", timeout=90_000)

            # File > New > Terminal
            p.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
            p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^New$")).first.hover()
            p.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Terminal$")).first.click()
            p.wait_for_selector(".jp-Terminal .xterm", timeout=60_000)
            eventually(lambda: _terminal_screen(p).strip(), 60, "the terminal's shell prompt")
            p.locator(".jp-Terminal .xterm").first.click()
            p.keyboard.type("command -v kubectl")
            p.keyboard.press("Enter")
            eventually(lambda: kit_kubectl in _terminal_screen(p), 30, f"the terminal to find {kit_kubectl}")
            p.keyboard.type("kubectl get pods")
            p.keyboard.press("Enter")
            try:
                eventually(lambda: _running_pods(_terminal_screen(p), pods) == everything_running, 60,
                           "the terminal to show the 13 pods Running")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nthe terminal's screen:\n{_terminal_screen(p)}") from None
            screen = _terminal_screen(p)
            assert "NAME" in screen and "STATUS" in screen, screen

            # a new notebook from the launcher, a cell typed in it: !kubectl get pods
            p.locator(".lm-TabBar-tab", has_text="Launcher").first.click()
            p.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
            p.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
            # the status bar names the kernel once the notebook is connected to it (before, a cell run is lost)
            p.locator("#jp-main-statusbar").get_by_text(re.compile(r"Python 3.*\| Idle")).wait_for(timeout=90_000)
            p.locator(".jp-Notebook .jp-CodeCell .cm-content").first.click()
            p.keyboard.type("!kubectl get pods")
            p.keyboard.press("Shift+Enter")
            output = p.locator(".jp-Notebook .jp-CodeCell .jp-OutputArea-output").first
            try:
                eventually(lambda: output.count() and
                           _running_pods(output.inner_text(), pods) == everything_running, 60,
                           "the cell's output to show the 13 pods Running")
            except AssertionError as exc:
                shown = output.inner_text() if output.count() else "(no output)"
                raise AssertionError(f"{exc}\nthe cell's output:\n{shown}") from None
            errors = p.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert errors.count() == 0, errors.all_inner_texts()
    finally:
        page.close()

    # Ctrl-C: JupyterLab, the kernel, the terminal's shell and the sandbox all end
    tree = _ctrl_c_stops_everything(info)
    assert len(tree) > 15, f"expected JupyterLab, a kernel, a shell and the sandbox's processes; found {len(tree)}"
