"""labkit.observe against a real sandbox: the Recorder's watch, relists, waits, latency, and the live table.

Like test_chaos, this module runs its own sandbox so its kills' back-off does not leak into other modules.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import Any

import pandas as pd
import pytest
from helpers import eventually
from kubernetes import client, config

import labkit
from labkit import chaos, observe
from labkit.errors import LabkitError, NoPodsMatch, WaitTimeout
from labkit.lab import POD_COLUMNS, Lab
from labkit.observe import RECOVERY_COLUMNS, TIMELINE_COLUMNS, Recorder
from labkit.sandbox import Sandbox


def api_restarts(lab: Lab, selector: str | None = None) -> dict[str, int]:
    frame = lab.pods(selector)
    return dict(zip(frame["name"], frame["restarts"].astype(int), strict=True))


def recorded_restarts(rec: Recorder) -> dict[str, int]:
    frame = rec.restart_counts()
    return dict(zip(frame["pod"], frame["restarts"].astype(int), strict=True))


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {k: str(v) for k, v in frame.dtypes.items()}


# -- schema, lifecycle, registry

def test_fixed_schemas_and_the_first_list(lab: Lab) -> None:
    rec = Recorder(lab)
    for frame, columns in ((rec.timeline, TIMELINE_COLUMNS), (rec.recovery(), RECOVERY_COLUMNS),
                           (rec.restart_counts(), {"pod": "string", "app": "string", "restarts": "int64"})):
        assert frame.empty and list(frame.columns) == list(columns)
        assert dtypes(frame) == {k: str(pd.Series(dtype=v).dtype) for k, v in columns.items()}
    assert not rec.running and observe.active_recorders(lab) == []

    with rec:
        assert rec.running and observe.active_recorders(lab) == [rec]
        tl = rec.timeline
        assert dtypes(tl) == dtypes(Recorder(lab).timeline)
        assert len(tl) == 13 and set(tl["event"]) == {"ADDED"} and tl["ready"].all()
        assert set(tl["status"]) == {"Running"} and set(tl["state"]) == {"running"}
        assert tl["exit_code"].isna().all() and (tl["restarts"] == 0).all()
        assert set(tl["app"]) == {"details", "ratings", "reviews", "productpage", "sleep"}
        assert list(rec.current()["pod"]) == lab.pod_names()
        assert "running" in repr(rec) and "<table" in rec._repr_html_()
        # A Lab connected separately to the same cluster and namespace marks this recorder too.
        other = labkit.connect(sandbox_dir=lab.sandbox.dir if lab.sandbox else None)
        try:
            assert observe.active_recorders(other) == [rec]
        finally:
            other.close()
    assert not rec.running and observe.active_recorders(lab) == []
    assert rec._client is None  # its own Client, closed


def test_recorder_needs_a_running_watch_to_wait(lab: Lab) -> None:
    rec = Recorder(lab, "app=ratings").start()
    pod = lab.pod_names("app=ratings")[0]
    with pytest.raises(LabkitError, match=r"has not seen pod 'nope'.*pods it knows: ratings-v1-"):
        rec.wait_restarts("nope", 1)
    with pytest.raises(WaitTimeout, match=rf"Timed out after 0.2 s waiting for pod {pod} to reach 5 restarts.*"
                                          rf"Pods now: {pod} Running ready=True restarts=0"):
        rec.wait_restarts(pod, 5, timeout=0.2)
    rec.stop()
    with pytest.raises(LabkitError, match="recorder of app=ratings is not running"):
        rec.wait_for(lambda r: r.restarts > 3, timeout=5)
    # What already holds needs no watch.
    assert rec.wait_for(lambda r: r.pod == pod, timeout=0).status == "Running"


# -- what the recorder sees of a kill, and how fast

def test_recorder_sees_what_a_bare_watch_sees(lab: Lab, ready_sandbox: Sandbox) -> None:
    """The recorder's rows against a plain watch run here: the same changes, in order; the latencies are printed
    (benchmarks/run.py measures them)."""
    pod = lab.pod_names("app=ratings")[1]
    bare: list[tuple[float, dict[str, Any]]] = []
    api = config.new_client_from_config(config_file=str(ready_sandbox.kubeconfig))
    core = client.CoreV1Api(api)
    rv = json.loads(core.list_namespaced_pod("default", label_selector="app=ratings",
                                             _preload_content=False).data)["metadata"]["resourceVersion"]
    resp = core.list_namespaced_pod("default", label_selector="app=ratings", watch=True, resource_version=rv,
                                    _preload_content=False, timeout_seconds=30)

    def read() -> None:
        buffer = b""
        with contextlib.suppress(Exception):  # the socket shut down at the end
            for chunk in resp.stream(amt=None, decode_content=False):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        bare.append((time.time(), json.loads(line)["object"]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        with Recorder(lab, "app=ratings") as rec:
            action = chaos.kill(lab, "app=ratings", "node", mode="fixed", count=2, verify=False)
            exec_done = time.time()
            assert action.pods[1] == pod
            rec.wait_restarts(pod, 1, timeout=10)
            observe.wait_ready(lab, "app=ratings", timeout=20, progress=False)
    finally:
        # Shut the socket down so the reader ends now, not at the server's timeout.
        with contextlib.suppress(OSError, AttributeError):
            resp.connection.sock.shutdown(socket.SHUT_RDWR)
        reader.join(5)
        resp.release_conn()
        api.close()

    tl = rec.timeline
    mine = tl[(tl["pod"] == pod) & (tl["event"] == "MODIFIED")]
    error_row = mine[mine["status"] == "Error"].iloc[0]
    restart_row = mine[mine["restarts"] == 1].iloc[0]

    def bare_time(predicate: Any) -> float:
        return next(t for t, obj in bare if obj["metadata"]["name"] == pod and predicate(obj))

    def count(obj: dict[str, Any]) -> int:
        return int(sum(c.get("restartCount", 0) for c in obj["status"].get("containerStatuses") or []))

    bare_error = bare_time(lambda o: "terminated" in o["status"]["containerStatuses"][0]["state"])
    bare_restart = bare_time(lambda o: count(o) == 1)
    kill_at = pd.Timestamp(action.results[1].time).timestamp()
    figures = {
        "kill -> Error row (ms)": (error_row["time"].timestamp() - kill_at) * 1000,
        "kill exec returned -> Error row (ms)": (error_row["time"].timestamp() - exec_done) * 1000,
        "bare watch -> recorder, Error (ms)": (error_row["time"].timestamp() - bare_error) * 1000,
        "bare watch -> recorder, restart (ms)": (restart_row["time"].timestamp() - bare_restart) * 1000,
        "kill -> restart row (ms)": (restart_row["time"].timestamp() - kill_at) * 1000,
    }
    print("\nrecorder latency: " + ", ".join(f"{k}: {v:.1f}" for k, v in figures.items()))
    # How fast is benchmarks/run.py's job (recorder); here: the recorder saw what the bare watch saw, in order.
    assert kill_at <= error_row["time"].timestamp() <= restart_row["time"].timestamp()
    assert bare_error <= bare_restart
    assert recorded_restarts(rec) == api_restarts(lab, "app=ratings")


# -- never missing a restart: resumed watches, 410 Gone, restarted recorders

def test_watch_resumes_and_relists_after_410(lab: Lab) -> None:
    with Recorder(lab, "app=productpage") as rec:
        names = lab.pod_names("app=productpage")
        rows_before = len(rec.timeline)
        # A watch resumed from "1" replays the whole history (the sandbox keeps it): nothing old may come back
        # as a new row.
        rec._reconnect("1")
        chaos.kill(lab, "app=productpage", "gunicorn")
        rec.wait_restarts(names[0], 1, timeout=10)
        observe.wait_ready(lab, "app=productpage", timeout=20, progress=False)
        rec.sync()
        tl = rec.timeline
        assert (tl["event"] == "ADDED").sum() == 3 and len(tl) > rows_before
        assert rec.reconnects >= 1 and rec.relists == 0 and rec.error is None

        # A version older than the server keeps ("-1" is below the sandbox's whole history) answers 410 Gone:
        # the recorder lists again and carries on watching.
        rec._reconnect("-1")
        action = chaos.kill(lab, "app=productpage", "gunicorn", mode="fixed", count=2)
        for pod in action.pods:
            rec.wait_for(lambda r, pod=pod: r.pod == pod and r.restarts >= 1 and r.ready, timeout=15,
                         what=f"{pod} restarted and Ready")
        assert rec.relists >= 1
        observe.wait_ready(lab, "app=productpage", timeout=20, progress=False)
    assert recorded_restarts(rec) == api_restarts(lab, "app=productpage") == {names[0]: 2, names[1]: 1, names[2]: 0}
    tl = rec.timeline
    assert (tl["event"] == "ADDED").sum() == 3 and (tl["event"] == "DELETED").sum() == 0
    assert (tl["time"].diff().dropna() >= pd.Timedelta(0)).all()


def test_watch_resumes_when_the_server_ends_it(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Servers end watches (timeoutSeconds, restarts, load balancers): the recorder resumes from its version.
    monkeypatch.setattr(observe, "WATCH_SECONDS", 1)
    monkeypatch.setattr(observe, "_READ_TIMEOUT", 5)
    with Recorder(lab, "app=details") as rec:
        eventually(lambda: rec.reconnects >= 2, timeout=30, what="the recorder to resume two ended watches")
        assert rec.error is None and rec.relists == 0
        lab.scale("details-v1", 4)
        added = rec.wait_for(lambda r: r.event == "ADDED", timeout=10, what="a fourth details pod")
        rec.wait_for(lambda r: r.pod == added.pod and r.ready, timeout=10, since=added.time)
        before = pd.Timestamp.now(tz="UTC")  # the deletion may be recorded before wait_for starts
        lab.scale("details-v1", 3)
        gone = rec.wait_for(lambda r: r.event == "DELETED", timeout=10, since=before,
                            what="a details pod scaled away")
        observe.wait_ready(lab, "app=details", timeout=20, progress=False)
    assert gone.app == "details"
    assert sorted(rec.restart_counts()["pod"]) == lab.pod_names("app=details")


def test_relist_catches_what_happened_while_stopped(lab: Lab) -> None:
    rec = Recorder(lab, "app in (details,reviews)").start()
    rec.stop()
    details = lab.pod_names("app=details")[0]
    old_review = lab.pod_names("app=reviews")[0]
    chaos.kill(lab, "app=details")
    chaos.delete_pods(lab, "app=reviews", grace_period=0)
    observe.wait_ready(lab, "app in (details,reviews)", timeout=20, progress=False)
    rows = len(rec.timeline)
    with rec:  # starting again lists and records the difference
        tl = rec.timeline.iloc[rows:]
        assert set(tl[tl["pod"] == details]["event"]) == {"MODIFIED"}
        assert tl[tl["pod"] == details].iloc[-1]["restarts"] == 1
        assert list(tl[tl["pod"] == old_review]["event"]) == ["DELETED"]
        added = tl[tl["event"] == "ADDED"]
        assert len(added) == 1 and added.iloc[0]["app"] == "reviews" and added.iloc[0]["pod"] != old_review
    assert recorded_restarts(rec) == api_restarts(lab, "app in (details,reviews)")


# -- waits

def test_wait_ready_times_out_naming_the_pods_then_returns(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    # kill() returns once the API server shows the container down, so the wait below cannot see it Ready yet.
    action = chaos.kill(lab, "app=productpage", "gunicorn", order="oldest")
    assert action.results[0].observed is True
    victim = action.pods[0]
    with pytest.raises(WaitTimeout, match=rf"Timed out after 0.1 s waiting for pods matching 'app=productpage' in "
                                          rf"namespace default to be Ready\. Not Ready: {victim} \("):
        observe.wait_ready(lab, "app=productpage", timeout=0.1, progress=False)
    frame = observe.wait_ready(lab, "app=productpage", timeout=20)
    assert list(frame.columns) == list(POD_COLUMNS) and len(frame) == 3
    assert (frame["status"] == "Running").all() and (frame["ready"] == "1/1").all()
    err = capsys.readouterr().err
    assert "waiting for pods matching 'app=productpage'" in err and "3 pods matching 'app=productpage'" in err
    assert "Ready after" in err
    with pytest.raises(NoPodsMatch, match=r"No pods match 'app=nothing' in namespace default\. Labels present:"):
        observe.wait_ready(lab, "app=nothing", timeout=1, progress=False)
    everything = observe.wait_ready(lab, timeout=5, progress=False)
    assert len(everything) == 13


def test_wait_for_since_catches_a_short_lived_status(lab: Lab) -> None:
    with Recorder(lab, "app=details") as rec:
        action = chaos.kill(lab, "app=details", order="oldest")
        pod = action.pods[0]
        observe.wait_ready(lab, "app=details", timeout=20, progress=False)
        # Error lasted a fraction of a second and is over; `since` still finds it in the timeline.
        row = rec.wait_for(lambda r: r.pod == pod and r.status == "Error", timeout=1, since=action.time)
        assert row.exit_code == 143 and row.reason == "Error" and not row.ready
        with pytest.raises(WaitTimeout):
            rec.wait_for(lambda r: r.pod == pod and r.status == "Error", timeout=0.1)
    assert [a.pods for a in rec.actions] == [[pod]]


# -- the live table

def test_live_pods_updates_and_throttles(lab: Lab) -> None:
    import ipywidgets

    table = observe.live_pods(lab, "app=reviews", max_rate=5)
    assert isinstance(table, ipywidgets.HTML)
    redraws: list[float] = []
    table.observe(lambda change: redraws.append(time.monotonic()), names="value")
    try:
        names = lab.pod_names("app=reviews")
        assert all(n in table.value for n in names) and "RESTARTS" in table.value
        action = chaos.kill(lab, "app=reviews", "java", mode="all")
        for pod in action.pods:
            table.recorder.wait_restarts(pod, 1, timeout=10)
        observe.wait_ready(lab, "app=reviews", timeout=20, progress=False)
        table.recorder.sync()

        def final_rows() -> list[str]:  # the throttle always draws the last change, a little later
            rows = table.value.split("<tr>")[2:]
            return rows if len(rows) == 3 and all(">1</td>" in r and "Running" in r for r in rows) else []

        eventually(final_rows, timeout=10, what="the table's last redraw to show 3 restarted pods Running")
        changes = (table.recorder.timeline["event"] == "MODIFIED").sum()
        assert changes >= 9  # three pods: Error, Running, Ready each
        # at most max_rate redraws a second, however the changes arrived (a busy machine only spreads them out)
        span = redraws[-1] - redraws[0]
        assert len(redraws) <= span * 5 + 2, (len(redraws), span, changes)
    finally:
        table.stop()
    assert not table.recorder.running

    # A widget on a recorder it did not start leaves that recorder running.
    with Recorder(lab, "app=details") as rec:
        shared = observe.live_pods(lab, recorder=rec)
        shared.stop()
        assert rec.running and shared.recorder is rec


# -- the client core's one pod watch, on its own

def test_the_one_pod_watch_lists_then_watches_and_relists_after_410(lab: Lab) -> None:
    quiet = list(lab.watch_pods("app=ratings", timeout=0.5))  # a deadline ends it: the list, nothing since
    assert [e.type for e in quiet] == ["LIST"] and not quiet[0].relist and len(quiet[0].pods) == 3

    watch = lab.watch_pods("app=ratings", resource_version="-1", timeout=20)  # older than the server keeps
    first = next(iter(watch))
    assert first.type == "LIST" and first.relist and watch.relists == 1 and len(first.pods) == 3

    seen: list[str] = []
    watch = lab.watch_pods("app=ratings", timeout=20)
    for event in watch:
        if event.type == "LIST":
            pod = str(event.pods[0]["metadata"]["name"])
            chaos.kill(lab, "app=ratings", "node", verify=False)
        else:
            seen.append(str(event.pod["metadata"]["name"]))
            if event.pod["metadata"]["name"] == pod and event.type == "MODIFIED":
                break
    assert pod in seen and watch.error is None
    observe.wait_ready(lab, "app=ratings", progress=False)
