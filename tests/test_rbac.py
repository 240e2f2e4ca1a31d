"""ServiceAccounts, tokens and RBAC in the sandbox, judged by the real kubectl, the official client and raw HTTP.

An account's token (``kubectl create token``) is authorized by the Roles and ClusterRoles bound to it, as a real
API server's RBAC authorizer decides; a denied request is a 403 in the API server's words; a dead token a 401;
the sandbox's own administrator is unaffected. Each test makes its own namespaces.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from conftest import Kubectl
from helpers import eventually
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rawapi import RawApi

from labkit.provision import kubeconfig_text
from labkit.sandbox import Sandbox
from labkit.sandbox.rbac import Attributes, request_attributes, rule_allows

RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture(scope="module")
def raw(sandbox: Sandbox) -> Iterator[RawApi]:
    api = RawApi(sandbox)
    yield api
    api.close()


def fresh_ns(kubectl: Kubectl, stem: str = "rbac") -> str:
    ns = f"{stem}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    return ns


def token_for(kubectl: Kubectl, ns: str, account: str, *extra: str) -> str:
    return kubectl("-n", ns, "create", "token", account, *extra).stdout.strip()


def as_account(sandbox: Sandbox, kubectl: Kubectl, token: str, ns: str, tmp_path: Path) -> Kubectl:
    """A kubectl whose kubeconfig holds ``token`` and ``ns`` as the default namespace (an attendee's)."""
    cluster = yaml.safe_load(sandbox.kubeconfig.read_text())["clusters"][0]["cluster"]
    path = tmp_path / f"{ns}-{secrets.token_hex(2)}.kubeconfig"
    path.write_text(kubeconfig_text(cluster, ns, token))
    return Kubectl(path, tmp_path / "cache")


def pod_reader(kubectl: Kubectl, ns: str, account: str = "learner") -> None:
    """ServiceAccount ``account`` in ``ns`` with a Role to read pods and their logs there."""
    kubectl("-n", ns, "create", "serviceaccount", account)
    kubectl("-n", ns, "create", "role", "reader", "--verb=get,list,watch", "--resource=pods,pods/log")
    kubectl("-n", ns, "create", "rolebinding", "reader", "--role=reader", f"--serviceaccount={ns}:{account}")


# --------------------------------------------------------------------------------------------- pure parts


def test_request_attributes_read_paths_as_the_api_server_does() -> None:
    a = request_attributes("GET", "/api/v1/namespaces/team/pods", {"watch": "1"})
    assert (a.verb, a.resource, a.namespace, a.name) == ("watch", "pods", "team", "")
    a = request_attributes("GET", "/api/v1/namespaces/team/pods", {"fieldSelector": "metadata.name=web"})
    assert (a.verb, a.name) == ("list", "web")
    a = request_attributes("DELETE", "/apis/apps/v1/namespaces/team/deployments", {})
    assert (a.verb, a.api_group, a.resource) == ("deletecollection", "apps", "deployments")
    a = request_attributes("PATCH", "/apis/apps/v1/namespaces/team/deployments/web/scale", {})
    assert (a.verb, a.resource, a.subresource, a.name) == ("patch", "deployments", "scale", "web")
    a = request_attributes("GET", "/api/v1/namespaces/team/status", {})
    assert (a.resource, a.name, a.subresource, a.namespace) == ("namespaces", "team", "status", "team")
    a = request_attributes("POST", "/api/v1/namespaces", {})
    assert (a.verb, a.resource, a.namespace) == ("create", "namespaces", "")
    assert not request_attributes("GET", "/apis/apps", {}).resource_request
    assert request_attributes("POST", "/logs", {}).verb == "post"


def test_rules_match_verbs_groups_subresources_and_names() -> None:
    exec_rule = {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec"]}
    assert rule_allows(exec_rule, Attributes("create", resource="pods", subresource="exec", name="p"))
    assert not rule_allows(exec_rule, Attributes("create", resource="pods", name="p"))
    assert not rule_allows(exec_rule, Attributes("create", api_group="apps", resource="pods", subresource="exec"))
    star = {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*/scale"]}
    assert rule_allows(star, Attributes("get", api_group="apps", resource="deployments", subresource="scale"))
    assert not rule_allows(star, Attributes("get", api_group="apps", resource="deployments"))
    named = {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}
    assert rule_allows(named, Attributes("get", resource="pods", name="a"))
    assert not rule_allows(named, Attributes("get", resource="pods", name="b"))
    assert not rule_allows(named, Attributes("list", resource="pods"))


def test_tokens_expire_and_are_checked_whole() -> None:
    from labkit.sandbox.rbac import API_AUDIENCE, Auth
    from labkit.sandbox.resources import BY_PLURAL
    from labkit.sandbox.store import Store

    store = Store()
    store.create(BY_PLURAL[("", "namespaces")], {"metadata": {"name": "team"}})
    account = store.create(BY_PLURAL[("", "serviceaccounts")], {"metadata": {"name": "learner", "namespace": "team"}})
    auth = Auth(store, "admin-token")
    token = auth.token_request("team", "learner", {"spec": {"expirationSeconds": 600}})["status"]["token"]
    user = auth.authenticate(token)
    assert user is not None and user.username == "system:serviceaccount:team:learner"
    assert "system:serviceaccounts:team" in user.groups and not user.is_admin
    admin = auth.authenticate("admin-token")
    assert admin is not None and admin.is_admin
    now = int(time.time())
    claims = {"aud": [API_AUDIENCE], "iat": now - 7200, "nbf": now - 7200, "exp": now - 1, "jti": "j",
              "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "learner",
                                                                       "uid": account["metadata"]["uid"]}}}
    assert auth.authenticate(auth.sign(claims)) is None  # expired
    assert auth.authenticate(auth.sign({**claims, "exp": now + 600})) is not None
    assert auth.authenticate(auth.sign({**claims, "exp": now + 600, "aud": ["vault"]})) is None
    assert auth.authenticate(Auth(store, "admin-token").sign({**claims, "exp": now + 600})) is None  # other key
    assert auth.authenticate(auth.sign({**claims, "exp": now + 600, "kubernetes.io": "x"})) is None


# --------------------------------------------------------------------------------------------- served, printed


def test_kubectl_knows_the_rbac_kinds_and_prints_them(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    names = kubectl("api-resources", "--api-group=rbac.authorization.k8s.io", "-o", "name").stdout.split()
    assert sorted(names) == ["clusterrolebindings.rbac.authorization.k8s.io",
                             "clusterroles.rbac.authorization.k8s.io", "rolebindings.rbac.authorization.k8s.io",
                             "roles.rbac.authorization.k8s.io"]
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    out = kubectl("-n", ns, "get", "rolebinding", "reader", "-o", "wide").stdout
    assert re.split(r"\s{2,}", out.splitlines()[0].strip()) == ["NAME", "ROLE", "AGE", "USERS", "GROUPS",
                                                                "SERVICEACCOUNTS"]
    assert "Role/reader" in out and f"{ns}/learner" in out
    assert kubectl("-n", ns, "get", "role", "reader").stdout.splitlines()[0].split() == ["NAME", "CREATED", "AT"]
    assert kubectl("-n", ns, "get", "sa", "learner", "-o", "name").stdout.strip() == "serviceaccount/learner"
    crb = kubectl("get", "clusterrolebinding", "cluster-admin", "-o", "json").stdout
    assert json.loads(crb)["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                            "name": "system:masters"}]


def test_create_token_answers_a_token_request(ready_sandbox: Sandbox, kubectl: Kubectl, raw: RawApi) -> None:
    ns = fresh_ns(kubectl)
    kubectl("-n", ns, "create", "serviceaccount", "learner")
    reply = raw.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/learner/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 7200}})
    assert reply.status == 201, reply.body
    doc = reply.json()
    assert doc["kind"] == "TokenRequest" and doc["spec"]["expirationSeconds"] == 7200
    assert doc["status"]["token"].count(".") == 2 and doc["status"]["expirationTimestamp"].endswith("Z")
    short = raw.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/learner/token",
                        {"spec": {"expirationSeconds": 60}})
    assert short.status == 422 and short.is_status()
    assert short.json()["details"]["causes"][0]["field"] == "spec.expirationSeconds"
    assert "less than 10 minutes" in short.json()["message"]
    wrong_type = raw.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/learner/token",
                             {"spec": {"expirationSeconds": "long"}})
    assert wrong_type.status == 400 and wrong_type.is_status()
    missing = raw.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/nobody/token", {})
    assert missing.status == 404 and missing.json()["message"] == 'serviceaccounts "nobody" not found'
    assert kubectl("-n", ns, "create", "token", "nobody", check=False).returncode != 0


# --------------------------------------------------------------------------------------------- enforcement


def test_a_token_works_in_its_namespace_and_is_forbidden_in_another(
        ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    mine, other = fresh_ns(kubectl), fresh_ns(kubectl)
    pod_reader(kubectl, mine)
    user = as_account(ready_sandbox, kubectl, token_for(kubectl, mine, "learner"), mine, tmp_path)
    assert user("get", "pods").returncode == 0
    denied = user("get", "pods", "-n", other, check=False)
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        f'Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:{mine}:learner" cannot '
        f'list resource "pods" in API group "" in the namespace "{other}"')
    watch = user("get", "pods", "-n", other, "--watch", check=False, timeout=30)
    assert watch.returncode == 1 and "Error from server (Forbidden)" in watch.stderr
    writes = user("create", "namespace", f"x-{secrets.token_hex(2)}", check=False)
    assert ('namespaces is forbidden: User "system:serviceaccount:' in writes.stderr
            and 'cannot create resource "namespaces" in API group "" at the cluster scope' in writes.stderr)
    own_role = user("delete", "role", "reader", check=False)  # nor can it touch its own permissions
    assert (f'roles.rbac.authorization.k8s.io "reader" is forbidden: User "system:serviceaccount:{mine}:learner" '
            f'cannot delete resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "{mine}"'
            in own_role.stderr)
    deploy = user("create", "deployment", "web", "--image=nginx", check=False)
    assert ('deployments.apps is forbidden' in deploy.stderr and 'in API group "apps"' in deploy.stderr)
    # The administrator is unaffected.
    assert kubectl("get", "pods", "-n", other).returncode == 0
    assert kubectl("auth", "can-i", "delete", "nodes").stdout.strip() == "yes"


def test_subresources_and_resource_names_are_checked(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                     tmp_path: Path) -> None:
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    kubectl("-n", ns, "run", "web", "--image=nginx")
    kubectl("-n", ns, "run", "other", "--image=nginx")
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/web", "pod/other", "--timeout=60s")
    user = as_account(ready_sandbox, kubectl, token_for(kubectl, ns, "learner"), ns, tmp_path)
    assert user("logs", "web").returncode == 0
    denied = user("exec", "web", "--", "env", check=False)
    assert denied.returncode == 1
    assert (f'pods "web" is forbidden: User "system:serviceaccount:{ns}:learner" cannot create resource '
            f'"pods/exec" in API group "" in the namespace "{ns}"') in denied.stderr
    # Exec allowed only for GET (the WebSocket upgrade) is not enough: it also needs create.
    kubectl("-n", ns, "create", "role", "exec-get", "--verb=get", "--resource=pods/exec")
    kubectl("-n", ns, "create", "rolebinding", "exec-get", "--role=exec-get", f"--serviceaccount={ns}:learner")
    assert "cannot create resource \"pods/exec\"" in user("exec", "web", "--", "env", check=False).stderr
    kubectl("-n", ns, "create", "role", "exec", "--verb=create", "--resource=pods/exec", "--resource-name=web")
    kubectl("-n", ns, "create", "rolebinding", "exec", "--role=exec", f"--serviceaccount={ns}:learner")
    assert "HOSTNAME=web" in eventually(lambda: user("exec", "web", "--", "env", check=False).stdout,
                                        what="exec allowed once the Role grants it")
    assert user("exec", "other", "--", "env", check=False).returncode == 1
    # resourceNames: get one pod by name, not the others, and no list.
    kubectl("create", "clusterrole", "one-pod", "--verb=get", "--resource=pods", "--resource-name=web")
    other_ns = fresh_ns(kubectl)
    kubectl("-n", other_ns, "create", "rolebinding", "one-pod", "--clusterrole=one-pod",
            f"--serviceaccount={ns}:learner")
    kubectl("-n", other_ns, "run", "web", "--image=nginx")
    assert user("-n", other_ns, "get", "pod", "web", "-o", "name").stdout.strip() == "pod/web"
    assert user("-n", other_ns, "get", "pods", check=False).returncode == 1
    # A ClusterRole bound by a RoleBinding grants only in the binding's namespace.
    elsewhere = user("-n", "default", "get", "pod", "web", check=False)
    assert elsewhere.returncode == 1 and 'cannot get resource "pods"' in elsewhere.stderr


def test_cluster_role_bindings_and_groups(ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    ns = fresh_ns(kubectl)
    kubectl("-n", ns, "create", "serviceaccount", "learner")
    user = as_account(ready_sandbox, kubectl, token_for(kubectl, ns, "learner"), ns, tmp_path)
    assert user("get", "nodes", check=False).returncode == 1
    name = f"nodes-{secrets.token_hex(2)}"
    kubectl("create", "clusterrole", name, "--verb=get,list", "--resource=nodes")
    kubectl("create", "clusterrolebinding", name, f"--clusterrole={name}", f"--group=system:serviceaccounts:{ns}")
    assert "sandbox" in user("get", "nodes").stdout
    kubectl("delete", "clusterrolebinding", name)
    assert user("get", "nodes", check=False).returncode == 1


def test_auth_can_i_and_whoami_answer_for_the_account(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                      tmp_path: Path) -> None:
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    user = as_account(ready_sandbox, kubectl, token_for(kubectl, ns, "learner"), ns, tmp_path)
    yes = user("auth", "can-i", "list", "pods")
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes")
    no = user("auth", "can-i", "delete", "pods", check=False)
    assert (no.returncode, no.stdout.strip()) == (1, "no")
    assert user("auth", "can-i", "list", "pods", "-n", "default", check=False).stdout.strip() == "no"
    assert user("auth", "can-i", "get", "pods/log").stdout.strip() == "yes"
    listed = user("auth", "can-i", "--list").stdout
    assert re.search(r"^pods\s+\[\]\s+\[\]\s+\[get list watch\]", listed, re.M)
    who = user("auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:learner"


def test_dead_tokens_get_401(ready_sandbox: Sandbox, kubectl: Kubectl, raw: RawApi, tmp_path: Path) -> None:
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    token = token_for(kubectl, ns, "learner")
    path = f"/api/v1/namespaces/{ns}/pods"
    assert raw.request("GET", path, token=token).status == 200
    for bad in ("garbage", token[:-2] + ("AA" if not token.endswith("AA") else "BB"), token + "x"):
        reply = raw.request("GET", path, token=bad)
        assert reply.status == 401 and reply.json()["reason"] == "Unauthorized"
    refused = as_account(ready_sandbox, kubectl, "garbage", ns, tmp_path)("get", "pods", check=False)
    assert refused.stderr.strip().splitlines()[-1].startswith("error: You must be logged in to the server (")
    other_audience = token_for(kubectl, ns, "learner", "--audience=vault")
    assert raw.request("GET", path, token=other_audience).status == 401
    # A token dies with its account, even when an account of the same name is made again.
    kubectl("-n", ns, "delete", "serviceaccount", "learner")
    assert raw.request("GET", path, token=token).status == 401
    kubectl("-n", ns, "create", "serviceaccount", "learner")
    assert raw.request("GET", path, token=token).status == 401
    fresh = token_for(kubectl, ns, "learner")
    assert raw.request("GET", path, token=fresh).status == 200
    # Deleting the namespace deletes the account, its roles and bindings: the token dies too.
    kubectl("delete", "namespace", ns)
    assert raw.request("GET", path, token=fresh).status == 401
    assert kubectl("get", "roles,rolebindings,sa", "-n", ns, "-o", "name").stdout.strip() == ""


def test_a_namespace_terminates_until_its_pods_are_gone(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    from kubernetes import client, config, watch

    ns = fresh_ns(kubectl)
    kubectl("-n", ns, "run", "web", "--image=nginx")
    kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/web", "--timeout=60s")
    api_client = config.new_client_from_config(config_file=str(ready_sandbox.kubeconfig))
    try:
        core = client.CoreV1Api(api_client)
        version = core.list_namespace(field_selector=f"metadata.name={ns}").metadata.resource_version
        kubectl("delete", "namespace", ns, "--wait=false")
        phases = []
        for ev in watch.Watch().stream(core.list_namespace, field_selector=f"metadata.name={ns}",
                                       resource_version=version, timeout_seconds=60):
            phases.append((ev["type"], ev["object"].status.phase))
            if ev["type"] == "DELETED":
                break
    finally:
        api_client.close()
    assert phases[0] == ("MODIFIED", "Terminating") and phases[-1][0] == "DELETED", phases
    assert kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip() == ""


def test_nothing_new_in_a_terminating_namespace() -> None:
    from labkit.sandbox.registry import Registry
    from labkit.sandbox.resources import BY_PLURAL
    from labkit.sandbox.store import Store, StoreError

    class Addresses:
        def take(self) -> str:
            return "10.96.0.10"

    namespaces, pods = BY_PLURAL[("", "namespaces")], BY_PLURAL[("", "pods")]
    reg = Registry(Store(), Addresses())
    reg.create(namespaces, {"metadata": {"name": "going"}}, None)
    running = reg.create(pods, {"metadata": {"name": "p"}, "spec": {"nodeName": "sandbox", "containers": [
        {"name": "c", "image": "nginx"}]}}, "going")
    marked = reg.delete(namespaces, "", "going")
    assert marked["status"]["phase"] == "Terminating" and marked["metadata"]["deletionTimestamp"]
    with pytest.raises(StoreError) as refused:
        reg.create(BY_PLURAL[("", "configmaps")], {"metadata": {"name": "cm"}}, "going")
    assert refused.value.code == 403 and refused.value.message == (
        'configmaps "cm" is forbidden: unable to create new content in namespace going because it is being '
        "terminated")
    reg.finalize_pod("going", "p", running["metadata"]["uid"])  # the kubelet stopped the last pod
    assert reg.store.get(namespaces, "", "going") is None


def test_a_token_bound_to_a_pod_dies_with_it(ready_sandbox: Sandbox, kubectl: Kubectl, raw: RawApi) -> None:
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    kubectl("-n", ns, "run", "holder", "--image=nginx")
    token = token_for(kubectl, ns, "learner", "--bound-object-kind=Pod", "--bound-object-name=holder")
    assert raw.request("GET", f"/api/v1/namespaces/{ns}/pods", token=token).status == 200
    kubectl("-n", ns, "delete", "pod", "holder", "--wait=true", "--grace-period=0", "--force")
    eventually(lambda: raw.request("GET", f"/api/v1/namespaces/{ns}/pods", token=token).status == 401,
               what="the bound token refused once its pod is gone")


def test_non_resource_paths_and_discovery(ready_sandbox: Sandbox, kubectl: Kubectl, raw: RawApi) -> None:
    ns = fresh_ns(kubectl)
    kubectl("-n", ns, "create", "serviceaccount", "learner")
    token = token_for(kubectl, ns, "learner")
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/openapi/v3", "/version"):
        assert raw.request("GET", path, token=token).status == 200, path
    reply = raw.request("GET", "/metrics", token=token)
    assert reply.status == 403 and reply.is_status()
    assert reply.json()["message"] == (f'forbidden: User "system:serviceaccount:{ns}:learner" cannot get path '
                                       '"/metrics"')


def test_the_official_client_gets_403_and_401(ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    from kubernetes import client, config, watch
    from kubernetes.client.exceptions import ApiException

    mine, other = fresh_ns(kubectl), fresh_ns(kubectl)
    pod_reader(kubectl, mine)
    token = token_for(kubectl, mine, "learner")
    cluster = yaml.safe_load(ready_sandbox.kubeconfig.read_text())["clusters"][0]["cluster"]
    path = tmp_path / "learner.kubeconfig"
    path.write_text(kubeconfig_text(cluster, mine, token))
    api_client = config.new_client_from_config(config_file=str(path))
    try:
        core = client.CoreV1Api(api_client)
        assert core.list_namespaced_pod(mine).items == []
        with pytest.raises(ApiException) as denied:
            core.list_namespaced_pod(other)
        assert denied.value.status == 403
        body = json.loads(denied.value.body)
        assert body["reason"] == "Forbidden" and body["details"] == {"kind": "pods"}
        with pytest.raises(ApiException) as watched:
            for _ in watch.Watch().stream(core.list_namespaced_pod, other, timeout_seconds=5):
                break
        assert watched.value.status == 403
        with pytest.raises(ApiException) as created:
            core.create_namespace({"metadata": {"name": "nope"}})
        assert created.value.status == 403
        kubectl("-n", mine, "delete", "serviceaccount", "learner")
        with pytest.raises(ApiException) as dead:
            core.list_namespaced_pod(mine)
        assert dead.value.status == 401
    finally:
        api_client.close()


def test_nobody_grants_what_they_do_not_hold(ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    ns = fresh_ns(kubectl)
    pod_reader(kubectl, ns)
    kubectl("-n", ns, "create", "role", "rbac-writer", "--verb=get,create,update,patch",
            "--resource=roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io")
    kubectl("-n", ns, "create", "rolebinding", "rbac-writer", "--role=rbac-writer", f"--serviceaccount={ns}:learner")
    user = as_account(ready_sandbox, kubectl, token_for(kubectl, ns, "learner"), ns, tmp_path)
    assert user("create", "role", "pod-get", "--verb=get", "--resource=pods").returncode == 0  # held: fine
    more = user("create", "role", "secrets", "--verb=get", "--resource=secrets", check=False)
    assert more.returncode == 1
    assert (f'roles.rbac.authorization.k8s.io "secrets" is forbidden: user "system:serviceaccount:{ns}:learner" '
            '(groups=["system:serviceaccounts" "system:serviceaccounts:' in more.stderr)
    assert 'not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}' in more.stderr
    assert user("create", "rolebinding", "pod-get", "--role=pod-get", f"--serviceaccount={ns}:default").returncode == 0
    admin = user("create", "rolebinding", "admin", "--clusterrole=cluster-admin", f"--serviceaccount={ns}:learner",
                 check=False)
    assert admin.returncode == 1 and "is attempting to grant RBAC permissions not currently held" in admin.stderr
    widen = user("patch", "role", "pod-get", "--type=json",
                 "-p", '[{"op": "add", "path": "/rules/0/verbs/-", "value": "delete"}]', check=False)
    assert widen.returncode == 1 and 'Verbs:["delete"]' in widen.stderr
    assert user("auth", "can-i", "delete", "pods", check=False).stdout.strip() == "no"
    # With `escalate` on roles, a role may hold more than its author.
    kubectl("-n", ns, "create", "role", "escalate", "--verb=escalate", "--resource=roles.rbac.authorization.k8s.io")
    kubectl("-n", ns, "create", "rolebinding", "escalate", "--role=escalate", f"--serviceaccount={ns}:learner")
    assert user("create", "role", "secrets", "--verb=get", "--resource=secrets").returncode == 0


# --------------------------------------------------------------------------------------------- validation


def test_invalid_roles_and_bindings_are_refused_whole(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                      raw: RawApi) -> None:
    ns = fresh_ns(kubectl)
    roles, bindings = f"{RBAC}/namespaces/{ns}/roles", f"{RBAC}/namespaces/{ns}/rolebindings"
    no_verbs = raw.request("POST", roles, {"metadata": {"name": "r"}, "rules": [{"apiGroups": [""],
                                                                                  "resources": ["pods"]}]})
    assert no_verbs.status == 422 and no_verbs.is_status()
    assert [c["field"] for c in no_verbs.json()["details"]["causes"]] == ["rules[0].verbs"]
    urls = raw.request("POST", roles, {"metadata": {"name": "r"}, "rules": [{"verbs": ["get"],
                                                                              "nonResourceURLs": ["/x"]}]})
    assert urls.status == 422 and "namespaced rules cannot apply to non-resource URLs" in urls.json()["message"]
    typed = raw.request("POST", roles, {"metadata": {"name": "r"}, "rules": [{"verbs": "get"}]})
    assert typed.status == 400 and typed.json()["details"]["causes"][0]["field"] == "rules[0].verbs"
    bad_ref = raw.request("POST", bindings, {"metadata": {"name": "b"}, "roleRef": {"kind": "Secret", "name": "x"},
                                             "subjects": [{"kind": "Robot", "name": "r"}]})
    assert bad_ref.status == 422
    assert {c["field"] for c in bad_ref.json()["details"]["causes"]} == {"roleRef.kind", "subjects[0].kind"}
    slash = raw.request("POST", roles, {"metadata": {"name": "a%b"}, "rules": []})
    assert slash.status == 422 and "may not contain '%'" in slash.json()["message"]
    assert kubectl("-n", ns, "get", "roles,rolebindings", "-o", "name").stdout.strip() == ""
    # A binding's roleRef cannot change.
    kubectl("-n", ns, "create", "rolebinding", "b", "--clusterrole=view", f"--serviceaccount={ns}:default")
    moved = raw.request("PATCH", f"{bindings}/b", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                               "kind": "ClusterRole", "name": "edit"}},
                        content_type="application/merge-patch+json")
    assert moved.status == 422 and "cannot change roleRef" in moved.json()["message"]
    assert raw.get(f"{bindings}/b").json()["roleRef"]["name"] == "view"
    # Defaults as the v1 API has them.
    stored = raw.get(f"{bindings}/b").json()
    assert stored["roleRef"]["apiGroup"] == "rbac.authorization.k8s.io"
    crb = raw.request("POST", f"{RBAC}/clusterrolebindings",
                      {"metadata": {"name": f"c-{secrets.token_hex(2)}"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                       "subjects": [{"kind": "ServiceAccount", "name": "x"}]})
    assert crb.status == 422 and crb.json()["details"]["causes"][0]["field"] == "subjects[0].namespace"


_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["", "*", "get", "pods", "pods/exec", "apps", "Role",
                                                        "ClusterRole", "ServiceAccount", "User", "Group",
                                                        "rbac.authorization.k8s.io", "default", "/api/*"]))
_VALUE = st.one_of(st.none(), st.integers(-3, 3), st.booleans(), _TEXT, st.lists(_TEXT, max_size=3),
                   st.dictionaries(_TEXT, _TEXT, max_size=2))
_RULE = st.dictionaries(st.sampled_from(["verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs"]),
                        _VALUE, max_size=5)
_ROLE = st.fixed_dictionaries({"metadata": st.fixed_dictionaries({"name": _TEXT})},
                              optional={"rules": st.one_of(_VALUE, st.lists(st.one_of(_RULE, _VALUE), max_size=3))})
_BINDING = st.fixed_dictionaries({"metadata": st.fixed_dictionaries({"name": _TEXT})}, optional={
    "roleRef": st.one_of(_VALUE, st.dictionaries(st.sampled_from(["apiGroup", "kind", "name"]), _VALUE)),
    "subjects": st.one_of(_VALUE, st.lists(st.one_of(_VALUE, st.dictionaries(
        st.sampled_from(["kind", "apiGroup", "name", "namespace"]), _VALUE)), max_size=3))})


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(_ROLE.map(lambda b: ("roles", b)), _BINDING.map(lambda b: ("rolebindings", b)),
                      _ROLE.map(lambda b: ("clusterroles", b)), _BINDING.map(lambda b: ("clusterrolebindings", b))))
def test_fuzzed_rbac_bodies_never_5xx_nor_half_stored(ready_sandbox: Sandbox, raw: RawApi,
                                                      body: tuple[str, dict[str, Any]]) -> None:
    plural, obj = body
    base = f"{RBAC}/namespaces/default/{plural}" if plural in ("roles", "rolebindings") else f"{RBAC}/{plural}"
    name = obj["metadata"]["name"]
    before = raw.get(f"{base}/{quote(name, safe='')}") if name and name not in (".", "..") else None
    reply = raw.request("POST", base, obj)
    event(f"{plural} {reply.status}")
    assert reply.status < 500, reply.body
    if reply.status >= 400:
        assert reply.is_status(), reply.body
        if before is not None and before.status == 404:
            assert raw.get(f"{base}/{quote(name, safe='')}").status == 404, "a refused object was stored"
        return
    created = reply.json()
    path = f"{base}/{quote(created['metadata']['name'], safe='')}"
    stored = raw.get(path)
    assert stored.status == 200 and stored.json() == created
    assert raw.request("DELETE", path).status == 200
