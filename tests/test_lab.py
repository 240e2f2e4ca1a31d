"""labkit.connect() and the Lab's kubectl verbs, against a real sandbox."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, Kubectl

import labkit
from labkit import (
    POD_COLUMNS,
    BadSelector,
    ClusterUnreachable,
    ExecError,
    ExecTimeout,
    LabkitError,
    NoPodsMatch,
    NotFound,
)
from labkit.sandbox import Sandbox


@pytest.fixture(scope="module")
def lab(sandbox: Sandbox) -> labkit.Lab:
    return labkit.connect(sandbox_dir=sandbox.dir)


def test_connect_describes_itself(lab: labkit.Lab, sandbox: Sandbox) -> None:
    assert lab.is_sandbox and lab.namespace == "default" and lab.context == "labkit-sandbox"
    assert lab.productpage_url == sandbox.productpage_url
    html = lab._repr_html_()
    assert "embedded sandbox" in html and sandbox.api_url in html and "default" in html
    assert "embedded sandbox" in repr(lab)


def test_connect_never_uses_the_current_context_silently(sandbox: Sandbox, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A KUBECONFIG in the environment is not a request to use it: without a name, labkit uses the sandbox.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "someone-elses-cluster"))
    monkeypatch.setenv("LABKIT_SANDBOX_DIR", str(sandbox.dir))
    assert labkit.connect().is_sandbox
    named = labkit.connect(kubeconfig=str(sandbox.kubeconfig))
    assert not named.is_sandbox and named.server == sandbox.api_url  # a named cluster is a "real" one
    monkeypatch.setenv("LABKIT_KUBECONFIG", str(sandbox.kubeconfig))
    assert not labkit.connect().is_sandbox


def test_no_cluster_says_what_to_do(tmp_path: Path, sandbox: Sandbox) -> None:
    with pytest.raises(ClusterUnreachable, match="labkit sandbox up"):
        labkit.connect(sandbox_dir=tmp_path / "none", start=False)
    with pytest.raises(ClusterUnreachable, match="does not exist"):
        labkit.connect(kubeconfig=str(tmp_path / "missing.yaml"))
    with pytest.raises(LabkitError, match="context 'nope' is not in the kubeconfig; contexts there: labkit-sandbox"):
        labkit.connect(kubeconfig=str(sandbox.kubeconfig), context="nope")
    with pytest.raises(LabkitError, match="is not a kubeconfig"):
        labkit.connect(kubeconfig=str(labkit.manifest_path("sleep.yaml")))


def test_a_dead_sandbox_is_reported_as_unreachable(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", time_scale=FAST).start()
    lab = labkit.connect(sandbox_dir=sb.dir)
    sb.stop()
    with pytest.raises(ClusterUnreachable, match="labkit sandbox status"):
        lab.pods()


def test_pods_frame_schema(lab: labkit.Lab, ready_sandbox: Sandbox) -> None:
    pods = lab.pods()
    assert list(pods.columns) == list(POD_COLUMNS)
    assert {str(t) for t in pods.dtypes} >= {"string", "int64"}
    assert len(pods) == 13 and (pods["status"] == "Running").all() and (pods["ready"] == "1/1").all()
    details = lab.pods("app=details")
    assert len(details) == 3 and set(details["app"]) == {"details"} and set(details["version"]) == {"v1"}
    assert details["ip"].str.startswith("127.").all() and (details["node"] == "sandbox").all()
    assert list(details["name"]) == sorted(details["name"])
    same = lab.pods({"app": "details", "version": "v1"})
    assert list(same["name"]) == list(details["name"])
    empty = lab.pods("app=nothing")
    assert empty.empty and list(empty.columns) == list(POD_COLUMNS)
    assert dict(empty.dtypes.astype(str)) == dict(pods.dtypes.astype(str))
    assert isinstance(pods["created"].iloc[0], pd.Timestamp)


def test_selector_errors(lab: labkit.Lab) -> None:
    with pytest.raises(BadSelector, match="does not parse"):
        lab.pods("app in (details")
    with pytest.raises(NoPodsMatch, match=r"No pods match 'app=detials'.*Labels present: .*app=details"):
        lab.pod_names("app=detials", require=True)


def test_exec_results_and_exit_codes(lab: labkit.Lab, ready_sandbox: Sandbox) -> None:
    tester = lab.tester_pod()
    assert tester.startswith("sleep-")
    r = lab.request("http://ratings:9080/ratings/7")
    assert r.stdout == '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}' and r.returncode == 0 and r.ok
    assert r.pod == tester and r.container == "sleep" and r.duration > 0
    assert lab.status_code("http://productpage:9080/productpage") == 200
    assert lab.status_code("http://ratings:9080/nothere") == 404
    unknown = lab.request("http://ratingz:9080/ratings/7")
    assert unknown.returncode == 6 and "Could not resolve host: ratingz" in unknown.stderr
    with pytest.raises(ExecError, match=r"exited with code 6.*Could not resolve host"):
        lab.request("http://ratingz:9080/ratings/7", check=True)
    assert lab.exec(tester, "bash -c 'echo hi'").returncode == 127
    assert lab.exec(tester, ["cat"], stdin="piped\n").stdout == "piped\n"
    with pytest.raises(ExecTimeout, match=r"did not finish within 0\.5 s"):
        lab.exec(tester, ["sleep", "5"], timeout=0.5)
    assert "exit 6" in unknown._repr_html_()
    bundle = unknown._repr_mimebundle_()
    assert bundle["application/vnd.labkit.record+json"] == {
        "kind": "exec", "pod": tester, "container": "sleep", "command": ["curl", "-sS", "-m", "10",
                                                                          "http://ratingz:9080/ratings/7"],
        "stdout": "", "stderr": unknown.stderr, "returncode": 6}


def test_exec_errors_name_the_pod(lab: labkit.Lab) -> None:
    with pytest.raises(NotFound, match=r'pod "nope" not found in namespace default\. Pods there: details-v1-'):
        lab.exec("nope", ["ls"])
    with pytest.raises(LabkitError, match="exec needs a command"):
        lab.exec(lab.tester_pod(), [])


def test_two_containers_default_and_choice(lab: labkit.Lab, kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "two.yaml"
    manifest.write_text("""
apiVersion: v1
kind: Pod
metadata:
  name: with-sidecar
  annotations: {kubectl.kubernetes.io/default-container: details}
spec:
  containers:
  - {name: istio-proxy, image: docker.io/curlimages/curl:8.16.0, command: [sleep, infinity]}
  - {name: details, image: docker.io/istio/examples-bookinfo-details-v1:1.20.3}
---
apiVersion: v1
kind: Pod
metadata: {name: no-default}
spec:
  containers:
  - {name: a, image: docker.io/curlimages/curl:8.16.0, command: [sleep, infinity]}
  - {name: b, image: docker.io/curlimages/curl:8.16.0, command: [sleep, infinity]}
""")
    kubectl("apply", "-f", str(manifest))
    try:
        kubectl("wait", "--for=condition=Ready", "pod/with-sidecar", "pod/no-default", "--timeout=30s")
        r = lab.exec("with-sidecar", ["ps"])
        assert r.container == "details" and "ruby" in r.stdout
        assert lab.exec("with-sidecar", ["ps"], container="istio-proxy").container == "istio-proxy"
        with pytest.raises(LabkitError, match=r"has containers a, b and no kubectl\.kubernetes\.io/default-container"):
            lab.exec("no-default", ["ps"])
        with pytest.raises(LabkitError, match='has no container "c"'):
            lab.exec("no-default", ["ps"], container="c")
        assert "Listening" in lab.logs("with-sidecar") or "WEBrick" in lab.logs("with-sidecar")
    finally:
        kubectl("delete", "-f", str(manifest), "--wait=true")


def test_logs_scale_rollout_and_deployments(lab: labkit.Lab, ready_sandbox: Sandbox) -> None:
    pod = lab.pod_names("app=ratings")[0]
    assert "Server listening on" in lab.logs(pod)
    assert lab.logs(pod, tail=1).count("\n") == 1
    assert lab.scale("ratings-v1", 1) == {"deployment": "ratings-v1", "namespace": "default", "before": 3,
                                          "after": 1}
    lab.wait_ready("app=ratings", progress=False)
    lab.scale("ratings-v1", 3)
    frame = lab.wait_ready("app=ratings", progress=False)
    assert len(frame) == 3
    before = set(lab.pod_names("app=details"))
    out = lab.rollout_restart("details-v1")
    assert out["deployment"] == "details-v1"
    assert not set(lab.pod_names("app=details")) & before  # all new pods
    deps = lab.deployments()
    assert set(deps["name"]) >= {"details-v1", "sleep"} and (deps["ready"] == deps["desired"]).all()
    with pytest.raises(NotFound, match='deployment "nope"'):
        lab.scale("nope", 2)
    with pytest.raises(LabkitError, match="replicas must be 0 or more"):
        lab.scale("ratings-v1", -1)


def test_manifest_paths() -> None:
    assert labkit.manifest_path("bookinfo.yaml").read_text().count("kind: Deployment") == 4
    with pytest.raises(FileNotFoundError, match="ships no manifest"):
        labkit.manifest_path("nope.yaml")


def test_public_surface_is_pinned() -> None:
    assert labkit.__all__ == [
        "POD_COLUMNS", "ApiError", "BadSelector", "ClusterUnreachable", "Conflict", "ExecError", "ExecResult",
        "ExecTimeout", "Forbidden", "HypothesisFailed", "Lab", "LabkitError", "NoPodsMatch", "NotFound",
        "SafetyError", "WaitTimeout", "__version__", "connect", "manifest_path",
    ]
    for name in labkit.__all__:
        assert getattr(labkit, name) is not None


def test_a_cluster_that_refuses_says_so(sandbox: Sandbox, tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    text = sandbox.kubeconfig.read_text()
    token = text.split("token: ", 1)[1].strip()
    bad.write_text(text.replace(token, "not-the-token"))
    with pytest.raises(labkit.Forbidden, match=r"the cluster refused the request \(401.*Check the kubeconfig"):
        labkit.connect(kubeconfig=str(bad))
