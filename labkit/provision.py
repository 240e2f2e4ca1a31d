"""Many attendees on one cluster: a namespace, an account and a kubeconfig for each (``labkit workshop``).

:func:`provision` gives every attendee of a workshop, on a cluster the instructor names (or the sandbox):

- a namespace ``<prefix>-NN`` labelled ``labkit.io/workshop=<prefix>`` (what :func:`teardown` deletes, and how
  a namespace labkit did not make is told apart: it is never touched);
- a ServiceAccount ``attendee``, a Role ``attendee`` limited to that namespace with what the lessons need
  (:data:`ATTENDEE_RULES`: pods and their exec, log and port-forward, services, endpoints, events, configmaps,
  deployments and their scale, replicasets, Istio's VirtualServices, DestinationRules and Gateways), and a
  RoleBinding of the one to the other;
- Bookinfo and the ``sleep`` tester pod (labkit's own manifests), waited for until every deployment is rolled out;
- a kubeconfig file ``<out_dir>/<namespace>.kubeconfig`` with the attendee's token (a ``TokenRequest``, as
  ``kubectl create token`` makes) and the namespace as its context's default.

Only standard API calls go through the official client, so the same code runs on the sandbox (which enforces
the Role: the attendee's token gets 403 in another namespace) and on any real cluster. ``dry_run=True`` returns
the objects as YAML and makes no call at all.

Example:
    >>> result = provision(lab, 3, out_dir="workshop")
    >>> print(result)
    attendee-01  workshop/attendee-01.kubeconfig  token until 2026-11-30T06:00:00Z
    ...
    >>> teardown(lab, out_dir="workshop")
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import deploy
from .client import Client
from .errors import LabkitError, WaitTimeout, translate

__all__ = [
    "ACCOUNT",
    "ATTENDEE_RULES",
    "WORKSHOP_LABEL",
    "Attendee",
    "ProvisionResult",
    "TeardownResult",
    "attendee_objects",
    "namespaces_for",
    "provision",
    "teardown",
]

WORKSHOP_LABEL = "labkit.io/workshop"
"""The label every provisioned namespace carries (its value: the prefix); teardown deletes only these."""
MANAGED_BY = {"app.kubernetes.io/managed-by": "labkit"}
ACCOUNT = "attendee"
"""The name of each attendee's ServiceAccount, Role and RoleBinding (in the attendee's namespace)."""
FIELD_MANAGER = "labkit-workshop"
MAX_ATTENDEES = 500
RBAC = "rbac.authorization.k8s.io"
ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
READ = ["get", "list", "watch"]

ATTENDEE_RULES: list[dict[str, list[str]]] = [
    {"apiGroups": [""], "resources": ["pods", "services", "endpoints", "configmaps", "serviceaccounts"],
     "verbs": ALL_VERBS},
    {"apiGroups": [""], "resources": ["pods/exec", "pods/portforward"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["pods/log", "events"], "verbs": READ},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},  # its own only: a Role is namespaced
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"], "verbs": ALL_VERBS},
    {"apiGroups": ["apps"], "resources": ["deployments/scale", "replicasets/scale"],
     "verbs": ["get", "update", "patch"]},
    {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices", "destinationrules", "gateways"],
     "verbs": ALL_VERBS},
]
"""What an attendee may do in their namespace: what the lessons do, and nothing cluster-wide."""

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Attendee:
    """One attendee's place on the cluster.

    Attributes:
        namespace: their namespace (``attendee-01``), also the context's default in their kubeconfig.
        service_account: the account their token authenticates as (``system:serviceaccount:NS:attendee``).
        kubeconfig: the file written for them (None on a dry run).
        token_expires: when their token stops working (RFC 3339; "" on a dry run).
        objects: what was applied, as kubectl names them (``namespace/attendee-01``, ``role.rbac...``).
    """

    namespace: str
    service_account: str = ACCOUNT
    kubeconfig: Path | None = None
    token_expires: str = ""
    objects: tuple[str, ...] = ()

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass(frozen=True)
class ProvisionResult:
    """What :func:`provision` did (or, on a dry run, would do): the attendees, and the objects as YAML."""

    attendees: tuple[Attendee, ...]
    prefix: str
    server: str = ""
    dry_run: bool = False
    yaml: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        if self.dry_run:
            return self.yaml
        width = max((len(a.namespace) for a in self.attendees), default=9) + 2
        lines = [f"{a.namespace:<{width}}{a.kubeconfig}  token until {a.token_expires}" for a in self.attendees]
        lines.append(f"{len(self.attendees)} attendee(s) ready on {self.server} in {self.seconds:.1f} s; give each "
                     "attendee their file: KUBECONFIG=FILE kubectl get pods")
        return "\n".join(lines)


@dataclass(frozen=True)
class TeardownResult:
    """What :func:`teardown` deleted (or would delete): namespaces (with everything in them) and kubeconfigs."""

    namespaces: tuple[str, ...]
    kubeconfigs: tuple[Path, ...] = ()
    prefix: str = ""
    dry_run: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        if not self.namespaces and not self.kubeconfigs:
            return f"nothing to delete: no namespace is labelled {WORKSHOP_LABEL}={self.prefix}"
        lines = [f"{verb} namespace/{ns}" for ns in self.namespaces]
        lines += [f"{verb} {path}" for path in self.kubeconfigs]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ objects

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def namespaces_for(attendees: int, prefix: str = "attendee") -> list[str]:
    """The attendees' namespaces: ``attendee-01`` ... (two digits at least, more for 100 attendees or more).

    Raises:
        LabkitError: fewer than 1 or more than :data:`MAX_ATTENDEES` attendees, or a prefix that does not make
            valid namespace names.

    Examples:
        >>> namespaces_for(3)
        ['attendee-01', 'attendee-02', 'attendee-03']
    """
    if isinstance(attendees, bool) or not isinstance(attendees, int) or not 1 <= attendees <= MAX_ATTENDEES:
        raise LabkitError(f"attendees must be a whole number from 1 to {MAX_ATTENDEES}, not {attendees!r}")
    width = max(2, len(str(attendees)))
    names = [f"{prefix}-{i:0{width}d}" for i in range(1, attendees + 1)]
    if not isinstance(prefix, str) or not _LABEL.match(prefix) or len(names[-1]) > 63:
        raise LabkitError(f"prefix {prefix!r} does not make valid namespace names ({names[-1]!r}): use lower-case "
                          "letters, digits and '-', starting and ending with a letter or digit, at most "
                          f"{62 - width} characters")
    return names


def _bookinfo(namespace: str, replicas: int) -> list[dict[str, Any]]:
    objects = deploy.read_manifest("bookinfo.yaml") + deploy.read_manifest("sleep.yaml")
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] != "sleep":
            obj["spec"]["replicas"] = replicas
    return objects


def attendee_objects(namespace: str, prefix: str, *, replicas: int = 3, mesh: bool = False) -> list[dict[str, Any]]:
    """Every object one attendee gets, in the order they are applied (the namespace first)."""
    labels = {WORKSHOP_LABEL: prefix, **MANAGED_BY, **({"istio-injection": "enabled"} if mesh else {})}
    meta = {"namespace": namespace, "labels": {WORKSHOP_LABEL: prefix, **MANAGED_BY}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, **meta}},
        {"apiVersion": f"{RBAC}/v1", "kind": "Role", "metadata": {"name": ACCOUNT, **meta},
         "rules": [dict(rule) for rule in ATTENDEE_RULES]},
        {"apiVersion": f"{RBAC}/v1", "kind": "RoleBinding", "metadata": {"name": ACCOUNT, **meta},
         "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}]},
        *_bookinfo(namespace, replicas),
    ]


_PATHS = {"Namespace": ("/api/v1", "namespaces", False), "ServiceAccount": ("/api/v1", "serviceaccounts", True),
          "Role": (f"/apis/{RBAC}/v1", "roles", True), "RoleBinding": (f"/apis/{RBAC}/v1", "rolebindings", True)}
_PRINTED = {"Namespace": "namespace", "ServiceAccount": "serviceaccount", "Role": f"role.{RBAC}",
            "RoleBinding": f"rolebinding.{RBAC}"}


def _path(obj: dict[str, Any]) -> str:
    prefix, plural, namespaced = _PATHS[obj["kind"]]
    meta = obj["metadata"]
    return (f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}" if namespaced
            else f"{prefix}/{plural}/{meta['name']}")


# ------------------------------------------------------------------------------------------------ kubeconfig


def _cluster_entry(client: Client) -> dict[str, Any]:
    """The instructor's cluster as a kubeconfig ``cluster``: its server and the CA the client trusts."""
    cfg = client.api_client.configuration
    entry: dict[str, Any] = {"server": str(cfg.host)}
    ca = getattr(cfg, "ssl_ca_cert", None)
    if ca:
        entry["certificate-authority-data"] = base64.b64encode(Path(ca).read_bytes()).decode()
    elif not getattr(cfg, "verify_ssl", True):
        entry["insecure-skip-tls-verify"] = True
    server_name = getattr(cfg, "tls_server_name", None)
    if server_name:
        entry["tls-server-name"] = server_name
    return entry


def kubeconfig_text(cluster: dict[str, Any], namespace: str, token: str, cluster_name: str = "workshop") -> str:
    """A kubeconfig for one attendee: the cluster, their token, their namespace as the default."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": namespace, "user": {"token": token}}],
        "contexts": [{"name": namespace, "context": {"cluster": cluster_name, "namespace": namespace,
                                                     "user": namespace}}],
        "current-context": namespace,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


# ------------------------------------------------------------------------------------------------ provision


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _check_namespaces(client: Client, names: Sequence[str], prefix: str) -> None:
    """Refuse before anything is made when a namespace exists that this workshop did not make."""
    for ns in names:
        existing = client.read_object(f"/api/v1/namespaces/{ns}", what=f"namespace {ns}")
        if existing is None:
            continue
        meta = existing.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(WORKSHOP_LABEL)
        if owner != prefix:
            raise LabkitError(
                f"namespace {ns} already exists and this workshop did not make it (it has no label "
                f"{WORKSHOP_LABEL}={prefix}); nothing was changed. Choose another prefix (--prefix), or delete "
                f"the namespace if it is a leftover: kubectl delete namespace {ns}")
        if meta.get("deletionTimestamp"):
            raise LabkitError(f"namespace {ns} is still being deleted (a teardown in progress); wait until "
                              f"`kubectl get namespace {ns}` says NotFound, then provision again")


def _request_token(client: Client, namespace: str, seconds: int) -> tuple[str, str]:
    path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{ACCOUNT}/token"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}}
    try:
        answer = client.api_call("POST", path, body=body)
    except Exception as exc:
        translate(exc, f'a token for serviceaccount "{ACCOUNT}" in namespace {namespace}')
    status = answer.get("status") or {}
    token = str(status.get("token") or "")
    if not token:
        raise LabkitError(f"the cluster answered the TokenRequest for {namespace}/{ACCOUNT} without a token")
    return token, str(status.get("expirationTimestamp") or "")


def provision(client: Client | None, attendees: int, *, prefix: str = "attendee",
              out_dir: str | os.PathLike[str] = "workshop", dry_run: bool = False, replicas: int = 3,
              token_seconds: int = 12 * 3600, mesh: bool = False, timeout: float = 300.0,
              progress: Progress | None = None) -> ProvisionResult:
    """Give ``attendees`` attendees each a namespace, an account limited to it, Bookinfo and a kubeconfig.

    Provisioning again with the same prefix brings the attendees' objects back to what they should be and
    writes fresh tokens; a namespace of that name that this workshop did not make stops it before anything is
    changed.

    Args:
        client: the instructor's connection (an administrator of the cluster); None is fine for a dry run.
        attendees: how many (1 to :data:`MAX_ATTENDEES`).
        prefix: namespaces are ``<prefix>-01``, ``<prefix>-02``...
        out_dir: where the kubeconfig files go (made 0700 when missing; files are 0600).
        dry_run: return the objects as YAML and touch nothing (no call to the cluster at all).
        replicas: pods per Bookinfo deployment (the lessons kill "all of them": 3, as the sandbox runs them).
        token_seconds: how long the attendees' tokens last (the cluster may shorten it; the record says).
        mesh: label the namespaces ``istio-injection=enabled`` (Istio's sidecar in every pod).
        timeout: seconds to wait for each attendee's deployments to roll out.
        progress: called with a line of text as each attendee is done (the CLI prints them).

    Returns:
        A :class:`ProvisionResult`; it prints one line per attendee with their kubeconfig.

    Raises:
        LabkitError: bad arguments, or a namespace that exists and is not this workshop's.
        ClusterUnreachable, Forbidden: the cluster did not answer, or the instructor may not do this.
        WaitTimeout: an attendee's Bookinfo did not roll out in time.
    """
    names = namespaces_for(attendees, prefix)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 50:
        raise LabkitError(f"replicas must be a whole number from 0 to 50, not {replicas!r}")
    if isinstance(token_seconds, bool) or not isinstance(token_seconds, int) or token_seconds < 600:
        raise LabkitError(f"the attendees' tokens must last at least 600 s (10 minutes: Kubernetes refuses "
                          f"shorter ones), not {token_seconds!r} s (token_seconds, or --token-hours)")
    if dry_run:
        docs = [obj for ns in names for obj in attendee_objects(ns, prefix, replicas=replicas, mesh=mesh)]
        return ProvisionResult(attendees=tuple(Attendee(ns) for ns in names), prefix=prefix, dry_run=True,
                               yaml=yaml.safe_dump_all(docs, sort_keys=False))
    if client is None:
        raise LabkitError("provision needs a connection to the cluster (labkit.connect(...)); only a dry run "
                          "works without one")
    started = time.monotonic()
    out = Path(out_dir).expanduser()
    _check_namespaces(client, names, prefix)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    cluster = _cluster_entry(client)
    done: list[Attendee] = []
    pending: list[tuple[str, list[str]]] = []
    for ns in names:
        objects = attendee_objects(ns, prefix, replicas=replicas, mesh=mesh)
        applied: list[str] = []
        own = [o for o in objects if o["kind"] in _PATHS]
        for obj in own:
            client.apply_object(_path(obj), obj, field_manager=FIELD_MANAGER,
                                what=f"{obj['kind'].lower()} {obj['metadata']['name']} for {ns}")
            applied.append(f"{_PRINTED[obj['kind']]}/{obj['metadata']['name']}")
        workload = [o for o in objects if o["kind"] not in _PATHS]
        result = deploy.apply(client, yaml.safe_dump_all(workload, sort_keys=False), namespace=ns, wait=False)
        applied += [f"{a.printed_kind}/{a.name}" for a in result.objects]
        pending.append((ns, [o["metadata"]["name"] for o in workload if o["kind"] == "Deployment"]))
        _say(progress, f"{ns}: namespace, account, role and Bookinfo applied ({len(applied)} objects)")
        token, expires = _request_token(client, ns, token_seconds)
        path = out / f"{ns}.kubeconfig"
        _write_private(path, kubeconfig_text(cluster, ns, token))
        done.append(Attendee(ns, kubeconfig=path, token_expires=expires, objects=tuple(applied)))
    for ns, deployments in pending:
        _say(progress, f"{ns}: waiting for {len(deployments)} deployments to roll out")
        for name in deployments:
            try:
                deploy.wait_rollout(client, name, namespace=ns, timeout=timeout)
            except WaitTimeout as exc:
                raise WaitTimeout(f"{ns}: {exc} (the attendees before it are ready; run provision again to "
                                  "finish)") from exc
        _say(progress, f"{ns}: ready")
    return ProvisionResult(attendees=tuple(done), prefix=prefix, server=str(cluster["server"]),
                           seconds=round(time.monotonic() - started, 2))


# ------------------------------------------------------------------------------------------------ teardown


def _workshop_namespaces(client: Client, prefix: str) -> tuple[list[str], str]:
    """The workshop's namespaces (by its label) and the list's resourceVersion, to watch from."""
    try:
        listed = client.api_call("GET", "/api/v1/namespaces", query=[("labelSelector", f"{WORKSHOP_LABEL}={prefix}")])
    except Exception as exc:
        translate(exc, f"listing the namespaces labelled {WORKSHOP_LABEL}={prefix}")
    names = sorted(str(n["metadata"]["name"]) for n in listed.get("items") or [])
    return names, str((listed.get("metadata") or {}).get("resourceVersion") or "")


def _wait_gone(client: Client, names: list[str], prefix: str, timeout: float, progress: Progress | None) -> None:
    """Wait (by a watch on the workshop's namespaces) until none of ``names`` exists, then for their pods."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout
    present, version = _workshop_namespaces(client, prefix)
    left = set(names) & set(present)
    while left and time.monotonic() < deadline:
        _say(progress, f"waiting for {len(left)} namespace(s) to be deleted: {', '.join(sorted(left)[:5])}"
                       f"{' ...' if len(left) > 5 else ''}")
        w = watch.Watch()
        try:
            for ev in w.stream(client.core.list_namespace, label_selector=f"{WORKSHOP_LABEL}={prefix}",
                               resource_version=version or None,
                               timeout_seconds=max(1, int(min(30, deadline - time.monotonic())))):
                if ev["type"] == "DELETED":
                    left.discard(str(ev["raw_object"]["metadata"]["name"]))
                if not left:
                    break
        except Exception as exc:
            if getattr(exc, "status", None) != 410:  # too old a version: list again below
                translate(exc, "watching the workshop's namespaces")
        finally:
            w.stop()
        present, version = _workshop_namespaces(client, prefix)
        left &= set(present)
    if left:
        raise WaitTimeout(f"namespaces still there after {timeout:g} s: {', '.join(sorted(left))} (a real cluster "
                          "deletes a namespace's contents first; see kubectl get namespace)")
    for ns in names:  # the pods of a deleted namespace stop after it is gone (their grace period)
        deploy.wait_deleted(client, "", namespace=ns, timeout=max(1.0, deadline - time.monotonic()))


def teardown(client: Client, *, prefix: str = "attendee", out_dir: str | os.PathLike[str] | None = "workshop",
             dry_run: bool = False, timeout: float = 300.0, progress: Progress | None = None) -> TeardownResult:
    """Delete every namespace labelled ``labkit.io/workshop=<prefix>`` (and all in it) and their kubeconfigs.

    Namespaces labkit did not make are never touched, whatever their names. Waits until the namespaces and their
    pods are gone.

    Args:
        client: the instructor's connection.
        prefix: the workshop's prefix, as given to :func:`provision`.
        out_dir: where the kubeconfig files were written (only ``<namespace>.kubeconfig`` files of deleted
            namespaces are removed); None leaves files alone.
        dry_run: say what would be deleted and delete nothing.
        timeout: seconds to wait for the deletions.
        progress: called with a line of text while waiting.
    """
    started = time.monotonic()
    names, _ = _workshop_namespaces(client, prefix)
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir).expanduser()
        files = [out / f"{ns}.kubeconfig" for ns in names if (out / f"{ns}.kubeconfig").exists()]
    if dry_run:
        return TeardownResult(tuple(names), tuple(files), prefix=prefix, dry_run=True)
    for ns in names:
        client.delete_object(f"/api/v1/namespaces/{ns}", what=f"namespace {ns}")
    if names:
        _wait_gone(client, names, prefix, timeout, progress)
    for path in files:
        path.unlink(missing_ok=True)
    return TeardownResult(tuple(names), tuple(files), prefix=prefix,
                          seconds=round(time.monotonic() - started, 2))

