"""Istio's traffic rules from Python: apply, list and remove them; the sidecars' access logs and metrics as DataFrames.

The same calls work on the sandbox and on a real cluster with Istio installed: rules go through the API server's
``networking.istio.io/v1`` resources, access logs are the ``istio-proxy`` containers' logs, and metrics are read
from each sidecar's ``:15020/stats/prometheus`` by the tester pod.

Example:
    >>> from labkit import mesh
    >>> mesh.apply(lab, open("virtual-service-reviews-test-v2.yaml").read())
    ['virtualservice.networking.istio.io/reviews created']
    >>> mesh.rules(lab)                       # kind, name, hosts, gateways, routes / subsets
    >>> mesh.access_log(lab, "app=productpage")   # one row per request the productpage sidecars handled
    >>> mesh.remove(lab, "VirtualService")    # all of them
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import yaml

from .client import Client
from .errors import LabkitError, translate

GROUP, VERSION = "networking.istio.io", "v1"
PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules", "Gateway": "gateways"}
ACCESS_LOG = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]+)" (?P<code>\d+) (?P<flags>\S+) '
    r'(?P<details>\S+) \S+ "[^"]*" (?P<bytes_received>\d+) (?P<bytes_sent>\d+) (?P<duration_ms>\d+) '
    r'(?P<upstream_service_time>\S+) "[^"]*" "(?P<user_agent>[^"]*)" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<upstream_host>[^"]*)" (?P<cluster>\S+) \S+ \S+ \S+ \S+ (?P<route>\S+)$')


class MeshRuleError(LabkitError):
    """A rule that is not one of Istio's traffic objects, or that the cluster refused."""


def _api(client: Client) -> Any:
    from kubernetes import client as k8s

    return k8s.CustomObjectsApi(client.api_client)


def _documents(rule: Mapping[str, Any] | str) -> list[dict[str, Any]]:
    docs = [dict(rule)] if isinstance(rule, Mapping) else [d for d in yaml.safe_load_all(rule) if d]
    for d in docs:
        if d.get("kind") not in PLURALS or not str(d.get("apiVersion", "")).startswith(GROUP + "/"):
            raise MeshRuleError(f"not an Istio traffic rule: apiVersion {d.get('apiVersion')!r} kind "
                                f"{d.get('kind')!r}; expected {GROUP}/v1 VirtualService, DestinationRule or Gateway")
        if not (d.get("metadata") or {}).get("name"):
            raise MeshRuleError(f"the {d['kind']} has no metadata.name; give it one")
    return docs


def apply(client: Client, rule: Mapping[str, Any] | str, *, namespace: str | None = None) -> list[str]:
    """Create or replace rules (``kubectl apply -f``) from a dict or a YAML string (several documents allowed).

    Returns:
        kubectl's lines: ``virtualservice.networking.istio.io/reviews created`` (or ``configured``).
    """
    from kubernetes.client.exceptions import ApiException

    ns = namespace or client.namespace
    api, out = _api(client), []
    for doc in _documents(rule):
        doc = {**doc, "apiVersion": f"{GROUP}/{VERSION}"}
        kind, name, plural = doc["kind"], doc["metadata"]["name"], PLURALS[doc["kind"]]
        what = f"{kind.lower()}.{GROUP}/{name}"
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, ns, plural, doc)
            out.append(f"{what} created")
        except ApiException as exc:
            if exc.status != 409:
                translate(exc, f'{kind} "{name}" in namespace {ns}')
            try:
                old = api.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
                doc["metadata"] = {**doc["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]}
                api.replace_namespaced_custom_object(GROUP, VERSION, ns, plural, name, doc)
            except ApiException as again:
                translate(again, f'{kind} "{name}" in namespace {ns}')
            out.append(f"{what} configured")
    return out


def remove(client: Client, kind: str, name: str | None = None, *, namespace: str | None = None) -> list[str]:
    """Delete one rule, or every rule of ``kind`` when ``name`` is None; returns the names deleted."""
    from kubernetes.client.exceptions import ApiException

    if kind not in PLURALS:
        raise MeshRuleError(f"unknown kind {kind!r}; one of {', '.join(PLURALS)}")
    ns, api, plural = namespace or client.namespace, _api(client), PLURALS[kind]
    names = [name] if name else [o["metadata"]["name"] for o in
                                 api.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]]
    for n in names:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, plural, n)
        except ApiException as exc:
            translate(exc, f'{kind} "{n}" in namespace {ns}')
    return names


def _routes(spec: Mapping[str, Any]) -> str:
    parts = []
    for rule in spec.get("http") or []:
        match = " or ".join(
            " and ".join([f"{k}={v}" for k, v in (m.get("uri") or {}).items()]
                         + [f"{h}:{next(iter((v or {'present': ''}).values()))}"
                            for h, v in (m.get("headers") or {}).items()])
            for m in rule.get("match") or []) or "*"
        dests = ", ".join(
            f"{(d.get('destination') or {}).get('host')}"
            + (f"/{d['destination']['subset']}" if (d.get("destination") or {}).get("subset") else "")
            + (f" {d['weight']}%" if "weight" in d else "") for d in rule.get("route") or [])
        extras = [f"{k} {v}" for k, v in (("timeout", rule.get("timeout")),) if v]
        extras += [f"fault {'+'.join(sorted(rule['fault']))}"] if rule.get("fault") else []
        extras += [f"retries {rule['retries'].get('attempts', 0)}"] if rule.get("retries") else []
        parts.append(f"{match} -> {dests}" + (f" ({', '.join(extras)})" if extras else ""))
    return "; ".join(parts)


def rules(client: Client, *, namespace: str | None = None) -> pd.DataFrame:
    """The mesh's rules (``kubectl get vs,dr,gw``): one row per object, with its routes or subsets in words."""
    ns, api, rows = namespace or client.namespace, _api(client), []
    for kind, plural in PLURALS.items():
        try:
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
        except Exception as exc:
            translate(exc, f"{plural} in namespace {ns}")
        for o in items:
            spec = o.get("spec") or {}
            detail = (_routes(spec) if kind == "VirtualService" else
                      ", ".join(f"{s.get('name')}={s.get('labels')}" for s in spec.get("subsets") or [])
                      if kind == "DestinationRule" else
                      ", ".join(f"{(s.get('port') or {}).get('number')}/{(s.get('port') or {}).get('protocol')}"
                                for s in spec.get("servers") or []))
            rows.append({"kind": kind, "name": o["metadata"]["name"],
                         "hosts": ", ".join(spec.get("hosts") or ([spec["host"]] if spec.get("host") else [])),
                         "gateways": ", ".join(spec.get("gateways") or []), "rules": detail})
    return pd.DataFrame(rows, columns=["kind", "name", "hosts", "gateways", "rules"])


def parse_access_log(text: str, pod: str = "") -> pd.DataFrame:
    """Istio's default access-log lines as rows (other lines are skipped)."""
    rows = []
    for line in text.splitlines():
        m = ACCESS_LOG.match(line.strip())
        if m:
            row: dict[str, Any] = {"pod": pod, **m.groupdict()}
            row["start"] = pd.Timestamp(row["start"])
            for key in ("code", "bytes_received", "bytes_sent", "duration_ms"):
                row[key] = int(row[key])
            parts = row["cluster"].split("|")
            row["service"] = parts[3].split(".")[0] if len(parts) == 4 else "-"
            row["subset"] = parts[2] if len(parts) == 4 else "-"
            rows.append(row)
    return pd.DataFrame(rows)


def access_log(client: Client, selector: str, *, namespace: str | None = None) -> pd.DataFrame:
    """The ``istio-proxy`` access logs of the pods matching ``selector``, one row per request, oldest first."""
    frames = [parse_access_log(client.logs(name, container="istio-proxy", namespace=namespace), name)
              for name in client.pod_names(selector, namespace=namespace)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["pod", "start", "method", "path", "code", "flags", "duration_ms", "cluster"])
    return pd.concat(frames, ignore_index=True).sort_values("start", ignore_index=True)


_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>.*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, name: str = "istio_requests_total") -> pd.DataFrame:
    """One metric's samples from a Prometheus exposition: a row per sample, its labels as columns plus ``value``."""
    rows = []
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m["name"] == name:
            rows.append({**dict(_LABEL.findall(m["labels"])), "value": float(m["value"])})
    return pd.DataFrame(rows)


def metrics(client: Client, selector: str, name: str = "istio_requests_total", *,
            namespace: str | None = None) -> pd.DataFrame:
    """``name`` as reported by the sidecars of the pods matching ``selector`` (read by the tester pod)."""
    frames = []
    for pod_name in client.pod_names(selector, namespace=namespace):
        ip = (client.read_pod(pod_name, namespace).get("status") or {}).get("podIP")
        if not ip:
            continue
        text = client.request(f"http://{ip}:15020/stats/prometheus").stdout
        frame = parse_metrics(text, name)
        if not frame.empty:
            frame.insert(0, "pod", pod_name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
