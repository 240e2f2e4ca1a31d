"""An ordinary cluster's furniture, judged with the real kubectl by its output as a real cluster prints it.

The Node, the objects every namespace has (``kube-root-ca.crt``, the ``default`` ServiceAccount), the
``kubernetes`` Service, ConfigMaps and Secrets (and containers' env from them), self-reviews, ``kubectl explain``,
defaulted pod templates with ``rollout undo``/``history``, and EndpointSlices; then the same through the official
Python client.
"""

from __future__ import annotations

import base64
import json
import re

import yaml
from conftest import Kubectl
from helpers import eventually

from labkit.sandbox import Sandbox


def rows(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.strip().splitlines()[1:]]


def header(text: str) -> list[str]:
    return re.split(r"\s{2,}", text.splitlines()[0].strip())


def kubeconfig_ca(sandbox: Sandbox) -> str:
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    return base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


# --------------------------------------------------------------------------------------------- the node


def test_get_nodes_shows_one_ready_node(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("get", "nodes").stdout
    assert header(out) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    [row] = rows(out)
    assert row[0] == "sandbox" and row[1] == "Ready" and row[2] == "control-plane"
    assert re.fullmatch(r"v1\.\d+\.\d+\S*", row[4])
    wide = kubectl("get", "nodes", "-o", "wide").stdout
    assert header(wide) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE",
                            "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    [wrow] = rows(wide)
    assert wrow[5] == "127.0.0.1" and wrow[6] == "<none>"
    assert kubectl("get", "no", "sandbox", "-o", "jsonpath={.status.capacity.pods}").stdout == "110"


def test_every_pod_runs_on_the_node(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    nodes = kubectl("get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName}{'\\n'}{end}").stdout.split()
    assert len(nodes) == 13 and set(nodes) == {"sandbox"}
    out = kubectl("get", "pods", "-o", "wide").stdout
    assert {r[6] for r in rows(out)} == {"sandbox"}  # the NODE column


def test_describe_node(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("describe", "node", "sandbox").stdout
    assert re.search(r"^Name:\s+sandbox$", out, re.M)
    assert re.search(r"^Roles:\s+control-plane$", out, re.M)
    assert re.search(r"^  Ready\s+True\s+.*KubeletReady\s+kubelet is posting ready status$", out, re.M)
    assert re.search(r"^  InternalIP:\s+127\.0\.0\.1$", out, re.M)
    assert re.search(r"^  HolderIdentity:\s+sandbox$", out, re.M)  # the node's Lease
    assert re.search(r"^Non-terminated Pods:\s+\(13 in total\)$", out, re.M)
    assert re.search(r"^  Kubelet Version:\s+v1\.", out, re.M)
    assert "Failed to get lease" not in out


# ------------------------------------------------------------------------------- namespaces' furniture


def test_every_namespace_has_the_root_ca_and_the_default_service_account(sandbox: Sandbox,
                                                                          kubectl: Kubectl) -> None:
    out = kubectl("get", "configmaps", "-A").stdout
    namespaces = {r[0] for r in rows(out) if r[1] == "kube-root-ca.crt"}
    assert namespaces == {"default", "kube-system", "kube-public", "kube-node-lease"}
    assert "default" in kubectl("get", "sa", "-n", "kube-system", "-o", "name").stdout
    ca = kubectl("get", "cm", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}").stdout
    assert ca == kubeconfig_ca(sandbox) and ca.startswith("-----BEGIN CERTIFICATE-----")

    assert kubectl("create", "namespace", "team-a", check=False).returncode in (0, 1)  # protobuf or not
    if kubectl("get", "ns", "team-a", check=False).returncode != 0:
        kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n")
    eventually(lambda: "kube-root-ca.crt" in kubectl("get", "cm", "-n", "team-a", check=False).stdout,
               what="kube-root-ca.crt in a new namespace")
    sa = eventually(lambda: kubectl("get", "sa", "-n", "team-a", check=False).stdout,
                    what="default ServiceAccount in a new namespace")
    assert header(sa) == ["NAME", "SECRETS", "AGE"] and rows(sa)[0][:2] == ["default", "0"]
    # Deleted, they come back, as the root-CA publisher and the service-account controller make them again.
    assert kubectl("delete", "cm", "kube-root-ca.crt", "-n", "team-a").stdout.startswith(
        'configmap "kube-root-ca.crt" deleted')
    eventually(lambda: kubectl("get", "cm", "kube-root-ca.crt", "-n", "team-a", check=False).returncode == 0,
               what="kube-root-ca.crt recreated")
    kubectl("delete", "namespace", "team-a")


def test_the_kubernetes_service_points_at_the_api_server(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("get", "svc", "kubernetes").stdout
    assert header(out) == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    [row] = rows(out)
    assert row[1] == "ClusterIP" and row[4] == "443/TCP"
    port = ready_sandbox.api_url.rsplit(":", 1)[1]
    assert rows(kubectl("get", "endpoints", "kubernetes").stdout)[0][1] == f"127.0.0.1:{port}"
    described = kubectl("describe", "svc", "kubernetes").stdout
    assert re.search(rf"^Endpoints:\s+127\.0\.0\.1:{port}$", described, re.M)
    assert re.search(r"^Selector:\s+<none>$", described, re.M)


# ---------------------------------------------------------------------------- configmaps and secrets


def test_configmap_create_get_patch_delete(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    made = kubectl.shell("kubectl create configmap settings --from-literal=GREETING=hello --from-literal=COLOR=blue "
                         "--dry-run=client -o yaml | kubectl apply -f -")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "configmap/settings created"
    out = kubectl("get", "configmap", "settings").stdout
    assert header(out) == ["NAME", "DATA", "AGE"] and rows(out)[0][:2] == ["settings", "2"]
    assert kubectl("get", "cm", "settings", "-o", "jsonpath={.data.GREETING}").stdout == "hello"
    assert kubectl("patch", "cm", "settings", "--type=merge", "-p", '{"data":{"COLOR":"red"}}').stdout.strip() \
        == "configmap/settings patched"
    assert kubectl("get", "cm", "settings", "-o", "jsonpath={.data.COLOR}").stdout == "red"
    again = kubectl.shell("kubectl create configmap settings --from-literal=GREETING=hi --dry-run=client -o yaml "
                          "| kubectl apply -f -")
    assert again.stdout.strip() == "configmap/settings configured", again.stderr
    assert json.loads(kubectl("get", "cm", "settings", "-o", "json").stdout)["data"] == {"GREETING": "hi"}
    assert kubectl("delete", "cm", "settings").stdout.startswith('configmap "settings" deleted')
    gone = kubectl("get", "cm", "settings", check=False)
    assert gone.returncode == 1
    assert 'Error from server (NotFound): configmaps "settings" not found' in gone.stderr


def test_secret_data_is_base64_as_the_real_api(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    made = kubectl.shell("kubectl create secret generic creds --from-literal=PASSWORD=s3cret --dry-run=client "
                         "-o yaml | kubectl apply -f -")
    assert made.stdout.strip() == "secret/creds created", made.stderr
    out = kubectl("get", "secrets").stdout
    assert header(out) == ["NAME", "TYPE", "DATA", "AGE"]
    assert ["creds", "Opaque", "1"] in [r[:3] for r in rows(out)]
    encoded = kubectl("get", "secret", "creds", "-o", "jsonpath={.data.PASSWORD}").stdout
    assert encoded == base64.b64encode(b"s3cret").decode()
    # stringData is folded into data on write and never read back.
    kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\n"
                                      "stringData:\n  token: abc\n")
    stored = json.loads(kubectl("get", "secret", "plain", "-o", "json").stdout)
    assert stored["data"] == {"token": "YWJj"} and "stringData" not in stored and stored["type"] == "Opaque"
    bad = kubectl("apply", "-f", "-", check=False,
                  input="apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\ndata:\n  token: not base64!\n")
    assert bad.returncode == 1 and "illegal base64 data" in bad.stderr
    # An immutable Secret keeps its data, as the API server's validation says.
    kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"immutable":true}')
    frozen = kubectl("patch", "secret", "plain", "--type=merge", "-p", '{"stringData":{"token":"xyz"}}', check=False)
    assert frozen.returncode == 1
    assert 'The Secret "plain" is invalid: data: Forbidden: field is immutable when `immutable` is set' \
        in frozen.stderr
    kubectl("delete", "secret", "creds", "plain")


ENV_POD = """
apiVersion: v1
kind: Pod
metadata: {name: envtest}
spec:
  containers:
  - name: tester
    image: curlimages/curl
    command: ["sleep", "3600"]
    env:
    - {name: GREETING, valueFrom: {configMapKeyRef: {name: app-config, key: GREETING}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: app-secret, key: PASSWORD}}}
    - {name: MAYBE, valueFrom: {configMapKeyRef: {name: nowhere, key: X, optional: true}}}
    envFrom:
    - {prefix: CFG_, configMapRef: {name: app-config}}
    - secretRef: {name: app-secret}
"""


def test_containers_get_env_from_configmaps_and_secrets(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", input=ENV_POD)
    # The ConfigMap does not exist yet: the kubelet waits, as a real one, with CreateContainerConfigError.
    status = eventually(lambda: rows(kubectl("get", "pod", "envtest").stdout)[0][2] == "CreateContainerConfigError",
                        what="CreateContainerConfigError", ignore=(AssertionError,))
    assert status
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=envtest").stdout
    assert 'Error: configmap "app-config" not found' in events
    kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\n"
                                      "data: {GREETING: hello, COLOR: blue}\n")
    kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Secret\nmetadata: {name: app-secret}\n"
                                      "stringData: {PASSWORD: s3cret}\n")
    eventually(lambda: rows(kubectl("get", "pod", "envtest").stdout)[0][2] == "Running", what="envtest Running",
               ignore=(AssertionError,))
    env = dict(line.split("=", 1) for line in kubectl("exec", "envtest", "--", "env").stdout.splitlines()
               if "=" in line)
    assert env["GREETING"] == "hello" and env["PASSWORD"] == "s3cret"
    assert env["CFG_GREETING"] == "hello" and env["CFG_COLOR"] == "blue"
    assert "MAYBE" not in env
    kubectl("delete", "pod", "envtest", "--grace-period=0", "--force", check=False)
    kubectl("delete", "cm", "app-config")
    kubectl("delete", "secret", "app-secret")


# ------------------------------------------------------------------------------------------- auth


SSAR = """
apiVersion: authorization.k8s.io/v1
kind: SelfSubjectAccessReview
spec:
  resourceAttributes: {verb: get, resource: pods, namespace: default}
"""


def test_self_subject_access_review_allows_the_sandbox_user(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    review = json.loads(kubectl("create", "-f", "-", "-o", "json", input=SSAR).stdout)
    assert review["kind"] == "SelfSubjectAccessReview" and review["status"]["allowed"] is True
    assert review["spec"]["resourceAttributes"]["resource"] == "pods"
    # Nothing is stored: reviews are answers, not objects.
    assert "selfsubjectaccessreviews" in kubectl("api-resources", "--api-group=authorization.k8s.io").stdout


def test_auth_can_i_and_whoami(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "get", "pods").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "deployments", "-n", "kube-system").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "--list").stdout.splitlines()[1].split()[:1] == ["*.*"]
    who = kubectl("auth", "whoami").stdout
    assert re.search(r"^Username\s+sandbox$", who, re.M)
    assert "system:masters" in who


# ------------------------------------------------------------------------------------------ explain


def test_explain_prints_real_field_docs(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    out = kubectl("explain", "pod.spec.containers").stdout
    assert out.startswith("KIND:       Pod\nVERSION:    v1\n")
    assert "FIELD: containers <[]Container>" in out
    assert re.search(r"^  name\t<string> -required-$", out, re.M)
    assert re.search(r"^  imagePullPolicy\t<string>$", out, re.M)
    assert re.search(r"^  ports\t<\[\]ContainerPort>$", out, re.M)
    deploy = kubectl("explain", "deployment.spec.strategy.rollingUpdate.maxSurge").stdout
    assert "GROUP:      apps" in deploy and "FIELD: maxSurge <IntOrString>" in deploy
    for target, field in (("secret", "stringData"), ("configmap", "data"), ("node.status", "nodeInfo"),
                          ("service.spec", "selector"), ("endpointslice", "addressType")):
        assert re.search(rf"^  {field}\t<", kubectl("explain", target).stdout, re.M), target
    missing = kubectl("explain", "pod.spec.nosuchfield", check=False)
    assert missing.returncode == 1 and 'field "nosuchfield" does not exist' in missing.stderr


# --------------------------------------------------------------------------- defaulting and rollouts


def test_pod_templates_are_defaulted_as_the_api_server_does(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    dep = json.loads(kubectl("get", "deploy", "ratings-v1", "-o", "json").stdout)
    spec = dep["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler" and spec["securityContext"] == {}
    assert spec["terminationGracePeriodSeconds"] == 30
    c = spec["containers"][0]
    assert c["terminationMessagePath"] == "/dev/termination-log" and c["terminationMessagePolicy"] == "File"
    assert c["imagePullPolicy"] == "IfNotPresent" and c["resources"] == {}
    assert all(p["protocol"] == "TCP" for p in c["ports"])
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    pod = json.loads(kubectl("get", "pods", "-l", "app=ratings", "-o", "json").stdout)["items"][0]
    assert pod["spec"]["enableServiceLinks"] is True and pod["spec"]["serviceAccountName"] == "bookinfo-ratings"
    assert {t["key"] for t in pod["spec"]["tolerations"]} >= {"node.kubernetes.io/not-ready",
                                                              "node.kubernetes.io/unreachable"}
    # An untagged image is pulled Always, as SetDefaults_Container says.
    run = kubectl("run", "defaults-probe", "--image=busybox", "--dry-run=server", "-o", "json", check=False)
    if run.returncode == 0:
        assert json.loads(run.stdout)["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def _replicasets(kubectl: Kubectl) -> dict[str, str]:
    """reviews-v1's ReplicaSets: name -> DESIRED."""
    return {r[0]: r[1] for r in rows(kubectl("get", "rs", "-l", "app=reviews,version=v1").stdout)}


def test_rollout_undo_returns_to_the_old_replicaset(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    [original] = _replicasets(kubectl)
    kubectl("set", "image", "deploy/reviews-v1", "reviews=docker.io/istio/examples-bookinfo-reviews-v2:1.20.3")
    kubectl("rollout", "status", "deploy/reviews-v1", "--timeout=60s")
    after = _replicasets(kubectl)
    assert len(after) == 2 and after[original] == "0"
    [updated] = set(after) - {original}
    history = kubectl("rollout", "history", "deploy/reviews-v1").stdout
    assert rows(history)[-2:] == [["1", "<none>"], ["2", "<none>"]]
    assert kubectl("rollout", "undo", "deploy/reviews-v1").stdout.strip() == "deployment.apps/reviews-v1 rolled back"
    kubectl("rollout", "status", "deploy/reviews-v1", "--timeout=60s")
    back = _replicasets(kubectl)
    assert set(back) == {original, updated}, "rollout undo must reuse the old ReplicaSet, not make a new one"
    assert back[original] == "3" and back[updated] == "0"
    hashes = set(kubectl("get", "pods", "-l", "app=reviews,version=v1", "-o",
                         "jsonpath={.items[*].metadata.labels.pod-template-hash}").stdout.split())
    assert hashes == {original.rsplit("-", 1)[1]}
    assert [r[0] for r in rows(kubectl("rollout", "history", "deploy/reviews-v1").stdout)][-2:] == ["2", "3"]
    revision = kubectl("rollout", "history", "deploy/reviews-v1", "--revision=3").stdout
    assert "pod-template-hash=" + original.rsplit("-", 1)[1] in revision
    assert re.search(r"^    Image:\s+docker\.io/istio/examples-bookinfo-reviews-v1:", revision, re.M), revision
    assert kubectl("get", "deploy", "reviews-v1", "-o",
                   "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}").stdout == "3"
    # Undo twice goes forward again to the second ReplicaSet, still without a third.
    kubectl("rollout", "undo", "deploy/reviews-v1")
    kubectl("rollout", "status", "deploy/reviews-v1", "--timeout=60s")
    assert set(_replicasets(kubectl)) == {original, updated}
    kubectl("rollout", "undo", "deploy/reviews-v1", "--to-revision=3")
    kubectl("rollout", "status", "deploy/reviews-v1", "--timeout=60s")
    assert _replicasets(kubectl)[original] == "3"


# ---------------------------------------------------------------------------------- endpoint slices


def test_endpointslices_follow_the_pods(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    ips = sorted(kubectl("get", "pods", "-l", "app=details", "-o",
                         "jsonpath={.items[*].status.podIP}").stdout.split())
    out = kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=details").stdout
    assert header(out) == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    [row] = rows(out)
    assert row[0].startswith("details-") and row[1:3] == ["IPv4", "9080"]
    assert sorted(row[3].split(",")) == ips
    described = kubectl("describe", "svc", "details").stdout
    line = re.search(r"^Endpoints:\s+(.*)$", described, re.M)
    assert line is not None and sorted(line.group(1).split(",")) == sorted(f"{ip}:9080" for ip in ips)
    slice_ = json.loads(kubectl("get", "endpointslice", row[0], "-o", "json").stdout)
    assert slice_["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert all(e["conditions"] == {"ready": True, "serving": True, "terminating": False} and
               e["nodeName"] == "sandbox" and e["targetRef"]["kind"] == "Pod" for e in slice_["endpoints"])


# ------------------------------------------------------------------------------- the Python client


def test_the_python_client_reads_the_furniture(ready_sandbox: Sandbox) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(ready_sandbox.kubeconfig))
    try:
        core = client.CoreV1Api(api_client)
        [node] = core.list_node().items
        assert node.metadata.name == "sandbox" and node.status.node_info.operating_system == "linux"
        assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
        secret = core.create_namespaced_secret("default", client.V1Secret(
            metadata=client.V1ObjectMeta(name="py-secret"), string_data={"key": "value"}))
        assert secret.data == {"key": "dmFsdWU="} and secret.type == "Opaque"
        assert core.read_namespaced_config_map("kube-root-ca.crt", "default").data["ca.crt"] == \
            kubeconfig_ca(ready_sandbox)
        core.delete_namespaced_secret("py-secret", "default")
        # ConfigMaps are watched like any kind: list, then watch from the list's version.
        from kubernetes import watch

        rv = core.list_namespaced_config_map("default").metadata.resource_version
        core.create_namespaced_config_map("default", client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="py-watched"), data={"a": "1"}))
        core.delete_namespaced_config_map("py-watched", "default")
        seen = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=2)]
        assert seen[:2] == [("ADDED", "py-watched"), ("DELETED", "py-watched")]
        slices = client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=ratings").items
        assert len(slices) == 1 and len(slices[0].endpoints) == 3
        review = client.AuthorizationV1Api(api_client).create_self_subject_access_review(
            client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(verb="delete", resource="pods"))))
        assert review.status.allowed is True
        who = client.AuthenticationV1Api(api_client).create_self_subject_review(client.V1SelfSubjectReview())
        assert who.status.user_info.username == "sandbox"
    finally:
        api_client.close()
