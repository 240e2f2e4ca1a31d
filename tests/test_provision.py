"""``labkit workshop provision/teardown`` end to end on a sandbox, judged as an attendee would meet it.

Three attendees are provisioned with the library; then, with attendee A's kubeconfig, the real kubectl and the
official client: their own Bookinfo is there and answers from their tester pod, attendee B's namespace is
forbidden (403 in the API server's words), cluster-wide writes are refused, ``kubectl auth can-i`` answers. The
CLI's dry run and bad input, re-provisioning, and a teardown that leaves nothing (and nothing of anyone else's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Kubectl, wait_all_ready
from helpers import eventually, free_port, kubectl_port_forward

import labkit
from labkit import provision as prov
from labkit.errors import Forbidden, LabkitError
from labkit.sandbox import Sandbox


@pytest.fixture(scope="module")
def admin(sandbox: Sandbox) -> Iterator[labkit.Lab]:
    wait_all_ready(sandbox)
    lab = labkit.connect(sandbox_dir=sandbox.dir)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def workshop(admin: labkit.Lab, tmp_path_factory: pytest.TempPathFactory) -> prov.ProvisionResult:
    lines: list[str] = []
    out = tmp_path_factory.mktemp("workshop") / "kubeconfigs"
    result = prov.provision(admin, 3, out_dir=out, replicas=1, progress=lines.append)
    assert any(line.endswith(": ready") for line in lines), lines
    return result


def attendee_kubectl(result: prov.ProvisionResult, index: int, cache: Path) -> Kubectl:
    path = result.attendees[index].kubeconfig
    assert path is not None
    return Kubectl(path, cache / result.attendees[index].namespace)


def labkit_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkit.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def test_each_attendee_gets_a_namespace_an_account_and_a_private_kubeconfig(
        workshop: prov.ProvisionResult, kubectl: Kubectl) -> None:
    assert [a.namespace for a in workshop.attendees] == ["attendee-01", "attendee-02", "attendee-03"]
    for attendee in workshop.attendees:
        assert attendee.kubeconfig is not None and attendee.kubeconfig.stat().st_mode & 0o777 == 0o600
        config = yaml.safe_load(attendee.kubeconfig.read_text())
        assert config["contexts"][0]["context"]["namespace"] == attendee.namespace
        assert config["users"][0]["user"]["token"].count(".") == 2
        assert attendee.token_expires.endswith("Z")
        assert {"namespace/" + attendee.namespace, "role.rbac.authorization.k8s.io/attendee",
                "deployment.apps/sleep"} <= set(attendee.objects)
        ns = json.loads(kubectl("get", "namespace", attendee.namespace, "-o", "json").stdout)
        assert ns["metadata"]["labels"][prov.WORKSHOP_LABEL] == "attendee"
        binding = json.loads(kubectl("-n", attendee.namespace, "get", "rolebinding", "attendee", "-o", "json").stdout)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "attendee",
                                        "namespace": attendee.namespace}]
    assert "3 attendee(s) ready" in str(workshop)


def test_an_attendee_works_in_their_namespace(workshop: prov.ProvisionResult, tmp_path: Path) -> None:
    a = attendee_kubectl(workshop, 0, tmp_path)
    pods = a("get", "pods", "-o", "jsonpath={.items[*].metadata.labels.app}").stdout.split()
    assert sorted(pods) == ["details", "productpage", "ratings", "reviews", "sleep"]
    answer = a("exec", "deploy/sleep", "--", "curl", "-s", "http://ratings:9080/ratings/7").stdout
    assert json.loads(answer)["id"] == 7
    assert "WEBrick" in a("logs", "deploy/details-v1").stdout
    a("scale", "deployment", "details-v1", "--replicas=2")
    a("rollout", "status", "deployment/details-v1", "--timeout=60s")
    a("scale", "deployment", "details-v1", "--replicas=1")
    a("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "ratings"},
        "spec": {"hosts": ["ratings"], "http": [{"route": [{"destination": {"host": "ratings"}}]}]}}))
    assert a("get", "virtualservices", "-o", "name").stdout.strip() == "virtualservice.networking.istio.io/ratings"
    for verb, what, expected in (("create", "pods/exec", "yes"), ("create", "deployments", "yes"),
                                 ("list", "secrets", "no"), ("create", "roles", "no")):
        assert a("auth", "can-i", verb, what, check=False).stdout.strip() == expected, (verb, what)
    assert a("auth", "can-i", "list", "pods", "-n", "attendee-02", check=False).stdout.strip() == "no"


def test_another_attendees_namespace_and_the_cluster_are_forbidden(workshop: prov.ProvisionResult,
                                                                   tmp_path: Path) -> None:
    a = attendee_kubectl(workshop, 0, tmp_path)
    denied = a("get", "pods", "-n", "attendee-02", check=False)
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:attendee-01:attendee" '
        'cannot list resource "pods" in API group "" in the namespace "attendee-02"')
    exec_b = a("-n", "attendee-02", "exec", "deploy/sleep", "--", "env", check=False)
    assert exec_b.returncode == 1 and "forbidden" in exec_b.stderr
    for args in (("create", "namespace", "mine"), ("create", "clusterrole", "x", "--verb=get", "--resource=pods"),
                 ("label", "node", "sandbox", "x=y")):
        refused = a(*args, check=False)
        assert refused.returncode == 1 and "at the cluster scope" in refused.stderr, args
    assert "Forbidden" in a("delete", "namespace", "attendee-02", check=False).stderr


def test_port_forward_in_their_namespace_only(workshop: prov.ProvisionResult, tmp_path: Path) -> None:
    a = attendee_kubectl(workshop, 0, tmp_path)
    refused = a("-n", "attendee-02", "port-forward", "deploy/productpage-v1", "0:9080", check=False, timeout=30)
    assert refused.returncode == 1 and "is forbidden" in refused.stderr
    with kubectl_port_forward(a.binary, a.env, "deploy/productpage-v1", 9080) as port, \
            urllib.request.urlopen(f"http://127.0.0.1:{port}/productpage", timeout=20) as page:
        assert page.status == 200 and b"Reviews served by" in page.read()


def test_the_official_client_and_labkit_with_an_attendees_kubeconfig(workshop: prov.ProvisionResult) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    path = str(workshop.attendees[1].kubeconfig)
    api_client = config.new_client_from_config(config_file=path)
    try:
        core = client.CoreV1Api(api_client)
        assert len(core.list_namespaced_pod("attendee-02").items) == 5
        with pytest.raises(ApiException) as denied:
            core.list_namespaced_pod("attendee-01")
        assert denied.value.status == 403 and json.loads(denied.value.body)["reason"] == "Forbidden"
    finally:
        api_client.close()
    lab = labkit.connect(kubeconfig=path)  # the namespace comes from the kubeconfig's context
    try:
        assert lab.namespace == "attendee-02"
        assert len(lab.pods()) == 5
        assert lab.request("http://ratings:9080/ratings/7").returncode == 0
        with pytest.raises(Forbidden, match="403"):
            lab.pods(namespace="attendee-03")
    finally:
        lab.close()


def test_dry_run_prints_the_objects_and_touches_nothing(admin: labkit.Lab, kubectl: Kubectl,
                                                        tmp_path: Path) -> None:
    result = prov.provision(None, 2, prefix="dry", out_dir=tmp_path / "never", dry_run=True)
    docs = list(yaml.safe_load_all(str(result)))
    kinds = [(d["kind"], d["metadata"].get("namespace", d["metadata"]["name"])) for d in docs]
    assert ("Namespace", "dry-01") in kinds and ("RoleBinding", "dry-02") in kinds
    assert sum(1 for d in docs if d["kind"] == "Deployment") == 10
    meshed = yaml.safe_load_all(str(prov.provision(None, 1, prefix="dry", dry_run=True, mesh=True)))
    assert next(meshed)["metadata"]["labels"]["istio-injection"] == "enabled"
    cli = labkit_cli("workshop", "provision", "--attendees", "2", "--prefix", "dry", "--dry-run",
                     "--out", str(tmp_path / "never"))
    assert cli.returncode == 0, cli.stderr
    assert [d["kind"] for d in yaml.safe_load_all(cli.stdout)][:4] == ["Namespace", "ServiceAccount", "Role",
                                                                       "RoleBinding"]
    assert not (tmp_path / "never").exists()
    assert kubectl("get", "namespaces", "-l", f"{prov.WORKSHOP_LABEL}=dry", "-o", "name").stdout.strip() == ""


def test_bad_input_is_refused_clearly(admin: labkit.Lab, kubectl: Kubectl, sandbox: Sandbox,
                                      tmp_path: Path) -> None:
    zero = labkit_cli("workshop", "provision", "--attendees", "0", "--dry-run")
    assert zero.returncode == 1 and "attendees must be a whole number from 1" in zero.stderr
    bad_prefix = labkit_cli("workshop", "provision", "--attendees", "2", "--prefix", "Team_A", "--dry-run")
    assert bad_prefix.returncode == 1 and "prefix 'Team_A' does not make valid namespace names" in bad_prefix.stderr
    kubectl("create", "namespace", "clash-02")  # someone else's
    with pytest.raises(LabkitError, match="namespace clash-02 already exists and this workshop did not make it"):
        prov.provision(admin, 3, prefix="clash", out_dir=tmp_path)
    assert kubectl("get", "namespace", "clash-01", check=False).returncode == 1  # nothing half made
    nowhere = yaml.safe_load(sandbox.kubeconfig.read_text())
    nowhere["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    (tmp_path / "nowhere").write_text(yaml.safe_dump(nowhere))
    down = labkit_cli("workshop", "provision", "--attendees", "1", "--kubeconfig", str(tmp_path / "nowhere"))
    assert down.returncode == 1 and down.stderr.startswith("error: ") and "reach" in down.stderr, down.stderr
    teardown = prov.teardown(admin, prefix="clash", out_dir=tmp_path)
    assert teardown.namespaces == ()
    assert kubectl("get", "namespace", "clash-02").returncode == 0  # never touched


def test_the_cli_provisions_again_and_tears_down(workshop: prov.ProvisionResult, sandbox: Sandbox,
                                                 kubectl: Kubectl, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    up = labkit_cli("workshop", "provision", "--attendees", "1", "--prefix", "cli", "--replicas", "1",
                    "--kubeconfig", str(sandbox.kubeconfig), "--out", str(out))
    assert up.returncode == 0, up.stderr
    assert "cli-01: ready" in up.stderr and "1 attendee(s) ready" in up.stdout
    assert Kubectl(out / "cli-01.kubeconfig", tmp_path / "c")("get", "deploy", "sleep").returncode == 0
    down = labkit_cli("workshop", "teardown", "--prefix", "cli", "--kubeconfig", str(sandbox.kubeconfig),
                      "--out", str(out))
    assert down.returncode == 0, down.stderr
    assert "deleted namespace/cli-01" in down.stdout and not (out / "cli-01.kubeconfig").exists()
    # Re-provisioning the library's workshop keeps it working and writes fresh tokens.
    assert workshop.attendees[0].kubeconfig is not None
    lab = labkit.connect(sandbox_dir=sandbox.dir)
    try:
        again = prov.provision(lab, 3, out_dir=workshop.attendees[0].kubeconfig.parent, replicas=1)
    finally:
        lab.close()
    assert [a.namespace for a in again.attendees] == ["attendee-01", "attendee-02", "attendee-03"]
    assert attendee_kubectl(again, 2, tmp_path)("get", "pods").returncode == 0


def test_teardown_removes_everything_and_the_tokens_die(workshop: prov.ProvisionResult, admin: labkit.Lab,
                                                        kubectl: Kubectl, sandbox: Sandbox, tmp_path: Path) -> None:
    assert workshop.attendees[0].kubeconfig is not None
    out = workshop.attendees[0].kubeconfig.parent
    kept = tmp_path / "kept.kubeconfig"  # teardown removes the attendees' files: keep one to try its token after
    kept.write_text(workshop.attendees[0].kubeconfig.read_text())
    a = Kubectl(kept, tmp_path / "cache")
    assert a("get", "pods").returncode == 0
    dry = prov.teardown(admin, out_dir=out, dry_run=True)
    assert dry.namespaces == ("attendee-01", "attendee-02", "attendee-03") and "would delete" in str(dry)
    assert kubectl("get", "namespace", "attendee-01").returncode == 0
    result = prov.teardown(admin, out_dir=out)
    assert result.namespaces == ("attendee-01", "attendee-02", "attendee-03") and len(result.kubeconfigs) == 3
    assert kubectl("get", "namespaces", "-l", prov.WORKSHOP_LABEL, "-o", "name").stdout.strip() == ""
    for ns in result.namespaces:
        assert kubectl("get", "all,sa,roles,rolebindings", "-n", ns, "-o", "name").stdout.strip() == ""
        assert not (out / f"{ns}.kubeconfig").exists()
    refused = a("get", "pods", check=False)
    assert refused.returncode == 1 and "You must be logged in" in refused.stderr
    # The administrator and the lesson's own pods are untouched.
    eventually(lambda: len(sandbox.pods()) == 13, what="the lesson's 13 pods")
    wait_all_ready(sandbox)
