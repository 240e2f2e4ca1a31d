"""Lesson 7's verbs (labkit.deploy, traffic per version, the exercise checks) against a real sandbox, each judged
also by the real kubectl: apply with istio.io's sed and -l, pod IP, relabel and release, roll back, scale."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Kubectl, wait_all_ready
from helpers import eventually

import labkit
from labkit import BadSelector, LabkitError, NotFound, deploy, lessons
from labkit.page import reviews_served_by
from labkit.sandbox import Sandbox

HIDDEN = "app=reviews_test,version=v2"
SED = {"app: reviews": "app: reviews_test"}


@pytest.fixture()
def lab(sandbox: Sandbox) -> Iterator[labkit.Lab]:
    """A Lab on the module's sandbox; afterwards reviews is back to three v1 pods and no v2 (whatever failed)."""
    wait_all_ready(sandbox)
    lab = labkit.connect(sandbox_dir=sandbox.dir)
    try:
        yield lab
    finally:
        for name in ("reviews-v2",):
            try:
                lab.delete_deployment(name)
            except NotFound:
                pass
        if lab.pod_names("version=v2"):
            lab.delete_pods("version=v2", mode="all")
            lab.wait_deleted("version=v2")
        if "reviews-v1" not in set(lab.deployments()["name"]):
            lab.apply("bookinfo.yaml", selector="app=reviews,version=v1")
        lab.scale("reviews-v1", 3)
        lab.wait_rollout("reviews-v1")
        lab.close()
        wait_all_ready(sandbox)


def _json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def test_the_lesson_moves_judged_by_kubectl(lab: labkit.Lab, kubectl: Kubectl) -> None:
    # 1. deploy v2 hidden: istio.io's sed + -l; kubectl's words, then nothing to change the second time
    applied = lab.apply("reviews-v2-v3.yaml", selector=HIDDEN, replace=SED)
    assert str(applied) == "deployment.apps/reviews-v2 created" and applied.skipped == 1
    assert str(lab.apply("reviews-v2-v3.yaml", selector=HIDDEN, replace=SED)) == "deployment.apps/reviews-v2 unchanged"
    dep = _json(kubectl, "get", "deployment", "reviews-v2")
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "reviews_test", "version": "v2"}
    assert dep["status"]["availableReplicas"] == 1  # apply waited for the rollout
    hidden_pod = kubectl("get", "pod", "-l", HIDDEN, "-o", "jsonpath={.items[0].metadata.name}").stdout

    # 2. it is not behind the Service; the tester reaches it by pod IP and sees black stars
    ip = lab.pod_ip(HIDDEN)
    assert ip == kubectl("get", "pod", "-l", HIDDEN, "-o", "jsonpath={.items[0].status.podIP}").stdout
    assert ip not in kubectl("get", "endpoints", "reviews", "-o", "jsonpath={.subsets[*].addresses[*].ip}").stdout
    body = json.loads(lab.request(f"http://{ip}:9080/reviews/7", check=True).stdout)
    assert [r["rating"] for r in body["reviews"]] == [{"stars": 5, "color": "black"}, {"stars": 4, "color": "black"}]
    assert list(lessons.status_codes(lab, f"http://{ip}:9080/reviews/7", 3)) == [200, 200, 200]
    hidden = lab.traffic(rate=20).run(1.5, progress=False).by_version()
    assert list(hidden["version"]) == ["v1"] and hidden["share"].iloc[0] == 1.0

    # 3. kubectl's refusal without --overwrite: nothing changes
    with pytest.raises(LabkitError, match=r"'app' already has a value \(reviews_test\).*overwrite=True"):
        lab.label("version=v2", {"app": "reviews"})
    assert _json(kubectl, "get", "pod", hidden_pod)["metadata"]["labels"]["app"] == "reviews_test"

    # 4. release: relabelled, no owner any more, a replacement from the ReplicaSet, behind the Service
    released = lab.label("version=v2", {"app": "reviews"}, overwrite=True)
    assert str(released) == f"pod/{hidden_pod} labeled" and released.pods == [hidden_pod]
    pods = lab.wait_rollout("reviews-v2")
    assert len(pods) == 1 and pods["name"].iloc[0] != hidden_pod and pods["app"].iloc[0] == "reviews_test"
    pod = _json(kubectl, "get", "pod", hidden_pod)
    assert pod["metadata"]["labels"]["app"] == "reviews" and not pod["metadata"].get("ownerReferences")
    assert "Controlled By" not in kubectl("describe", "pod", hidden_pod).stdout
    owners = lab.owners("version=v2").set_index("name")
    assert list(owners.columns) == list(deploy.OWNER_COLUMNS)[1:] and owners.loc[hidden_pod, "owner"] == ""
    assert str(owners.loc[pods["name"].iloc[0], "owner"]).startswith("reviews-v2-")
    custom = "custom-columns=NAME:.metadata.name,OWNER:.metadata.ownerReferences[0].name"
    assert f"{hidden_pod}   <none>" in kubectl("get", "pods", "-l", "version=v2", "-o", custom).stdout
    eventually(lambda: ip in kubectl("get", "endpoints", "reviews", "-o",
                                     "jsonpath={.subsets[*].addresses[*].ip}").stdout, 20, what="the released pod's IP "
               "in the reviews endpoints")

    # 5. some page loads now come from v2 (one pod of four), measured per version
    traffic = lab.traffic(rate=20).run(3, progress=False)
    shares = traffic.by_version().set_index("version")
    assert set(shares.index) == {"v1", "v2"} and shares.loc["v2", "pods"] == 1 and shares.loc["v1", "pods"] == 3
    assert 0 < float(shares["share"]["v2"]) < 1 and abs(shares["share"].sum() - 1) < 1e-3
    served = traffic.served
    assert set(served.loc[served["version"] == "v2", "pod"]) == {hidden_pod}

    # 6. roll back: the Deployment's pods go, the released one stays until deleted by hand
    replacement = str(pods["name"].iloc[0])
    assert lab.delete_deployment("reviews-v2") == 'deployment.apps "reviews-v2" deleted from default namespace'
    assert kubectl("get", "pod", replacement, check=False).returncode != 0
    assert _json(kubectl, "get", "pod", hidden_pod)["status"]["phase"] == "Running"
    lab.delete_pods("app=reviews,version=v2", mode="all")
    lab.wait_deleted("app=reviews,version=v2")
    assert "No resources found" in kubectl("get", "pods", "-l", "version=v2").stderr


def test_scale_waits_for_the_pods_themselves(lab: labkit.Lab, kubectl: Kubectl) -> None:
    assert str(lab.apply("reviews-v2-v3.yaml", selector="app=reviews,version=v2")) == \
        "deployment.apps/reviews-v2 created"
    lab.scale("reviews-v2", 3)
    up = lab.wait_rollout("reviews-v2")
    assert len(up) == 3 and set(up["status"]) == {"Running"} and set(up["ready"]) == {"1/1"}
    lab.scale("reviews-v2", 1)
    down = lab.wait_rollout("reviews-v2")
    assert len(down) == 1
    assert len(kubectl("get", "pods", "-l", "app=reviews,version=v2", "-o", "name").stdout.split()) == 1
    lab.delete_deployment("reviews-v1")
    assert kubectl("get", "pods", "-l", "version=v1,app=reviews", "-o", "name").stdout.strip() == ""
    only = lab.traffic(rate=20).run(1.5, progress=False).by_version()
    assert list(only["version"]) == ["v2"]


def test_apply_errors_name_the_next_step(lab: labkit.Lab) -> None:
    with pytest.raises(LabkitError, match=r"no object of the manifest has labels matching 'app=nothing'.*"
                                          r"Deployment/reviews-v2 \(app=reviews,version=v2\)"):
        lab.apply("reviews-v2-v3.yaml", selector="app=nothing")
    with pytest.raises(FileNotFoundError, match="labkit ships none of that name"):
        lab.apply("no-such.yaml")
    with pytest.raises(LabkitError, match="labkit cannot apply Ingress"):
        lab.apply("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: x\n")
    with pytest.raises(LabkitError, match="not valid YAML"):
        lab.apply("kind: [\n")
    with pytest.raises(BadSelector, match="cannot read"):
        lab.apply("reviews-v2-v3.yaml", selector="app=(x")
    with pytest.raises(ValueError, match="not a valid label"):
        lab.label("app=reviews", {"app": "bad value"})
    with pytest.raises(BadSelector, match="an empty one would mean every pod"):
        lab.label("", {"x": "y"})
    with pytest.raises(labkit.NoPodsMatch, match="No pods match 'version=v9'"):
        lab.pod_ip("version=v9")
    with pytest.raises(NotFound):
        lab.delete_deployment("reviews-v9")


def test_label_by_name_and_removal(lab: labkit.Lab, kubectl: Kubectl) -> None:
    name = lab.pod_names("app=ratings")[0]
    added = lab.label(f"pod/{name}", {"lesson": "seven"})
    assert str(added) == f"pod/{name} labeled"
    assert _json(kubectl, "get", "pod", name)["metadata"]["labels"]["lesson"] == "seven"
    assert str(lab.label(f"pod/{name}", {"lesson": "seven"})) == f"pod/{name} not labeled"
    removed = lab.label(f"pod/{name}", {"lesson": None})
    assert removed.changes[0].before["lesson"] == "seven" and "lesson" not in removed.changes[0].after
    assert "lesson" not in _json(kubectl, "get", "pod", name)["metadata"]["labels"]


def test_selector_matching_like_kubectl_apply_l() -> None:
    labels = {"app": "reviews", "version": "v2"}
    assert deploy.object_labels_match("app=reviews,version=v2", labels)
    assert deploy.object_labels_match("app==reviews", labels)
    assert not deploy.object_labels_match("version!=v2", labels)
    assert deploy.object_labels_match("version!=v1,missing!=x", labels)
    assert deploy.object_labels_match("version in (v1,v2)", labels)
    assert not deploy.object_labels_match("version notin (v2,v3)", labels)
    assert deploy.object_labels_match("app", labels) and not deploy.object_labels_match("!app", labels)
    assert deploy.object_labels_match({"app": "reviews"}, labels) and deploy.object_labels_match(None, labels)
    assert not deploy.object_labels_match("app=reviews", None)


def test_read_manifest_edits_like_sed() -> None:
    text = "kind: Deployment\nmetadata:\n  name: a\n  labels:\n    app: reviews\n    x: \"app: reviews app: reviews\"\n"
    objs = deploy.read_manifest(text, {"app: reviews": "app: reviews_test"})
    assert objs[0]["metadata"]["labels"]["app"] == "reviews_test"
    # the first occurrence on a line only, as sed without /g
    assert objs[0]["metadata"]["labels"]["x"] == "app: reviews_test app: reviews"


def test_reviews_version_read_from_the_page() -> None:
    served = "<dl><dt>Reviews served by:</dt><u>reviews-v3-abc-12345</u></dl>"
    head = "<h4>Book Details</h4><h4>Book Reviews</h4>"
    legacy_v2 = (f"{head}<blockquote><font color=\"black\"><span class=\"glyphicon glyphicon-star\"></span></font>"
                 f"</blockquote>{served.replace('v3', 'v2')}")
    assert reviews_served_by(legacy_v2) == ("v2", "reviews-v2-abc-12345")
    tailwind_v3 = f'{head}<div class="flex gap-x-1 text-red-500"><svg></svg></div>{served}'
    assert reviews_served_by(tailwind_v3) == ("v3", "reviews-v3-abc-12345")
    assert reviews_served_by(f"{head}<blockquote><p>text</p></blockquote>") == ("v1", "")
    unavailable = f"{head}<p><i>Ratings service is currently unavailable</i></p>{served}"
    assert reviews_served_by(unavailable) == ("v3", "reviews-v3-abc-12345")  # no stars: the pod's name tells
    failed = "<h4>Error fetching product reviews!</h4><p>Sorry, product reviews are currently unavailable</p>"
    assert reviews_served_by(failed)[0] == ""


def test_exercise_checks(lab: labkit.Lab) -> None:
    assert lessons.check_service_selector(lab, "app=reviews").ok
    assert lessons.check_service_selector(lab, {"app": "reviews"}).ok
    more = lessons.check_service_selector(lab, "app=reviews,version=v1")
    assert not more.ok and "more than the Service does" in more.message
    assert not lessons.check_service_selector(lab, "app=reviews_test").ok
    assert "not answered yet" in str(lessons.check_service_selector(lab, ...))
    assert lessons.check_share(0.25, new=1, old=3).ok and lessons.check_share("25%", new=1, old=3).ok
    assert lessons.check_share(50, new=3, old=3).ok
    assert not lessons.check_share(0.5, new=1, old=3).ok
    assert "not a share" in lessons.check_share("lots", new=1, old=3).message
    with pytest.raises(ValueError):
        lessons.check_share(0.5, new=0, old=0)
    assert lessons.check_release("nobody").ok and lessons.check_release("No one").ok
    wrong = lessons.check_release("the garbage collector")
    assert not wrong.ok and "ownerReferences" in wrong.hint
    assert "is not one of" in lessons.check_release("kubelet").message
