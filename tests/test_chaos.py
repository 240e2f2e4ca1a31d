"""labkit.chaos against a real sandbox: the lesson's kills, pod deletion, selection, repetition, guard rails.

This module runs its own sandbox (the ``sandbox`` fixture is overridden here): every kill raises the kubelet's
back-off of the pod it hits, and the recovery times asserted below must not depend on what other modules did.
Each test that breaks something waits for all pods to be Ready again before it ends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

import labkit
from labkit import chaos, observe
from labkit.chaos import ChaosAction
from labkit.errors import NoPodsMatch, SafetyError
from labkit.lab import Lab
from labkit.sandbox import Sandbox


@pytest.fixture()
def cluster_lab(ready_sandbox: Sandbox) -> Iterator[Lab]:
    """The same sandbox reached through its kubeconfig: labkit treats it as a real, named cluster."""
    lab = labkit.connect(kubeconfig=str(ready_sandbox.kubeconfig))
    try:
        yield lab
    finally:
        lab.close()


def restarts(lab: Lab, selector: str) -> dict[str, int]:
    frame = lab.pods(selector)
    return dict(zip(frame["name"], frame["restarts"].astype(int), strict=True))


def statuses(rec: observe.Recorder, pod: str) -> list[str]:
    tl = rec.timeline
    return list(tl[tl["pod"] == pod]["status"])


# -- the lesson: pkill ruby in one details pod, then in all

def test_kill_one_pod_restarts_only_that_pod(lab: Lab) -> None:
    names = lab.pod_names("app=details")
    with observe.Recorder(lab, "app=details") as rec:
        action = chaos.kill(lab, "app=details")
        assert action.pods == [names[0]]  # kubectl's .items[0]
        assert action.ok and action.results[0].returncode == 0
        assert action.results[0].observed is True  # the API server showed it before kill() returned
        assert (action.action, action.process, action.signal, action.mode) == ("kill", "ruby", "SIGTERM", "one")
        rec.wait_restarts(names[0], 1, timeout=10)
        observe.wait_ready(lab, "app=details", timeout=20, progress=False)

    counts = dict(zip(rec.restart_counts()["pod"], rec.restart_counts()["restarts"], strict=True))
    assert counts == {names[0]: 1, names[1]: 0, names[2]: 0}
    assert counts == restarts(lab, "app=details")  # the recorder agrees with the API server

    # The status passes through Error (the container terminated by SIGTERM: 128 + 15) before Running again.
    tl = rec.timeline
    mine = tl[tl["pod"] == names[0]]
    error = mine[mine["status"] == "Error"]
    assert len(error) >= 1
    assert error.iloc[0]["state"] == "terminated" and error.iloc[0]["exit_code"] == 143
    after = mine[mine["time"] > error.iloc[0]["time"]]
    assert list(after["status"])[-1] == "Running" and bool(after.iloc[-1]["ready"])
    assert after.iloc[-1]["restarts"] == 1
    assert set(tl[tl["pod"] != names[0]]["event"]) == {"ADDED"}  # the others never changed

    assert rec.actions == [action]
    rec_frame = rec.recovery()
    assert list(rec_frame["pod"]) == [names[0]]
    row = rec_frame.iloc[0]
    assert 0 < row["recovery_s"] < 5, rec_frame
    assert row["down_at"] <= row["ready_at"]
    assert (row["restarts_before"], row["restarts_after"]) == (0, 1)


def test_kill_all_details_then_again_shows_crashloopbackoff(lab: Lab) -> None:
    names = lab.pod_names("app=details")
    before = restarts(lab, "app=details")
    with observe.Recorder(lab, "app=details") as rec:
        first = chaos.kill(lab, "app=details", mode="all")
        assert first.pods == names and first.ok
        for pod in names:
            rec.wait_restarts(pod, before[pod] + 1, timeout=15)
        # Killed again as soon as it is back: the kubelet backs off and shows CrashLoopBackOff.
        second = chaos.kill(lab, "app=details", mode="all")
        for pod in names:
            rec.wait_for(lambda r, pod=pod: r.pod == pod and r.status == "CrashLoopBackOff", timeout=10,
                         since=second.time, what=f"{pod} in CrashLoopBackOff")
        observe.wait_ready(lab, "app=details", timeout=25, progress=False)

    assert rec.actions == [first, second]
    assert second.ok, second.results
    after = restarts(lab, "app=details")
    assert all(after[p] == before[p] + 2 for p in names), (before, after)
    for pod in names:
        seen = statuses(rec, pod)
        assert "CrashLoopBackOff" in seen and "Error" in seen
        assert seen.index("Error") < seen.index("CrashLoopBackOff")
        assert rec.saw_status("CrashLoopBackOff", pod)
    tl = rec.timeline
    clbo = tl[tl["status"] == "CrashLoopBackOff"]
    assert set(clbo["reason"]) == {"CrashLoopBackOff"} and set(clbo["state"]) == {"waiting"}
    assert set(clbo["exit_code"]) == {143}  # the exit code that put it there, from lastState
    recovery = rec.recovery()
    assert len(recovery) == 6 and recovery["recovery_s"].notna().all()


def test_repeat_holds_a_pod_in_crashloopbackoff(lab: Lab) -> None:
    pod = lab.pod_names("app=ratings")[0]
    with observe.Recorder(lab, "app=ratings") as rec:
        started = time.monotonic()
        actions = chaos.repeat(lambda: chaos.kill(lab, "app=ratings", "node"), every=0.5, duration=2.0,
                               progress=False)
        elapsed = time.monotonic() - started
        observe.wait_ready(lab, "app=ratings", timeout=25, progress=False)

    assert elapsed >= 2.0, "repeat() returns at the end of its duration, not before"
    # one call per 0.5 s slot at most; a slow call (a busy machine) skips slots rather than stacking them
    assert 2 <= len(actions) <= 4 and all(a.pods == [pod] for a in actions)
    assert [a for a in rec.actions] == actions
    assert rec.saw_status("CrashLoopBackOff", pod)
    # While it is down, a kill has nothing to hit: reported, not raised.
    missed = [r for a in actions for r in a.results if not r.ok]
    assert missed and all("not running" in r.note for r in missed)
    landed = [r for a in actions for r in a.results if r.ok]
    assert len(landed) == restarts(lab, "app=ratings")[pod] >= 2


def test_delete_pods_brings_a_new_pod(lab: Lab) -> None:
    old = lab.pod_names("app=reviews")
    with observe.Recorder(lab, "app=reviews") as rec:
        action = chaos.delete_pods(lab, "app=reviews", grace_period=0)
        assert action.action == "delete" and action.pods == [old[0]] and action.ok
        assert action.grace_period == 0 and action.process is None and action.signal is None
        new_row = rec.wait_for(lambda r: r.event == "ADDED" and r.pod not in old, timeout=10,
                               since=action.time, what="a replacement reviews pod")
        rec.wait_for(lambda r: r.pod == old[0] and r.event == "DELETED", timeout=10, since=action.time)
        observe.wait_ready(lab, "app=reviews", timeout=20, progress=False)

    now = lab.pod_names("app=reviews")
    assert old[0] not in now and new_row.pod in now and len(now) == 3
    assert restarts(lab, "app=reviews")[new_row.pod] == 0  # a new pod, not a restarted container
    recovery = rec.recovery()
    assert list(recovery["pod"]) == [old[0]]
    assert 0 < recovery.iloc[0]["recovery_s"] < 10
    tl = rec.timeline
    assert "Terminating" in set(tl[tl["pod"] == old[0]]["status"])


def test_kill_with_sigkill_and_a_missing_process(lab: Lab) -> None:
    target = lab.pods("app=productpage").sort_values(["created", "name"]).iloc[0]["name"]
    with observe.Recorder(lab, "app=productpage") as rec:
        action = chaos.kill(lab, "app=productpage", "gunicorn", signal=9, order="oldest")
        assert action.pods == [target] and action.signal == "SIGKILL"
        rec.wait_restarts(target, 1, timeout=10)
        # A process name that is not there: pkill exits 1, the result says so, nothing restarts.
        missing = chaos.kill(lab, "app=productpage", "nginx", order="oldest")
        assert not missing.ok and missing.results[0].returncode == 1
        assert "no process named 'nginx'" in missing.results[0].note
        observe.wait_ready(lab, "app=productpage", timeout=20, progress=False)
    tl = rec.timeline
    assert 137 in set(tl[tl["pod"] == target]["exit_code"].dropna())  # 128 + SIGKILL
    assert sorted(restarts(lab, "app=productpage").values()) == [0, 0, 1]


# -- selection and dry runs

def test_dry_run_kills_nothing_and_lists_the_pods(lab: Lab) -> None:
    before = restarts(lab, "app=details")
    names = sorted(before)
    with observe.Recorder(lab, "app=details") as rec:
        action = chaos.kill(lab, {"app": "details"}, mode="all", dry_run=True)
        deleted = chaos.delete_pods(lab, "app=details", mode="all", dry_run=True)
    assert action.dry_run and action.pods == names and action.results == [] and action.ok
    assert deleted.pods == names and deleted.results == []
    assert rec.actions == []  # nothing happened, nothing to mark
    assert restarts(lab, "app=details") == before
    assert lab.pod_names("app=details") == names
    assert "dry run" in action.summary() and "would hit 3 pods" in action.summary()


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, 1),
    ({"mode": "all"}, 3),
    ({"mode": "fixed", "count": 2}, 2),
    ({"mode": "fixed", "count": 5}, 3),
    ({"mode": "percent", "percent": 10}, 1),    # ceil(0.3) = 1
    ({"mode": "percent", "percent": 34}, 2),    # ceil(1.02) = 2
    ({"mode": "percent", "percent": 66}, 2),    # ceil(1.98) = 2
    ({"mode": "percent", "percent": 67}, 3),    # ceil(2.01) = 3
    ({"mode": "percent", "percent": 100}, 3),
])
def test_modes_pick_the_right_number_of_pods(lab: Lab, kwargs: dict[str, object], expected: int) -> None:
    names = lab.pod_names("app=ratings")
    action = chaos.kill(lab, "app=ratings", "node", dry_run=True, **kwargs)  # type: ignore[arg-type]
    assert action.pods == names[:expected]  # "first": by name, like kubectl's .items


def test_orders(lab: Lab) -> None:
    frame = lab.pods("app=reviews")
    oldest = list(frame.sort_values(["created", "name"])["name"])
    action = chaos.delete_pods(lab, "app=reviews", mode="fixed", count=2, order="oldest", dry_run=True)
    assert action.pods == oldest[:2]
    picks = {tuple(chaos.kill(lab, "app=reviews", "java", order="random", dry_run=True).pods) for _ in range(20)}
    assert len(picks) > 1 and all(len(p) == 1 and p[0] in set(frame["name"]) for p in picks)
    two = chaos.kill(lab, "app=reviews", "java", mode="percent", percent=50, order="random", dry_run=True)
    assert len(two.pods) == 2 and len(set(two.pods)) == 2


# -- guard rails

def test_bad_arguments_are_refused_before_the_cluster_is_read(lab: Lab) -> None:
    # The selector matches nothing: had the cluster been read, NoPodsMatch would come first.
    cases: list[tuple[dict[str, object], str]] = [
        ({"mode": "some"}, "unknown mode 'some'; use one of one, all, fixed, percent"),
        ({"mode": "percent"}, r"mode='percent' needs percent="),
        ({"mode": "percent", "percent": 0}, "percent must be between 1 and 100, not 0"),
        ({"mode": "percent", "percent": 150}, "percent must be between 1 and 100, not 150"),
        ({"percent": 50}, r"percent=50 applies to mode='percent'"),
        ({"mode": "fixed", "count": 0}, "count must be a whole number of pods, 1 or more, not 0"),
        ({"mode": "fixed", "count": 1.5}, "count must be a whole number"),
        ({"count": 2}, r"count=2 applies to mode='fixed'"),
        ({"order": "newest"}, "unknown order 'newest'"),
        ({"signal": "SIGFOO"}, "unknown signal 'SIGFOO'; use a name like 'TERM'"),
        ({"signal": 99}, "unknown signal 99"),
        ({"process": "-9"}, "process must be one process name for pkill"),
        ({"process": "ruby rails"}, "process must be one process name"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            chaos.kill(lab, "app=nothing-here", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace_period must be None"):
        chaos.delete_pods(lab, "app=nothing-here", grace_period=-1)
    with pytest.raises(ValueError, match="every must be a positive number of seconds"):
        chaos.repeat(lambda: chaos.kill(lab, "app=details", dry_run=True), every=0, duration=1)
    for signal in ("TERM", "SIGTERM", "term", 15, "15"):
        assert chaos.kill(lab, "app=details", signal=signal, dry_run=True).signal == "SIGTERM"


def test_other_and_system_namespaces_are_refused(lab: Lab, ready_sandbox: Sandbox) -> None:
    with pytest.raises(SafetyError, match="only in the lab namespace 'default', not 'kube-system'"):
        chaos.kill(lab, "app=details", namespace="kube-system")
    with pytest.raises(SafetyError, match="only in the lab namespace"):
        chaos.delete_pods(lab, "app=details", namespace="istio-system")
    system = labkit.connect(sandbox_dir=ready_sandbox.dir, namespace="kube-system")
    try:
        for fn in (chaos.kill, chaos.delete_pods):
            with pytest.raises(SafetyError, match="never runs chaos in the system namespace 'kube-system'"):
                fn(system, "app=details", dry_run=True)
    finally:
        system.close()


def test_the_tester_pod_is_never_hit(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    tester = lab.pod_names("app=sleep")[0]
    with pytest.raises(SafetyError, match=f"matches only {tester}, which labkit never kills"):
        chaos.kill(lab, "app=sleep", "sleep")
    with pytest.raises(SafetyError, match="never deletes"):
        chaos.delete_pods(lab, "app=sleep", mode="all")
    both = chaos.kill(lab, "app in (details,sleep)", mode="all", dry_run=True)
    assert both.pods == lab.pod_names("app=details")
    assert len(both.skipped) == 1 and both.skipped[0].startswith(f"{tester} (the tester pod, app=sleep")
    everything = chaos.delete_pods(lab, "", mode="all", dry_run=True)
    assert tester not in everything.pods and len(everything.pods) == 12
    # The notebook's own pod (POD_NAME from the downward API, or HOSTNAME) is left alone too.
    own = lab.pod_names("app=details")[0]
    monkeypatch.setenv("POD_NAME", own)
    action = chaos.kill(lab, "app=details", mode="all", dry_run=True)
    assert own not in action.pods and action.skipped == [f"{own} (the notebook's own pod)"]
    assert "skipped" in repr(action) and "own pod" in action._repr_html_()


def test_all_on_a_real_cluster_needs_confirm(cluster_lab: Lab) -> None:
    assert not cluster_lab.is_sandbox
    calls = [
        lambda: chaos.kill(cluster_lab, "app=details", mode="all"),
        lambda: chaos.kill(cluster_lab, "app=details", mode="percent", percent=100),
        lambda: chaos.kill(cluster_lab, "app=details", mode="fixed", count=3),
        lambda: chaos.delete_pods(cluster_lab, "app=details", mode="all"),
        lambda: chaos.delete_pods(cluster_lab, "app=details", mode="percent", percent=90),  # ceil(2.7) = 3
    ]
    for call in calls:
        with pytest.raises(SafetyError, match=r"would hit every pod matching 'app=details'.*confirm=True"):
            call()
    before = restarts(cluster_lab, "app=details")
    # A preview needs no confirmation, and confirm=True lifts the guard.
    assert len(chaos.kill(cluster_lab, "app=details", mode="all", dry_run=True).pods) == 3
    assert len(chaos.kill(cluster_lab, "app=details", mode="all", confirm=True, dry_run=True).pods) == 3
    assert len(chaos.kill(cluster_lab, "app=details", mode="percent", percent=60, dry_run=True).pods) == 2
    assert restarts(cluster_lab, "app=details") == before


def test_a_selector_matching_nothing(lab: Lab) -> None:
    with pytest.raises(NoPodsMatch, match=r"No pods match 'app=detials' in namespace default\. Labels present: "
                                          r".*app=details"):
        chaos.kill(lab, "app=detials")
    with pytest.raises(NoPodsMatch, match="app=ratings"):
        chaos.delete_pods(lab, "version=v9")


# -- the record, and repetition in the background

def test_action_record_is_json_ready_and_displays(lab: Lab) -> None:
    action = chaos.kill(lab, "app=details", mode="fixed", count=2, dry_run=True)
    data = json.loads(json.dumps(action.to_dict()))
    assert data["action"] == "kill" and data["pods"] == action.pods and data["dry_run"] is True
    assert data["signal"] == "SIGTERM" and data["process"] == "ruby" and data["ok"] is True
    assert data["time"].endswith("+00:00")
    assert str(action.time.tz) == "UTC"
    text = repr(action)
    assert text.startswith("<ChaosAction ") and all(p in text for p in action.pods)
    page = action._repr_html_()
    assert "<table>" in page and "would be hit" in page and all(p in page for p in action.pods)
    assert isinstance(action, ChaosAction)


def test_repeater_runs_in_the_background_until_stopped(lab: Lab) -> None:
    three = threading.Event()
    seen: list[ChaosAction] = []

    def record(action: ChaosAction) -> None:
        seen.append(action)
        if len(seen) >= 3:
            three.set()

    rep = chaos.Repeater(lambda: chaos.kill(lab, "app=details", dry_run=True), every=0.1, on_action=record)
    with rep:
        assert rep.running
        assert three.wait(10)
    assert not rep.running and rep.error is None
    assert rep.actions == seen and len(seen) >= 3 and all(a.dry_run for a in seen)
    assert "stopped" in repr(rep)

    timed = chaos.Repeater(lambda: chaos.kill(lab, "app=details", dry_run=True), every=0.1, duration=0.35)
    timed.start()
    assert timed._thread is not None
    timed._thread.join(5)
    assert not timed.running and len(timed.actions) == 4  # at 0, 0.1, 0.2, 0.3 s

    failing = chaos.Repeater(lambda: chaos.kill(lab, "app=nothing"), every=0.1).start()
    assert failing._thread is not None
    failing._thread.join(5)
    assert isinstance(failing.error, NoPodsMatch) and failing.actions == []
