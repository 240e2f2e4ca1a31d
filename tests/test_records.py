"""labkit.records without a cluster: the one "went down", the one recovery table, the display bundles."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from labkit.page import ProductPage
from labkit.records import (
    LABKIT_MIME,
    RECOVERY_COLUMNS,
    ChaosAction,
    ExecResult,
    PodHit,
    PodState,
    RecoveryFrame,
    json_safe,
    mime_bundle,
    recovery_frame,
    recovery_table,
    went_down,
)

T0 = pd.Timestamp("2026-11-29T12:00:00Z")


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def state(t: float, pod: str, *, event: str = "MODIFIED", ready: bool = True, status: str = "Running",
          restarts: int = 0, owner: str = "rs-details") -> PodState:
    return PodState(time=at(t), pod=pod, app="details", event=event, phase="Running",  # type: ignore[arg-type]
                    ready=ready, status=status, restarts=restarts, uid=pod, owner=owner)


def action(kind: str, t: float, *pods: str, ok: bool = True, dry_run: bool = False) -> ChaosAction:
    return ChaosAction(time=at(t), action=kind, selector="app=details", namespace="default",  # type: ignore[arg-type]
                       mode="one", pods=list(pods), process="ruby" if kind == "kill" else None,
                       signal="SIGTERM" if kind == "kill" else None, dry_run=dry_run,
                       results=[] if dry_run else [PodHit(p, at(t), ok=ok, returncode=0 if ok else None,
                                                          note="ruby got SIGTERM" if ok else "not run")
                                                   for p in pods])


def test_went_down_is_one_rule() -> None:
    assert not went_down(state(0, "a"))
    assert went_down(state(0, "a", ready=False))
    assert went_down(state(0, "a", status="Error", ready=False))
    assert went_down(state(0, "a", event="DELETED"))
    assert went_down(state(0, "a", status="CrashLoopBackOff", ready=False))
    # a restart between two states labkit saw: Running and Ready both times, one more restart
    assert went_down(state(0, "a", restarts=1), restarts_before=0)
    assert not went_down(state(0, "a", restarts=1), restarts_before=1)


def test_a_killed_pod_recovers_when_the_same_pod_is_ready_again() -> None:
    states = [state(0, "a", event="ADDED"), state(0, "b", event="ADDED"),
              state(1.5, "a", ready=False, status="Error"), state(2.5, "a", restarts=1)]
    rows = recovery_table(states, [action("kill", 1, "a")])
    assert len(rows) == 1
    row = rows[0]
    assert (row.pod, row.action, row.replaced_by) == ("a", "kill", "")
    assert (row.down_s, row.recovery_s, row.restarts_before, row.restarts_after) == (0.5, 1.5, 0, 1)
    assert row.recovered


def test_a_kill_not_seen_down_has_no_recovery_and_dry_runs_and_misses_are_left_out() -> None:
    states = [state(0, "a", event="ADDED"), state(0, "b", event="ADDED")]
    rows = recovery_table(states, [action("kill", 1, "a"), action("kill", 2, "b", ok=False),
                                   action("kill", 3, "b", dry_run=True), action("kill", 4, "elsewhere")])
    assert [(r.pod, r.down_at, r.ready_at) for r in rows] == [("a", None, None)]
    assert not rows[0].recovered and pd.isna(rows[0].recovery_s)


def test_a_deleted_pod_recovers_when_a_replacement_of_the_same_owner_is_ready() -> None:
    states = [state(0, "a", event="ADDED"), state(0, "b", event="ADDED"),
              state(0, "other", event="ADDED", owner="rs-reviews"),
              state(1.2, "a", event="DELETED", ready=False, status="Terminating"),
              state(1.3, "b", event="DELETED", ready=False, status="Terminating"),
              state(1.4, "r-reviews", event="ADDED", ready=False, status="Pending", owner="rs-reviews"),
              state(1.5, "new1", event="ADDED", ready=False, status="Pending"),
              state(1.6, "new2", event="ADDED", ready=False, status="Pending"),
              state(2.0, "new2"), state(3.0, "new1")]
    rows = recovery_table(states, [action("delete", 1, "a", "b")])
    # the first replacement Ready goes to the first pod deleted; another owner's new pod is never a replacement
    assert [(r.pod, r.replaced_by, r.recovery_s) for r in rows] == [("a", "new2", 1.0), ("b", "new1", 2.0)]
    frame = recovery_frame(rows)
    assert list(frame.columns) == list(RECOVERY_COLUMNS) and isinstance(frame, RecoveryFrame)
    assert {k: str(v) for k, v in frame.dtypes.items()} == \
        {k: str(pd.Series(dtype=v).dtype) for k, v in RECOVERY_COLUMNS.items()}


def test_the_recovery_frame_carries_its_rows_as_a_labkit_record() -> None:
    states = [state(0, "a", event="ADDED"), state(1.5, "a", ready=False, status="Error"),
              state(2.5, "a", restarts=1), state(0, "b", event="ADDED")]
    frame = recovery_frame(recovery_table(states, [action("kill", 1, "a"), action("kill", 3, "b")]))
    bundle = frame._repr_mimebundle_()
    record = json.loads(json.dumps(bundle[LABKIT_MIME]))
    assert record["kind"] == "recovery" and record["columns"] == list(RECOVERY_COLUMNS)
    assert record["rows"][0][:3] == ["a", "kill", at(1).isoformat()]
    assert record["rows"][0][record["columns"].index("recovery_s")] == 1.5
    assert record["rows"][1][record["columns"].index("ready_at")] is None  # b never went down: NaT -> null
    assert "restarts_after" in str(bundle["text/plain"])
    # a selection, as a notebook cell shows it, is still the record
    part = frame[["pod", "recovery_s"]]
    assert isinstance(part, RecoveryFrame)
    assert part._repr_mimebundle_()[LABKIT_MIME] == {"kind": "recovery", "columns": ["pod", "recovery_s"],
                                                     "rows": [["a", 1.5], ["b", None]]}
    empty = recovery_frame([])._repr_mimebundle_()[LABKIT_MIME]
    assert empty == {"kind": "recovery", "columns": list(RECOVERY_COLUMNS), "rows": []}


def test_the_chaos_action_bundle() -> None:
    act = action("kill", 1, "a", "b")
    act.results[1] = PodHit("b", at(1), ok=False, stderr="gone", note="not run: the container is not running")
    bundle = act._repr_mimebundle_()
    record = json.loads(json.dumps(bundle[LABKIT_MIME]))
    assert record["kind"] == "chaos" and record["summary"] == repr(act).splitlines()[0]
    assert record["action"] == json.loads(json.dumps(act.to_dict()))
    assert [r["ok"] for r in record["action"]["results"]] == [True, False]
    assert bundle["text/plain"] == repr(act) and "<table>" in str(bundle["text/html"])
    assert not act.ok and [h.pod for h in act.landed] == ["a"]


def test_the_exec_bundle() -> None:
    result = ExecResult(["curl", "-sS", "http://ratings:9080/ratings/7"], 6, "", "Could not resolve host", "sleep-1",
                        "sleep", 0.01)
    bundle = result._repr_mimebundle_()
    assert bundle[LABKIT_MIME] == {"kind": "exec", "pod": "sleep-1", "container": "sleep",
                                   "command": ["curl", "-sS", "http://ratings:9080/ratings/7"], "stdout": "",
                                   "stderr": "Could not resolve host", "returncode": 6}
    assert bundle["text/plain"] == repr(result) and "exit 6" in str(bundle["text/html"])


def test_the_page_bundle() -> None:
    page = ProductPage(url="http://x/productpage", status=200, html="<p>Book Details</p>", fetched_at=T0,
                       elapsed_ms=3.0, sections={"details": True, "reviews": False, "ratings": None})
    bundle = page._repr_mimebundle_()
    assert bundle[LABKIT_MIME] == {"kind": "page", "url": "http://x/productpage", "status": 200,
                                   "html": "<p>Book Details</p>",
                                   "sections": {"details": True, "reviews": False, "ratings": False}}
    assert "<iframe" in str(bundle["text/html"]) and bundle["text/plain"] == repr(page)
    dead = ProductPage(url="http://x/productpage", status=0, html="", fetched_at=T0, elapsed_ms=1.0,
                       sections={"details": False, "reviews": False, "ratings": None}, error="refused")
    assert dead._repr_mimebundle_()[LABKIT_MIME]["status"] is None  # type: ignore[index]


def test_mime_bundle_and_json_safe() -> None:
    with pytest.raises(ValueError, match="needs a 'kind'"):
        mime_bundle({"pod": "x"}, "x")
    assert json_safe({"t": T0, "n": float("nan"), "na": pd.NA, "nat": pd.NaT, "d": pd.Timedelta(seconds=2),
                      "s": {1, 2} - {2}}) == {"t": T0.isoformat(), "n": None, "na": None, "nat": None, "d": 2.0,
                                               "s": [1]}


def test_ipython_shows_the_record_beside_the_usual_html() -> None:
    from IPython.core.formatters import DisplayFormatter

    states = [state(0, "a", event="ADDED"), state(1.5, "a", ready=False, status="Error"), state(2.5, "a", restarts=1)]
    frame = recovery_frame(recovery_table(states, [action("kill", 1, "a")]))
    data, _ = DisplayFormatter().format(frame[["pod", "recovery_s"]])
    assert data[LABKIT_MIME] == {"kind": "recovery", "columns": ["pod", "recovery_s"], "rows": [["a", 1.5]]}
    assert "<table" in data["text/html"] and "recovery_s" in data["text/plain"]
    data, _ = DisplayFormatter().format(action("kill", 1, "a"))
    assert data[LABKIT_MIME]["kind"] == "chaos" and "<table>" in data["text/html"]
