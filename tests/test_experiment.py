"""labkit.experiment: probes, hypotheses and experiments run against the real sandbox, and their journals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import labkit
from labkit import chaos
from labkit import experiment as ex


def kill_details_everywhere(lab: labkit.Lab) -> ex.Step:
    return ex.Step("pkill ruby in every details pod", lambda: chaos.kill(lab, "app=details", mode="all"))


def restarts(lab: labkit.Lab) -> dict[str, int]:
    return {str(k): int(v) for k, v in lab.pods().set_index("name")["restarts"].items()}


# ------------------------------------------------------------------------------------------------- probes


def test_probes_look_at_the_healthy_sandbox(lab: labkit.Lab) -> None:
    page = ex.http_ok()(lab)
    assert page.ok and page.value == 200 and page.expected == 200 and page.name == "page answers 200"
    assert ex.section_healthy("details")(lab).value == "ok"
    assert ex.section_healthy("reviews")(lab).ok
    ratings = ex.section_healthy("ratings")(lab)  # reviews v1 shows no stars
    assert not ratings.ok and ratings.value == "not shown on the page"
    ready = ex.pods_ready("app=details")(lab)
    assert ready.ok and ready.value == "3/3 Ready" and ready.expected == "all Ready"
    assert ex.pods_ready("app=details", min_ready=2)(lab).ok
    tester = ex.http_ok("http://ratings:9080/ratings/7", via="tester")(lab)
    assert tester.ok and tester.value == 200
    assert ex.custom("three details pods", lambda lab: len(lab.pod_names("app=details")), expected=3)(lab).ok
    assert ex.custom("no arguments", lambda: True)(lab).ok
    state = ex.Hypothesis("healthy page", [ex.http_ok(), ex.section_healthy("details")]).check(lab)
    assert state.met and [r.value for r in state.results] == [200, "ok"]
    assert "Steady state met" in state._repr_html_()


def test_a_probe_that_cannot_look_fails_instead_of_raising(lab: labkit.Lab) -> None:
    missing = ex.pods_ready("app=detials")(lab)
    assert not missing.ok and missing.value == "no pods"
    assert "No pods match 'app=detials' in namespace default" in missing.error

    def boom() -> bool:
        raise RuntimeError("the probe broke")

    broken = ex.custom("broken", boom)(lab)
    assert not broken.ok and broken.error == "RuntimeError: the probe broke"
    assert lab.productpage_url
    absent = ex.http_ok(lab.productpage_url.replace("/productpage", "/nothere"))(lab)
    assert not absent.ok and absent.value == 404
    closed = ex.http_ok("http://127.0.0.1:9/productpage", timeout=1)(lab)  # nothing listens on port 9
    assert not closed.ok and closed.value == 0 and closed.error


def test_bad_definitions_are_refused_before_anything_runs(lab: labkit.Lab) -> None:
    with pytest.raises(ValueError, match="unknown section 'footer'; the product page has details, reviews, ratings"):
        ex.section_healthy("footer")
    with pytest.raises(ValueError, match="expect must be an HTTP status"):
        ex.http_ok(expect=42)
    with pytest.raises(ValueError, match="a hypothesis needs at least one probe"):
        ex.Hypothesis("empty", [])
    with pytest.raises(ValueError, match=r"tolerance is the share of samples .* got 0"):
        ex.Hypothesis("strict", [ex.http_ok()], tolerance=0)
    with pytest.raises(ValueError, match="two probes are named 'page answers 200'"):
        ex.Hypothesis("twice", [ex.http_ok(), ex.http_ok()])
    with pytest.raises(ValueError, match="min_ready must be a whole number of pods"):
        ex.pods_ready("app=details", min_ready=0)
    with pytest.raises(ValueError, match="pause_after of step 'x' must be 0 or more seconds"):
        ex.Step("x", lambda: None, pause_after=-1)
    hypothesis = ex.Hypothesis("page", [ex.http_ok()])
    with pytest.raises(ValueError, match="the method needs at least one step"):
        ex.Experiment(lab, "nothing", hypothesis, [])
    with pytest.raises(ValueError, match="method step 1 must be a function or a Step"):
        ex.Experiment(lab, "not callable", hypothesis, ["pkill ruby"])  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------------- experiments


def test_losing_details_everywhere_is_tolerated_when_the_hypothesis_claims_only_reviews(
        lab: labkit.Lab, tmp_path: Path) -> None:
    before = restarts(lab)
    hypothesis = ex.Hypothesis("page 200 and reviews healthy", [ex.http_ok(), ex.section_healthy("reviews")])
    experiment = ex.Experiment(lab, "kill details in all pods", hypothesis, [kill_details_everywhere(lab)],
                               description="the lesson's for-loop of pkill ruby", traffic_rate=20, progress=False)
    path = tmp_path / "journals" / "kill-details.json"
    journal = experiment.run(journal_path=path)

    assert journal.status == "completed" and not journal.deviated, journal.verdict
    assert journal.before is not None and journal.before.met
    assert journal.after is not None and journal.after.met
    assert [d.name for d in journal.during] == ["page answers 200", "reviews healthy"]
    assert all(d.met and d.samples >= 2 and d.share == 1 for d in journal.during)
    # the method really broke details: every details pod restarted once, and the page showed its error notice
    details = lab.pod_names("app=details")
    assert [a.pods for a in journal.actions] == [details]
    after = restarts(lab)
    assert all(after[p] == before[p] + 1 for p in details)
    assert all(after[p] == before[p] for p in after if p not in details)
    assert sorted(journal.recovery["pod"]) == details and journal.recovery["recovery_s"].notna().all()
    assert journal.traffic_summary is not None and journal.traffic_summary["details"] < 1
    assert journal.traffic_summary["reviews"] == 1 and journal.traffic_summary["page"] == 1
    assert journal.traffic_summary["verdict"] == "gradual degradation"
    assert journal.verdict.startswith("The hypothesis “page 200 and reviews healthy” held before, during and after")
    assert "Not claimed by the hypothesis, so tolerated: details worked in" in journal.verdict

    # the journal on disk: complete JSON, written atomically (no temporary file left beside it)
    assert sorted(p.name for p in path.parent.iterdir()) == ["kill-details.json"]
    doc = json.loads(path.read_text())
    assert doc["status"] == "completed" and doc["deviated"] is False
    assert doc["experiment"]["title"] == "kill details in all pods"
    assert [p["name"] for p in doc["experiment"]["steady-state-hypothesis"]["probes"]] == [
        "page answers 200", "reviews healthy"]
    for phase in ("before", "after"):
        state = doc["steady_states"][phase]
        assert state["steady_state_met"] is True
        assert [(p["activity"]["name"], p["output"], p["tolerance_met"]) for p in state["probes"]] == [
            ("page answers 200", 200, True), ("reviews healthy", "ok", True)]
    assert doc["steady_states"]["during"] and all(s["steady_state_met"] for s in doc["steady_states"]["during"])
    assert doc["run"][0]["status"] == "succeeded"
    assert doc["run"][0]["activity"] == {"type": "action", "name": "pkill ruby in every details pod"}
    assert doc["run"][0]["output"][0]["pods"] == details
    action = doc["labkit"]["actions"][0]
    assert action["action"] == "kill" and action["process"] == "ruby" and action["pods"] == details
    assert action["mode"] == "all" and action["ok"] is True
    assert doc["labkit"]["timeline"]["rows"] and "Error" in doc["labkit"]["timeline"]["statuses_seen"]
    assert doc["labkit"]["traffic"]["requests"] > 0
    assert doc["start"] < doc["end"] and doc["duration"] > 0

    html = journal._repr_html_()
    assert "COMPLETED" in html and "reviews healthy" in html and "pkill ruby in every details pod" in html

    # the run's figures: the kill marked on the timeline, the details dip in the availability
    keep = Path(os.environ.get("LABKIT_PLOT_DIR") or tmp_path)
    keep.mkdir(parents=True, exist_ok=True)
    timeline = journal.plot_timeline()
    labels = [t.get_text() for t in timeline.axes[0].texts]
    assert "pkill ruby · 3 pods" in labels
    timeline.savefig(keep / "experiment_timeline.png")
    availability = journal.plot_availability("250ms")
    lines = {line.get_label().split(":")[0]: line for line in availability.axes[0].lines}
    assert min(lines["details"].get_ydata()) < 100 and min(lines["reviews"].get_ydata()) == 100
    availability.savefig(keep / "experiment_availability.png")
    journal.plot_recovery().savefig(keep / "experiment_recovery.png")


def test_claiming_details_healthy_during_the_method_deviates(lab: labkit.Lab, tmp_path: Path) -> None:
    hypothesis = ex.Hypothesis("details stays healthy", [ex.http_ok(), ex.section_healthy("reviews"),
                                                         ex.section_healthy("details")])
    experiment = ex.Experiment(lab, "kill details in all pods", hypothesis, [kill_details_everywhere(lab)],
                               progress=False)
    path = tmp_path / "deviated.json"
    with pytest.raises(labkit.HypothesisFailed, match="experiment 'kill details in all pods' deviated") as caught:
        experiment.run(raise_on_deviation=True, journal_path=path)
    journal = caught.value.journal  # type: ignore[attr-defined]
    assert journal.status == "deviated" and journal.deviated
    during = {d.name: d for d in journal.during}
    assert during["details healthy"].met is False
    assert during["details healthy"].first_failure.value == "error notice shown"
    assert during["page answers 200"].met and during["reviews healthy"].met  # gradual degradation
    assert journal.before.met and journal.after.met  # it recovered: the deviation is during the method only
    assert journal.verdict.startswith("Deviated: the hypothesis “details stays healthy” did not hold.")
    assert "details healthy: held in" in journal.verdict
    # the journal was saved before the exception
    doc = json.loads(path.read_text())
    assert doc["status"] == "deviated" and doc["deviated"] is True
    failed = [d for d in doc["labkit"]["during"] if not d["tolerance_met"]]
    assert [d["name"] for d in failed] == ["details healthy"]
    assert "DEVIATED" in journal._repr_html_()


def test_a_steady_state_that_does_not_hold_before_aborts_without_breaking_anything(lab: labkit.Lab) -> None:
    before = restarts(lab)
    called: list[bool] = []
    hypothesis = ex.Hypothesis("ratings shows stars", [ex.http_ok(), ex.section_healthy("ratings")])
    experiment = ex.Experiment(lab, "kill details", hypothesis, [lambda: called.append(True)], progress=False)
    journal = experiment.run()
    assert journal.status == "aborted" and not journal.deviated
    assert called == [] and journal.run == [] and journal.actions == []
    assert journal.after is None and journal.during == []
    assert journal.verdict.startswith("Aborted: the steady state did not hold before the method")
    assert "ratings healthy: not shown on the page" in journal.verdict
    assert restarts(lab) == before
    # asked to, it raises
    with pytest.raises(labkit.HypothesisFailed, match="aborted"):
        experiment.run(raise_on_deviation=True)


def test_a_failing_step_is_recorded_and_aborts_the_rest(lab: labkit.Lab) -> None:
    later: list[bool] = []
    hypothesis = ex.Hypothesis("page", [ex.http_ok()])
    experiment = ex.Experiment(lab, "hit the tester", hypothesis, [
        ex.Step("kill the tester pod", lambda: chaos.kill(lab, "app=sleep", "sleep")),
        ex.Step("never reached", lambda: later.append(True)),
    ], progress=False, settle=0)
    journal = experiment.run()
    assert journal.status == "aborted"
    assert [r["status"] for r in journal.run] == ["failed"]
    assert "SafetyError" in journal.run[0]["exception"][-1]
    assert later == []
    assert journal.verdict.startswith("Aborted: step 'kill the tester pod' failed: labkit.errors.SafetyError")
    assert journal.after is not None and journal.after.met  # recovery and the after check still ran


def test_without_during_only_before_and_after_are_checked(lab: labkit.Lab) -> None:
    hypothesis = ex.Hypothesis("details pods Ready", [ex.pods_ready("app=details")])
    experiment = ex.Experiment(lab, "kill one details pod", hypothesis,
                               [lambda: chaos.kill(lab, "app=details")], progress=False)
    journal = experiment.run(during=False)
    # killed, recovered, Ready again: the claim held before and after; nobody looked during
    assert journal.status == "completed", journal.verdict
    assert journal.during == [] and journal.traffic_summary is None
    assert journal.verdict.startswith("The hypothesis “details pods Ready” held before and after the method.")
    assert len(journal.actions) == 1 and journal.actions[0].pods == [lab.pod_names("app=details")[0]]


# ------------------------------------------------------------------------------------------------- journal files


def synthetic_journal() -> ex.Journal:
    import pandas as pd

    t = pd.Timestamp("2026-11-26T15:00:00Z")
    result = ex.ProbeResult("page answers 200", True, 200, 200, t)
    state = ex.SteadyState("before", True, [result], t)
    return ex.Journal(title="t", description="", status="completed", deviated=False, verdict="held",
                      hypothesis={"title": "h", "probes": [{"name": "page answers 200"}]}, before=state,
                      after=state, during=[], during_rounds=[], run=[], actions=[], start=t,
                      end=t + pd.Timedelta(seconds=1))


def test_save_is_atomic_and_never_leaves_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.json"
    journal = synthetic_journal()
    assert journal.save(path) == path
    first = path.read_text()
    assert json.loads(first)["verdict"] == "held"
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    journal.verdict = "changed"
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        journal.save(path)
    assert path.read_text() == first  # the old journal is intact...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.json"]  # ...and no temporary file is left
    monkeypatch.undo()
    journal.save(path)
    assert json.loads(path.read_text())["verdict"] == "changed"


def test_values_that_json_cannot_hold_are_made_plain(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    journal = synthetic_journal()
    journal.run = [{"name": "odd", "output": {"nan": float("nan"), "nat": pd.NaT, "na": pd.NA,
                                              "n": np.int64(3), "when": pd.Timestamp("2026-01-01", tz="UTC"),
                                              "obj": object.__new__(type("Thing", (), {}))}}]
    doc = json.loads(journal.save(tmp_path / "j.json").read_text())
    output = doc["run"][0]["output"]
    assert output["nan"] is None and output["nat"] is None and output["na"] is None and output["n"] == 3
    assert output["when"] == "2026-01-01T00:00:00+00:00" and output["obj"].startswith("<")
