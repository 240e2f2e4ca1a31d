"""Reset the lab to the state a lesson starts from: the lessons' start states (data) and ``reset``.

A workshop runs lessons that break things on purpose (after lesson 4 every details pod has crashed twice and
waits in a growing back-off). :func:`reset` returns the lab namespace to where a lesson begins: the lesson's
objects as its manifests say (created when missing, replicas and images restored), the objects of later lessons
removed, and fresh pods without crash history. For the Istio lessons (8-12) it also sets or removes the
namespace's ``istio-injection`` label, renews the pods whose sidecar does not match it, and leaves exactly the
lesson's Istio rules (VirtualServices, DestinationRules, Gateways). On the embedded sandbox the pods with a history
are deleted (their ReplicaSets make new ones at once); on a real cluster the deployments holding them are rolled
(``kubectl rollout restart``), as an operator would. ``dry_run=True`` plans and touches nothing.

Example:
    >>> lab.reset("04")                  # a ResetRecord: what it did, and how long it took
    >>> lab.reset("04", dry_run=True)    # what it would do
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from . import mesh
from .client import Client, Pod
from .errors import Forbidden, LabkitError, WaitTimeout, translate

__all__ = ["LESSONS", "LessonState", "ResetRecord", "ResetStep", "lesson_state", "plan", "reset"]

BOOKINFO = ("bookinfo.yaml", "sleep.yaml")
SHIPPED = ("bookinfo.yaml", "sleep.yaml", "reviews-v2-v3.yaml")
"""Every manifest labkit ships: an object of one of them that the lesson does not have is removed by a reset."""


@dataclass(frozen=True)
class LessonState:
    """What the lab holds when a lesson starts.

    Attributes:
        lesson: the lesson's number, ``"04"``.
        title: the lesson's title.
        manifests: the manifests (shipped with labkit, see :func:`labkit.manifest_path`) whose objects exist.
        replicas: replicas per deployment; a deployment not named here runs with :attr:`default_replicas`
            (Bookinfo's) or, for the tester ``sleep``, its manifest's count.
        mesh: the namespace is labelled ``istio-injection=enabled`` and every pod runs its ``istio-proxy`` sidecar.
        rules: the Istio rules that exist, as the names of the samples labkit ships
            (``labkit/sandbox/manifests/istio/``); every other VirtualService, DestinationRule and Gateway of the
            namespace is removed.
    """

    lesson: str
    title: str
    manifests: tuple[str, ...] = BOOKINFO
    replicas: Mapping[str, int] = field(default_factory=dict)
    mesh: bool = False
    rules: tuple[str, ...] = ()


# The start state of every lesson. Lessons 1-6 change no object: they crash processes and delete pods, which the
# fresh pods of a reset undo. Lesson 7 deploys reviews v2, releases a pod of it, deletes reviews v1 and puts it all
# back at its end: a reset removes what an interrupted run left (reviews-v2, the released pod) and brings v1 back.
# A lesson that starts with more objects lists its manifest here. Lesson 8 starts where lesson 7 ends and meshes
# the namespace: one replica of each service, reviews v1, v2 and v3, every pod with its sidecar, and the
# DestinationRules of destination-rule-all.yaml. Lessons 9-12 start from there: each removes its VirtualServices at
# its end, as istio.io's tasks do, so none exists when the next begins.
MESHED = (*BOOKINFO, "reviews-v2-v3.yaml")
ONE_EACH: Mapping[str, int] = {name: 1 for name in ("details-v1", "productpage-v1", "ratings-v1", "reviews-v1",
                                                    "reviews-v2", "reviews-v3")}
DESTINATION_RULES = ("destination-rule-all.yaml",)


def _meshed(lesson: str, title: str) -> LessonState:
    return LessonState(lesson, title, MESHED, ONE_EACH, mesh=True, rules=DESTINATION_RULES)


LESSONS: dict[str, LessonState] = {
    "01": LessonState("01", "Connect and look around"),
    "02": LessonState("02", "Test one service"),
    "03": LessonState("03", "Chaos in one pod"),
    "04": LessonState("04", "Chaos in all pods"),
    "05": LessonState("05", "Measure it"),
    "06": LessonState("06", "Your own experiment"),
    "07": LessonState("07", "Add a new version of reviews"),
    "08": LessonState("08", "Enable Istio"),
    "09": _meshed("09", "Request routing"),
    "10": _meshed("10", "Fault injection"),
    "11": _meshed("11", "Traffic shifting"),
    "12": _meshed("12", "Request timeouts"),
}


def lesson_state(lesson: str | int, states: Mapping[str, LessonState] | None = None) -> LessonState:
    """The start state of ``lesson`` (``"04"``, ``4``, ``"04-chaos-all-pods"``)."""
    states = LESSONS if states is None else states
    key = str(lesson).strip()
    key = key.split("-", 1)[0]
    if key.isdigit():
        key = f"{int(key):02d}"
    if key not in states:
        raise LabkitError(f"no lesson {lesson!r} to reset to; lessons: {', '.join(sorted(states))} "
                          "(e.g. lab.reset(\"04\") or `labkit reset 04`)")
    return states[key]


# ------------------------------------------------------------------------------------------------ the records


Verb = Literal["create", "scale", "restore", "delete", "renew", "label"]


@dataclass(frozen=True)
class ResetStep:
    """One thing a reset did (or, in a dry run, would do).

    Attributes:
        verb: ``create`` (a missing object), ``scale`` / ``restore`` (a deployment's replicas / images, a rule's
            spec), ``delete`` (an object of another lesson, or a pod no controller owns), ``renew`` (fresh pods for
            a deployment with crash history, or whose sidecar does not match the lesson), ``label`` (the
            namespace's ``istio-injection`` label set or removed).
        kind: the object's kind (``Deployment``, ``Service``, ``Pod``...).
        name: the object's name.
        why: the reason, e.g. ``"2 restarts, CrashLoopBackOff"``.
    """

    verb: Verb
    kind: str
    name: str
    why: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.kind.lower()}/{self.name}" + (f" ({self.why})" if self.why else "")


@dataclass(frozen=True)
class ResetRecord:
    """What :func:`reset` did: the lesson, the namespace, the steps, the time it took, the pods it ended with."""

    lesson: str
    title: str
    namespace: str
    sandbox: bool
    dry_run: bool
    steps: tuple[ResetStep, ...]
    seconds: float
    pods: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.steps)

    def summary(self) -> str:
        where = f"namespace {self.namespace}" + (" (sandbox)" if self.sandbox else "")
        head = (f"reset to lesson {self.lesson} ({self.title}) in {where}: "
                + ("would do" if self.dry_run else "did") + f" {len(self.steps)} thing"
                + ("s" if len(self.steps) != 1 else ""))
        if not self.dry_run:
            head += f" in {self.seconds:.2f} s; {self.pods} pods Ready, none restarted"
        lines = [head] + [f"  - {step}" for step in self.steps]
        if not self.steps:
            lines.append("  - nothing: the lab is already where the lesson starts")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (f"<ResetRecord lesson={self.lesson} namespace={self.namespace} dry_run={self.dry_run} "
                f"steps={len(self.steps)} seconds={self.seconds:.2f}>")

    def _repr_html_(self) -> str:
        head, *rest = self.summary().splitlines()
        items = "".join(f"<li><code>{html.escape(line.strip()[2:])}</code></li>" for line in rest)
        return f"<div><b>{html.escape(head)}</b><ul style='margin:0.2em 0'>{items}</ul></div>"


# ------------------------------------------------------------------------------------------------ the plan


@cache
def _manifest(name: str) -> tuple[str, ...]:
    """A manifest's objects, as JSON texts (parsed once; callers get fresh copies)."""
    from importlib import resources

    import yaml

    text = (resources.files("labkit.sandbox") / "manifests" / name).read_text()
    return tuple(json.dumps(d) for d in yaml.safe_load_all(text) if d)


def _objects(manifests: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads(text) for name in manifests for text in _manifest(name)]


def _desired(lab: Client, state: LessonState) -> list[dict[str, Any]]:
    """The lesson's objects with the replicas it runs them at."""
    default = 3
    if lab.sandbox is not None:
        default = int(lab.sandbox.info.get("replicas") or lab.sandbox.replicas or 3)
    objects = _objects(state.manifests)
    for obj in objects:
        if obj["kind"] == "Deployment":
            name = obj["metadata"]["name"]
            if name in state.replicas:
                obj["spec"]["replicas"] = state.replicas[name]
            elif name != "sleep":
                obj["spec"]["replicas"] = default
    return objects


_KINDS = ("Deployment", "Service", "ServiceAccount")


def _read(lab: Client, kind: str, name: str, ns: str) -> dict[str, Any] | None:
    path = {"Deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            "Service": f"/api/v1/namespaces/{ns}/services/{name}",
            "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts/{name}"}[kind]
    return lab.read_object(path, what=f'{kind.lower()} "{name}" in namespace {ns}')


def _images(deployment: Mapping[str, Any]) -> dict[str, str]:
    spec = deployment["spec"]["template"]["spec"]
    return {c["name"]: c.get("image", "") for c in spec.get("containers", [])}


def _history(pod: Pod) -> str:
    """Why a pod is not fresh ("" when it is): restarts, a waiting or terminated state, not Ready, deleting."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    reasons = []
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    if restarts:
        reasons.append(f"{restarts} restart{'s' if restarts != 1 else ''}")
    for c in statuses:
        state = c.get("state") or {}
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if reason and reason not in reasons:
            reasons.append(str(reason))
    if not reasons and statuses and not all(c.get("ready") for c in statuses):
        reasons.append("not Ready")
    return ", ".join(reasons)


def _matches(pod: Pod, match: Mapping[str, str]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in match.items())


@dataclass
class _Plan:
    state: LessonState
    namespace: str
    desired: list[dict[str, Any]]
    steps: list[ResetStep]
    renew: dict[str, list[str]]  # deployment -> the pods with history


def _plan(lab: Client, state: LessonState, states: Mapping[str, LessonState]) -> _Plan:
    ns = lab.namespace
    desired = _desired(lab, state)
    steps: list[ResetStep] = []
    renew: dict[str, list[str]] = {}
    pods = lab.list_pods(namespace=ns).items
    if _injection(lab, ns, state) != state.mesh:
        steps.append(ResetStep("label", "Namespace", ns, f"{mesh.INJECTION_LABEL}=enabled" if state.mesh
                               else f"{mesh.INJECTION_LABEL} removed"))
    for obj in desired:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind not in _KINDS:
            raise LabkitError(f"lesson {state.lesson}'s manifests hold a {kind} ({name}): reset knows Deployments, "
                              "Services and ServiceAccounts; add the kind to labkit.workshop")
        live = _read(lab, kind, name, ns)
        if live is None:
            steps.append(ResetStep("create", kind, name, "missing"))
            continue
        if kind != "Deployment":
            continue
        want, have = int(obj["spec"].get("replicas", 1)), int(live["spec"].get("replicas") or 0)
        if want != have:
            steps.append(ResetStep("scale", kind, name, f"{have} -> {want} replicas"))
        if _images(live) != _images(obj):
            steps.append(ResetStep("restore", kind, name, "images " + ", ".join(
                f"{c}={img}" for c, img in sorted(_images(obj).items()))))
        match = obj["spec"]["selector"].get("matchLabels") or {}
        stale = sorted((p["metadata"]["name"], why) for p in pods
                       if _matches(p, match) and (why := _history(p) or _sidecar_mismatch(p, state.mesh)))
        if stale:
            renew[name] = [pod for pod, _ in stale]
            steps.append(ResetStep("renew", kind, name, "; ".join(f"{pod}: {why}" for pod, why in stale)))
    # the objects of the other lessons (later ones) that the target lesson does not have
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    others = ({name for s in states.values() for name in s.manifests} | set(SHIPPED)) - set(state.manifests)
    universe = _objects(sorted(others)) + desired
    for obj in _objects(sorted(others)):
        key = (obj["kind"], obj["metadata"]["name"])
        if key not in wanted and obj["kind"] in _KINDS and _read(lab, *key, ns) is not None:
            steps.append(ResetStep("delete", *key, f"not in lesson {state.lesson}"))
    # pods no controller owns that look like Bookinfo's (lesson 7 releases one by relabelling it)
    templates = [o["spec"]["template"]["metadata"].get("labels") or {} for o in universe if o["kind"] == "Deployment"]
    for pod in pods:
        owned = any(ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or [])
        if not owned and not pod["metadata"].get("deletionTimestamp") and any(
                t and _matches(pod, {k: v for k, v in t.items() if k == "app"}) for t in templates):
            steps.append(ResetStep("delete", "Pod", pod["metadata"]["name"], "no controller owns it"))
    steps.extend(_rule_steps(lab, state, ns))
    return _Plan(state, ns, desired, steps, renew)


def _injection(lab: Client, ns: str, state: LessonState) -> bool:
    """Whether the namespace is labelled for injection. A lesson without the mesh does not need to know: a user who
    may not read namespaces (a workshop's attendee on a real cluster) resets lessons 1-8 all the same."""
    try:
        return mesh.injection_enabled(lab, namespace=ns)
    except Forbidden:
        if state.mesh:
            raise
        return False


def _sidecar_mismatch(pod: Pod, meshed: bool) -> str:
    """Why a pod's containers do not fit the lesson ("" when they do): a sidecar it should not have, or lacks."""
    has = mesh.PROXY_CONTAINER in [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    if has == meshed:
        return ""
    return "has an istio-proxy sidecar" if has else "no istio-proxy sidecar"


@cache
def _rule_docs(names: tuple[str, ...]) -> tuple[str, ...]:
    import yaml

    return tuple(json.dumps(d) for name in names for d in yaml.safe_load_all(mesh.sample_path(name).read_text())
                 if d)


def _live_rules(lab: Client, ns: str, state: LessonState) -> dict[tuple[str, str], dict[str, Any]]:
    """The namespace's Istio rules by (kind, name); none when the cluster has no Istio CRDs."""
    from kubernetes.client.exceptions import ApiException

    api, out = mesh.custom_objects(lab), {}
    for kind, plural in mesh.PLURALS.items():
        try:
            items = api.list_namespaced_custom_object(mesh.GROUP, mesh.VERSION, ns, plural)["items"]
        except ApiException as exc:
            if exc.status == 404 or (exc.status == 403 and not state.rules):
                continue  # Istio is not installed (or not ours to see): no rules to remove, none wanted
            translate(exc, f"{plural} in namespace {ns}")
        except Exception as exc:
            translate(exc, f"{plural} in namespace {ns}")
        out.update({(kind, str(o["metadata"]["name"])): o for o in items})
    return out


def _rule_steps(lab: Client, state: LessonState, ns: str) -> list[ResetStep]:
    wanted = {(d["kind"], d["metadata"]["name"]): d for d in map(json.loads, _rule_docs(state.rules))}
    live = _live_rules(lab, ns, state)
    steps = []
    for key, doc in wanted.items():
        if key not in live:
            steps.append(ResetStep("create", *key, "missing"))
        elif live[key].get("spec") != doc.get("spec"):
            steps.append(ResetStep("restore", *key, "spec changed"))
    steps += [ResetStep("delete", *key, f"not in lesson {state.lesson}") for key in sorted(live) if key not in wanted]
    return steps


def plan(lab: Client, lesson: str | int, *, states: Mapping[str, LessonState] | None = None) -> ResetRecord:
    """What :func:`reset` would do, touching nothing (the same as ``reset(..., dry_run=True)``)."""
    return reset(lab, lesson, dry_run=True, states=states)


# ------------------------------------------------------------------------------------------------ the reset


def _create(lab: Client, obj: dict[str, Any], ns: str) -> None:
    fn = {"Deployment": lab.apps.create_namespaced_deployment, "Service": lab.core.create_namespaced_service,
          "ServiceAccount": lab.core.create_namespaced_service_account}[obj["kind"]]
    try:
        fn(ns, obj, _preload_content=False)
    except Exception as exc:
        translate(exc, f'creating {obj["kind"].lower()} "{obj["metadata"]["name"]}" in namespace {ns}')


def _delete(lab: Client, kind: str, name: str, ns: str) -> None:
    fn = {"Deployment": lab.apps.delete_namespaced_deployment, "Service": lab.core.delete_namespaced_service,
          "ServiceAccount": lab.core.delete_namespaced_service_account}[kind]
    try:
        fn(name, ns, propagation_policy="Foreground" if kind == "Deployment" else None, _preload_content=False)
    except Exception as exc:
        translate(exc, f'deleting {kind.lower()} "{name}" in namespace {ns}')


def reset(lab: Client, lesson: str | int, *, dry_run: bool = False, timeout: float = 60.0,
          states: Mapping[str, LessonState] | None = None) -> ResetRecord:
    """Return the lab namespace to the state ``lesson`` starts from, and say what was done.

    Args:
        lab: the connection (its namespace is the one reset).
        lesson: ``"04"``, ``4`` or ``"04-chaos-all-pods"``.
        dry_run: plan only: the record lists what would be done; nothing is touched.
        timeout: seconds to wait for the lesson's pods to be Ready again.
        states: the lessons' start states (default :data:`LESSONS`).

    Raises:
        LabkitError: an unknown lesson.
        WaitTimeout: the pods were not all fresh and Ready within ``timeout``.
    """
    started = time.monotonic()
    states = LESSONS if states is None else states
    state = lesson_state(lesson, states)
    p = _plan(lab, state, states)
    if dry_run:
        return ResetRecord(state.lesson, state.title, p.namespace, lab.is_sandbox, True, tuple(p.steps),
                           round(time.monotonic() - started, 3))
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in p.desired}
    rules = {(d["kind"], d["metadata"]["name"]): d for d in map(json.loads, _rule_docs(state.rules))}
    ns = p.namespace
    # the label first: the pods renewed below are created with (or without) their sidecar
    for step in p.steps:
        if step.verb == "label":
            mesh.set_injection_label(lab, ns, "enabled" if state.mesh else None)
    for step in p.steps:
        obj = by_name.get((step.kind, step.name))
        if step.kind in mesh.PLURALS:
            if step.verb == "delete":
                mesh.remove(lab, step.kind, step.name, namespace=ns)
            else:
                mesh.apply(lab, rules[(step.kind, step.name)], namespace=ns)
        elif step.verb == "create" and obj is not None:
            _create(lab, obj, ns)
        elif step.verb == "scale" and obj is not None:
            lab.scale(step.name, int(obj["spec"]["replicas"]), namespace=ns)
        elif step.verb == "restore" and obj is not None:
            patch = {"spec": {"template": {"spec": {"containers": [
                {"name": c, "image": img} for c, img in _images(obj).items()]}}}}
            try:
                lab.apps.patch_namespaced_deployment(step.name, ns, patch, _preload_content=False)
            except Exception as exc:
                translate(exc, f'deployment "{step.name}" in namespace {ns}')
        elif step.verb == "delete" and step.kind == "Pod":
            lab.delete_pod(step.name, namespace=ns, grace_period=0)
        elif step.verb == "delete":
            _delete(lab, step.kind, step.name, ns)
        elif step.verb == "renew":
            if lab.is_sandbox:
                for pod in p.renew[step.name]:
                    lab.delete_pod(pod, namespace=ns, grace_period=0)
            else:
                lab.rollout_restart(step.name, namespace=ns, wait=False)
    ready = _wait_fresh(lab, p, deadline=started + timeout, timeout=timeout)
    return ResetRecord(state.lesson, state.title, ns, lab.is_sandbox, False, tuple(p.steps),
                       round(time.monotonic() - started, 3), ready)


def _fresh(p: _Plan, pods: Mapping[str, Pod]) -> str:
    """"" when every deployment of the lesson has exactly its replicas as fresh Ready pods; else what is missing."""
    for obj in p.desired:
        if obj["kind"] != "Deployment":
            continue
        match = obj["spec"]["selector"].get("matchLabels") or {}
        mine = [pod for pod in pods.values() if _matches(pod, match)]
        want = int(obj["spec"].get("replicas", 1))
        stale = [pod["metadata"]["name"] for pod in mine if _history(pod) or _sidecar_mismatch(pod, p.state.mesh)]
        if stale or len(mine) != want or any(not (pod.get("status") or {}).get("containerStatuses") for pod in mine):
            return f"{obj['metadata']['name']}: {len(mine)} pods for {want} replicas, not ready: {', '.join(stale)}"
    return ""


def _wait_fresh(lab: Client, p: _Plan, *, deadline: float, timeout: float) -> int:
    """Watch the namespace's pods until the lesson's deployments have fresh Ready pods; their number."""
    pods: dict[str, Pod] = {}
    missing = "no list yet"
    for event in lab.watch_pods(namespace=p.namespace, timeout=max(0.1, deadline - time.monotonic())):
        if event.type == "LIST":
            pods = {pod["metadata"]["name"]: pod for pod in event.pods}
        elif event.type == "DELETED":
            pods.pop(event.pod["metadata"]["name"], None)
        else:
            pods[event.pod["metadata"]["name"]] = event.pod
        missing = _fresh(p, pods)
        if not missing:
            return sum(1 for obj in p.desired if obj["kind"] == "Deployment"
                       for pod in pods.values() if _matches(pod, obj["spec"]["selector"].get("matchLabels") or {}))
    raise WaitTimeout(f"reset to lesson {p.state.lesson}: the pods were not fresh and Ready within {timeout:g} s "
                      f"({missing}); see lab.pods() and `kubectl get pods`")
