"""The lessons themselves: run them all (``labkit tour``), open them (``labkit lab``), publish one
(``labkit export``), and the exercise checks the last lesson uses.

``labkit tour --out site`` runs every notebook headless against the sandbox, the way a reader would, and writes
each executed notebook, its HTML page and an ``index.html``; a cell that fails (other than one tagged
``raises-exception``, which shows an error on purpose) makes it exit non-zero, naming the notebook and the cell.

Example:
    >>> from labkit import lessons
    >>> run = lessons.run_notebook("notebooks/03-chaos-one-pod.ipynb", params={"RATE": 10})
    >>> run.ok, round(run.seconds)
    (True, 6)
    >>> lessons.check_selector(lab, "app=details")          # an exercise check: prints ✓ or ✗ with a hint
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import glob
import html
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bookinfo, report
from .checks import (
    Check,
    check_process,
    check_release,
    check_restarts,
    check_selector,
    check_service_selector,
    check_share,
    check_verdict,
)

if TYPE_CHECKING:
    import nbformat

    from .lab import Lab
    from .observe import Recorder
    from .records import ChaosAction, ExecResult, PodState, RecoveryFrame
    from .sandbox import Sandbox

__all__ = [
    "LESSONS_FOLDER",
    "PROCESSES",
    "CellFailure",
    "Check",
    "LessonCopy",
    "LessonRun",
    "StatusCodes",
    "TourResult",
    "add_commands",
    "check_process",
    "check_release",
    "check_restarts",
    "check_selector",
    "check_service_selector",
    "check_share",
    "check_verdict",
    "copy_lessons",
    "find_notebooks",
    "grep",
    "inject_parameters",
    "lab",
    "lab_environment",
    "notebooks_dir",
    "parse_param",
    "pause",
    "run_notebook",
    "status_codes",
    "tour",
    "wait_recovered",
    "wait_status",
]

NOTEBOOK_PATTERN = "[0-9][0-9]-*.ipynb"
"""Lesson files: a two-digit number, a dash, a name (``03-chaos-one-pod.ipynb``); run in that order."""

PROCESSES: dict[str, str] = bookinfo.PROCESSES
"""The main process of each Bookinfo service's container: what ``pkill`` must name to crash it."""

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ finding lessons


def notebooks_dir() -> Path:
    """The shipped lessons: ``labkit/notebooks/`` inside an installed package (a wheel, ``pip install .``), else
    the repository's top-level ``notebooks/`` (a clone, an editable install).

    Raises:
        FileNotFoundError: neither holds a lesson (the message says where it looked and what to do).
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "notebooks", package.parent / "notebooks")
    for candidate in candidates:
        if candidate.is_dir() and any(candidate.glob(NOTEBOOK_PATTERN)):
            return candidate
    raise FileNotFoundError(f"no lessons ({NOTEBOOK_PATTERN}) in {' or '.join(str(c) for c in candidates)}: "
                            "reinstall labkit (`pip install --force-reinstall labkit`) or pass --notebooks DIR")


LESSONS_FOLDER = "labkit-lessons"
"""Where ``labkit lab`` puts the user's copy of the lessons, in the folder it is started from."""

_SHIPPED_HASHES = ".labkit-lessons.json"
"""In the user's copy: the hash of each lesson as labkit last wrote it, to tell an edited lesson from ours."""


@dataclass
class LessonCopy:
    """What :func:`copy_lessons` did to the user's folder of lessons, lesson file names in each list."""

    folder: Path
    copied: list[str] = field(default_factory=list)
    """New in the folder (first run, a lesson added to the kit, or one the user deleted for a fresh copy)."""
    updated: list[str] = field(default_factory=list)
    """Unedited since labkit wrote them, and replaced by the newer lesson the kit ships."""
    kept: list[str] = field(default_factory=list)
    """Edited by the user (or run and saved) and different from the shipped lesson: left as they are."""
    unchanged: list[str] = field(default_factory=list)
    """Already the same as the shipped lesson."""

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in (("copied", self.copied), ("updated", self.updated),
                                               ("unchanged", self.unchanged), ("kept as you edited them",
                                                                               self.kept)) if v]
        return f"lessons in {self.folder}: {', '.join(parts) or 'none'}"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_lessons(into: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None) -> LessonCopy:
    """Copy the shipped lessons into a folder the user owns, never overwriting a lesson the user changed.

    A lesson missing from ``into`` is copied; one still exactly as labkit wrote it is replaced when the kit ships
    a newer one; one the user edited (or ran and saved) is kept as it is: delete or rename it and call this again
    (``labkit lab`` does) for a fresh copy. Other files in the folder are never touched.

    Args:
        into: the user's folder (created if missing).
        source: the shipped lessons (default :func:`notebooks_dir`).

    Raises:
        FileNotFoundError: no lessons to copy.
        NotADirectoryError: ``into`` exists and is not a folder.
    """
    import json
    import shutil

    folder = Path(into).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; give labkit lab another place for the lessons "
                                 "(--lessons DIR)")
    shipped = sorted(Path(source).glob(NOTEBOOK_PATTERN)) if source is not None else find_notebooks()
    if not shipped:
        raise FileNotFoundError(f"no lessons ({NOTEBOOK_PATTERN}) in {source}")
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / _SHIPPED_HASHES
    try:
        recorded: dict[str, str] = dict(json.loads(record_path.read_text(encoding="utf-8")).get("lessons", {}))
    except (OSError, ValueError, AttributeError):
        recorded = {}
    result = LessonCopy(folder=folder)
    for lesson in shipped:
        name, target, new_hash = lesson.name, folder / lesson.name, _sha256(lesson)
        if not target.exists():
            shutil.copyfile(lesson, target)
            recorded[name] = new_hash
            result.copied.append(name)
            continue
        current = _sha256(target)
        if current == new_hash:
            recorded[name] = new_hash
            result.unchanged.append(name)
        elif recorded.get(name) == current:  # as labkit wrote it: the user did not change it
            shutil.copyfile(lesson, target)
            recorded[name] = new_hash
            result.updated.append(name)
        else:
            result.kept.append(name)
    record_path.write_text(json.dumps({"lessons": recorded}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return result


def find_notebooks(where: str | os.PathLike[str] | None = None) -> list[Path]:
    """The lessons to run, in order: a folder's ``NN-*.ipynb``, a glob (``notebooks/0[34]-*.ipynb``), or one file.

    Raises:
        FileNotFoundError: nothing matches (the message says what was looked for).
    """
    if where is None:
        folder = notebooks_dir()
        return sorted(folder.glob(NOTEBOOK_PATTERN))
    text = os.fspath(where)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(path.glob(NOTEBOOK_PATTERN)) or sorted(path.glob("*.ipynb"))
    elif path.is_file():
        found = [path]
    else:
        found = sorted(Path(p) for p in glob.glob(str(path)) if p.endswith(".ipynb"))
        if not found and os.sep not in text:
            # a bare pattern like "0[34]-*" names lessons of the default folder
            found = sorted(p for p in notebooks_dir().glob(text) if p.suffix == ".ipynb")
    if not found:
        raise FileNotFoundError(f"no notebooks match {text!r}; give a folder, a file or a glob such as "
                                f"'notebooks/0[34]-*.ipynb'")
    return found


# ------------------------------------------------------------------------------------------------ parameters


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line: VALUE as a Python literal (``5``, ``None``, ``'x'``) or else a string.

    Raises:
        ValueError: no ``=``, or KEY is not a Python name.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise ValueError(f"--param wants KEY=VALUE with KEY a Python name (e.g. RATE=10), not {text!r}")
    try:
        return key, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key, value


def inject_parameters(nb: nbformat.NotebookNode, params: dict[str, Any]) -> nbformat.NotebookNode:
    """Add a cell tagged ``injected-parameters`` right after the cell tagged ``parameters`` (papermill's way).

    The author's defaults stay visible above; the injected values win because they run after them. Without a
    ``parameters`` cell the new cell goes first.
    """
    import nbformat

    if not params:
        return nb
    source = "# Parameters injected by labkit\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"],
                                                       "labkit": {"hugo": "skip"}})
    index = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), -1)
    nb.cells.insert(index + 1, cell)
    return nb


# ------------------------------------------------------------------------------------------------ running


@dataclass
class CellFailure:
    """The cell that stopped a lesson: where it is and what it raised."""

    notebook: str
    index: int
    first_line: str
    error: str

    def __str__(self) -> str:
        return f"{self.notebook}: cell {self.index} ({self.first_line!r}) failed: {self.error}"


@dataclass
class LessonRun:
    """One lesson run: the executed notebook, whether every cell passed, and how long it took."""

    path: Path
    title: str
    nb: nbformat.NotebookNode
    ok: bool
    seconds: float
    failure: CellFailure | None = None
    cell_seconds: list[tuple[int, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem


def _first_line(cell: Any) -> str:
    for line in str(cell.get("source", "")).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return line.strip()[:100]
    return str(cell.get("source", "")).strip().splitlines()[0][:100] if str(cell.get("source", "")).strip() else ""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_notebook(path: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None = None,
                 timeout: float = 600, params: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 progress: Progress | None = _stderr, kernel_name: str = "python3") -> LessonRun:
    """Execute one lesson headless (nbclient) and say whether every cell passed.

    A cell tagged ``raises-exception`` may fail (it shows an error on purpose); any other failure stops the run
    and is described in :attr:`LessonRun.failure`. The executed notebook is returned either way.

    Args:
        path: the ``.ipynb`` file.
        cwd: the kernel's working folder (where the lesson writes files such as a journal); default the
            notebook's folder.
        timeout: seconds one cell may run.
        params: values injected after the ``parameters`` cell.
        env: the kernel's environment (default: this process's).
        progress: called with one line per cell; None for silence.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    from . import export

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, params or {})
    title = export.page_meta(nb, path.stem)["title"]
    name = path.stem
    state: dict[str, Any] = {"index": -1, "started": 0.0}
    timings: list[tuple[int, float]] = []
    codes = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    say = progress or (lambda _line: None)

    def on_start(cell: Any, cell_index: int) -> None:
        state["index"], state["started"] = cell_index, time.monotonic()

    def on_executed(cell: Any, cell_index: int, execute_reply: Any) -> None:
        spent = time.monotonic() - state["started"]
        timings.append((cell_index, spent))
        status = (execute_reply or {}).get("content", {}).get("status", "ok")
        mark = "✓" if status == "ok" else ("!" if "raises-exception" in cell.metadata.get("tags", []) else "✗")
        say(f"  {mark} {name} cell {cell_index} ({codes.index(cell_index) + 1}/{len(codes)}) "
            f"{spent:5.1f} s  {_first_line(cell)}")

    client = NotebookClient(nb, timeout=int(timeout), kernel_name=kernel_name, allow_errors=False,
                            record_timing=True, store_widget_state=True,
                            resources={"metadata": {"path": str(Path(cwd) if cwd else path.parent)}},
                            on_cell_start=on_start, on_cell_executed=on_executed)
    # Local sockets instead of TCP on loopback: nothing else on the machine can connect to the kernel (and the
    # kernel does not warn about unencrypted TCP on every start).
    sockets = tempfile.TemporaryDirectory(prefix="labkit-kernel-")
    client.km = client.create_kernel_manager()
    client.km.transport = "ipc"
    client.km.ip = os.path.join(sockets.name, "kernel")
    say(f"▶ {name}: {title} ({len(codes)} code cells)")
    kernel_env = dict(env if env is not None else os.environ)
    if lesson := re.match(r"(\d\d)-", path.name):  # what the kit reports to a room belongs to this lesson
        kernel_env["LABKIT_LESSON"] = lesson.group(1)
    started = time.monotonic()
    failure: CellFailure | None = None
    try:
        client.execute(env=kernel_env)
    except CellExecutionError as exc:
        failure = _failure(nb, name, state["index"], f"{exc.ename}: {exc.evalue}")
    except DeadKernelError as exc:
        failure = _failure(nb, name, state["index"], f"the kernel died: {exc}")
    except TimeoutError as exc:
        failure = _failure(nb, name, state["index"], f"timed out after {timeout:g} s: {exc}")
    except Exception as exc:  # nbclient's own errors (kernel start-up...) still name the notebook
        failure = _failure(nb, name, state["index"], f"{type(exc).__name__}: {exc}")
    finally:
        sockets.cleanup()
    seconds = time.monotonic() - started
    if failure is None:
        say(f"✓ {name} passed in {seconds:.1f} s")
    else:
        say(f"✗ {failure}")
    return LessonRun(path=path, title=title, nb=nb, ok=failure is None, seconds=seconds, failure=failure,
                     cell_seconds=timings)


def _failure(nb: nbformat.NotebookNode, name: str, index: int, error: str) -> CellFailure:
    cell = nb.cells[index] if 0 <= index < len(nb.cells) else {}
    # keep the message to its first lines: the traceback is in the executed notebook
    short = " ".join(error.strip().splitlines()[:3])
    return CellFailure(notebook=name, index=index, first_line=_first_line(cell) if cell else "", error=short[:400])


# ------------------------------------------------------------------------------------------------ the tour


@dataclass
class TourResult:
    """Every lesson run by :func:`tour`, the site it wrote, and the wall time."""

    runs: list[LessonRun]
    out: Path
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def failures(self) -> list[CellFailure]:
        return [r.failure for r in self.runs if r.failure is not None]


@contextlib.contextmanager
def sandbox_for(dir: str | os.PathLike[str] | None = None, *, time_scale: float = 1.0,
                progress: Progress | None = _stderr) -> Iterator[tuple[Sandbox, bool]]:
    """The sandbox running in ``dir`` (``LABKIT_SANDBOX_DIR``, default folder), or a new one stopped on exit.

    Yields ``(sandbox, started_here)``.
    """
    from .sandbox import Sandbox

    sb = Sandbox(dir, time_scale=time_scale)
    if sb.running():
        sb = Sandbox.attach(sb.dir)
        if progress:
            progress(f"using the sandbox running in {sb.dir} (time scale {sb.time_scale:g})")
        yield sb, False
        return
    if progress:
        progress(f"starting a sandbox in {sb.dir} (time scale {time_scale:g})")
    sb.start()
    try:
        yield sb, True
    finally:
        sb.stop()
        if progress:
            progress(f"sandbox in {sb.dir} stopped")


def tour(out: str | os.PathLike[str], *, notebooks: str | os.PathLike[str] | None = None, time_scale: float = 1.0,
         timeout: float = 600, params: dict[str, Any] | None = None, sandbox_dir: str | os.PathLike[str] | None = None,
         progress: Progress | None = _stderr) -> TourResult:
    """Run every lesson headless against the sandbox and write the site (executed notebooks, HTML, index).

    The sandbox in ``sandbox_dir`` is used if it runs; otherwise one is started at ``time_scale`` and stopped at
    the end. A lesson that fails does not stop the tour: the site marks it, and :attr:`TourResult.ok` is False.
    """
    import nbformat

    from . import export

    paths = find_notebooks(notebooks)
    target = Path(out).expanduser().resolve()
    target.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    say = progress or (lambda _line: None)
    started = time.monotonic()
    runs: list[LessonRun] = []
    with sandbox_for(sandbox_dir or os.environ.get("LABKIT_SANDBOX_DIR"), time_scale=time_scale,
                     progress=progress) as (sb, _):
        env = {k: v for k, v in os.environ.items() if k not in ("LABKIT_KUBECONFIG", "LABKIT_CONTEXT")}
        env["LABKIT_SANDBOX_DIR"] = str(sb.dir)
        env.setdefault("LABKIT_SOLVE", "1")  # headless: an unanswered exercise runs its solution (labkit.checks)
        env.setdefault("LABKIT_ROOM", "")  # a tour is no attendee: it reports to no room, even a joined one
        for path in paths:
            run = run_notebook(path, cwd=target, timeout=timeout, params=params, env=env, progress=progress)
            nbformat.write(run.nb, target / path.name)
            export.write_html(run.nb, target, path.stem)
            runs.append(run)
    result = TourResult(runs=runs, out=target, seconds=time.monotonic() - started)
    _write_index(result)
    say(f"{'✓' if result.ok else '✗'} {sum(r.ok for r in runs)}/{len(runs)} lessons passed in "
        f"{result.seconds:.1f} s; site: {target / 'index.html'}")
    return result


def _write_index(result: TourResult) -> Path:
    rows = []
    for run in result.runs:
        mark = "<span class='ok'>✓ passed</span>" if run.ok else "<span class='fail'>✗ failed</span>"
        detail = "" if run.failure is None else (
            f"<div class='why'>cell {run.failure.index} <code>{html.escape(run.failure.first_line)}</code>: "
            f"{html.escape(run.failure.error)}</div>")
        rows.append(f"<li><a href='{html.escape(run.name)}.html'>{html.escape(run.title)}</a> {mark} "
                    f"<small>{run.seconds:.1f} s · <a href='{html.escape(run.name)}.ipynb'>notebook</a></small>"
                    f"{detail}</li>")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>labkit: test in production</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}}
.ok{{color:#2e7d32}}.fail{{color:#c62828;font-weight:bold}}.why{{color:#c62828;font-size:90%}}
li{{margin:.4em 0}}</style></head>
<body><h1>Test in production</h1>
<p>The lessons, run end to end against the sandbox ({len(result.runs)} lessons, {result.seconds:.0f} s).</p>
<ol>
{chr(10).join(rows)}
</ol></body></html>
"""
    path = result.out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ JupyterLab


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_us() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this process dies, even by SIGKILL
    (``PR_SET_PDEATHSIG``); None elsewhere. ctypes is loaded here, before the fork, not in the child."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # we died between fork and prctl
            os._exit(1)

    return preexec


def lab_environment(kubeconfig: str | os.PathLike[str], sandbox_dir: str | os.PathLike[str],
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of JupyterLab, which its kernels and terminals inherit: the sandbox's ``KUBECONFIG`` and
    ``LABKIT_SANDBOX_DIR``, and labkit's own ``bin`` folder (its ``kubectl``, ``labkit``) first on ``PATH``, so the
    lesson's ``kubectl get pods`` typed in a Terminal or as ``!kubectl`` in a cell reaches the sandbox.

    ``LABKIT_KUBECONFIG``/``LABKIT_CONTEXT`` are dropped: ``labkit.connect()`` in a kernel uses the same sandbox.
    """
    import shutil

    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("LABKIT_KUBECONFIG", "LABKIT_CONTEXT")}
    env["KUBECONFIG"] = str(kubeconfig)
    env["LABKIT_SANDBOX_DIR"] = str(sandbox_dir)
    bindir = Path(sys.executable).parent  # the venv's bin (not resolved: that would leave the venv)
    kubectl = bindir / "kubectl"
    first = [str(bindir)] if kubectl.exists() or (bindir / "labkit").exists() else []
    if not kubectl.exists() and (found := shutil.which("kubectl", path=env.get("PATH"))):
        first.append(str(Path(found).parent))
    env["PATH"] = os.pathsep.join([*first, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in first)])
    return env


def _terminal_shell(env: dict[str, str], workdir: Path) -> list[str]:
    """The command JupyterLab's terminals run: the user's shell, interactive but not a login shell (a login shell
    reads /etc/profile, which resets PATH); bash also gets an rc file that reads ~/.bashrc and then puts labkit's
    ``kubectl`` and ``KUBECONFIG`` back in front, whatever ~/.bashrc did."""
    import shlex
    import shutil

    shell = env.get("SHELL") or shutil.which("bash") or shutil.which("sh") or "/bin/sh"
    if Path(shell).name != "bash":
        return [shell, "-i"]
    rc = workdir / "bashrc"
    first = env["PATH"].split(os.pathsep)[0]
    rc.write_text("# labkit lab's terminals: your ~/.bashrc, then the sandbox's kubectl and KUBECONFIG\n"
                  '[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n'
                  f"export PATH={shlex.quote(first)}:\"$PATH\"\n"
                  f"export KUBECONFIG={shlex.quote(env['KUBECONFIG'])}\n", encoding="utf-8")
    return [shell, "--rcfile", str(rc), "-i"]


def lab(*, port: int | None = None, open_browser: bool = True, notebooks: str | os.PathLike[str] | None = None,
        lessons: str | os.PathLike[str] | None = None, token: str | None = None,
        sandbox_dir: str | os.PathLike[str] | None = None, time_scale: float = 1.0,
        extra_args: list[str] | None = None) -> int:
    """Start JupyterLab on the user's copy of the lessons with the sandbox running; stop both on Ctrl-C or SIGTERM.

    The shipped lessons are copied into ``lessons`` (default ``./labkit-lessons``) by :func:`copy_lessons`, which
    never overwrites one the user edited. ``notebooks`` instead opens that folder as it is. Kernels and terminals
    get the sandbox's ``KUBECONFIG`` and labkit's ``kubectl`` (:func:`lab_environment`). JupyterLab dies with this
    process, even when it is killed with SIGKILL (Linux: ``PR_SET_PDEATHSIG``); so does a sandbox it started.

    Returns JupyterLab's exit code (0 after a clean stop); 2 when the lessons cannot be found or copied.
    """
    import secrets
    import shlex

    if notebooks:
        folder = Path(notebooks).expanduser().resolve()
        if not folder.is_dir():
            _stderr(f"error: {folder} is not a folder of notebooks")
            return 2
    else:
        try:
            copied = copy_lessons(lessons or LESSONS_FOLDER)
        except (FileNotFoundError, NotADirectoryError) as exc:
            _stderr(f"error: {exc}")
            return 2
        folder = copied.folder
        _stderr(copied.summary() + " (the copy is yours: labkit never overwrites a lesson you edited)")
        for name in copied.kept:
            _stderr(f"  kept your edited {name} (the kit ships a different one); for a fresh copy, rename or "
                    f"delete {folder / name} and run `labkit lab` again")
    token = token or secrets.token_hex(24)
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    scratch = tempfile.TemporaryDirectory(prefix="labkit-lab-")
    try:
        with sandbox_for(sandbox_dir or os.environ.get("LABKIT_SANDBOX_DIR"), time_scale=time_scale) as (sb, _):
            if stop["signal"]:
                return 0
            port = port or _free_port()
            env = lab_environment(sb.kubeconfig, sb.dir)
            env["JUPYTER_TOKEN"] = token  # not on the command line, where `ps` shows it to every local user
            shell = shlex.join(_terminal_shell(env, Path(scratch.name)))
            cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}", f"--ServerApp.port={port}",
                   "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.terminado_settings=shell_command={shell}"]
            if not open_browser:
                cmd.append("--no-browser")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.append("--allow-root")
            cmd += list(extra_args or [])
            # its own session: the terminal's Ctrl-C reaches only us, and we stop JupyterLab without its
            # "Shutdown this Jupyter server (y/[n])?" prompt; PR_SET_PDEATHSIG: it dies with us, even on SIGKILL
            proc = subprocess.Popen(cmd, env=env, cwd=folder, stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_us())
            _stderr(f"JupyterLab (pid {proc.pid}) on the lessons in {folder}, sandbox in {sb.dir}\n"
                    f"  kernels and terminals: KUBECONFIG={sb.kubeconfig}, labkit's kubectl on PATH\n"
                    f"  Ctrl-C stops both. Open:")
            print(f"    http://127.0.0.1:{port}/lab?token={token}", flush=True)
            try:
                while proc.poll() is None and not stop["signal"]:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.2)
            finally:
                code = _stop_process(proc)
            return 0 if stop["signal"] else code
    finally:
        scratch.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        # SIGTERM: jupyter_server shuts its kernels down and exits
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    return int(proc.returncode or 0)


# ------------------------------------------------------------------------------------------------ exercises


# The exercise checks (Check, check_selector, check_process, check_verdict, check_restarts, and lesson 7's
# check_service_selector, check_share, check_release) live in labkit.checks, the one check mechanism of every
# lesson; they are imported above under their old names.


def __getattr__(name: str) -> object:
    # RECOVERED_COLUMNS, the columns of wait_recovered(): labkit's one recovery table
    # (labkit.records.RECOVERY_COLUMNS). Looked up on use: the CLI imports this module and must start quickly.
    if name == "RECOVERED_COLUMNS":
        from .records import RECOVERY_COLUMNS

        return RECOVERY_COLUMNS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def wait_recovered(recorder: Recorder, action: ChaosAction, *, timeout: float = 180.0,
                   progress: bool = True) -> RecoveryFrame:
    """Block until every pod ``action`` hit is back: its container restarted and Ready (a kill), or a new pod
    of the same owner Ready in its place (a delete). Returns one row per pod (:data:`RECOVERED_COLUMNS`).

    Waiting for "all Ready" right after a kill can return at once, before the kubelet has even noticed the dead
    process; this waits until the recorder has seen each pod go down and come back
    (:meth:`labkit.observe.Recorder.wait_recovered`).

    Example:
        >>> action = lab.kill("app=details", "ruby", mode="all")
        >>> lessons.wait_recovered(rec, action)
    """
    frame = recorder.wait_recovered(action, timeout=timeout, progress=progress)
    if not action.dry_run and len(frame) and report.room_url():  # the instructor's room sees the figure
        seconds = frame["recovery_s"].dropna()
        report.outcome("recovery", action.selector, recovery_s=float(seconds.max()) if len(seconds) else None)
    return frame


def pause(seconds: float, why: str = "") -> float:
    """Wait ``seconds`` with a progress line (e.g. to let traffic record the steady state); returns the seconds.

    Example:
        >>> lessons.pause(2, "steady state before the kill")
    """
    from .progress import Progress

    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"seconds must be 0 or more, not {seconds!r}")
    bar = Progress(True)
    started = time.monotonic()
    deadline = started + seconds
    label = f"pausing {seconds:g} s" + (f": {why}" if why else "")
    while (left := deadline - time.monotonic()) > 0:
        bar.update(f"{label} ({seconds - left:.1f} s)")
        time.sleep(min(left, 0.25))
    bar.close(f"{label}: done")
    return float(seconds)


def wait_status(recorder: Recorder, status: str, *, since: ChaosAction | None = None,
                timeout: float = 60.0) -> PodState:
    """Block until the recorder sees a pod with kubectl STATUS ``status`` (after ``since``, a chaos action);
    return that row.

    Example:
        >>> lessons.wait_status(rec, "CrashLoopBackOff", since=action)
    """
    return recorder.wait_for(lambda state: state.status == status, timeout,
                             since=since.time if since is not None else None,
                             what=f"a pod in {status}")


class StatusCodes(list[int]):
    """HTTP statuses, one per request, shown one per line like ``curl -w '%{http_code}\\n'`` in a loop prints them."""

    def __repr__(self) -> str:
        return "\n".join(str(code) for code in self)


def status_codes(lab: Lab, url: str, count: int = 10, *, timeout: float = 10.0) -> StatusCodes:
    """istio.io's "primitive load testing": request ``url`` from the tester pod ``count`` times in a row and
    return each HTTP status (0 when no response came).

    Example:
        >>> lessons.status_codes(lab, f"http://{ip}:9080/reviews/7", 10)
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a whole number of requests, 1 or more, not {count!r}")
    return StatusCodes(lab.status_code(url, timeout=timeout) for _ in range(count))


def grep(text: str | ExecResult, pattern: str) -> str:
    """The parts of ``text`` matching ``pattern``, one per line, like ``grep -o`` (case-insensitive).

    Example:
        >>> lessons.grep(lab.request("http://productpage:9080/productpage"), "<title>.*</title>")
        '<title>Simple Bookstore App</title>'
    """
    body = text if isinstance(text, str) else str(getattr(text, "stdout", text))
    return "\n".join(m.group(0) for m in re.finditer(pattern, body, re.IGNORECASE))


# ------------------------------------------------------------------------------------------------ the CLI


def add_commands(subparsers: Any) -> None:
    """Add ``tour``, ``lab`` and ``export`` to labkit's command line."""
    default_dir = os.environ.get("LABKIT_SANDBOX_DIR")

    t = subparsers.add_parser("tour", help="run every lesson headless against the sandbox and write an HTML site")
    t.add_argument("--out", required=True, help="folder for the executed notebooks, their pages and index.html")
    t.add_argument("--notebooks", default=None,
                   help="a folder, a notebook or a glob (default: the repository's notebooks/)")
    t.add_argument("--time-scale", type=float, default=1.0,
                   help="time scale of the sandbox if the tour starts one (default 1: the lesson's real delays)")
    t.add_argument("--timeout", type=float, default=600, help="seconds one cell may run (default 600)")
    t.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a value injected after each lesson's parameters cell (repeatable), e.g. RATE=10")
    t.add_argument("--dir", default=default_dir, help="sandbox state folder (default: $LABKIT_SANDBOX_DIR)")
    t.set_defaults(func=cmd_tour)

    lb = subparsers.add_parser("lab", help="open the lessons in JupyterLab with the sandbox running")
    lb.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    lb.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lb.add_argument("--lessons", default=None, metavar="DIR",
                    help=f"your copy of the lessons (default ./{LESSONS_FOLDER}): created from the shipped ones; "
                         "a lesson you edited is never overwritten (delete it for a fresh copy)")
    lb.add_argument("--notebooks", default=None, metavar="DIR",
                    help="open this folder as it is instead of a copy of the lessons")
    lb.add_argument("--token", "--IdentityProvider.token", dest="token",
                    default=os.environ.get("LABKIT_LAB_TOKEN"),
                    help="JupyterLab's access token (default: $LABKIT_LAB_TOKEN, else a random one)")
    lb.add_argument("--time-scale", type=float, default=1.0, help="time scale of the sandbox if one is started")
    lb.add_argument("--dir", default=default_dir, help="sandbox state folder (default: $LABKIT_SANDBOX_DIR)")
    lb.set_defaults(func=cmd_lab)

    e = subparsers.add_parser("export", help="publish a lesson as one HTML page or an istio.io (Hugo) page")
    e.add_argument("notebook", help="the notebook (executed, so that outputs appear)")
    e.add_argument("--to", choices=("html", "hugo"), required=True)
    e.add_argument("--out", default=".", help="output folder (default: the current one)")
    e.add_argument("--python", action="store_true",
                   help="hugo: also show code cells without a shell equivalent, as Python")
    e.set_defaults(func=cmd_export)


def cmd_tour(args: argparse.Namespace) -> int:
    try:
        params = dict(parse_param(p) for p in args.param)
        result = tour(args.out, notebooks=args.notebooks, time_scale=args.time_scale, timeout=args.timeout,
                      params=params, sandbox_dir=args.dir)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        for failure in result.failures:
            print(f"FAILED {failure}", file=sys.stderr)
        return 1
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    return lab(port=args.port, open_browser=not args.no_browser, notebooks=args.notebooks, lessons=args.lessons,
               token=args.token, sandbox_dir=args.dir, time_scale=args.time_scale)


def cmd_export(args: argparse.Namespace) -> int:
    import nbformat

    from . import export

    path = Path(args.notebook)
    if not path.is_file():
        print(f"error: no notebook {path}", file=sys.stderr)
        return 2
    nb = nbformat.read(path, as_version=4)
    if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        print(f"warning: {path} has no outputs; run it first (labkit tour --out DIR writes executed copies)",
              file=sys.stderr)
    try:
        if args.to == "html":
            written = export.write_html(nb, args.out, path.stem)
        else:
            written = export.write_hugo(nb, args.out, name=path.stem, include_python=args.python)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(written)
    return 0

