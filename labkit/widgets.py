"""Notebook controls built from ipywidgets: factories that return a widget and never display it themselves.

The callbacks call the library (:mod:`labkit.chaos`, :mod:`labkit.observe`, :mod:`labkit.plots`) and keep what
they did on the widget, so a test can ``click()`` a button and look at the result, and the last state of every
widget still reads well in a notebook exported to HTML.

Example:
    >>> from labkit import widgets
    >>> panel = widgets.chaos_panel(lab)
    >>> panel                     # pick a service, kill it in one pod or all, watch RESTARTS go up
    >>> panel.actions             # what the buttons did (ChaosAction records)
    >>> panel.stop()              # stop its pod watch when you are done
"""

from __future__ import annotations

import base64
import html
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import ipywidgets as W
import pandas as pd

from . import chaos, plots
from .bookinfo import LESSON_ORDER, PROCESSES, TESTER_APPS
from .client import Client
from .errors import LabkitError
from .observe import Recorder
from .records import ChaosAction, PodState

__all__ = ["DEFAULT_PROCESSES", "ChaosPanel", "chaos_panel"]

DEFAULT_PROCESSES: dict[str, str] = PROCESSES
"""The main process of each Bookinfo service, the one ``pkill`` kills (the lesson kills ``ruby`` in details)."""

_OK, _BAD, _WARN, _INFO = "#2e7d32", "#c62828", "#ef6c00", "#555555"


def _message(text: str, color: str = _INFO, *, detail: str = "") -> str:
    extra = f"<div style='color:#555;font-size:90%'>{html.escape(detail)}</div>" if detail else ""
    return f"<div style='color:{color};margin:4px 0'>{html.escape(text)}{extra}</div>"


_CELL = "padding:2px 14px 2px 0;"  # columns apart, like kubectl's: without it "READYSTATUS", RESTARTS 4 + AGE "4103s"


def _pods_table(frame: pd.DataFrame, highlight: Sequence[str] = (), app: str = "") -> str:
    """``kubectl get pods`` as HTML; rows carry data-pod/data-restarts/data-status for tests and scrapers."""
    head = (f"<tr><th style='{_CELL}text-align:left'>NAME</th><th style='{_CELL}'>READY</th>"
            f"<th style='{_CELL}text-align:left'>STATUS</th><th style='{_CELL}text-align:right'>RESTARTS</th>"
            f"<th style='{_CELL}text-align:right'>AGE</th></tr>")
    body = []
    for r in frame.to_dict(orient="records"):
        name, status, restarts = str(r["name"]), str(r["status"]), int(r["restarts"])
        color = _OK if status == "Running" and r["ready_containers"] == r["containers"] else (
            _BAD if status in ("Error", "CrashLoopBackOff") else _WARN)
        style = []
        if name in highlight:
            style.append("background:#ffebee")  # the pods the last action hit
        elif app and r["app"] == app:
            style.append("background:#f5f5f5")  # the service the panel targets
        body.append(
            f"<tr data-pod=\"{html.escape(name, quote=True)}\" data-restarts=\"{restarts}\" "
            f"data-status=\"{html.escape(status, quote=True)}\" style='{';'.join(style)}'>"
            f"<td style='{_CELL}'><code>{html.escape(name)}</code></td>"
            f"<td style='{_CELL}text-align:center'>{html.escape(str(r['ready']))}</td>"
            f"<td style='{_CELL}color:{color}'><b>{html.escape(status)}</b></td>"
            f"<td style='{_CELL}text-align:right'>{restarts}</td>"
            f"<td style='{_CELL}text-align:right;color:#777'>{html.escape(str(r['age']))}</td></tr>")
    if not body:
        body.append("<tr><td colspan=5 style='color:#777'>No pods in this namespace.</td></tr>")
    return (f"<table class='labkit-pods' style='font-family:monospace;border-collapse:collapse'>"
            f"{head}{''.join(body)}</table>")


class ChaosPanel(W.VBox):  # ipywidgets has no types: see the mypy override in pyproject.toml
    """The lesson's chaos steps as buttons, with the pods table and the restart plot that answer them.

    Build it with :func:`chaos_panel`. Attributes (widgets unless said otherwise):

    Attributes:
        app: Dropdown of the services to hit.
        process: Text, the process ``pkill`` kills; follows the service (details → ruby).
        kill_one, kill_all, delete_one: Buttons.
        refresh_button: Button that redraws the table and plot.
        confirm: Checkbox that "kill all" requires, every time (it unticks itself after use).
        dry_run: Checkbox: only show what would be hit.
        status: HTML, what the last click did (or why it did nothing).
        table: HTML, ``kubectl get pods`` of the namespace, updated as pods change.
        plot: Output holding the restart counts figure.
        actions: list of the :class:`~labkit.chaos.ChaosAction` records the buttons produced.
        recorder: the :class:`~labkit.observe.Recorder` watching the namespace (its timeline has every kill:
            ``plots.status_timeline(panel.recorder)``); None with ``live=False``.
        frame: the last pods DataFrame shown in the table.
    """

    def __init__(self, lab: Client, apps: Sequence[str], *, live: bool = True) -> None:
        self.lab = lab
        self.actions: list[ChaosAction] = []
        self.frame: pd.DataFrame = pd.DataFrame()
        self.recorder: Recorder | None = None
        self.error: BaseException | None = None
        self._lock = threading.RLock()
        self._throttle = threading.Lock()
        self._timer: threading.Timer | None = None
        self._last_draw = 0.0
        self._plotted: tuple[tuple[str, int], ...] | None = None
        self._highlight: list[str] = []
        self._pending: dict[str, tuple[int, str]] = {}  # pod -> (restarts before the kill, action summary)
        self._unsubscribe: Callable[[], None] | None = None

        options = list(apps)
        first = options[0] if options else None
        self.app = W.Dropdown(options=options, value=first, description="service")
        self.process = W.Text(value=DEFAULT_PROCESSES.get(first or "", ""), description="process",
                              placeholder="e.g. ruby")
        self.kill_one = W.Button(description="kill in one pod", icon="bolt", button_style="warning",
                                 tooltip="kubectl exec <first pod> -- pkill <process>")
        self.kill_all = W.Button(description="kill in all pods", icon="bomb", button_style="danger",
                                 tooltip="pkill <process> in every pod of the service (tick the box first)")
        self.delete_one = W.Button(description="delete one pod", icon="trash",
                                   tooltip="kubectl delete pod <first pod>: a NEW pod replaces it")
        self.refresh_button = W.Button(description="refresh", icon="refresh", tooltip="kubectl get pods")
        self.confirm = W.Checkbox(value=False, description="I mean ALL pods of the service", indent=False)
        self.dry_run = W.Checkbox(value=False, description="dry run (only show which pods)", indent=False)
        self.status = W.HTML(_message("Pick a service and a button. Nothing has been done yet."))
        self.table = W.HTML()
        self.plot = W.Output()
        header = W.HTML(f"<b>Chaos panel</b> · namespace <code>{html.escape(lab.namespace)}</code>"
                        f"{' (embedded sandbox)' if lab.is_sandbox else ''}")

        self.app.observe(self._on_app, names="value")
        self.kill_one.on_click(lambda _b: self._act("kill_one"))
        self.kill_all.on_click(lambda _b: self._act("kill_all"))
        self.delete_one.on_click(lambda _b: self._act("delete_one"))
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__(children=[
            header,
            W.HBox([self.app, self.process]),
            W.HBox([self.kill_one, self.kill_all, self.delete_one, self.refresh_button]),
            W.HBox([self.confirm, self.dry_run]),
            self.status,
            self.table,
            self.plot,
        ])
        if not options:
            for button in (self.kill_one, self.kill_all, self.delete_one):
                button.disabled = True
            self.status.value = _message(f"No Bookinfo service found in namespace {lab.namespace}. Deploy it "
                                         "(labkit.manifest_path('bookinfo.yaml')) and build the panel again.", _BAD)
        self.refresh()
        if live:
            self._start_watch()

    # -- the watch that keeps the table current
    def _start_watch(self) -> None:
        self.recorder = Recorder(self.lab).start()
        self._unsubscribe = self.recorder.subscribe(self._on_rows)

    def _on_rows(self, states: list[PodState]) -> None:
        # Called from the recorder's thread: note restarts of the pods a kill hit, then redraw at most 5x a second
        # (and always once after the last change).
        self._settle([(s.pod, s.restarts, s.event == "DELETED") for s in states])
        with self._throttle:
            if self._timer is not None:
                return
            wait = max(0.0, 0.2 - (time.monotonic() - self._last_draw))
            self._timer = threading.Timer(wait, self._redraw_from_watch)
            self._timer.daemon = True
            self._timer.start()

    def _settle(self, seen: list[tuple[str, int, bool]]) -> None:
        """Say so in the status when a pod a kill hit has restarted (or a deleted pod is gone).

        Args:
            seen: (pod, RESTARTS, deleted) as the table or the recorder shows them now.
        """
        with self._lock:
            for pod, restarts, deleted in seen:
                pending = self._pending.get(pod)
                if pending and (restarts > pending[0] or deleted):
                    del self._pending[pod]
                    what = ("was deleted; its ReplicaSet creates a new pod" if deleted
                            else f"restarted: RESTARTS {pending[0]} → {restarts}, same pod name")
                    self._append_status(f"✓ {pod} {what}.", _OK)

    def _redraw_from_watch(self) -> None:
        with self._throttle:
            self._timer = None
            self._last_draw = time.monotonic()
        try:
            self.refresh()
        except Exception as exc:  # the cluster went away mid-lesson: keep the error where the panel shows it
            self.error = exc
            self._append_status(f"Could not refresh the pods table: {exc}", _BAD)

    def _append_status(self, text: str, color: str) -> None:
        self.status.value = self.status.value + _message(text, color)

    # -- drawing
    def refresh(self) -> pd.DataFrame:
        """Read the pods again (``kubectl get pods``) and redraw the table, and the plot if restarts changed.

        Returns:
            The pods DataFrame now shown (:data:`~labkit.lab.POD_COLUMNS`).
        """
        with self._lock:
            frame = self.lab.pods()
            self.frame = frame
            self.table.value = _pods_table(frame, self._highlight, str(self.app.value or ""))
            counts = tuple(zip(frame["name"].tolist(), frame["restarts"].astype(int).tolist(), strict=True))
            if counts != self._plotted:
                self._plotted = counts
                self._draw_plot(frame)
            return frame

    def _draw_plot(self, frame: pd.DataFrame) -> None:
        fig = plots.restart_counts(frame, title="Restarts per pod (kubectl get pods)")
        png = fig._repr_png_()
        # Setting the Output's outputs directly works from any thread (a `with output:` block captures only in
        # the thread that runs the cell) and is what static HTML export reads from the saved widget state.
        self.plot.outputs = ({"output_type": "display_data",
                              "data": {"image/png": base64.b64encode(png).decode("ascii"),
                                       "text/plain": "<restart counts figure>"},
                              "metadata": {}},)

    # -- the buttons
    def _on_app(self, change: dict[str, Any]) -> None:
        self.process.value = DEFAULT_PROCESSES.get(str(change["new"] or ""), "")
        self.refresh()

    def _act(self, which: str) -> None:
        app = str(self.app.value or "")
        selector = f"app={app}"
        dry = bool(self.dry_run.value)
        if not app:
            self.status.value = _message("Pick a service first.", _BAD)
            return
        if which == "kill_all" and not self.confirm.value and not dry:
            self.status.value = _message(
                f"Not done: “kill in all pods” stops {app} in every pod at once, so nothing is left to serve "
                f"{app} until they restart. Tick “{self.confirm.description}” and click again (or tick dry run "
                "to see which pods it would hit).", _WARN)
            return
        buttons = (self.kill_one, self.kill_all, self.delete_one)
        for button in buttons:
            button.disabled = True
        self.status.value = _message(f"Working on {selector}…")
        try:
            pods = self.lab.pods(selector)
            before = {str(n): int(r) for n, r in zip(pods["name"], pods["restarts"], strict=True)}
            if which == "delete_one":
                action = chaos.delete_pods(self.lab, selector, mode="one", dry_run=dry)
            else:
                action = chaos.kill(self.lab, selector, self.process.value.strip(),
                                    mode="all" if which == "kill_all" else "one", dry_run=dry,
                                    confirm=which == "kill_all")
        except (LabkitError, ValueError) as exc:  # a guard rail or a bad process name: the panel says so
            self.status.value = _message(f"Not done: {exc}", _BAD)
            return
        except Exception as exc:
            self.error = exc
            self.status.value = _message(f"Failed: {type(exc).__name__}: {exc}", _BAD)
            raise
        finally:
            for button in buttons:
                button.disabled = False
        if which == "kill_all" and not dry:
            self.confirm.value = False  # every "all" is a deliberate choice
        with self._lock:
            self.actions.append(action)
            self._highlight = list(action.pods)
            self.status.value = self._describe(action)
            for hit in action.landed:
                self._pending[hit.pod] = (before.get(hit.pod, 0), action.summary())
            frame = self.refresh()
            # a fast restart may have happened before the pods were registered as pending: settle those now
            now = {str(n): int(r) for n, r in zip(frame["name"], frame["restarts"], strict=True)}
            self._settle([(pod, now.get(pod, 0), pod not in now) for pod in list(self._pending)])

    def _describe(self, action: ChaosAction) -> str:
        when = datetime.now(UTC).strftime("%H:%M:%S")
        if action.dry_run:
            head = (f"Dry run at {when}: {action.summary()}. Nothing was done; it would hit "
                    f"{', '.join(action.pods) or 'no pod'}.")
            return _message(head, _INFO, detail="; ".join(f"skipped {s}" for s in action.skipped))
        lines = [_message(f"{when}: {action.summary()}", _OK if action.ok else _BAD)]
        for hit in action.results:
            lines.append(_message(f"  {hit.pod}: {hit.note or ('ok' if hit.ok else '')}", _OK if hit.ok else _BAD))
        for skipped in action.skipped:
            lines.append(_message(f"  skipped {skipped}", _INFO))
        if action.landed:
            if self._unsubscribe is None:  # stopped (or live=False): nothing redraws by itself
                lines.append(_message("Click refresh to see the " + ("restart." if action.action == "kill"
                                                                     else "new pod."), _INFO))
            else:
                lines.append(_message("Watching for the restart… the table updates by itself."
                                      if action.action == "kill"
                                      else "Watching for the new pod… the table updates by itself.", _INFO))
        return "".join(lines)

    # -- lifecycle
    def stop(self) -> None:
        """Stop watching the pods; the table and plot keep their last state, redrawn now.

        The redraw happens in the caller's cell, so it reaches the notebook's saved widget state (a redraw from
        the watch's thread after the last cell ran would not, and the exported page would show a stale table).
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._throttle:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self.recorder is not None:
            self.recorder.stop()
        try:
            self.refresh()
        except LabkitError as exc:  # the cluster is gone: the last drawing stays
            self.error = exc
        # A redraw from the watch's thread may already have set these values: the kernel then sends no change,
        # and the saved state would keep the drawing before it. Send them again, from this cell.
        self.table.send_state("value")
        self.status.send_state("value")
        self.plot.send_state("outputs")

    def close(self) -> None:
        """Stop watching and close the widget."""
        self.stop()
        super().close()


def _discover_apps(lab: Client) -> list[str]:
    present = {a for a in lab.pods()["app"].tolist() if a and a not in TESTER_APPS}
    return [a for a in LESSON_ORDER if a in present] + sorted(present - set(LESSON_ORDER))


def chaos_panel(lab: Client, *, apps: Sequence[str] | None = None, live: bool = True) -> ChaosPanel:
    """A panel with the lesson's chaos steps as buttons, the pods table and the restarts plot.

    "kill in one pod" is the lesson's ``kubectl exec <first details pod> -- pkill ruby``; "kill in all pods" its
    for-loop over every details pod (it needs the confirm box ticked, every time); "delete one pod" shows the
    other kind of failure: a new pod instead of a restarted container. The table follows the pods live (a
    watch, not polling) and the plot redraws when RESTARTS change.

    Args:
        lab: the connection.
        apps: the services offered (default: those running in the namespace, tester pods excluded).
        live: keep the table current from a pod watch (``panel.stop()`` ends it); False draws on refresh only.

    Returns:
        A :class:`ChaosPanel` (an ``ipywidgets.VBox``); display it as a cell's last expression.

    Example:
        >>> panel = widgets.chaos_panel(lab)
        >>> panel
        >>> panel.kill_one.click()          # the same as clicking the button
        >>> panel.actions[-1]
    """
    offered = list(apps) if apps is not None else _discover_apps(lab)
    unknown = [a for a in offered if a in TESTER_APPS]
    if unknown:
        raise LabkitError(f"the tester pod ({', '.join(unknown)}) is never a chaos target; offer the Bookinfo "
                          "services instead, e.g. apps=['details', 'ratings']")
    return ChaosPanel(lab, offered, live=live)
