"""labkit.traffic: steady requests to the product page, and the lesson's verdicts from them.

The pure tests judge hand-made frames. The sandbox tests send real traffic: a healthy baseline, the rate the
generator keeps, the lesson's "kill details in all pods" (gradual degradation, then recovery), and productpage
scaled to zero (cascading failure). Every test that breaks something waits for all pods Ready at the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pandas as pd
import pytest
from conftest import wait_all_ready
from helpers import eventually

import labkit
from labkit.errors import LabkitError
from labkit.traffic import (
    AVAILABILITY_COLUMNS,
    MAX_RATE,
    TRAFFIC_COLUMNS,
    Traffic,
    availability,
    explain,
    summarize,
    verdict,
)

T0 = pd.Timestamp("2026-01-01 12:00:00", tz="UTC")


def frame_of(rows: list[tuple[float, int, bool | None, bool | None, bool | None]]) -> pd.DataFrame:
    """A traffic frame from (seconds after T0, status, details, reviews, ratings) rows."""
    data = pd.DataFrame({
        "time": [T0 + pd.Timedelta(seconds=r[0]) for r in rows],
        "status": [r[1] for r in rows],
        "latency_ms": [10.0 + i for i in range(len(rows))],
        "details": [r[2] for r in rows], "reviews": [r[3] for r in rows], "ratings": [r[4] for r in rows],
        "error": ["" if r[1] == 200 else "HTTP 503" for r in rows],
    })
    return data.astype(TRAFFIC_COLUMNS)


def steady(seconds: float, rate: float, fn: Callable[[float], tuple[int, bool | None, bool | None, bool | None]]
           ) -> pd.DataFrame:
    times = [i / rate for i in range(int(seconds * rate))]
    return frame_of([(t, *fn(t)) for t in times])


# -- pure: verdicts, availability, summary ------------------------------------------------------------------


def test_healthy_frame() -> None:
    frame = steady(3, 10, lambda t: (200, True, True, None))
    assert verdict(frame) == "healthy"
    s = summarize(frame, rate=10)
    assert s["requests"] == 30 and s["ok"] == 30 and s["errors"] == 0
    assert s["achieved_rate"] == pytest.approx(10)
    assert (s["page"], s["details"], s["reviews"], s["ratings"]) == (1.0, 1.0, 1.0, None)
    assert s["latency_p50_ms"] == pytest.approx(24.5) and s["latency_p95_ms"] >= s["latency_p50_ms"]
    assert s["statuses"] == {200: 30} and s["verdict"] == "healthy"
    assert "healthy" in explain(frame)


def test_details_down_is_gradual_degradation_and_the_buckets_show_the_dip() -> None:
    frame = steady(5, 10, lambda t: (200, not 2 <= t < 3.5, True, None))
    assert verdict(frame) == "gradual degradation"
    assert "details failed in 15" in explain(frame) and "reviews kept working" in explain(frame)
    per_s = availability(frame, "1s")
    assert list(per_s.columns) == list(AVAILABILITY_COLUMNS)
    assert per_s["requests"].tolist() == [10] * 5 and per_s["ok"].tolist() == [10] * 5
    assert per_s["details"].tolist() == [1.0, 1.0, 0.0, 0.5, 1.0]
    assert per_s["reviews"].tolist() == [1.0] * 5 and per_s["page"].tolist() == [1.0] * 5
    assert per_s["ratings"].isna().all()  # reviews v1: ratings never on the page
    s = summarize(frame)
    assert s["details"] == pytest.approx(0.7) and s["page"] == 1.0


@pytest.mark.parametrize(("rows", "expected"), [
    ([(0, 200, True, True, True), (1, 200, True, True, False)], "gradual degradation"),   # ratings down
    ([(0, 200, True, False, None), (1, 200, True, True, None)], "gradual degradation"),   # reviews down
    ([(0, 200, True, True, True), (1, 503, False, False, None)], "cascading failure"),    # page error
    ([(0, 200, True, True, None), (1, 0, False, False, None)], "cascading failure"),      # no answer
    ([(0, 200, False, False, None)], "cascading failure"),                                 # every section down
    ([(0, 200, None, None, None)], "cascading failure"),                                   # not the product page
    ([(0, 200, True, True, True), (1, 200, True, True, None)], "healthy"),                 # v3 then v1
])
def test_verdicts(rows: list[tuple[float, int, bool | None, bool | None, bool | None]], expected: str) -> None:
    assert verdict(frame_of(rows)) == expected


def test_ratings_availability_counts_only_requests_where_ratings_could_show() -> None:
    # v1 answers (no stars) are no evidence; a page without reviews counts against ratings.
    frame = frame_of([(0.0, 200, True, True, True), (0.1, 200, True, True, None), (0.2, 200, True, True, False),
                      (0.3, 200, True, False, None), (1.0, 200, True, True, True)])
    per_s = availability(frame, "1s")
    assert per_s["ratings"].tolist() == pytest.approx([1 / 3, 1.0])
    assert summarize(frame)["ratings"] == pytest.approx(0.5)


def test_cascading_buckets_and_empty_buckets() -> None:
    frame = frame_of([(0.0, 200, True, True, None), (0.5, 0, False, False, None), (2.2, 503, False, False, None)])
    per_s = availability(frame, "1s")
    assert per_s["requests"].tolist() == [2, 0, 1]
    assert per_s["ok"].tolist() == [1, 0, 0]
    assert per_s["page"].iloc[0] == 0.5 and pd.isna(per_s["page"].iloc[1]) and per_s["page"].iloc[2] == 0
    s = summarize(frame)
    assert s["errors"] == 2 and s["statuses"] == {0: 1, 200: 1, 503: 1} and s["verdict"] == "cascading failure"
    # Latency is over requests that got an answer (status > 0).
    assert s["latency_max_ms"] == 12.0
    assert "cascading failure: 2 of 3 requests" in explain(frame)


def test_empty_frames_keep_their_schema_and_verdict_says_what_to_do() -> None:
    empty = pd.DataFrame({c: pd.Series([], dtype=d) for c, d in TRAFFIC_COLUMNS.items()})
    per_s = availability(empty)
    assert per_s.empty and dict(per_s.dtypes.astype(str)) == AVAILABILITY_COLUMNS
    with pytest.raises(LabkitError, match=r"no requests were recorded.*start the traffic"):
        verdict(empty)
    s = summarize(empty, rate=5)
    assert s["requests"] == 0 and s["verdict"] is None and s["achieved_rate"] is None


class _NoUrlLab:
    productpage_url = None
    kubeconfig = ""


def test_bad_arguments_are_refused_before_anything_is_sent() -> None:
    lab = _NoUrlLab()
    for rate in (0, -1, MAX_RATE + 1, "10"):
        with pytest.raises(ValueError, match="rate must be between 0 and 200"):
            Traffic(lab, rate=rate, url="http://x/productpage")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        Traffic(lab, url="http://x/productpage", timeout=0)  # type: ignore[arg-type]
    with pytest.raises(LabkitError, match="via must be 'host' or 'tester'"):
        Traffic(lab, via="curl")  # type: ignore[arg-type]
    with pytest.raises(LabkitError, match="no productpage URL reachable from this machine"):
        Traffic(lab)  # type: ignore[arg-type]
    idle = Traffic(lab, url="http://x/productpage")  # type: ignore[arg-type]
    assert idle.frame.empty and dict(idle.frame.dtypes.astype(str)) == TRAFFIC_COLUMNS
    assert idle.stop() is idle  # stopping what never started is harmless
    assert "stopped" in repr(idle)


# -- against the sandbox ------------------------------------------------------------------------------------


def traffic_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("labkit-traffic")]


def wait_for(traffic: Traffic, predicate: Callable[[pd.DataFrame], bool], timeout: float, what: str) -> None:
    try:
        eventually(lambda: predicate(traffic.frame), timeout=timeout, what=what)
    except AssertionError:
        traffic.stop()
        raise AssertionError(f"{what} not seen within {timeout} s; frame tail:\n{traffic.frame.tail(15)}") from None


def test_steady_traffic_to_a_healthy_sandbox(lab: labkit.Lab) -> None:
    with Traffic(lab, rate=10) as traffic:
        wait_for(traffic, lambda f: len(f) >= 20, 60, "20 requests")
    frame = traffic.frame
    assert list(frame.columns) == list(TRAFFIC_COLUMNS) and dict(frame.dtypes.astype(str)) == TRAFFIC_COLUMNS
    assert len(frame) >= 20
    assert (frame["status"] == 200).all(), frame[frame["status"] != 200]
    assert frame["details"].all() and frame["reviews"].all() and frame["ratings"].isna().all()
    assert (frame["error"] == "").all()
    assert traffic.verdict() == "healthy"
    s = traffic.summary()
    assert s["page"] == s["details"] == s["reviews"] == 1.0 and s["ratings"] is None
    assert 0 < s["latency_p50_ms"] <= s["latency_p95_ms"]
    print(f"\nhealthy: {s['requests']} requests at {s['achieved_rate']}/s, p50 {s['latency_p50_ms']:.1f} ms, "
          f"p95 {s['latency_p95_ms']:.1f} ms")
    assert "healthy" in traffic._repr_html_()


def test_rate_is_not_exceeded_and_stop_ends_every_thread(lab: labkit.Lab) -> None:
    # (how close to the asked rate it gets on an idle machine, and how fast stop() is, are benchmark matters)
    traffic = Traffic(lab, rate=20).start()
    with pytest.raises(LabkitError, match="already running"):
        traffic.start()
    assert traffic.running and len(traffic_threads()) > 1
    wait_for(traffic, lambda f: len(f) >= 30, 60, "30 requests")
    traffic.stop()
    assert not traffic.running and traffic_threads() == []  # so nothing can be sent after stop()
    count = traffic.requests
    s = traffic.summary()
    assert s["requests"] == count >= 30
    assert s["achieved_rate"] <= 20 * 1.1, s  # a busy machine may send fewer, never more
    print(f"\nrate 20/s: achieved {s['achieved_rate']}/s, {s['requests']} requests")


def test_traffic_from_the_tester_pod(lab: labkit.Lab, capfd: pytest.CaptureFixture[str]) -> None:
    traffic = Traffic(lab, rate=5, via="tester")
    assert traffic.url == "http://productpage:9080/productpage"
    assert traffic.run(2) is traffic
    # Outside a notebook the progress is one stderr line, rewritten in place.
    err = capfd.readouterr().err
    assert "\r" in err and err.rstrip().endswith("answered 200, no section failing")
    s = traffic.summary()
    assert s["ok"] == s["requests"] >= 2  # (2 s at 5/s: 10 on an idle machine)
    assert s["achieved_rate"] <= 5 * 1.15, s
    assert traffic.verdict() == "healthy"
    assert traffic_threads() == []
    print(f"\ntester: {s['requests']} requests at {s['achieved_rate']}/s, p50 {s['latency_p50_ms']:.1f} ms")


def test_killing_details_in_all_pods_is_gradual_degradation_then_recovery(lab: labkit.Lab,
                                                                          ready_sandbox) -> None:  # type: ignore[no-untyped-def]
    details = lab.pod_names("app=details", require=True)
    restarts_before = dict(zip(lab.pods("app=details")["name"], lab.pods("app=details")["restarts"], strict=True))
    traffic = Traffic(lab, rate=10).start()
    try:
        wait_for(traffic, lambda f: len(f) >= 15, 60, "a healthy baseline of 15 requests")
        killed_at = pd.Timestamp.now(tz="UTC")
        # The lesson's loop: `for pod in ...; do kubectl exec "$pod" -- pkill ruby; done`.
        for pod in details:
            assert lab.exec(pod, ["pkill", "ruby"]).returncode == 0
        after = lambda f: f[f["time"] >= killed_at]  # noqa: E731
        wait_for(traffic, lambda f: (~after(f)["details"].astype(bool)).any(), 10, "details failing")
        # Recovered: the kubelet restarted ruby; ask for a run of healthy pages after the failures.
        wait_for(traffic, lambda f: len(after(f)) > 5 and after(f)["details"].tail(5).all(), 30,
                 "details back")
        # ... and a whole second of healthy pages at the end, for the per-second availability below
        wait_for(traffic, lambda f: traffic.availability("1s")["details"].iloc[-1] == 1.0
                 and len(f[f["time"] >= f["time"].iloc[-1].floor("1s")]) >= 3, 30, "a healthy last second")
    finally:
        traffic.stop()
    frame = traffic.frame
    assert (frame["status"] == 200).all(), frame[frame["status"] != 200]
    assert frame["reviews"].all(), "reviews must stay healthy while details is down"
    # A request sent just before the kill may reach details just after it: judge "before" with a margin.
    calm = killed_at - pd.Timedelta("300ms")
    before, during = frame[frame["time"] < calm], frame[frame["time"] >= killed_at]
    assert len(before) >= 10 and before["details"].all()
    failing = during[~during["details"].astype(bool)]
    assert len(failing) >= 1
    assert frame["details"].tail(5).all(), "details healthy again at the end"
    assert traffic.verdict() == "gradual degradation"
    assert traffic.verdict(until=calm) == "healthy"
    assert traffic.verdict(since=failing["time"].iloc[0], until=failing["time"].iloc[-1] + pd.Timedelta("1ms")) \
        == "gradual degradation"
    per_s = traffic.availability("1s")
    assert per_s["details"].min() < 1.0 and per_s["reviews"].min() == 1.0 and per_s["page"].min() == 1.0
    assert per_s["details"].iloc[0] == 1.0 and per_s["details"].iloc[-1] == 1.0
    s = traffic.summary()
    assert s["errors"] == 0 and s["page"] == 1.0 and s["reviews"] == 1.0 and 0 < s["details"] < 1
    assert s["achieved_rate"] <= 10 * 1.1, s
    print(f"\ndetails down in {len(failing)} of {s['requests']} requests "
          f"({(failing['time'].iloc[-1] - failing['time'].iloc[0]).total_seconds():.2f} s); {traffic.explain()}")
    # Traffic recovers as soon as one pod is back; every pod restarts within its (short) back-off.
    def restarted() -> bool:
        now = lab.pods("app=details")
        restarts_after = dict(zip(now["name"], now["restarts"], strict=True))
        return all(restarts_after[p] >= restarts_before[p] + 1 for p in details)

    eventually(restarted, timeout=30, what="every details pod restarted")
    wait_all_ready(ready_sandbox)


def test_productpage_scaled_to_zero_is_a_cascading_failure(lab: labkit.Lab, ready_sandbox) -> None:  # type: ignore[no-untyped-def]
    traffic = Traffic(lab, rate=10, timeout=2).start()
    try:
        wait_for(traffic, lambda f: len(f) >= 10, 60, "a healthy baseline of 10 requests")
        scaled_at = pd.Timestamp.now(tz="UTC")
        lab.scale("productpage-v1", 0)
        try:
            wait_for(traffic, lambda f: int((f["status"] != 200).sum()) >= 5, 30, "page errors")
        finally:
            lab.scale("productpage-v1", 3)
        wait_for(traffic, lambda f: (f["status"] != 200).any() and (f["status"].tail(5) == 200).all(), 60,
                 "the page back")
    finally:
        traffic.stop()
    frame = traffic.frame
    errors = frame[frame["status"] != 200]
    assert len(errors) >= 5 and (errors["error"] != "").all()
    assert errors["error"].str.len().max() < 120  # the useful words, not urllib3's nesting
    assert not errors["details"].any() and not errors["reviews"].any()  # the reader saw neither
    assert traffic.verdict() == "cascading failure"
    assert traffic.verdict(until=scaled_at - pd.Timedelta("300ms")) == "healthy"
    per_s = traffic.availability("1s")
    assert per_s["page"].min() < 1.0 and per_s["details"].min() < 1.0
    s = traffic.summary()
    assert s["errors"] == len(errors) and s["page"] < 1 and s["verdict"] == "cascading failure"
    print(f"\nscaled to 0: statuses {s['statuses']}; first error: {errors['error'].iloc[0]!r}")
    wait_all_ready(ready_sandbox, timeout=120)
    assert len(lab.pod_names("app=productpage")) == 3


def test_run_in_a_notebook_shows_progress_and_a_summary(ready_sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import labkit\n"
        "from labkit.traffic import Traffic\n"
        f"lab = labkit.connect(sandbox_dir={str(ready_sandbox.dir)!r}, start=False)\n"
        "Traffic(lab, rate=5).run(1.5)")]
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    # The progress line is a display updated in place (no stderr noise), then the Traffic's own table.
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    htmls = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(htmls) == 2, outputs
    assert "answered 200, no section failing" in htmls[0]
    assert "healthy" in htmls[1] and "<table>" in htmls[1]
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "answered 200, no section failing" in body and "latency p50 / p95" in body
