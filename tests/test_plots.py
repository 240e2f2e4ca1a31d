"""labkit.plots: the lesson's figures from frames shaped like the library's, checked by their parts and as PNGs.

Set LABKIT_PLOT_DIR to keep the PNGs for a human look (they are written to pytest's tmp dir otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests only: the library itself never picks a backend

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from labkit import plots
from labkit.lab import POD_COLUMNS

T0 = pd.Timestamp("2026-11-26T15:00:00Z")
LESSON_PODS = [
    "details-v1-6d86fd9949-fr59p", "details-v1-6d86fd9949-mksv7", "details-v1-6d86fd9949-q8rrf",
    "productpage-v1-c9965499-hwhcn", "productpage-v1-c9965499-nccwq", "productpage-v1-c9965499-tjdjx",
    "ratings-v1-7bf577cb77-cbdsg", "ratings-v1-7bf577cb77-cz6jm", "ratings-v1-7bf577cb77-pq9kg",
    "reviews-v1-77c65dc5c6-5wt8g", "reviews-v1-77c65dc5c6-kjvxs", "reviews-v1-77c65dc5c6-r55tl",
    "sleep-88ddbcfdd-l9zq4",
]
DETAILS = LESSON_PODS[:3]


def save(fig: Figure, tmp_path: Path, name: str) -> Path:
    """Write the PNG the way a notebook export would show it, and keep a copy when LABKIT_PLOT_DIR is set."""
    path = tmp_path / f"{name}.png"
    fig.savefig(path, bbox_inches="tight")
    keep = os.environ.get("LABKIT_PLOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def texts(fig: Figure) -> str:
    """Every piece of text drawn in the figure (titles, labels, ticks, legends, annotations)."""
    found = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(t for t in found if t)


def legend_labels(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def lesson_pods(restarts: list[int]) -> pd.DataFrame:
    """`lab.pods()` as the lesson's `kubectl get pods` shows it (POD_COLUMNS, same dtypes)."""
    rows = [{"name": n, "ready": "1/1", "status": "Running", "restarts": r, "age": "48m", "app": n.split("-")[0],
             "version": "v1" if "-v1-" in n else "", "ip": f"10.0.0.{i}", "node": "node-1", "namespace": "default",
             "containers": 1, "ready_containers": 1, "created": T0} for i, (n, r) in enumerate(zip(LESSON_PODS,
                                                                                                restarts,
                                                                                                strict=True))]
    return pd.DataFrame(rows, columns=list(POD_COLUMNS)).astype(POD_COLUMNS)


def lesson_timeline() -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """A recorder timeline of the lesson: pkill ruby in the first details pod, then in all three; the first pod
    goes into CrashLoopBackOff after its second kill."""
    from labkit.observe import TIMELINE_COLUMNS

    rows: list[dict[str, object]] = []

    def add(s: float, pod: str, status: str, ready: bool, restarts: int, event: str = "MODIFIED",
            reason: str = "", state: str = "running") -> None:
        rows.append({"time": T0 + pd.Timedelta(seconds=s), "pod": pod, "app": pod.split("-")[0], "event": event,
                     "phase": "Running", "ready": ready, "status": status, "restarts": restarts, "reason": reason,
                     "exit_code": pd.NA, "state": state})

    for pod in LESSON_PODS:
        add(0, pod, "Running", True, 0, event="ADDED")
    add(5.0, DETAILS[0], "Error", False, 0, reason="Error", state="terminated")
    add(6.0, DETAILS[0], "Running", False, 1)
    add(7.5, DETAILS[0], "Running", True, 1)
    for pod in DETAILS:
        add(12.0, pod, "Error", False, 1 if pod == DETAILS[0] else 0, reason="Error", state="terminated")
    add(12.4, DETAILS[0], "CrashLoopBackOff", False, 1, reason="CrashLoopBackOff", state="waiting")
    for pod in DETAILS[1:]:
        add(13.0, pod, "Running", False, 1)
        add(14.5, pod, "Running", True, 1)
    add(22.5, DETAILS[0], "Running", False, 2)
    add(24.0, DETAILS[0], "Running", True, 2)
    frame = pd.DataFrame(rows, columns=list(TIMELINE_COLUMNS)).astype(TIMELINE_COLUMNS)
    actions: list[dict[str, object]] = [
        {"time": T0 + pd.Timedelta(seconds=5), "action": "kill", "process": "ruby", "pods": [DETAILS[0]],
         "dry_run": False, "selector": "app=details", "mode": "one"},
        {"time": T0 + pd.Timedelta(seconds=12), "action": "kill", "process": "ruby", "pods": list(DETAILS),
         "dry_run": False, "selector": "app=details", "mode": "all"},
    ]
    return frame, actions


def lesson_traffic() -> pd.DataFrame:
    """Traffic.frame at 5 requests/s for 30 s; details fails from 12 s to 14.8 s, reviews never, no ratings."""
    from labkit.traffic import TRAFFIC_COLUMNS

    seconds = np.arange(0, 30, 0.2)
    down = (seconds >= 12) & (seconds < 14.8)
    frame = pd.DataFrame({
        "time": T0 + pd.to_timedelta(seconds, unit="s"),
        "status": 200,
        "latency_ms": 12.0,
        "details": ~down,
        "reviews": True,
        "ratings": pd.array([None] * len(seconds), dtype="boolean"),
        "error": "",
    })
    return frame.astype(TRAFFIC_COLUMNS)


# ------------------------------------------------------------------------------------------------- restarts


def test_restart_counts_shows_the_lessons_second_table(tmp_path: Path) -> None:
    fig = plots.restart_counts(lesson_pods([2, 1, 1] + [0] * 10))
    assert isinstance(fig, Figure)
    assert "Container restarts per pod" in fig.get_suptitle()
    assert "4 restarts in 13 pods" in fig.get_suptitle()
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("restarts") and ax.get_ylabel() == "pod"
    # one bar per pod, in kubectl's order, with the lesson's counts
    assert [t.get_text() for t in ax.get_yticklabels()] == LESSON_PODS
    assert [round(p.get_width()) for p in ax.patches] == [2, 1, 1] + [0] * 10
    # coloured by service, with a legend naming the services
    details_color = to_hex(ax.patches[0].get_facecolor())
    assert details_color == plots.APP_COLORS["details"]
    assert to_hex(ax.patches[9].get_facecolor()) == plots.APP_COLORS["reviews"]
    assert set(legend_labels(fig)) == {"details", "productpage", "ratings", "reviews", "sleep"}
    width, height = png_size(save(fig, tmp_path, "restart_counts"))
    assert 800 <= width <= 1400 and 400 <= height <= 900, (width, height)


def test_restart_counts_accepts_a_recorders_frame_and_notes_bad_statuses() -> None:
    frame = pd.DataFrame({"pod": DETAILS, "app": ["details"] * 3, "restarts": [3, 0, 1]})
    fig = plots.restart_counts(frame)
    assert [round(p.get_width()) for p in fig.axes[0].patches] == [3, 0, 1]
    pods = lesson_pods([3] + [0] * 12)
    pods.loc[0, "status"] = "CrashLoopBackOff"
    assert "CrashLoopBackOff" in texts(plots.restart_counts(pods))


def test_restart_counts_colours_a_pod_without_an_app_label_by_its_name() -> None:
    pods = lesson_pods([0] * 13)
    pods["app"] = ""
    ax = plots.restart_counts(pods).axes[0]
    assert to_hex(ax.patches[0].get_facecolor()) == plots.APP_COLORS["details"]
    assert plots.app_of("productpage-v1-c9965499-hwhcn") == "productpage"
    assert plots.app_of("sleep-88ddbcfdd-l9zq4") == "sleep"


# ------------------------------------------------------------------------------------------------- timeline


def test_status_timeline_shows_crashloop_and_the_two_kills(tmp_path: Path) -> None:
    timeline, actions = lesson_timeline()
    fig = plots.status_timeline(timeline, actions)
    assert isinstance(fig, Figure)
    assert fig.get_suptitle() == "Pod status over time"
    ax = fig.axes[0]
    assert ax.get_xlabel() == "seconds since 15:00:00 UTC"
    assert ax.get_ylabel() == "pod"
    assert [t.get_text() for t in ax.get_yticklabels()] == LESSON_PODS
    labels = legend_labels(fig)
    for expected in ("Running, Ready", "Running, not Ready", "Error (container exited)",
                     "CrashLoopBackOff (waiting to restart)", "chaos action", "pod hit", "container restarted"):
        assert expected in labels
    # two dashed vertical lines, at 5 s and 12 s, each labelled with what it did
    verticals = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")
    assert verticals == pytest.approx([5.0, 12.0])
    drawn = texts(fig)
    assert "pkill ruby · 1 pod" in drawn and "pkill ruby · 3 pods" in drawn
    assert "2 restarts" in drawn and "1 restart" in drawn
    # the first details pod's row has a CrashLoopBackOff span from 12.4 s to its restart at 22.5 s
    crash = plots.STATUS_STYLES["crashloop"].color
    spans = [(c.get_paths()[0].get_extents(), to_hex(c.get_facecolor()[0]))
             for c in ax.collections if isinstance(c, PolyCollection)]
    crash_spans = [box for box, color in spans if color == crash]
    assert len(crash_spans) == 1
    assert crash_spans[0].x0 == pytest.approx(12.4) and crash_spans[0].x1 == pytest.approx(22.5)
    assert crash_spans[0].y0 < 0 < crash_spans[0].y1  # row 0: details-v1-...-fr59p
    width, height = png_size(save(fig, tmp_path, "status_timeline"))
    assert 800 <= width <= 1400 and 500 <= height <= 1100, (width, height)


def test_status_timeline_accepts_chaos_actions_and_a_recorder_like_object() -> None:
    from labkit.chaos import ChaosAction

    timeline, actions = lesson_timeline()
    objects = [ChaosAction(time=a["time"], action="kill", selector="app=details", namespace="default",  # type: ignore[arg-type]
                           mode=str(a["mode"]), pods=list(a["pods"]), process="ruby", signal="SIGTERM",  # type: ignore[call-overload]
                           grace_period=None, dry_run=False, results=[], skipped=[]) for a in actions]

    class Rec:  # what plots reads from a Recorder: .timeline and .actions
        def __init__(self) -> None:
            self.timeline, self.actions = timeline, objects

    fig = plots.status_timeline(Rec())
    assert "pkill ruby · 3 pods" in texts(fig)
    dry = dict(actions[1], dry_run=True)
    fig = plots.status_timeline(timeline, [dry])
    assert "(dry run)" in texts(fig)
    assert "pod hit" not in legend_labels(fig)  # a dry run hits nobody


def test_status_timeline_draws_a_deleted_pod_only_until_it_is_gone() -> None:
    timeline, _ = lesson_timeline()
    ratings = LESSON_PODS.index("ratings-v1-7bf577cb77-cbdsg")
    gone = timeline.iloc[[ratings]].copy()  # the ADDED row of that pod
    assert gone["pod"].iloc[0] == LESSON_PODS[ratings]
    gone["time"] = T0 + pd.Timedelta(seconds=3)
    gone["event"] = "DELETED"
    gone["status"] = "Terminating"
    fig = plots.status_timeline(pd.concat([timeline, gone], ignore_index=True))
    row = [c.get_paths()[0].get_extents() for c in fig.axes[0].collections
           if isinstance(c, PolyCollection) and ratings - 0.5 < c.get_paths()[0].get_extents().y0 < ratings]
    assert row and max(box.x1 for box in row) == pytest.approx(3.0)
    assert "0 restarts · deleted" in texts(fig)


# ------------------------------------------------------------------------------------------------- availability


def test_availability_shows_the_details_dip_while_reviews_stay_at_100(tmp_path: Path) -> None:
    frame = lesson_traffic()
    _, actions = lesson_timeline()
    fig = plots.availability(frame, actions=actions)
    assert isinstance(fig, Figure)
    assert fig.get_suptitle().startswith("Availability of the product page")
    assert "150 requests" in fig.get_suptitle()
    ax = fig.axes[0]
    assert ax.get_ylabel() == "requests with it working"
    assert "seconds since 15:00:00 UTC" in ax.get_xlabel()
    lines = {line.get_label().split(":")[0]: np.asarray(line.get_ydata(), dtype=float) for line in ax.lines
             if not line.get_label().startswith("_")}
    assert set(lines) == {"page (HTTP 200)", "details", "reviews"}
    assert lines["details"].min() == 0 and lines["details"].max() == 100
    assert (lines["reviews"] == 100).all() and (lines["page (HTTP 200)"] == 100).all()
    assert ax.get_ylim()[0] < 0 and ax.get_ylim()[1] > 100
    labels = legend_labels(fig)
    assert "details: min 0 %, mean 91 %" in labels
    assert "reviews: min 100 %, mean 100 %" in labels
    assert any(label.startswith("ratings: not shown") for label in labels)
    width, height = png_size(save(fig, tmp_path, "availability"))
    assert 800 <= width <= 1400 and 350 <= height <= 700, (width, height)


def test_availability_accepts_traffic_availability_and_other_bucket_widths() -> None:
    from labkit.traffic import availability

    per_second = availability(lesson_traffic(), "1s")
    fig = plots.availability(per_second)
    details = next(line for line in fig.axes[0].lines if line.get_label().startswith("details"))
    assert len(details.get_xdata()) == 30 and np.nanmin(details.get_ydata()) == 0
    fig = plots.availability(lesson_traffic(), freq="5s")
    details = next(line for line in fig.axes[0].lines if line.get_label().startswith("details"))
    assert len(details.get_xdata()) == 6
    assert "5s buckets" in fig.axes[0].get_xlabel()


def test_availability_of_a_failing_page() -> None:
    frame = lesson_traffic()
    frame.loc[frame.index[50:60], "status"] = 503
    frame.loc[frame.index[50:60], ["details", "reviews"]] = False
    fig = plots.availability(frame)
    page = next(line for line in fig.axes[0].lines if line.get_label().startswith("page"))
    assert np.nanmin(page.get_ydata()) == 0


# ------------------------------------------------------------------------------------------------- recovery


def test_recovery_bars_and_a_pod_that_never_came_back(tmp_path: Path) -> None:
    _, actions = lesson_timeline()
    frame = pd.DataFrame({
        "pod": [DETAILS[0], DETAILS[0], DETAILS[1], DETAILS[2]],
        "action_time": [actions[0]["time"], actions[1]["time"], actions[1]["time"], actions[1]["time"]],
        "down_at": pd.NaT, "ready_at": pd.NaT,
        "recovery_s": [2.5, 12.0, 2.5, np.nan], "restarts_before": [0, 1, 0, 0], "restarts_after": [1, 2, 1, 0],
    })
    fig = plots.recovery(frame)
    ax = fig.axes[0]
    assert fig.get_suptitle().startswith("Time to recover")
    assert ax.get_xlabel() == "seconds until Ready again" and ax.get_ylabel() == "pod hit"
    assert [round(p.get_width(), 1) for p in ax.patches[:3]] == [2.5, 12.0, 2.5]
    drawn = texts(fig)
    assert "12.0 s" in drawn and "not Ready again while recording" in drawn
    assert "(action at +7.0 s)" in drawn
    assert "median 2.5 s" in legend_labels(fig)
    width, _ = png_size(save(fig, tmp_path, "recovery"))
    assert 800 <= width <= 1400


# ------------------------------------------------------------------------------------------------- edges


def test_empty_frames_give_a_no_data_figure(tmp_path: Path) -> None:
    from labkit.observe import TIMELINE_COLUMNS
    from labkit.traffic import TRAFFIC_COLUMNS

    def empty(columns: dict[str, str]) -> pd.DataFrame:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in columns.items()})

    figures = {
        "restart_counts": plots.restart_counts(empty(POD_COLUMNS)),
        "status_timeline": plots.status_timeline(empty(TIMELINE_COLUMNS), []),
        "availability": plots.availability(empty(TRAFFIC_COLUMNS)),
        "recovery": plots.recovery(pd.DataFrame(columns=["pod", "action_time", "down_at", "ready_at",
                                                         "recovery_s", "restarts_before", "restarts_after"])),
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        assert fig.get_suptitle(), name
        assert "No data to plot." in texts(fig), name
        png_size(save(fig, tmp_path, f"empty_{name}"))


def test_frames_that_are_not_what_a_plot_needs_are_named() -> None:
    with pytest.raises(ValueError, match=r"needs a pods table with a 'name' \(or 'pod'\) column"):
        plots.restart_counts(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match="status_timeline needs a timeline with columns"):
        plots.status_timeline(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match=r"availability needs Traffic\.frame"):
        plots.availability(pd.DataFrame({"x": [1]}))
    with pytest.raises(ValueError, match=r"recovery needs Recorder.recovery\(\)"):
        plots.recovery(pd.DataFrame({"x": [1]}))


def test_figures_render_in_a_notebook_without_pyplot() -> None:
    fig = plots.restart_counts(lesson_pods([0] * 13))
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[attr-defined]
    from IPython.core.formatters import PNGFormatter

    assert PNGFormatter()(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_importing_plots_leaves_the_backend_and_pyplot_alone() -> None:
    code = ("import sys, matplotlib; before = matplotlib.rcParams._get_backend_or_none(); "
            "import labkit.plots; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'plots imported pyplot'; "
            "assert matplotlib.rcParams._get_backend_or_none() == before; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_kill_labels_close_in_time_never_overlap() -> None:
    """Two kills a few seconds apart on a long timeline: their labels are stacked, not drawn over each other."""
    timeline, actions = lesson_timeline()
    # 14 s after the first kill on a 100 s axis: more than a tenth of the axis, less than a label's width
    late = dict(actions[1], time=T0 + pd.Timedelta(seconds=19), pods=list(DETAILS[1:]))
    fig = plots.status_timeline(timeline, [*actions, late], end=T0 + pd.Timedelta(seconds=100))
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in fig.axes[0].texts if t.get_text().startswith("pkill")]
    assert len(boxes) == 3
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), f"labels overlap: {a} and {b}"
