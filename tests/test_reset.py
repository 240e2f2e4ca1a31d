"""Reset to any lesson (labkit.workshop): fresh pods without crash history, the lesson's objects, nothing of later
lessons; then that lesson runs from there. All against a real sandbox, through the real Python client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import eventually

import labkit
from labkit import checks, lessons, workshop
from labkit.sandbox import Sandbox

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PATHS = sorted(NOTEBOOKS.glob(lessons.NOTEBOOK_PATTERN))

# A later lesson that adds objects (reviews v2 and v3), to see a reset create them and a reset before it remove them.
WITH_V2 = {**workshop.LESSONS,
           "09": workshop.LessonState("09", "Canary", ("bookinfo.yaml", "sleep.yaml", "reviews-v2-v3.yaml"))}


def _restarts(lab: labkit.Lab) -> dict[str, int]:
    pods = lab.pods()
    return {str(n): int(r) for n, r in zip(pods["name"], pods["restarts"], strict=True)}


def test_unknown_lesson_names_the_lessons(lab: labkit.Lab) -> None:
    with pytest.raises(labkit.LabkitError, match=r"no lesson '99' to reset to; lessons: 01, 02, 03, 04, 05, 06"):
        lab.reset("99")
    assert workshop.lesson_state("04-chaos-all-pods").lesson == "04"
    assert workshop.lesson_state(4).title == "Chaos in all pods"


def test_reset_renews_crashed_pods_and_restores_replicas(lab: labkit.Lab) -> None:
    rec = lab.record("app=details")
    try:
        action = lab.kill("app=details", "ruby", mode="all")
        lessons.wait_recovered(rec, action, progress=False)
    finally:
        rec.stop()
    lab.scale("ratings-v1", 1)
    crashed = sorted(lab.pod_names("app=details"))
    assert all(_restarts(lab)[p] >= 1 for p in crashed)

    planned = lab.reset("04", dry_run=True)
    assert planned.dry_run and "would do 2 things" in str(planned)
    assert [(s.verb, s.name) for s in planned.steps] == [("renew", "details-v1"), ("scale", "ratings-v1")]
    assert "1 restart" in planned.steps[0].why and "1 -> 3 replicas" in planned.steps[1].why
    assert sorted(lab.pod_names("app=details")) == crashed, "a dry run touches nothing"

    done = lab.reset("04")
    assert not done.dry_run and done.pods == 13 and [s.verb for s in done.steps] == ["renew", "scale"]
    assert "did 2 things" in str(done) and "13 pods Ready, none restarted" in str(done)
    assert "steps=2" in repr(done) and "renew deployment/details-v1" in done._repr_html_()
    after = _restarts(lab)
    assert len(after) == 13 and set(after.values()) == {0}
    assert not set(crashed) & set(after), "the crashed pods were replaced"
    again = lab.reset("04")
    assert again.steps == () and "nothing: the lab is already where the lesson starts" in str(again)


def test_reset_creates_and_removes_the_objects_of_other_lessons(lab: labkit.Lab) -> None:
    lab.apps.delete_namespaced_deployment("sleep", lab.namespace)
    lab.core.delete_namespaced_service("details", lab.namespace)
    eventually(lambda: not lab.pod_names("app=sleep"), what="the tester pod gone")
    to_v2 = lab.reset("09", states=WITH_V2)
    made = {(s.verb, s.kind, s.name) for s in to_v2.steps}
    assert {("create", "Deployment", "reviews-v2"), ("create", "Deployment", "reviews-v3"),
            ("create", "Deployment", "sleep"), ("create", "Service", "details")} <= made
    assert len(lab.pod_names("app=reviews")) == 9 and to_v2.pods == 19
    assert lab.request("http://details:9080/details/0").returncode == 0  # the Service is back, with endpoints
    back = lab.reset("04", states=WITH_V2)
    assert {(s.verb, s.name) for s in back.steps} == {("delete", "reviews-v2"), ("delete", "reviews-v3")}
    eventually(lambda: len(lab.pod_names("app=reviews")) == 3, what="reviews v2 and v3 gone")
    assert set(lab.deployments()["name"]) == {"details-v1", "productpage-v1", "ratings-v1", "reviews-v1", "sleep"}


def test_cli_reset(ready_sandbox: Sandbox) -> None:
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(ready_sandbox.dir)}
    env.pop("LABKIT_KUBECONFIG", None)
    dry = subprocess.run([sys.executable, "-m", "labkit.cli", "reset", "03", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("reset to lesson 03 (Chaos in one pod) in namespace default (sandbox): would do")
    done = subprocess.run([sys.executable, "-m", "labkit.cli", "reset", "3"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "13 pods Ready, none restarted" in done.stdout, done.stdout + done.stderr
    bad = subprocess.run([sys.executable, "-m", "labkit.cli", "reset", "99"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and "no lesson '99'" in bad.stderr


# ------------------------------------------------------------------------------------------------ then the lesson


@pytest.fixture(scope="module")
def progress_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("progress") / "progress.jsonl"


# Latest first: each reset then undoes what the lesson before it in the run (a later one) broke.
@pytest.mark.parametrize("path", list(reversed(PATHS)), ids=lambda p: p.stem)
def test_reset_then_the_lesson_runs(ready_sandbox: Sandbox, path: Path, tmp_path: Path, progress_file: Path) -> None:
    with labkit.connect(sandbox_dir=ready_sandbox.dir) as lab:
        record = lab.reset(path.stem)
        # the Istio lessons (9-12) start with one replica of each service and reviews v1-v3: 7 pods, all 2/2
        meshed = workshop.lesson_state(path.stem).mesh
        assert record.lesson == path.stem[:2] and record.pods == (7 if meshed else 13)
        assert set(lab.pods()["ready"]) == {"2/2" if meshed else "1/1"}
        assert set(_restarts(lab).values()) == {0}
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(ready_sandbox.dir), "LABKIT_SOLVE": "1",
           "LABKIT_PROGRESS": str(progress_file)}
    env.pop("LABKIT_KUBECONFIG", None)
    run = lessons.run_notebook(path, cwd=tmp_path, env=env, timeout=300, params={"RATE": 20}, progress=None)
    assert run.ok, str(run.failure)


def test_the_lessons_checks_were_solved_and_recorded(progress_file: Path) -> None:
    """After the runs above (LABKIT_SOLVE=1, as the tour): every lesson's exercises passed by their solutions."""
    results = checks.read_results(progress_file)
    got = {(r.lesson, r.step): r for r in results}
    assert set(got) == set(checks.EXERCISES)
    for key in checks.EXERCISES:
        assert key in got, f"{key} not recorded: {results}"
        assert got[key].ok and got[key].solved and got[key].attempt == 1


def test_on_a_named_cluster_reset_rolls_the_deployments(ready_sandbox: Sandbox) -> None:
    """Connected by kubeconfig (as to a real cluster: no sandbox handle), a reset rolls the deployments instead of
    deleting pods, and waits for the rollout's fresh pods."""
    with labkit.connect(kubeconfig=ready_sandbox.kubeconfig) as lab:
        assert not lab.is_sandbox
        rec = lab.record("app=details")
        try:
            action = lab.kill("app=details", "ruby", mode="all", confirm=True)
            lessons.wait_recovered(rec, action, progress=False)
        finally:
            rec.stop()
        before = lab.apps.read_namespaced_deployment("details-v1", lab.namespace)
        planned = lab.reset("05", dry_run=True)
        assert [s.verb for s in planned.steps] == ["renew"] and not planned.sandbox
        done = lab.reset("05", timeout=120)
        assert done.pods == 13 and set(_restarts(lab).values()) == {0}
        after = lab.apps.read_namespaced_deployment("details-v1", lab.namespace)
        assert "kubectl.kubernetes.io/restartedAt" in (after.spec.template.metadata.annotations or {})
        assert after.metadata.generation > before.metadata.generation


def test_reset_cleans_up_an_interrupted_lesson_7(lab: labkit.Lab) -> None:
    """Lesson 7 stopped after releasing a v2 pod and retiring v1: reviews-v2, a pod nobody owns, no reviews-v1."""
    lab.apply("reviews-v2-v3.yaml", selector="app=reviews_test,version=v2",
              replace={"app: reviews": "app: reviews_test"})
    lab.label("version=v2", {"app": "reviews"}, overwrite=True)
    lab.wait_rollout("reviews-v2")
    released = lab.pod_names("app=reviews,version=v2")
    assert len(released) == 1
    lab.delete_deployment("reviews-v1")
    done = lab.reset("07")
    steps = {(s.verb, s.kind, s.name) for s in done.steps}
    assert {("create", "Deployment", "reviews-v1"), ("delete", "Deployment", "reviews-v2"),
            ("delete", "Pod", released[0])} <= steps, steps
    eventually(lambda: not lab.pod_names("version=v2"), what="every v2 pod gone")
    assert done.pods == 13 and len(lab.pod_names("app=reviews,version=v1")) == 3
