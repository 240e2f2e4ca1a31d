"""Defaulting of new and updated objects, as the API server's ``SetDefaults_*`` functions do it.

A Deployment's pod template is stored defaulted, exactly as a real cluster stores it, so what ``kubectl get -o
yaml`` shows, the pod-template-hash computed from it, and the template ``kubectl rollout undo`` copies back from a
ReplicaSet (re-serialised by kubectl's typed structs) are all the same object.

    >>> spec = {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}
    >>> pod_spec(spec)["containers"][0]["imagePullPolicy"], spec["containers"][0]["ports"][0]["protocol"]
    ('Always', 'TCP')
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

Obj = dict[str, Any]

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
)


def image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or an untagged image, else ``IfNotPresent`` (digests count as tags)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _probe(probe: Obj) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def container(c: Obj) -> Obj:
    """``SetDefaults_Container`` and its parts (ports, probes, env field refs)."""
    if c.get("image"):
        c.setdefault("imagePullPolicy", image_pull_policy(str(c["image"])))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for name in PROBES:
        if isinstance(c.get(name), dict):
            _probe(c[name])
    for item in c.get("env") or []:
        ref = (item.get("valueFrom") or {}).get("fieldRef") if isinstance(item, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")
    return c


def pod_spec(spec: Obj) -> Obj:
    """``SetDefaults_PodSpec``: what a pod template gets (a Pod gets :func:`pod` on top)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                container(c)
    for volume in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault("defaultMode", 420)
    return spec


def pod(spec: Obj) -> Obj:
    """A Pod's spec as stored: the template defaults, then ``SetDefaults_Pod`` and the admission plugins'."""
    pod_spec(spec)
    spec.setdefault("enableServiceLinks", True)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for default in DEFAULT_TOLERATIONS:
        if not any(t.get("key") == default["key"] for t in tolerations if isinstance(t, dict)):
            tolerations.append(dict(default))
    return spec


def template(tmpl: Obj) -> Obj:
    """A pod template of a Deployment or ReplicaSet: metadata without the null timestamp, the spec defaulted."""
    meta = tmpl.setdefault("metadata", {})
    if meta.get("creationTimestamp") is None:
        meta.pop("creationTimestamp", None)
    pod_spec(tmpl.setdefault("spec", {}))
    return tmpl


def deployment_spec(spec: Obj) -> Obj:
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    if isinstance(spec.get("template"), dict):
        template(spec["template"])
    return spec


def replicaset_spec(spec: Obj) -> Obj:
    spec.setdefault("replicas", 1)
    if isinstance(spec.get("template"), dict):
        template(spec["template"])
    return spec


def secret(obj: Obj) -> str | None:
    """Fold ``stringData`` into base64 ``data`` and default the type; the problem with ``data``, if any.

    Returns:
        None when the secret is well formed, else the message of a 400 naming the bad key.
    """
    obj.setdefault("type", "Opaque")
    data = obj.get("data") or {}
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            return (f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data in data[{key!r}]: '
                    "encode the value with base64, or give it in stringData")
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data
    return None
