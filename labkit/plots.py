"""Figures for the lesson: restarts per pod, pod status over time, page availability, recovery times.

Every function takes the DataFrames the rest of labkit produces and returns a
:class:`matplotlib.figure.Figure`; nothing is shown or saved for you, so a figure is the last expression of a
cell (or ``fig.savefig(...)``).

The figures are built with :class:`~matplotlib.figure.Figure` directly, not with ``pyplot``: ``pyplot``
would register them with the notebook's backend, which then shows each one a second time at the end of the
cell, and it keeps every figure alive until it is closed. They carry their own PNG rendering
(``_repr_png_``), so a notebook shows them (and ``nbconvert`` exports them) whether or not ``pyplot`` was
ever imported. No backend is chosen here.

An empty frame gives a figure that says there is no data and what to do, never an exception.

Example:
    >>> from labkit import plots
    >>> plots.restart_counts(lab.pods())                         # RESTARTS of `kubectl get pods`, as bars
    >>> plots.status_timeline(rec.timeline, rec.actions)         # when pods went down and came back
    >>> plots.availability(traffic.frame)                        # % of requests with each section working
    >>> plots.recovery(rec.recovery())                           # seconds from each kill to Ready again
    >>> plots.version_split(traffic, weights={"v1": 50, "v3": 50})   # which reviews version answered, over time
    >>> plots.latency_percentiles({"2 s delay": slow, "0.5 s timeout": cut})   # p50/p90/p99 per phase
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .bookinfo import SECTIONS, SERVICES, TESTER_APPS

__all__ = [
    "APP_COLORS",
    "STATUS_STYLES",
    "VERSION_COLORS",
    "LabFigure",
    "app_of",
    "availability",
    "latency_percentiles",
    "recovery",
    "restart_counts",
    "status_timeline",
    "version_split",
]

APP_COLORS: dict[str, str] = {
    "details": "#1f77b4",
    "reviews": "#2ca02c",
    "ratings": "#ff7f0e",
    "productpage": "#9467bd",
    "sleep": "#7f7f7f",
    "curl": "#7f7f7f",
}
"""One colour per Bookinfo service, the same in every figure (details is always blue)."""

_APP_ORDER = (*SERVICES, *TESTER_APPS)
_FALLBACK_COLORS = ("#17becf", "#bcbd22", "#e377c2", "#8c564b", "#393b79", "#637939")
_DPI = 100
_WIDTH = 10.0  # inches: 1000 px at 100 dpi, about the width of a notebook cell and of nbconvert's HTML page


@dataclass(frozen=True)
class _Style:
    label: str
    color: str
    hatch: str = ""


STATUS_STYLES: dict[str, _Style] = {
    "ready": _Style("Running, Ready", "#43a047"),
    "not_ready": _Style("Running, not Ready", "#fdd835", "..."),
    "starting": _Style("Pending / starting", "#90caf9"),
    "error": _Style("Error (container exited)", "#e53935", "xx"),
    "crashloop": _Style("CrashLoopBackOff (waiting to restart)", "#6a1b9a", "//"),
    "terminating": _Style("Terminating", "#9e9e9e", "\\\\"),
    "other": _Style("Other", "#d7ccc8"),
}
"""How :func:`status_timeline` draws each kind of pod state (colour, plus a hatch so print and colour-blind
readers can tell red from purple)."""


class LabFigure(Figure):
    """A matplotlib :class:`~matplotlib.figure.Figure` that renders itself as PNG in a notebook.

    IPython calls ``_repr_png_`` only when no backend has registered a PNG formatter for figures (the inline
    backend does once ``pyplot`` is imported); either way the figure appears once, as an image that survives
    ``nbconvert`` HTML export.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=self.dpi, bbox_inches="tight", facecolor="white")
        return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ helpers


def _figure(height: float, width: float = _WIDTH) -> LabFigure:
    # constrained layout keeps long pod names and outside legends from being clipped in the exported PNG
    return LabFigure(figsize=(width, height), dpi=_DPI, layout="constrained", facecolor="white")


def _title(fig: Figure, text: str) -> None:
    # a figure-wide title, left-aligned: it never collides with a legend placed right of the axes
    fig.suptitle(text, x=0.01, ha="left", fontsize=13, fontweight="bold")


def _no_data(title: str, message: str) -> LabFigure:
    fig = _figure(2.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    _title(fig, title)
    ax.text(0.5, 0.5, f"No data to plot.\n{message}", ha="center", va="center", fontsize=11, color="#555555",
            transform=ax.transAxes, wrap=True)
    return fig


def app_of(pod: str) -> str:
    """The Bookinfo service a pod belongs to, from its name when no ``app`` label is at hand.

    Example:
        >>> app_of("details-v1-6d86fd9949-fr59p"), app_of("sleep-88ddbcfdd-l9zq4")
        ('details', 'sleep')
    """
    match = re.match(r"^(.+?)-v\d+-", pod)
    if match:
        return match.group(1)
    # Deployment pods end in -<replicaset hash>-<5 chars>; what is left is the deployment's name.
    parts = pod.split("-")
    return "-".join(parts[:-2]) if len(parts) > 2 else parts[0]


def _app_colors(apps: Iterable[str]) -> dict[str, str]:
    colors: dict[str, str] = {}
    spare = iter(_FALLBACK_COLORS * 4)
    for app in apps:
        if app not in colors:
            colors[app] = APP_COLORS.get(app) or next(spare, "#333333")
    return colors


def _app_rank(app: str) -> tuple[int, str]:
    return (_APP_ORDER.index(app) if app in _APP_ORDER else len(_APP_ORDER), app)


def _action_fields(action: Any) -> dict[str, Any]:
    """The parts of a ChaosAction (or its ``to_dict()``) that a figure needs."""
    if isinstance(action, Mapping):
        get = action.get
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(action, key, default)
    time = get("time")
    return {
        "time": pd.Timestamp(time) if time is not None else None,
        "action": str(get("action", "") or ""),
        "process": get("process"),
        "pods": list(get("pods", []) or []),
        "dry_run": bool(get("dry_run", False)),
        "signal": get("signal"),
    }


def _action_label(fields: dict[str, Any]) -> str:
    n = len(fields["pods"])
    pods = f"{n} pod{'s' if n != 1 else ''}"
    if fields["action"] == "kill":
        text = f"pkill {fields['process'] or ''}".strip() + f" · {pods}"
    elif fields["action"] == "delete":
        text = f"delete {pods}"
    else:
        text = f"{fields['action'] or 'action'} · {pods}"
    return text + (" (dry run)" if fields["dry_run"] else "")


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc_series(values: pd.Series) -> pd.Series:
    series = pd.to_datetime(values)
    if getattr(series.dt, "tz", None) is None:
        return series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC")


def _seconds(times: pd.Series | pd.Timestamp, t0: pd.Timestamp) -> Any:
    delta = times - t0
    if isinstance(delta, pd.Series):
        return delta.dt.total_seconds().to_numpy(dtype=float)
    return float(delta.total_seconds())


def _stack_labels(fig: Figure, labels: Sequence[Any], levels: int = 3, step: float = 13.0) -> None:
    """Raise each action label that would overlap one already placed onto a row above (up to ``levels`` rows).

    The widths are the labels' real extents once laid out (a label is ~20 % of the axis wide), so two kills a
    few seconds apart no longer print "pkill ruby · 3pkillsruby · 3 pods".
    """
    if len(labels) < 2:
        return
    fig.draw_without_rendering()
    boxes = [(label.get_window_extent(), label) for label in labels]
    ends: list[float] = []  # per row, the right edge of its last label, in pixels
    for box, label in sorted(boxes, key=lambda pair: pair[0].x0):
        free = [row for row, end in enumerate(ends) if end + 6 <= box.x0]
        if free:
            row = free[0]
        elif len(ends) < levels:
            row = len(ends)
            ends.append(0.0)
        else:  # more labels than rows at one place: the row whose last label ends first
            row = min(range(len(ends)), key=ends.__getitem__)
        ends[row] = max(ends[row], box.x1)
        label.xyann = (label.xyann[0], 4 + step * row)


# ------------------------------------------------------------------------------------------------ restarts


def restart_counts(pods: pd.DataFrame, *, title: str | None = None) -> LabFigure:
    """The RESTARTS column of ``kubectl get pods`` as one bar per pod, coloured by service.

    Args:
        pods: ``lab.pods()`` (columns ``name``, ``app``, ``restarts``, ``status``) or
            ``Recorder.restart_counts()`` (columns ``pod``, ``app``, ``restarts``).
        title: replaces the default title.

    Returns:
        The figure; a pod whose STATUS is not ``Running`` has it written next to its bar.

    Example:
        >>> lab.kill("app=details", mode="all")
        >>> plots.restart_counts(lab.pods())      # details 1/1/1 (2/1/1 after the lesson's two steps)
    """
    title = title or "Container restarts per pod"
    if pods is None or len(pods) == 0:
        return _no_data(title, "No pods were given. Check the selector with lab.pods(); an empty namespace "
                               "has nothing to restart.")
    name_col = "name" if "name" in pods.columns else "pod" if "pod" in pods.columns else None
    if name_col is None or "restarts" not in pods.columns:
        raise ValueError("restart_counts needs a pods table with a 'name' (or 'pod') column and a 'restarts' "
                         f"column, like lab.pods(); got columns {list(pods.columns)}")
    frame = pd.DataFrame({
        "name": pods[name_col].astype(str),
        "restarts": pd.to_numeric(pods["restarts"], errors="coerce").fillna(0).astype(int),
    })
    labels = pods["app"].tolist() if "app" in pods.columns else [None] * len(pods)
    # a pod without an app label still gets a colour: the service its name starts with
    frame["app"] = [a if isinstance(a, str) and a else app_of(n)
                    for a, n in zip(labels, frame["name"], strict=True)]
    frame["status"] = pods["status"].astype(str).to_numpy() if "status" in pods.columns else "Running"
    # kubectl sorts by name; keep that order top to bottom so the figure reads like the table
    frame = frame.sort_values("name", ignore_index=True)
    colors = _app_colors(sorted(frame["app"].unique(), key=_app_rank))

    n = len(frame)
    fig = _figure(1.6 + 0.34 * n)
    ax = fig.add_subplot()
    y = np.arange(n)
    ax.barh(y, frame["restarts"], color=[colors[a] for a in frame["app"]], height=0.7, edgecolor="white")
    top = max(int(frame["restarts"].max()), 3)
    for yi, (count, status) in enumerate(zip(frame["restarts"], frame["status"], strict=True)):
        note = f"{count}" + (f"   {status}" if status not in ("Running", "nan", "") else "")
        ax.text(count + top * 0.01, yi, note, va="center", ha="left", fontsize=9,
                color="#c62828" if status not in ("Running", "nan", "") else "#222222")
    ax.set_yticks(y, frame["name"], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("restarts (RESTARTS column of kubectl get pods)")
    ax.set_ylabel("pod")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    total = int(frame["restarts"].sum())
    _title(fig, f"{title}  ·  {total} restart{'s' if total != 1 else ''} in {n} pods")
    handles = [Patch(facecolor=colors[a], label=a) for a in colors]
    fig.legend(handles=handles, title="service (app)", loc="outside right upper", fontsize=9, frameon=False)
    return fig


# ------------------------------------------------------------------------------------------------ timeline


def _status_kind(status: str, ready: Any, event: str) -> str:
    status = status or ""
    if event == "DELETED" or status in ("Terminating", "Unknown"):
        return "terminating"
    if status == "CrashLoopBackOff" or "BackOff" in status:
        return "crashloop"
    if status in ("Error", "OOMKilled") or status.startswith(("ExitCode", "Signal", "Init:Error")):
        return "error"
    if status == "Running":
        return "ready" if bool(ready) and not pd.isna(ready) else "not_ready"
    if status in ("Pending", "ContainerCreating", "PodInitializing") or status.startswith("Init:"):
        return "starting"
    if status == "NotReady":
        return "not_ready"
    return "other"


def status_timeline(timeline: Any, actions: Iterable[Any] = (), *, end: Any = None,
                    title: str | None = None) -> Figure:
    """One row per pod, coloured by what ``kubectl get pods`` showed over time, with the chaos actions marked.

    Spans are Running+Ready (green), Running but not Ready (yellow), Error (red), CrashLoopBackOff (purple),
    Terminating (grey). A red ✕ marks each pod an action hit; a black dot marks each container restart; the
    restart count at the end is written right of each row. A state shorter than 0.4 % of the time axis is
    drawn that wide so that a 50 ms ``Error`` is still visible.

    Args:
        timeline: ``Recorder.timeline`` (:data:`labkit.observe.TIMELINE_COLUMNS`), or the Recorder itself (its
            timeline and actions are used).
        actions: the ChaosActions (or their ``to_dict()``) to draw as vertical lines.
        end: where the time axis stops (default: the last event or action, plus a little).
        title: replaces the default title.

    Example:
        >>> with lab.record() as rec:
        ...     lab.kill("app=details")
        ...     lab.kill("app=details", mode="all")
        ...     lab.wait_ready()
        >>> plots.status_timeline(rec)
    """
    title = title or "Pod status over time"
    if hasattr(timeline, "timeline") and not isinstance(timeline, pd.DataFrame):
        recorder = timeline
        timeline = recorder.timeline
        actions = list(actions) or list(getattr(recorder, "actions", []) or [])
    marks = [f for f in (_action_fields(a) for a in actions) if f["time"] is not None]
    if timeline is None or len(timeline) == 0:
        return _no_data(title, "The recorder saw no pod events. Start it before the chaos "
                               "(with lab.record() as rec: ...) and check its selector.")
    needed = {"time", "pod", "status"}
    if not needed <= set(timeline.columns):
        raise ValueError(f"status_timeline needs a timeline with columns {sorted(needed)} like "
                         f"Recorder.timeline; got {list(timeline.columns)}")
    tl = timeline.copy()
    tl["time"] = _utc_series(tl["time"])
    tl = tl.sort_values("time", kind="stable", ignore_index=True)
    for col, default in (("ready", False), ("event", ""), ("restarts", 0), ("app", "")):
        if col not in tl.columns:
            tl[col] = default
    for mark in marks:
        mark["time"] = _utc(mark["time"])

    t0 = min([tl["time"].iloc[0], *(m["time"] for m in marks)])
    t_last = max([tl["time"].iloc[-1], *(m["time"] for m in marks)])
    raw_span = max(_seconds(t_last, t0), 1.0)
    t_end = _seconds(_utc(end), t0) if end is not None else raw_span * 1.04 + 0.5
    span = max(t_end, 1e-9)
    min_width = span * 0.004

    apps = {p: (a if isinstance(a, str) and a else app_of(p))
            for p, a in tl.groupby("pod", sort=False)["app"].last().items()}
    pods = sorted(apps)  # kubectl's order: by name
    row = {p: i for i, p in enumerate(pods)}
    n = len(pods)
    fig = _figure(2.2 + 0.42 * n)
    ax = fig.add_subplot()

    seen: set[str] = set()
    restart_x: list[float] = []
    restart_y: list[int] = []
    final_restarts: dict[str, int] = {}
    deleted: set[str] = set()
    for pod, rows in tl.groupby("pod", sort=False):
        rows = rows.reset_index(drop=True)
        xs = _seconds(rows["time"], t0)
        previous_restarts: int | None = None
        for j in range(len(rows)):
            r = rows.iloc[j]
            restarts = int(r["restarts"]) if not pd.isna(r["restarts"]) else 0
            if previous_restarts is not None and restarts > previous_restarts:
                restart_x.append(float(xs[j]))
                restart_y.append(row[pod])
            previous_restarts = restarts
            final_restarts[pod] = restarts
            if r["event"] == "DELETED":
                deleted.add(pod)
                continue  # the pod is gone: nothing to draw after this point
            start = float(xs[j])
            stop = float(xs[j + 1]) if j + 1 < len(rows) else t_end
            if stop <= start and j + 1 < len(rows):
                continue  # superseded within the same instant
            kind = _status_kind(str(r["status"]), r["ready"], str(r["event"]))
            style = STATUS_STYLES[kind]
            seen.add(kind)
            ax.broken_barh([(start, max(stop - start, min_width))], (row[pod] - 0.38, 0.76),
                           facecolors=style.color, edgecolor="#555555" if style.hatch else style.color,
                           linewidth=0.3, hatch=style.hatch)

    if restart_x:
        ax.scatter(restart_x, restart_y, s=22, color="black", zorder=4, marker="o", edgecolors="white",
                   linewidths=0.8)
    for i, pod in enumerate(pods):
        count = final_restarts.get(pod, 0)
        note = f"{count} restart{'s' if count != 1 else ''}" + (" · deleted" if pod in deleted else "")
        ax.annotate(note, xy=(1.005, i),
                    xycoords=("axes fraction", "data"), va="center", fontsize=8.5,
                    color="#c62828" if count else "#666666")

    # the chaos actions: a dashed line each, a label above the plot, a ✕ on every pod it hit
    hit_x: list[float] = []
    hit_y: list[int] = []
    action_labels = []
    for mark in marks:
        x = _seconds(mark["time"], t0)
        color = "#9e9e9e" if mark["dry_run"] else "#d62728"
        ax.axvline(x, color=color, linestyle="--" if not mark["dry_run"] else ":", linewidth=1.6, zorder=5)
        action_labels.append(ax.annotate(_action_label(mark), xy=(x, 1.0), xycoords=("data", "axes fraction"),
                                         xytext=(3, 4), textcoords="offset points", fontsize=9, color=color,
                                         fontweight="bold", ha="left", va="bottom", annotation_clip=False))
        if not mark["dry_run"]:
            for pod in mark["pods"]:
                if pod in row:
                    hit_x.append(x)
                    hit_y.append(row[pod])
    if hit_x:
        ax.scatter(hit_x, hit_y, s=70, marker="X", color="#d62728", edgecolors="white", linewidths=0.8,
                   zorder=6)

    ax.set_yticks(range(n), pods, fontsize=9)
    for tick, pod in zip(ax.get_yticklabels(), pods, strict=True):
        tick.set_color(APP_COLORS.get(apps[pod], "#222222"))
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, t_end)
    ax.set_xlabel(f"seconds since {t0.strftime('%H:%M:%S')} UTC")
    ax.set_ylabel("pod")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    _title(fig, title)

    order = ["ready", "not_ready", "starting", "error", "crashloop", "terminating", "other"]
    handles: list[Any] = [Patch(facecolor=STATUS_STYLES[k].color, hatch=STATUS_STYLES[k].hatch,
                                edgecolor="#555555", label=STATUS_STYLES[k].label)
                          for k in order if k in seen]
    if marks:
        handles.append(Line2D([], [], color="#d62728", linestyle="--", label="chaos action"))
    if hit_x:
        handles.append(Line2D([], [], color="#d62728", marker="X", linestyle="", markersize=8,
                              label="pod hit"))
    if restart_x:
        handles.append(Line2D([], [], color="black", marker="o", linestyle="", markersize=5,
                              label="container restarted"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=9,
               frameon=False)
    _stack_labels(fig, action_labels)
    return fig


# ----------------------------------------------------------------------------------------------- availability

_SECTIONS = SECTIONS
_LINES: dict[str, dict[str, Any]] = {
    # The page line is wide and pale underneath, sections are drawn over it with distinct dashes and markers,
    # so lines that overlap at 100 % stay distinguishable.
    "page": {"color": "#bdbdbd", "linewidth": 7, "linestyle": "-", "label": "page (HTTP 200)", "zorder": 1},
    "details": {"color": APP_COLORS["details"], "linewidth": 2.2, "linestyle": "-", "marker": "o",
                "markersize": 3.5, "zorder": 4},
    "reviews": {"color": APP_COLORS["reviews"], "linewidth": 2.2, "linestyle": "--", "marker": "s",
                "markersize": 3.5, "zorder": 3},
    "ratings": {"color": APP_COLORS["ratings"], "linewidth": 2.2, "linestyle": ":", "marker": "^",
                "markersize": 3.5, "zorder": 2},
}


def _availability_table(frame: pd.DataFrame, freq: str) -> tuple[pd.DataFrame, pd.Series | None]:
    """Per time bucket: page and section availability as fractions 0..1 (NaN: no data), and request counts."""
    if {"status", "latency_ms"} <= set(frame.columns) and "time" in frame.columns:
        # One row per request: bucket it the way Traffic.availability does, so figure and numbers agree
        from . import traffic

        frame = traffic.availability(frame, freq)
    table = frame.copy()
    if "time" in table.columns:
        table = table.set_index(_utc_series(table["time"]))
    if not isinstance(table.index, pd.DatetimeIndex):
        raise ValueError("availability needs Traffic.frame (columns time, status, latency_ms, details, ...) "
                         "or Traffic.availability() (a time index or column, and per-section columns 0..1); "
                         f"got columns {list(frame.columns)}")
    if table.index.tz is None:
        table.index = table.index.tz_localize("UTC")
    out = pd.DataFrame(index=table.index)
    counts = pd.to_numeric(table["requests"], errors="coerce") if "requests" in table.columns else None
    if "page" in table.columns:
        out["page"] = pd.to_numeric(table["page"], errors="coerce").astype(float)
    elif "ok" in table.columns and counts is not None:
        out["page"] = pd.to_numeric(table["ok"], errors="coerce").astype(float) / counts.replace(0, np.nan)
    for name in _SECTIONS:
        if name in table.columns:
            out[name] = pd.to_numeric(table[name], errors="coerce").astype(float)
    return out, counts


def availability(traffic_frame_or_availability: pd.DataFrame, freq: str = "1s", *,
                 actions: Iterable[Any] = (), title: str | None = None) -> Figure:
    """The share of requests in each time bucket where the page answered 200 and each section worked.

    Degradation reads off it directly: after ``pkill ruby`` in every details pod, the details line dips while
    reviews and the page stay at 100 % (gradual degradation, not a cascading failure).

    Args:
        traffic_frame_or_availability: ``Traffic.frame`` (one row per request, :data:`labkit.traffic.
            TRAFFIC_COLUMNS`) or ``Traffic.availability()``; a Traffic object is accepted too.
        freq: the bucket width for a per-request frame (a pandas offset, e.g. ``"1s"``, ``"500ms"``).
        actions: ChaosActions to mark as vertical lines.
        title: replaces the default title.

    Example:
        >>> with labkit.traffic.Traffic(lab, rate=5) as traffic:
        ...     lab.kill("app=details", mode="all")
        ...     lab.wait_ready()
        >>> plots.availability(traffic.frame)
    """
    title = title or "Availability of the product page, per section"
    data = traffic_frame_or_availability
    if hasattr(data, "frame") and not isinstance(data, pd.DataFrame):
        data = data.frame
    if data is None or len(data) == 0:
        return _no_data(title, "No requests were recorded. Start the traffic before the chaos and keep it "
                               "running until the pods recover (Traffic(lab).start() ... .stop()).")
    table, counts = _availability_table(data, freq)
    marks = [f for f in (_action_fields(a) for a in actions) if f["time"] is not None]
    if len(table) == 0 or table.dropna(how="all").empty:
        return _no_data(title, "The requests carry no status or section data to plot.")
    t0 = min([table.index[0], *(_utc(m["time"]) for m in marks)])
    # each point sits in the middle of its bucket, so a dip lines up with the kill that caused it
    half = pd.Timedelta(freq) / 2 if len(table) > 1 else pd.Timedelta(0)
    x = ((table.index - t0) + half).total_seconds().to_numpy(dtype=float)

    fig = _figure(4.8)
    ax = fig.add_subplot()
    notes = []
    for name in ("page", *_SECTIONS):
        if name not in table.columns:
            continue
        values = table[name].to_numpy(dtype=float) * 100
        if np.isnan(values).all():
            notes.append(f"{name}: not shown on the page in any response (no data)")
            continue
        style = dict(_LINES[name])
        label = style.pop("label", name)
        ax.plot(x, values, label=f"{label}: min {np.nanmin(values):.0f} %, mean {np.nanmean(values):.0f} %",
                drawstyle="default", **style)

    action_labels = []
    for mark in marks:
        xm = _seconds(_utc(mark["time"]), t0)
        ax.axvline(xm, color="#d62728", linestyle="--", linewidth=1.4, zorder=5)
        action_labels.append(ax.annotate(_action_label(mark), xy=(xm, 1.0), xycoords=("data", "axes fraction"),
                                         xytext=(3, 4), textcoords="offset points", fontsize=9, color="#d62728",
                                         fontweight="bold", annotation_clip=False))

    ax.set_ylim(-4, 106)
    ax.yaxis.set_major_formatter(PercentFormatter(100))
    ax.set_ylabel("requests with it working")
    ax.set_xlabel(f"seconds since {t0.strftime('%H:%M:%S')} UTC ({freq} buckets)")
    ax.grid(alpha=0.3)
    total = int(counts.sum()) if counts is not None and len(counts) else None
    subtitle = f"  ·  {total} requests" if total is not None else ""
    _title(fig, title + subtitle)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], linestyle="", label=note) for note in notes]
    labels += notes
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    _stack_labels(fig, action_labels)
    return fig


# ------------------------------------------------------------------------------------------------ recovery


def recovery(recovery_frame: pd.DataFrame, *, title: str | None = None) -> LabFigure:
    """Seconds from each chaos action to the pod it hit being Ready again, one bar per (pod, action).

    Args:
        recovery_frame: ``Recorder.recovery()`` (columns pod, action_time, down_at, ready_at, recovery_s,
            restarts_before, restarts_after). A pod that never became Ready again gets a hatched bar and a
            note.
        title: replaces the default title.

    Example:
        >>> plots.recovery(rec.recovery())
    """
    title = title or "Time to recover: from the chaos action to Ready again"
    if recovery_frame is None or len(recovery_frame) == 0:
        return _no_data(title, "No pod was hit while recording. Run the chaos inside "
                               "`with lab.record() as rec:` and wait for the pods (lab.wait_ready()) before "
                               "stopping the recorder.")
    if not {"pod", "recovery_s"} <= set(recovery_frame.columns):
        raise ValueError("recovery needs Recorder.recovery() (columns pod, recovery_s, ...); got "
                         f"{list(recovery_frame.columns)}")
    frame = recovery_frame.reset_index(drop=True).copy()
    if "action_time" in frame.columns:
        frame = frame.sort_values(["action_time", "pod"], kind="stable", ignore_index=True)
    seconds = pd.to_numeric(frame["recovery_s"], errors="coerce").astype(float).to_numpy()
    pods = frame["pod"].astype(str).tolist()
    labels = []
    if "action_time" in frame.columns and frame["action_time"].notna().any():
        times = _utc_series(frame["action_time"])
        t0 = times.min()
        offsets = (times - t0).dt.total_seconds()
        # one kill of several pods hits them milliseconds apart: offsets only help when actions are apart
        many = (times.max() - times.min()).total_seconds() >= 0.5
        labels = [f"{p}  (action at +{o:.1f} s)" if many else p for p, o in zip(pods, offsets, strict=True)]
    else:
        labels = pods
    finite = seconds[~np.isnan(seconds)]
    top = float(finite.max()) if len(finite) else 1.0
    top = max(top, 0.1)
    colors = _app_colors(sorted({app_of(p) for p in pods}, key=_app_rank))

    n = len(frame)
    fig = _figure(1.7 + 0.38 * n)
    ax = fig.add_subplot()
    y = np.arange(n)
    for yi, (pod, value) in enumerate(zip(pods, seconds, strict=True)):
        color = colors[app_of(pod)]
        if np.isnan(value):
            ax.barh(yi, top * 1.1, color="white", edgecolor="#c62828", hatch="//", height=0.7)
            ax.text(top * 0.02, yi, "not Ready again while recording", va="center", fontsize=9,
                    color="#c62828", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
        else:
            ax.barh(yi, value, color=color, height=0.7)
            ax.text(float(value) + top * 0.01, yi, f"{value:.1f} s", va="center", fontsize=9)
    if len(finite):
        median = float(np.median(finite))
        ax.axvline(median, color="#333333", linestyle=":", linewidth=1.2, label=f"median {median:.1f} s")
    ax.set_yticks(y, labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("seconds until Ready again")
    ax.set_ylabel("pod hit")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    _title(fig, title)
    handles: list[Artist] = [Patch(facecolor=colors[a], label=a) for a in colors]
    if len(finite):
        handles.append(Line2D([], [], color="#333333", linestyle=":",
                              label=f"median {np.median(finite):.1f} s"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return fig


# ------------------------------------------------------------------------------------------------ the mesh

VERSION_COLORS: dict[str, str] = {"v1": "#9e9e9e", "v2": "#212121", "v3": "#d32f2f", "unknown": "#bdbdbd"}
"""Reviews versions as the page draws them: v1 no stars (grey), v2 black stars, v3 red stars."""


def _served_frame(data: Any) -> pd.DataFrame:
    """A :attr:`Traffic.served` frame from a Traffic or the frame itself."""
    served = getattr(data, "served", data)
    if not isinstance(served, pd.DataFrame) or not {"time", "version"} <= set(served.columns):
        raise ValueError("version_split needs a Traffic or its .served frame (columns time, version, pod); got "
                         f"{type(data).__name__}")
    return served


def version_split(traffic_or_served: Any, freq: str = "1s", *, weights: Mapping[str, float] | None = None,
                  title: str | None = None) -> LabFigure:
    """The traffic split by reviews version over time: per time bin, the share of page loads each version served,
    stacked to 100 % (v1 grey, v2 black, v3 red, as the stars the page draws), with the number of page loads per
    bin above and, when ``weights`` are given, the configured split as dashed lines.

    Args:
        traffic_or_served: a :class:`~labkit.traffic.Traffic` or its ``served`` frame.
        freq: the bin width ("1s", "500ms").
        weights: the rule's weights in percent, e.g. ``{"v1": 50, "v3": 50}``.
        title: replaces the default title.

    Example:
        >>> plots.version_split(traffic, weights={"v1": 50, "v3": 50})
    """
    from .traffic import version_split as split

    title = title or "Traffic split by reviews version"
    table = split(_served_frame(traffic_or_served), freq)
    if table.empty:
        return _no_data(title, "No page load showed the reviews. Run traffic first: "
                               "traffic = lab.traffic(rate=10).run(5).")
    versions = [c for c in table.columns if c not in ("time", "requests")]
    t0 = table["time"].iloc[0]
    x = (table["time"] - t0).dt.total_seconds().to_numpy()
    width = pd.Timedelta(freq).total_seconds()
    fig = _figure(4.2)
    ax = fig.add_subplot()
    bottom = np.zeros(len(table))
    totals = {v: 0 for v in versions}
    for v in versions:
        share = table[v].fillna(0).to_numpy(dtype=float)
        ax.bar(x, share, width=width * 0.92, bottom=bottom, align="edge", color=VERSION_COLORS.get(v, "#64b5f6"),
               edgecolor="white", linewidth=0.5)
        bottom += share
        totals[v] = round(float((table[v].fillna(0) * table["requests"]).sum()))
    overall = sum(totals.values()) or 1
    if weights:
        level = 0.0
        for v in versions:
            level += float(weights.get(v, 0)) / 100
            if 0 < level < 1:
                ax.axhline(level, color="#1565c0", linestyle="--", linewidth=1.2)
    for xi, n in zip(x, table["requests"], strict=True):
        ax.text(xi + width * 0.46, 1.01, str(int(n)), ha="center", va="bottom", fontsize=8, color="#555555")
    ax.set_ylim(0, 1.08)
    ax.set_xlim(x.min(), x.max() + width)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(f"seconds since the first request (bins of {freq}; page loads per bin on top)")
    ax.set_ylabel("share of page loads")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _title(fig, title)
    handles: list[Artist] = [Patch(facecolor=VERSION_COLORS.get(v, "#64b5f6"),
                                   label=f"{v}: {totals[v] / overall:.0%} ({totals[v]})") for v in versions]
    if weights:
        handles.append(Line2D([], [], color="#1565c0", linestyle="--", label="configured split"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return fig


def latency_percentiles(phases: Mapping[str, Any], *, quantiles: Sequence[float] = (0.5, 0.9, 0.99),
                        expected: Mapping[str, float] | None = None, title: str | None = None) -> LabFigure:
    """Latency percentiles (p50, p90, p99) of the page under each phase of fault injection, as grouped bars.

    Args:
        phases: a label per phase (``"2 s delay"``) and its :class:`~labkit.traffic.Traffic` or traffic frame.
        quantiles: which percentiles.
        expected: a label per phase and the latency the rules predict, in seconds, drawn as a marker.
        title: replaces the default title.

    Example:
        >>> plots.latency_percentiles({"2 s delay": slow, "0.5 s timeout": cut})
    """
    from .traffic import latency_percentiles as percentiles

    title = title or "Page latency under fault injection"
    frames = {label: getattr(data, "frame", data) for label, data in phases.items()}
    values = {label: percentiles(frame, tuple(quantiles)) for label, frame in frames.items()
              if isinstance(frame, pd.DataFrame) and len(frame)}
    if not values:
        return _no_data(title, "No requests were recorded. Run traffic in each phase: lab.traffic(rate=5).run(3).")
    labels = list(values)
    keys = [f"p{q * 100:g}" for q in quantiles]
    shades = ["#90caf9", "#1e88e5", "#0d47a1", "#002171"]
    fig = _figure(4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    x = np.arange(len(labels))
    top = 0.0
    for i, key in enumerate(keys):
        seconds = [((values[label][key] or 0.0) / 1000) for label in labels]
        top = max([top, *seconds])
        bars = ax.bar(x - 0.4 + width * (i + 0.5), seconds, width=width * 0.95, color=shades[i % len(shades)],
                      label=key)
        for bar, value in zip(bars, seconds, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    if expected:
        for xi, label in enumerate(labels):
            if label in expected:
                ax.plot([xi - 0.45, xi + 0.45], [expected[label]] * 2, color="#c62828", linestyle="--",
                        linewidth=1.4)
                top = max(top, float(expected[label]))
    counts = [len(frames[label]) for label in labels]
    ax.set_xticks(x, [f"{label}\n({n} requests)" for label, n in zip(labels, counts, strict=True)], fontsize=9)
    ax.set_ylim(0, max(top, 0.1) * 1.2)
    ax.set_ylabel("seconds until the page arrived")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _title(fig, title)
    handles: list[Artist] = [Patch(facecolor=shades[i % len(shades)], label=k) for i, k in enumerate(keys)]
    if expected:
        handles.append(Line2D([], [], color="#c62828", linestyle="--", label="what the rules predict"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=9, frameon=False)
    return fig
