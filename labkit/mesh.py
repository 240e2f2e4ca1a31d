"""Istio's traffic rules from Python: sidecar injection, apply/list/remove rules, access logs and metrics.

The same calls work on the sandbox and on a real cluster with Istio installed: injection is the namespace label
``istio-injection=enabled`` and a rollout restart (as istio.io's Bookinfo setup does), rules go through the API
server's ``networking.istio.io/v1`` resources, access logs are the ``istio-proxy`` containers' logs, and metrics
are read from each sidecar's ``:15020/stats/prometheus`` by the tester pod.

Example:
    >>> from labkit import mesh
    >>> mesh.inject(lab)                                   # label, restart, wait until every pod is 2/2
    >>> mesh.apply(lab, "virtual-service-reviews-test-v2.yaml")
    $ kubectl apply -f samples/bookinfo/networking/virtual-service-reviews-test-v2.yaml
    virtualservice.networking.istio.io/reviews created
    >>> mesh.rules(lab)                       # kind, name, hosts, gateways, routes / subsets
    >>> mesh.access_log(lab, "app=productpage")   # one row per request the productpage sidecars handled
    >>> mesh.remove(lab, "VirtualService")    # all of them
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .client import Client, Pod, pods_by_name, pods_frame
from .errors import ApiError, LabkitError, WaitTimeout, translate
from .progress import Progress
from .records import mime_bundle

GROUP, VERSION = "networking.istio.io", "v1"
PLURALS = {"VirtualService": "virtualservices", "DestinationRule": "destinationrules", "Gateway": "gateways"}
INJECTION_LABEL = "istio-injection"
PROXY_CONTAINER = "istio-proxy"
SAMPLES = "samples/bookinfo/networking"
"""Where istio.io's task pages keep the sample rules labkit ships (``labkit/sandbox/manifests/istio/``)."""
RULE_COLUMNS = ["kind", "name", "hosts", "gateways", "rules"]
"""The columns of :func:`rules`."""
ACCESS_LOG = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>[^"]+)" (?P<code>\d+) (?P<flags>\S+) '
    r'(?P<details>\S+) \S+ "[^"]*" (?P<bytes_received>\d+) (?P<bytes_sent>\d+) (?P<duration_ms>\d+) '
    r'(?P<upstream_service_time>\S+) "[^"]*" "(?P<user_agent>[^"]*)" "(?P<request_id>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<upstream_host>[^"]*)" (?P<cluster>\S+) \S+ \S+ \S+ \S+ (?P<route>\S+)$')


class MeshRuleError(ApiError):
    """A rule that is not one of Istio's traffic objects, or that the cluster refused (then ``status``, ``reason``
    and ``body`` are the API server's)."""


def custom_objects(client: Client) -> Any:
    """The official client's CustomObjectsApi on the Lab's own ApiClient (Istio's resources)."""
    from kubernetes import client as k8s

    return k8s.CustomObjectsApi(client.api_client)


# ------------------------------------------------------------------------------------------------ the records


def _terminal(command: str, lines: Iterable[str]) -> str:
    return "\n".join([f"$ {command}", *lines])


class RuleResult(list[str]):
    """What :func:`apply` did: kubectl's lines (it is a list of them, so code that took apply's list of lines keeps
    working), the equivalent command and the YAML.

    Attributes:
        command: the ``kubectl apply -f`` that does the same (``-f FILE`` for a sample istio.io ships, else
            ``kubectl apply -f - <<EOF`` with the YAML, as istio.io's task pages write inline rules).
        yaml: the rules applied, as YAML documents.
        namespace: where they went.
        names: ``kind/name`` of each rule.

    Example:
        >>> lab.apply_rule("virtual-service-all-v1.yaml")
        $ kubectl apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml
        virtualservice.networking.istio.io/productpage created
        ...
    """

    def __init__(self, lines: Iterable[str], *, command: str, yaml_text: str, namespace: str,
                 names: Iterable[str]) -> None:
        super().__init__(lines)
        self.command = command
        self.yaml = yaml_text
        self.namespace = namespace
        self.names = list(names)

    @property
    def lines(self) -> list[str]:
        return list(self)

    def __repr__(self) -> str:
        return _terminal(self.command, self)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        shown = self.command if "<<EOF" in self.command else self.command + "\n\n" + self.yaml.rstrip()
        return ("<div><pre style='margin:0'>" + html.escape(_terminal(self.command.split("\n")[0], self))
                + "</pre><details><summary>the YAML</summary><pre style='margin:0'>" + html.escape(shown)
                + "</pre></details></div>")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "mesh", "steps": [{"command": self.command, "lines": list(self)}], "yaml": self.yaml,
                  "namespace": self.namespace}
        return mime_bundle(record, repr(self), self._repr_html_())


class RemoveResult(list[str]):
    """What :func:`remove` deleted: the rules' names (it is a list of them), kubectl's lines and its command."""

    def __init__(self, names: Iterable[str], *, lines: Iterable[str], command: str, namespace: str) -> None:
        super().__init__(names)
        self.lines = list(lines)
        self.command = command
        self.namespace = namespace

    def __repr__(self) -> str:
        return _terminal(self.command, self.lines or ["No resources found"])

    __str__ = __repr__

    def _repr_html_(self) -> str:
        return f"<pre style='margin:0'>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "mesh", "steps": [{"command": self.command, "lines": self.lines}], "yaml": "",
                  "namespace": self.namespace}
        return mime_bundle(record, repr(self), self._repr_html_())


@dataclass(frozen=True, repr=False, eq=False)
class Injection:
    """What :func:`inject` (or :func:`uninject`) did: the label, the restarted deployments, the pods at the end.

    Attributes:
        namespace: the lab namespace.
        enabled: the label was set (True) or removed (False).
        deployments: the deployments rolled.
        pods: the pods afterwards (:data:`~labkit.client.POD_COLUMNS`): READY 2/2 when meshed.
        seconds: from the label to the last pod Ready.
    """

    namespace: str
    enabled: bool
    deployments: list[str]
    pods: pd.DataFrame
    seconds: float

    @property
    def commands(self) -> list[str]:
        label = f"{INJECTION_LABEL}=enabled" if self.enabled else f"{INJECTION_LABEL}-"
        return [f"kubectl label namespace {self.namespace} {label}" + (" --overwrite" if self.enabled else ""),
                "kubectl rollout restart deployment"]

    @property
    def meshed(self) -> int:
        """How many pods run an ``istio-proxy`` sidecar (READY 2/2)."""
        return int((self.pods["containers"] > 1).sum()) if "containers" in self.pods else 0

    def summary(self) -> str:
        what = "meshed" if self.enabled else "without sidecars"
        ready = ", ".join(sorted(set(self.pods["ready"]))) if len(self.pods) else "none"
        return (f"namespace {self.namespace} {what}: {len(self.deployments)} deployments restarted, "
                f"{len(self.pods)} pods Ready (READY {ready}) in {self.seconds:.1f} s")

    def __repr__(self) -> str:
        lines = [f"namespace/{self.namespace} labeled"] + [
            f"deployment.apps/{d} restarted" for d in self.deployments]
        return "\n".join([f"$ {self.commands[0]}", lines[0], f"$ {self.commands[1]}", *lines[1:],
                          self.summary()])

    __str__ = __repr__

    def _repr_html_(self) -> str:
        table = self.pods[[c for c in ("name", "ready", "status", "restarts") if c in self.pods]].to_html(index=False)
        return (f"<div><b>{html.escape(self.summary())}</b><pre style='margin:0'>"
                f"{html.escape(chr(10).join('$ ' + c for c in self.commands))}</pre>{table}</div>")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        steps = [{"command": self.commands[0], "lines": [f"namespace/{self.namespace} labeled"]},
                 {"command": self.commands[1], "lines": [f"deployment.apps/{d} restarted" for d in self.deployments]}]
        record = {"kind": "mesh", "steps": steps, "yaml": "", "namespace": self.namespace}
        return mime_bundle(record, repr(self), self._repr_html_())


# ------------------------------------------------------------------------------------------------ rules


def sample_path(name: str) -> Path:
    """A sample rule labkit ships, as istio.io names it (``virtual-service-all-v1.yaml``)."""
    from importlib import resources

    path = Path(str(resources.files("labkit.sandbox") / "manifests" / "istio" / name))
    if not path.exists():
        shipped = sorted(p.name for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no rule file {name!r}, and labkit ships no sample of that name; it has "
                                f"{', '.join(shipped)}")
    return path


def _looks_like_yaml(text: str) -> bool:
    return "\n" in text or text.lstrip().startswith(("apiVersion", "kind", "---", "{"))


def _read(rule: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The documents of a rule given as a dict, YAML text, a file or a shipped sample; and its file for kubectl."""
    if isinstance(rule, Mapping):
        return [dict(rule)], None
    if isinstance(rule, str) and _looks_like_yaml(rule):
        text, where = rule, None
    else:
        path = Path(rule).expanduser()
        shown = str(rule)
        if not path.exists() and isinstance(rule, str) and os.sep not in rule:
            path = sample_path(rule)
            shown = f"{SAMPLES}/{rule}"
        if not path.exists():
            raise FileNotFoundError(f"no rule file {str(rule)!r}: give a dict, YAML text, a file, or a sample "
                                    "labkit ships (mesh.sample_path('virtual-service-all-v1.yaml'))")
        text, where = path.read_text(), shown
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise MeshRuleError(f"the rule {where or 'text'} is not valid YAML: {exc}") from exc
    if not all(isinstance(d, dict) for d in docs):
        raise MeshRuleError(f"the rule {where or 'text'} holds a document that is not a mapping")
    return docs, where


def _documents(rule: Mapping[str, Any] | str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str | None]:
    docs, where = _read(rule)
    if not docs:
        raise MeshRuleError(f"the rule {where or 'text'} holds no document")
    for d in docs:
        if d.get("kind") not in PLURALS or not str(d.get("apiVersion", "")).startswith(GROUP + "/"):
            raise MeshRuleError(f"not an Istio traffic rule: apiVersion {d.get('apiVersion')!r} kind "
                                f"{d.get('kind')!r}; expected {GROUP}/v1 VirtualService, DestinationRule or Gateway")
        if not (d.get("metadata") or {}).get("name"):
            raise MeshRuleError(f"the {d['kind']} has no metadata.name; give it one")
    return docs, where


def _yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def _refused(exc: Any, kind: str, name: str, ns: str) -> MeshRuleError:
    """The API server's (or Istio's webhook's) refusal of a rule, naming the rule and the next step."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = str(body.get("message") or exc.reason or "no details")
    causes = [f"{c.get('field', '')}: {c.get('message', '')}".strip(": ")
              for c in (body.get("details") or {}).get("causes") or []]
    detail = message + ("" if not causes or all(c in message for c in causes) else " (" + "; ".join(causes) + ")")
    reason = str(body.get("reason") or exc.reason or "")
    return MeshRuleError(f'{kind} "{name}" in namespace {ns} was refused by the API server ({exc.status} '
                         f"{reason}): {detail}. Fix that field and apply it again.",
                         status=int(exc.status or 0), reason=reason, body=exc.body)


def apply(client: Client, rule: Mapping[str, Any] | str | os.PathLike[str], *,
          namespace: str | None = None) -> RuleResult:
    """Create or replace rules, as ``kubectl apply -f``: from a dict, YAML text (several documents allowed), a
    file, or the name of a sample istio.io ships (``"virtual-service-all-v1.yaml"``).

    Returns:
        A :class:`RuleResult`: kubectl's lines (``virtualservice.networking.istio.io/reviews created`` or
        ``configured``), the equivalent ``kubectl apply`` and the YAML.

    Raises:
        MeshRuleError: not an Istio traffic rule, or the cluster refused it (the message names the rule and the
            field, as the API server or Istio's validation webhook said).
        FileNotFoundError: a file name that is neither a file nor a shipped sample.

    Example:
        >>> mesh.apply(lab, {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        ...                  "metadata": {"name": "reviews"}, "spec": {"hosts": ["reviews"], "http": [
        ...                      {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}]}})
    """
    from kubernetes.client.exceptions import ApiException

    ns = namespace or client.namespace
    docs, where = _documents(rule)
    api, out, names = custom_objects(client), [], []
    for original in docs:
        doc = {**original, "apiVersion": f"{GROUP}/{VERSION}"}
        doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k not in ("resourceVersion", "uid")}
        kind, name, plural = doc["kind"], doc["metadata"]["name"], PLURALS[doc["kind"]]
        what = f"{kind.lower()}.{GROUP}/{name}"
        names.append(f"{kind}/{name}")
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, ns, plural, doc)
            out.append(f"{what} created")
            continue
        except ApiException as exc:
            if exc.status != 409:
                if exc.status in (400, 422):
                    raise _refused(exc, kind, name, ns) from exc
                translate(exc, f'{kind} "{name}" in namespace {ns}')
        except Exception as exc:
            translate(exc, f'{kind} "{name}" in namespace {ns}')
        try:
            old = api.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
            unchanged = old.get("spec") == doc.get("spec")
            doc["metadata"] = {**doc["metadata"], "resourceVersion": old["metadata"]["resourceVersion"]}
            if not unchanged:
                api.replace_namespaced_custom_object(GROUP, VERSION, ns, plural, name, doc)
        except ApiException as again:
            if again.status in (400, 422):
                raise _refused(again, kind, name, ns) from again
            translate(again, f'{kind} "{name}" in namespace {ns}')
        except Exception as again:
            translate(again, f'{kind} "{name}" in namespace {ns}')
        out.append(f"{what} {'unchanged' if unchanged else 'configured'}")
    text = _yaml(docs)
    command = f"kubectl apply -f {where}" if where else f"kubectl apply -f - <<EOF\n{text.rstrip()}\nEOF"
    return RuleResult(out, command=command, yaml_text=text, namespace=ns, names=names)


def remove(client: Client, what: str | Mapping[str, Any] | os.PathLike[str] | None = None,
           name: str | None = None, *, namespace: str | None = None) -> RemoveResult:
    """Delete rules, as ``kubectl delete``: every rule of a kind (``"VirtualService"``), one by kind and name,
    the rules a file or a sample names (``"virtual-service-all-v1.yaml"``, ``kubectl delete -f``), or, with
    nothing given, every VirtualService (the state istio.io's task pages leave with their cleanup).

    A rule that is already gone is skipped (``--ignore-not-found``). Returns the names deleted.

    Example:
        >>> lab.remove_rules("virtual-service-all-v1.yaml")
        $ kubectl delete -f samples/bookinfo/networking/virtual-service-all-v1.yaml
        virtualservice.networking.istio.io "productpage" deleted
        ...
    """
    from kubernetes.client.exceptions import ApiException

    ns, api = namespace or client.namespace, custom_objects(client)
    targets: list[tuple[str, str]]
    if what is None:
        what = "VirtualService"
    if isinstance(what, str) and what in PLURALS:
        if name:
            targets, command = [(what, name)], f"kubectl delete {what.lower()} {name}"
        else:
            try:
                items = api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[what])["items"]
            except Exception as exc:
                translate(exc, f"{PLURALS[what]} in namespace {ns}")
            targets = [(what, o["metadata"]["name"]) for o in items]
            command = f"kubectl delete {what.lower()} --all"
    elif isinstance(what, str) and what.lower() in {k.lower() for k in PLURALS} | set(PLURALS.values()):
        raise MeshRuleError(f"unknown kind {what!r}; write it as Kubernetes does: {', '.join(PLURALS)}")
    else:
        docs, where = _documents(what)
        targets = [(d["kind"], d["metadata"]["name"]) for d in docs]
        command = (f"kubectl delete -f {where}" if where else
                   "kubectl delete " + " ".join(f"{k.lower()}/{n}" for k, n in targets))
    deleted, lines, missing = [], [], 0
    for kind, n in targets:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURALS[kind], n)
        except ApiException as exc:
            if exc.status == 404:
                missing += 1
                continue
            translate(exc, f'{kind} "{n}" in namespace {ns}')
        except Exception as exc:
            translate(exc, f'{kind} "{n}" in namespace {ns}')
        deleted.append(n)
        lines.append(f'{kind.lower()}.{GROUP} "{n}" deleted')
    if missing:
        command += " --ignore-not-found"
    return RemoveResult(deleted, lines=lines, command=command, namespace=ns)


# ------------------------------------------------------------------------------------------------ injection


def _containers(pod: Pod) -> list[str]:
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def _injected(pod: Pod) -> bool:
    return PROXY_CONTAINER in _containers(pod)


def _pod_ready(pod: Pod) -> bool:
    from .kubestatus import is_pod_ready

    return is_pod_ready(pod) and not pod["metadata"].get("deletionTimestamp")


def injection_enabled(client: Client, *, namespace: str | None = None) -> bool:
    """Whether the namespace carries ``istio-injection=enabled``."""
    ns = namespace or client.namespace
    try:
        labels = client.core.read_namespace(ns).metadata.labels or {}
    except Exception as exc:
        translate(exc, f"namespace {ns}")
    return bool(labels.get(INJECTION_LABEL) == "enabled")


def set_injection_label(client: Client, ns: str, value: str | None) -> None:
    """Set the namespace's ``istio-injection`` label to ``value``, or remove it (None); pods already running keep
    what they have until they are replaced."""
    try:
        client.core.patch_namespace(ns, {"metadata": {"labels": {INJECTION_LABEL: value}}})
    except Exception as exc:
        translate(exc, f"namespace {ns}", hint="Labelling a namespace needs the right to patch namespaces.")


def _roll(client: Client, ns: str, enabled: bool, *, timeout: float, progress: bool) -> Injection:
    """Restart every deployment of ``ns`` and wait until each has exactly its replicas, all Ready, all with (or
    all without) the sidecar."""
    started = time.monotonic()
    try:
        deployments = client.apps.list_namespaced_deployment(ns).items
    except Exception as exc:
        translate(exc, f"deployments in namespace {ns}")
    wanted = {d.metadata.name: (dict(d.spec.selector.match_labels or {}), int(d.spec.replicas or 0))
              for d in deployments}
    # kubectl rollout restart's annotation, to the microsecond: a second restart within the same second (inject then
    # uninject) must change the template too, or no new pods would come
    stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
    for name in sorted(wanted):
        try:
            client.apps.patch_namespaced_deployment(name, ns, patch, _preload_content=False)
        except Exception as exc:
            translate(exc, f'deployment "{name}" in namespace {ns}')
    bar = Progress(progress, min_interval=0.2)
    goal = "2/2 (an istio-proxy sidecar each)" if enabled else "without a sidecar"
    pods: dict[str, Pod] = {}

    def mine(pods: dict[str, Pod]) -> list[Pod]:
        return [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]

    def done(pods: dict[str, Pod]) -> bool:
        live = mine(pods)
        for match, count in wanted.values():
            selected = [p for p in pods.values()
                        if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in match.items())]
            if len(selected) != count:
                return False
        return all(_pod_ready(p) and _injected(p) == enabled for p in live)

    def show(pods: dict[str, Pod]) -> None:
        live = mine(pods)
        good = sum(1 for p in live if _pod_ready(p) and _injected(p) == enabled)
        bar.update(f"pods {goal}: {good} of {sum(c for _, c in wanted.values())} "
                   f"({len(pods) - len(live)} old pods terminating), {time.monotonic() - started:.1f} s")

    for pods in pods_by_name(client.watch_pods(namespace=ns, timeout=timeout)):
        show(pods)
        if done(pods):
            break
    else:
        bar.close()
        late = sorted(n for n, p in pods.items() if not (_pod_ready(p) and _injected(p) == enabled))
        raise WaitTimeout(f"the pods of namespace {ns} were not all Ready {goal} within {timeout:g} s "
                          f"(not yet: {', '.join(late[:5]) or 'old pods still terminating'}); "
                          "look with lab.pods() and `kubectl get pods`")
    seconds = round(time.monotonic() - started, 2)
    frame = pods_frame(sorted(mine(pods), key=lambda p: str(p["metadata"]["name"])))
    bar.close(f"{len(frame)} pods Ready {goal} in {seconds:.1f} s")
    return Injection(ns, enabled, sorted(wanted), frame, seconds)


def inject(client: Client, *, namespace: str | None = None, timeout: float = 120.0,
           progress: bool = True) -> Injection:
    """Enable Istio's sidecar injection in the lab namespace and give every pod its sidecar: ``kubectl label
    namespace NS istio-injection=enabled`` then ``kubectl rollout restart deployment``, waiting (by watch, with a
    progress line) until every deployment has its replicas Ready at 2/2 and the old pods are gone.

    Raises:
        WaitTimeout: not every pod was 2/2 within ``timeout`` (on a real cluster: is Istio installed? Its
            injection webhook adds the sidecar).

    Example:
        >>> lab.enable_injection().pods[["name", "ready"]]
    """
    ns = namespace or client.namespace
    set_injection_label(client, ns, "enabled")
    return _roll(client, ns, True, timeout=timeout, progress=progress)


def uninject(client: Client, *, namespace: str | None = None, timeout: float = 120.0,
             progress: bool = True) -> Injection:
    """The reverse of :func:`inject`: remove the label (``kubectl label namespace NS istio-injection-``), restart
    every deployment and wait until every pod runs without a sidecar (1/1)."""
    ns = namespace or client.namespace
    set_injection_label(client, ns, None)
    return _roll(client, ns, False, timeout=timeout, progress=progress)


# ------------------------------------------------------------------------------------------------ looking


def _percent(fault: Mapping[str, Any]) -> str:
    value = (fault.get("percentage") or {}).get("value", fault.get("percent", 100))
    return f" {float(value):g}%"


def _fault_words(fault: Mapping[str, Any]) -> list[str]:
    out = []
    delay, abort = fault.get("delay") or {}, fault.get("abort") or {}
    if delay:
        out.append(f"delay {delay.get('fixedDelay', '?')}{_percent(delay)}")
    if abort:
        out.append(f"abort {abort.get('httpStatus', abort.get('grpcStatus', '?'))}{_percent(abort)}")
    return out


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
        extras = [f"timeout {rule['timeout']}"] if rule.get("timeout") else []
        extras += _fault_words(rule.get("fault") or {})
        retries = rule.get("retries") or {}
        if retries:
            extras.append(f"retries {retries.get('attempts', 0)}"
                          + (f" x {retries['perTryTimeout']}" if retries.get("perTryTimeout") else ""))
        parts.append(f"{match} -> {dests}" + (f" ({', '.join(extras)})" if extras else ""))
    return "; ".join(parts)


def rules(client: Client, *, namespace: str | None = None) -> pd.DataFrame:
    """The mesh's rules (``kubectl get vs,dr,gw``): one row per object, with its routes or subsets in words."""
    ns, api, rows = namespace or client.namespace, custom_objects(client), []
    for kind, plural in PLURALS.items():
        try:
            items = api.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]
        except Exception as exc:
            translate(exc, f"{plural} in namespace {ns}")
        for o in items:
            spec = o.get("spec") or {}
            detail = (_routes(spec) if kind == "VirtualService" else
                      ", ".join(f"{s.get('name')} ({', '.join(f'{k}={v}' for k, v in (s.get('labels') or {}).items())})"
                                for s in spec.get("subsets") or [])
                      if kind == "DestinationRule" else
                      ", ".join(f"{(s.get('port') or {}).get('number')}/{(s.get('port') or {}).get('protocol')}"
                                for s in spec.get("servers") or []))
            rows.append({"kind": kind, "name": o["metadata"]["name"],
                         "hosts": ", ".join(spec.get("hosts") or ([spec["host"]] if spec.get("host") else [])),
                         "gateways": ", ".join(spec.get("gateways") or []), "rules": detail})
    return pd.DataFrame(rows, columns=RULE_COLUMNS)


ACCESS_LOG_COLUMNS = ["pod", "start", "method", "path", "protocol", "code", "flags", "details", "bytes_received",
                      "bytes_sent", "duration_ms", "upstream_service_time", "user_agent", "request_id", "authority",
                      "upstream_host", "cluster", "route", "service", "subset", "direction"]
"""The columns of :func:`access_log`: Envoy's default format, field by field, plus the pod whose sidecar wrote the
line, the ``service``/``subset`` read from the cluster (``outbound|9080|v2|reviews.default.svc.cluster.local``) and
the ``direction``: ``inbound`` for a request the sidecar passed to its own app (cluster ``inbound|9080||`` or
``InboundPassthroughCluster...``), ``outbound`` for a call the app made;
``flags`` are Envoy's response flags (``-``, ``UF``, ``FI`` abort, ``DI`` delay, ``UT`` upstream timeout, ...)."""


def parse_access_log(text: str, pod: str = "") -> pd.DataFrame:
    """Istio's default access-log lines as rows (:data:`ACCESS_LOG_COLUMNS`; other lines are skipped)."""
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
            row["subset"] = (parts[2] or "-") if len(parts) == 4 else "-"
            row["direction"] = "inbound" if row["cluster"].startswith(("inbound|", "InboundPassthrough")) \
                else "outbound"
            rows.append(row)
    return pd.DataFrame(rows, columns=ACCESS_LOG_COLUMNS)


def access_log(client: Client, selector: str, *, namespace: str | None = None,
               tail: int | None = None, direction: str | None = None) -> pd.DataFrame:
    """The ``istio-proxy`` access logs of the pods matching ``selector`` (``kubectl logs -l SELECTOR -c
    istio-proxy``), one row per request (:data:`ACCESS_LOG_COLUMNS`), oldest first; ``tail``: the last rows only;
    ``direction``: ``"outbound"`` (the calls the pods' apps made) or ``"inbound"`` (the requests they served) only.

    Example:
        >>> lab.access_log("app=productpage", direction="outbound", tail=4)   # its calls to details and reviews

    Raises:
        LabkitError: a matching pod has no ``istio-proxy`` container (the namespace is not meshed yet:
            :func:`inject`).
    """
    if direction not in (None, "inbound", "outbound"):
        raise ValueError(f"direction must be 'inbound', 'outbound' or None, not {direction!r}")
    frames = []
    for name in client.pod_names(selector, namespace=namespace):
        pod = client.read_pod(name, namespace)
        if not _injected(pod):
            raise LabkitError(f"pod {name} has no {PROXY_CONTAINER} container, so no access log: enable injection "
                              "first (lab.enable_injection(), istio.io's `kubectl label namespace default "
                              "istio-injection=enabled` and a rollout restart)")
        frames.append(parse_access_log(client.logs(name, container=PROXY_CONTAINER, namespace=namespace), name))
    frames = [f if direction is None else f[f["direction"] == direction] for f in frames]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=ACCESS_LOG_COLUMNS)
    out = pd.concat(frames, ignore_index=True).sort_values("start", ignore_index=True)
    return out.tail(tail).reset_index(drop=True) if tail else out


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
    for pod_name in client.pod_names(selector or None, namespace=namespace):
        pod = client.read_pod(pod_name, namespace)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not _injected(pod):
            continue
        text = client.request(f"http://{ip}:15020/stats/prometheus").stdout
        frame = parse_metrics(text, name)
        if not frame.empty:
            frame.insert(0, "pod", pod_name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["pod", "value"])


REQUEST_COLUMNS = ["source", "destination", "version", "code", "flags", "requests"]
"""The columns of :func:`requests_total`."""


def requests_total(client: Client, selector: str = "", *, namespace: str | None = None) -> pd.DataFrame:
    """``istio_requests_total`` summed as a Prometheus query would (``sum by (source_app, destination_service_name,
    destination_version, response_code, response_flags)``), over the sidecars of the pods matching ``selector``
    (every meshed pod by default), as reported by the calling side.

    Example:
        >>> mesh.requests_total(lab)
             source destination version code flags  requests
        0  productpage     details      v1  200     -        12
    """
    frame = metrics(client, selector or "", "istio_requests_total", namespace=namespace)
    if frame.empty or "reporter" not in frame:
        return pd.DataFrame(columns=REQUEST_COLUMNS)
    frame = frame[frame["reporter"] == "source"]
    keys = {"source_app": "source", "destination_service_name": "destination", "destination_version": "version",
            "response_code": "code", "response_flags": "flags"}
    for key in keys:
        if key not in frame:
            frame = frame.assign(**{key: ""})
    summed: pd.DataFrame = frame.groupby(list(keys), as_index=False).agg(requests=("value", "sum"))
    summed = summed.rename(columns=keys)
    summed["requests"] = summed["requests"].astype("int64")
    ordered: pd.DataFrame = summed[REQUEST_COLUMNS]
    return ordered.sort_values(["source", "destination", "version", "code"], ignore_index=True)
