"""Deploying and releasing versions: ``kubectl apply``, ``kubectl label``, ``kubectl delete deployment`` and the
waits that go with them, for the lesson "Add a new version of reviews".

The moves of istio.io's page, as functions on a :class:`~labkit.client.Client` (the Lab has them as verbs):

- :func:`apply`: a manifest (a file, a shipped manifest's name, or YAML text), optionally edited like the page's
  ``sed 's/app: reviews/app: reviews_test/'`` and filtered like ``kubectl apply -l``; server-side apply, so the
  same call works on the sandbox and a real cluster; then waits for the Deployments it touched to roll out.
- :func:`label`: ``kubectl label pods -l version=v2 app=reviews --overwrite``, refusing to overwrite without it.
- :func:`pod_ip`: ``kubectl get pod -l ... -o jsonpath='{.items[0].status.podIP}'``.
- :func:`owners`: which pods a ReplicaSet controls (a relabelled pod is released: it has no controller).
- :func:`delete_deployment`, :func:`wait_rollout`, :func:`wait_deleted`.

Example:
    >>> lab.apply(labkit.manifest_path("reviews-v2-v3.yaml"), selector="app=reviews_test,version=v2",
    ...           replace={"app: reviews": "app: reviews_test"})
    deployment.apps/reviews-v2 created
    >>> lab.label("version=v2", {"app": "reviews"}, overwrite=True)
    pod/reviews-v2-5d8f9c7b6-x2x9k labeled
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .client import Client, Pod, pods_by_name, pods_frame, selector_text
from .errors import BadSelector, LabkitError, NotFound, WaitTimeout, translate
from .records import Applied, ApplyResult, LabelChange, LabelResult

__all__ = ["KINDS", "OWNER_COLUMNS", "apply", "delete_deployment", "label", "object_labels_match", "owners",
           "pod_ip", "read_manifest", "wait_deleted", "wait_rollout"]

KINDS: dict[str, tuple[str, str, str]] = {
    # kind: (apiVersion, plural, how kubectl names it in its output)
    "Deployment": ("apps/v1", "deployments", "deployment.apps"),
    "ReplicaSet": ("apps/v1", "replicasets", "replicaset.apps"),
    "Service": ("v1", "services", "service"),
    "ServiceAccount": ("v1", "serviceaccounts", "serviceaccount"),
    "ConfigMap": ("v1", "configmaps", "configmap"),
    "Secret": ("v1", "secrets", "secret"),
    "Pod": ("v1", "pods", "pod"),
}
"""The kinds :func:`apply` knows (all namespaced)."""

OWNER_COLUMNS: dict[str, str] = {
    "name": "string",
    "app": "string",
    "version": "string",
    "owner": "string",
}
"""The columns of :func:`owners`, kubectl's ``custom-columns`` of the lesson: owner is the name of the pod's
controller (its ReplicaSet), "" for a pod no controller owns (kubectl prints ``<none>``)."""


FIELD_MANAGER = "labkit"
_TIMEOUT = (10, 60)


# ------------------------------------------------------------------------------------------------ wire helpers


def _call(lab: Client, method: str, path: str, *, body: object = None, content_type: str | None = None,
          query: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """One request to the API server through the Client's ApiClient (its credentials); the JSON answer."""
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    api = lab.api_client
    request = api.param_serialize(method=method, resource_path=path, query_params=list(query),
                                  header_params=headers, body=body, auth_settings=["BearerToken"])
    resp = api.call_api(*request, _request_timeout=_TIMEOUT)
    data = resp.read() or b""
    if not 200 <= int(resp.status) <= 299:
        raise ApiException(http_resp=resp, body=data.decode("utf-8", "replace"))
    return dict(json.loads(data)) if data else {}


def _collection(kind: str, namespace: str) -> str:
    api_version, plural, _ = KINDS[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


# ------------------------------------------------------------------------------------------------ selectors

_REQUIREMENT = re.compile(r"\s*(!?)\s*([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def _requirements(selector: str) -> list[tuple[str, str, set[str]]]:
    parts = re.split(r",(?![^(]*\))", selector) if selector else []
    out: list[tuple[str, str, set[str]]] = []
    for part in parts:
        m = _REQUIREMENT.match(part)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            raise BadSelector(f"cannot read {part.strip()!r} in the selector {selector!r}: write it like "
                              "'app=reviews,version=v2', 'version!=v1', 'app in (reviews,ratings)' or '!version'")
        bang, key, op, value, set_op, values = m.groups()
        if op:
            out.append((key, "!=" if op == "!=" else "=", {value}))
        elif set_op:
            out.append((key, set_op, {v.strip() for v in values.split(",") if v.strip()}))
        else:
            out.append((key, "!" if bang else "exists", set()))
    return out


def object_labels_match(selector: str | Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether an object's labels satisfy a label selector (``kubectl apply -l`` filters objects this way)."""
    have = dict(labels or {})
    for key, op, values in _requirements(selector_text(selector)):
        if op == "=" and have.get(key) not in values:
            return False
        if op == "!=" and key in have and have[key] in values:
            return False
        if op == "in" and have.get(key) not in values:
            return False
        if op == "notin" and key in have and have[key] in values:
            return False
        if op == "exists" and key not in have:
            return False
        if op == "!" and key in have:
            return False
    return True


# ------------------------------------------------------------------------------------------------ apply


def read_manifest(source: str | os.PathLike[str], replace: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The objects of a manifest: a file, the name of a manifest labkit ships (``reviews-v2-v3.yaml``), or YAML
    text. ``replace`` edits the text first like ``sed 's/OLD/NEW/'``: the first occurrence on each line."""
    text, where = _manifest_text(source)
    for old, new in (replace or {}).items():
        if not old:
            raise ValueError("replace: an empty string cannot be replaced; give {'old text': 'new text'}")
        text = "\n".join(line.replace(old, new, 1) for line in text.split("\n"))
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise LabkitError(f"{where} is not valid YAML: {exc}") from exc
    objects: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            objects.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        elif isinstance(doc, dict):
            objects.append(doc)
        else:
            raise LabkitError(f"{where}: a document is not a Kubernetes object (a mapping with kind and metadata)")
    for obj in objects:
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            raise LabkitError(f"{where}: an object lacks kind or metadata.name: {str(obj)[:120]}")
    return objects


def _manifest_text(source: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith(("apiVersion", "kind", "---"))):
        return source, "the manifest text"
    path = Path(source).expanduser()
    if not path.exists() and isinstance(source, str) and os.sep not in source:
        shipped = Path(str(resources.files("labkit.sandbox") / "manifests" / source))
        if not shipped.exists():
            raise FileNotFoundError(f"no manifest {source!r}: no such file, and labkit ships none of that name "
                                    "(it has bookinfo.yaml, reviews-v2-v3.yaml and sleep.yaml)")
        path = shipped
    if not path.exists():
        raise FileNotFoundError(f"no manifest {str(source)!r}: give a file, YAML text, or the name of one labkit "
                                "ships (labkit.manifest_path('bookinfo.yaml'))")
    return path.read_text(), str(path)


def apply(lab: Client, source: str | os.PathLike[str], *, selector: str | Mapping[str, str] | None = None,
          replace: Mapping[str, str] | None = None, namespace: str | None = None, wait: bool = True,
          timeout: float = 120.0) -> ApplyResult:
    """``kubectl apply [-l SELECTOR] -f SOURCE``, then wait for the Deployments it changed to roll out.

    Args:
        lab: the connection.
        source: a manifest file, the name of one labkit ships (``"reviews-v2-v3.yaml"``) or YAML text.
        selector: apply only the objects whose own labels match (``kubectl apply -l``).
        replace: text edits made first, like ``sed 's/app: reviews/app: reviews_test/'``:
            ``{"app: reviews": "app: reviews_test"}`` (the first occurrence on each line).
        namespace: where objects without a namespace go (default: the lab's).
        wait: wait until every created or configured Deployment has all its replicas updated and available.
        timeout: seconds for that wait.

    Returns:
        An :class:`~labkit.records.ApplyResult`; it prints as kubectl does (``deployment.apps/reviews-v2 created``).

    Raises:
        LabkitError: the selector matches no object of the manifest (nothing would be applied), or a kind labkit
            does not apply.

    Example:
        >>> lab.apply("reviews-v2-v3.yaml", selector="version=v2")
        deployment.apps/reviews-v2 created
    """
    ns_default = namespace or lab.namespace
    sel = selector_text(selector)
    objects = read_manifest(source, replace)
    chosen = [o for o in objects if object_labels_match(sel, (o.get("metadata") or {}).get("labels"))]
    if not chosen:
        found = ", ".join(f"{o['kind']}/{o['metadata']['name']} {_label_text(o)}" for o in objects[:8])
        raise LabkitError(f"no object of the manifest has labels matching {sel!r}, so nothing was applied. "
                          f"It holds: {found or 'nothing'}. Check the selector (and the replace= edits).")
    unknown = sorted({o["kind"] for o in chosen if o["kind"] not in KINDS})
    if unknown:
        raise LabkitError(f"labkit cannot apply {', '.join(unknown)}; it applies {', '.join(KINDS)}. "
                          "Use kubectl apply for the others.")
    results: list[Applied] = []
    for obj in chosen:
        results.append(_apply_one(lab, obj, ns_default))
    result = ApplyResult(objects=results, skipped=len(objects) - len(chosen), selector=sel)
    if wait:
        for item in results:
            if item.kind == "Deployment" and item.action != "unchanged":
                wait_rollout(lab, item.name, namespace=item.namespace, timeout=timeout)
    return result


def _label_text(obj: Mapping[str, Any]) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return "(" + (",".join(f"{k}={v}" for k, v in labels.items()) or "no labels") + ")"


def _apply_one(lab: Client, obj: dict[str, Any], ns_default: str) -> Applied:
    from kubernetes.client.exceptions import ApiException

    kind, name = str(obj["kind"]), str(obj["metadata"]["name"])
    ns = str(obj["metadata"].get("namespace") or ns_default)
    body = json.loads(json.dumps(obj, default=str))  # a deep, JSON-clean copy (YAML dates become strings)
    body.setdefault("apiVersion", KINDS[kind][0])
    body["metadata"]["namespace"] = ns
    path = f"{_collection(kind, ns)}/{name}"
    what = f'{kind.lower()} "{name}" in namespace {ns}'
    before: dict[str, Any] | None
    try:
        before = _call(lab, "GET", path)
    except ApiException as exc:
        if exc.status != 404:
            translate(exc, what)
        before = None
    except Exception as exc:
        translate(exc, what)
    try:
        after = _call(lab, "PATCH", path, body=body, content_type="application/apply-patch+yaml",
                      query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
    except Exception as exc:
        translate(exc, f"applying {what}")
    if before is None:
        action = "created"
    elif (after.get("metadata") or {}).get("resourceVersion") == (before.get("metadata") or {}).get(
            "resourceVersion"):
        action = "unchanged"
    else:
        action = "configured"
    return Applied(kind=kind, name=name, namespace=ns, action=action, printed_kind=KINDS[kind][2])


# ------------------------------------------------------------------------------------------------ waits


def _deployment(lab: Client, name: str, ns: str) -> dict[str, Any]:
    try:
        return _call(lab, "GET", f"{_collection('Deployment', ns)}/{name}")
    except Exception as exc:
        translate(exc, f'deployment "{name}" in namespace {ns}', hint="List them with lab.deployments().")


def _rolled_out(dep: Mapping[str, Any]) -> bool:
    meta, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    return (int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
            and int(st.get("updatedReplicas") or 0) == want and int(st.get("replicas") or 0) == want
            and int(st.get("availableReplicas") or 0) == want)


def wait_rollout(lab: Client, deployment: str, *, namespace: str | None = None,
                 timeout: float = 120.0) -> pd.DataFrame:
    """``kubectl rollout status deploy/NAME``: wait (by watches) until every replica is updated and available, and
    exactly that many pods match its selector, all Ready (no surplus left, a released pod replaced); return the
    Deployment's pods (:data:`~labkit.client.POD_COLUMNS`).

    Raises:
        NotFound: no such Deployment, or it was deleted while waiting.
        WaitTimeout: not rolled out within ``timeout`` seconds.
    """
    from kubernetes import watch

    ns = namespace or lab.namespace
    deadline = time.monotonic() + timeout
    dep = _deployment(lab, deployment, ns)
    while not _rolled_out(dep) and time.monotonic() < deadline:
        w = watch.Watch()
        rv = str((dep.get("metadata") or {}).get("resourceVersion") or "")
        remaining = max(1, int(deadline - time.monotonic()))
        try:
            for ev in w.stream(lab.apps.list_namespaced_deployment, ns, field_selector=f"metadata.name={deployment}",
                               resource_version=rv or None, timeout_seconds=remaining):
                if ev.get("type") == "DELETED":
                    raise NotFound(f'deployment "{deployment}" in namespace {ns} was deleted while waiting for '
                                   "its rollout")
                obj = ev.get("raw_object") or {}
                if obj.get("kind") == "Deployment":
                    dep = obj
                if _rolled_out(dep):
                    break
        except LabkitError:
            raise
        except Exception as exc:
            translate(exc, f'watching the rollout of deployment "{deployment}" in namespace {ns}')
        finally:
            w.stop()
        if not _rolled_out(dep):
            dep = _deployment(lab, deployment, ns)  # the stream ended (410 Gone, server timeout): read it afresh
    if not _rolled_out(dep):
        st = dep.get("status") or {}
        raise WaitTimeout(f'deployment "{deployment}" did not finish rolling out within {timeout:g} s '
                          f"(replicas {st.get('replicas', 0)}, updated {st.get('updatedReplicas', 0)}, available "
                          f"{st.get('availableReplicas', 0)}, wanted {(dep.get('spec') or {}).get('replicas', 1)}); "
                          f"look with lab.pods() and `kubectl rollout status deploy/{deployment}`")
    match = dict(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    if match:
        _wait_pods(lab, match, int((dep.get("spec") or {}).get("replicas", 1)), ns,
                      max(0.5, deadline - time.monotonic()), deployment)
    return pods_frame(_selected_pods(lab, dep, ns))


def _wait_pods(lab: Client, match: dict[str, str], count: int, ns: str, timeout: float, deployment: str) -> None:
    """Wait until exactly ``count`` pods match, all Ready and none terminating: the surplus of a scale-down or a
    rollout is gone and a pod released from the ReplicaSet has been replaced (read from the pods themselves, not
    the Deployment's status, which the controllers update a moment later)."""
    from .kubestatus import is_pod_ready

    pods: dict[str, Pod] = {}

    def settled(pods: dict[str, Pod]) -> bool:
        return len(pods) == count and all(is_pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                                          for p in pods.values())

    for pods in pods_by_name(lab.watch_pods(match, namespace=ns, timeout=timeout)):
        if settled(pods):
            return
    raise WaitTimeout(f'deployment "{deployment}" does not have {count} Ready pods after {timeout:.0f} s: '
                      f"{', '.join(sorted(pods)) or 'none'}; look with lab.pods({selector_text(match)!r})")


def _selected_pods(lab: Client, dep: Mapping[str, Any], ns: str) -> list[Pod]:
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return [p for p in lab.list_pods(dict(match), namespace=ns).items
            if not (p.get("metadata") or {}).get("deletionTimestamp")] if match else []


def wait_deleted(lab: Client, selector: str | Mapping[str, str], *, namespace: str | None = None,
                 timeout: float = 120.0) -> int:
    """Wait (by a watch) until no pod matches ``selector``, terminating ones included; return how many there were.

    Raises:
        WaitTimeout: pods still match after ``timeout`` seconds (named in the message).
    """
    sel = selector_text(selector)
    ns = namespace or lab.namespace
    pods: dict[str, Pod] = {}
    seen = 0
    for pods in pods_by_name(lab.watch_pods(sel, namespace=ns, timeout=timeout)):
        seen = max(seen, len(pods))
        if not pods:
            return seen
    if not lab.list_pods(sel, namespace=ns).items:
        return seen
    raise WaitTimeout(f"pods matching {sel!r} in namespace {ns} were not gone after {timeout:g} s: "
                      f"{', '.join(sorted(pods)) or 'see lab.pods()'}")


# ------------------------------------------------------------------------------------------------ pods


def _targets(lab: Client, target: str | Mapping[str, str], ns: str) -> tuple[list[Pod], str]:
    """Pods named ``pod/NAME`` (or ``pods/NAME``), or matching a selector; error when there are none."""
    if isinstance(target, str) and re.match(r"^pods?/", target.strip()):
        name = target.strip().split("/", 1)[1]
        return [lab.read_pod(name, ns)], f"pod {name}"
    sel = selector_text(target)
    if not sel:
        raise BadSelector("give a selector ('version=v2') or a pod ('pod/NAME'); an empty one would mean every "
                          "pod of the namespace")
    items = lab.list_pods(sel, namespace=ns).items
    if not items:
        raise lab.no_match(sel, ns)
    return sorted(items, key=lambda p: str(p["metadata"]["name"])), f"pods matching {sel!r}"


def label(lab: Client, target: str | Mapping[str, str], labels: Mapping[str, str | None], *,
          overwrite: bool = False, namespace: str | None = None) -> LabelResult:
    """``kubectl label pods -l SELECTOR key=value ... [--overwrite]`` (or ``pod/NAME``); None removes a label.

    Like kubectl, a label that already has another value is changed only with ``overwrite=True``; without it
    nothing is changed and the error names the pods and values.

    Returns:
        A :class:`~labkit.records.LabelResult`; it prints as kubectl does (``pod/NAME labeled``).

    Example:
        >>> lab.label("version=v2", {"app": "reviews"}, overwrite=True)
    """
    if not labels:
        raise ValueError("labels: give at least one, e.g. {'app': 'reviews'} (None removes a label)")
    for key, value in labels.items():
        if not re.fullmatch(r"([a-z0-9.-]+/)?[A-Za-z0-9]([\w.-]*[A-Za-z0-9])?", key) or (
                value is not None and not re.fullmatch(r"([A-Za-z0-9]([\w.-]*[A-Za-z0-9])?)?", value)):
            raise ValueError(f"{key}={value} is not a valid label (keys and values: letters, digits, '-', '_', "
                             "'.'; starting and ending with a letter or digit)")
    ns = namespace or lab.namespace
    pods, what = _targets(lab, target, ns)
    if not overwrite:
        clashes = [f"{p['metadata']['name']}: '{k}' already has a value ({(p['metadata'].get('labels') or {})[k]})"
                   for p in pods for k, v in labels.items()
                   if v is not None and k in (p["metadata"].get("labels") or {})
                   and (p["metadata"].get("labels") or {})[k] != v]
        if clashes:
            raise LabkitError(f"{'; '.join(clashes)}, and overwrite is False: nothing was changed. Pass "
                              "overwrite=True (kubectl's --overwrite) to change it.")
    changes: list[LabelChange] = []
    for pod in pods:
        name = str(pod["metadata"]["name"])
        before = dict(pod["metadata"].get("labels") or {})
        wanted = {k: v for k, v in labels.items() if before.get(k) != v and not (v is None and k not in before)}
        after = before
        if wanted:
            try:
                doc = _call(lab, "PATCH", f"{_collection('Pod', ns)}/{name}", body={"metadata": {"labels": wanted}},
                            content_type="application/merge-patch+json")
            except Exception as exc:
                translate(exc, f'labelling pod "{name}" in namespace {ns}')
            after = dict((doc.get("metadata") or {}).get("labels") or {})
        changes.append(LabelChange(pod=name, namespace=ns, before=before, after=after))
    return LabelResult(changes=changes, target=what)


def pod_ip(lab: Client, selector: str | Mapping[str, str], *, namespace: str | None = None) -> str:
    """The IP of the first pod matching ``selector`` (kubectl's ``-o jsonpath='{.items[0].status.podIP}'``).

    Raises:
        NoPodsMatch: no pod matches.
        LabkitError: the pod has no IP yet (wait for it first: ``lab.wait_ready(selector)``).
    """
    ns = namespace or lab.namespace
    pods, _ = _targets(lab, selector, ns)
    first = pods[0]
    ip = str((first.get("status") or {}).get("podIP") or "")
    if not ip:
        raise LabkitError(f"pod {first['metadata']['name']} has no IP yet (it is not running): wait for it with "
                          f"lab.wait_ready({selector_text(selector)!r}) first")
    return ip


def owners(lab: Client, selector: str | Mapping[str, str] | None = None, *,
           namespace: str | None = None) -> pd.DataFrame:
    """The matching pods with their controller (:data:`OWNER_COLUMNS`), sorted by name, like ``kubectl get pods -o
    custom-columns=NAME:.metadata.name,APP:.metadata.labels.app,VERSION:.metadata.labels.version,OWNER:.metadata.ownerReferences[0].name``.

    Example:
        >>> lab.owners("version=v2")       # a released pod has no owner
    """
    ns = namespace or lab.namespace
    rows = []
    for pod in sorted(lab.list_pods(selector, namespace=ns).items, key=lambda p: str(p["metadata"]["name"])):
        meta = pod["metadata"]
        labels = meta.get("labels") or {}
        refs = meta.get("ownerReferences") or []
        owner = next((str(r.get("name", "")) for r in refs if r.get("controller")), "")
        rows.append({"name": meta["name"], "app": labels.get("app", ""), "version": labels.get("version", ""),
                     "owner": owner})
    return pd.DataFrame(rows, columns=list(OWNER_COLUMNS)).astype(OWNER_COLUMNS)


def delete_deployment(lab: Client, name: str, *, namespace: str | None = None, wait: bool = True,
                      timeout: float = 120.0) -> str:
    """``kubectl delete deployment NAME``: its ReplicaSets and their pods go with it (garbage collection); a pod
    released from it earlier stays. With ``wait``, return once its pods are gone. Returns kubectl's line."""
    ns = namespace or lab.namespace
    dep = _deployment(lab, name, ns)
    match = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    try:
        _call(lab, "DELETE", f"{_collection('Deployment', ns)}/{name}",
              body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
    except Exception as exc:
        translate(exc, f'deleting deployment "{name}" in namespace {ns}')
    if wait and match:
        wait_deleted(lab, dict(match), namespace=ns, timeout=timeout)
    return f'deployment.apps "{name}" deleted from {ns} namespace'
