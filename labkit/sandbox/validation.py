"""Validation before storage, as the real API server does it: decoding, types, names, labels, query parameters.

Every write goes through three gates, in the order the real API server applies them:

1. :func:`decode_body`: the body is JSON (or YAML for ``apply``), at most :data:`MAX_BODY_BYTES`, nested at most
   :data:`MAX_DEPTH` levels, with finite numbers, 64-bit integers, string keys, valid Unicode and no YAML alias
   cycles. Failures are ``400 BadRequest``.
2. :func:`check_types`: every field the sandbox reads has the JSON type Kubernetes gives it (a name is a string,
   ``spec.containers`` a list of objects, ``replicas`` an integer...). Failures are ``400 BadRequest`` in the words
   of the Go decoder (``json: cannot unmarshal number into Go struct field ObjectMeta.metadata.name of type
   string``).
3. :func:`validate_object`: names (DNS-1123 subdomain or label, DNS-1035 label for Services), label and annotation
   syntax, and the semantic rules of each kind. Failures are ``422 Invalid`` with one cause per field.

:func:`check_storable` is the last step before the store: the object must serialise to JSON and read back equal.
:func:`parse_query` checks the query parameters of any request (integers, booleans, enums, selectors).

Everything here is a pure function of its arguments; errors are :class:`ValidationError` (a ``StoreError``, which
the API server turns into a ``Status``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .store import SelectorError, StoreError, parse_field_selector, parse_label_selector

MAX_BODY_BYTES = 3 * 1024 * 1024
"""The real API server's limit on a request body (``--max-request-bytes`` default, 3 MiB)."""
MAX_OBJECT_BYTES = 1536 * 1024
"""etcd's limit on one stored object (1.5 MiB)."""
MAX_DEPTH = 100
"""Nesting levels allowed in a body; real objects stay under 20."""
MAX_NODES = 200_000
"""Values visited in one body (YAML aliases count each time they are used: no "billion laughs")."""
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_REPLICAS = 200
"""Each sandbox pod is a real process; more replicas than this is a typo, not a lesson."""
MAX_GRACE_SECONDS = 10**9
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                 "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
               "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
               "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
                 "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
ENV_MSG = ("a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and "
           "must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
           "validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')")


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its path (``spec.containers[0].name``), a cause reason and the message."""

    field: str
    reason: str
    message: str

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class ValidationError(StoreError):
    """A request refused before anything is stored (400 or 422, with ``details.causes`` naming the fields)."""


def _quote(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + '..."'


def invalid_value(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(field, "FieldValueInvalid", f"Invalid value: {_quote(value)}: {detail}")


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else ""))


def not_supported(field: str, value: Any, allowed: tuple[str, ...]) -> FieldError:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return FieldError(field, "FieldValueNotSupported", f"Unsupported value: {_quote(value)}: supported values: "
                                                       f"{choices}")


def too_long(field: str, value: Any, limit: int) -> FieldError:
    return FieldError(field, "FieldValueTooLong", f"Too long: may not be more than {limit} bytes"
                      if not isinstance(value, str) else
                      f"Invalid value: {_quote(value)}: must be no more than {limit} characters")


def invalid(kind: str, name: str, errors: list[FieldError]) -> ValidationError:
    """The 422 ``Invalid`` error of the real API server for ``errors`` (at least one)."""
    text = ", ".join(f"{e.field}: {e.message}" for e in errors)
    if len(errors) > 1:
        text = f"[{text}]"
    return ValidationError(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                           {"name": name, "kind": kind, "causes": [e.cause() for e in errors]})


def bad_request(message: str, field: str = "", reason: str = "FieldValueInvalid") -> ValidationError:
    details = {"causes": [{"reason": reason, "message": message, "field": field}]} if field else {}
    return ValidationError(400, "BadRequest", message, details)


# --------------------------------------------------------------------------------------------- decoding


class _YamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (sigs.k8s.io/yaml converts YAML to JSON)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_type(value: Any) -> str:
    """The name the Go JSON decoder gives a value's type in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_json_value(value: Any, what: str = "the request body") -> None:
    """Check that ``value`` is plain JSON this server can store and send back.

    Walks the value without recursion: depth at most :data:`MAX_DEPTH`, at most :data:`MAX_NODES` values, no
    cycles (YAML aliases), string keys, finite floats, 64-bit integers, valid Unicode (no lone surrogates).

    Raises:
        ValidationError: 400, naming the path of the first bad value.
    """
    stack: list[tuple[Any, str, int, frozenset[int]]] = [(value, "", 0, frozenset())]
    nodes = 0
    while stack:
        cur, path, depth, ancestors = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise bad_request(f"{what} has more than {MAX_NODES} values (YAML aliases count each time they are "
                              "used)", path or "<root>")
        if depth > MAX_DEPTH:
            raise bad_request(f"{what} is nested more than {MAX_DEPTH} levels deep at {path}", path)
        where = path or "<root>"
        if isinstance(cur, dict | list):
            if id(cur) in ancestors:
                raise bad_request(f"{what} refers to itself at {where} (a YAML alias cycle)", where)
            inner = ancestors | {id(cur)}
            if isinstance(cur, dict):
                for key, item in cur.items():
                    if not isinstance(key, str):
                        raise bad_request(f"{what} has a non-string key {key!r} at {where}: json: cannot "
                                          f"unmarshal {_json_type(key)} into Go value of type string", where)
                    _check_text(key, where, what)
                    stack.append((item, f"{path}.{key}" if path else key, depth + 1, inner))
            else:
                for i, item in enumerate(cur):
                    stack.append((item, f"{path}[{i}]", depth + 1, inner))
        elif isinstance(cur, str):
            _check_text(cur, where, what)
        elif isinstance(cur, bool) or cur is None:
            continue
        elif isinstance(cur, int):
            if not INT64_MIN <= cur <= INT64_MAX:
                raise bad_request(f"{what} has a number out of range at {where}: json: cannot unmarshal number "
                                  f"{str(cur)[:30]}... into Go value of type int64", where)
        elif isinstance(cur, float):
            if not math.isfinite(cur):
                raise bad_request(f"{what} has a non-finite number {cur!r} at {where}", where)
        else:
            raise bad_request(f"{what} has a value of type {type(cur).__name__} at {where}, which JSON cannot "
                              "carry", where)


def _check_text(text: str, where: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(f"{what} has invalid Unicode at {where}: {exc.reason} (a lone surrogate "
                          f"{text[exc.start:exc.end]!a})", where) from None


def decode_body(raw: bytes, content_type: str, *, allow_list: bool = False) -> Any:
    """Decode a request body (JSON, or YAML when the content type says so) and check it is plain JSON.

    Args:
        raw: The body.
        content_type: Its media type; YAML for ``application/apply-patch+yaml`` and ``application/yaml``.
        allow_list: Accept a top-level list (JSON patch); otherwise the body must be an object.

    Raises:
        ValidationError: 413 for a body over :data:`MAX_BODY_BYTES`; 400 for anything that does not decode or
            is not plain JSON.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(413, "RequestEntityTooLarge",
                              f"Request entity too large: limit is {MAX_BODY_BYTES}")
    try:
        body = yaml.load(raw, Loader=_YamlLoader) if "yaml" in content_type else json.loads(raw)
    except RecursionError:
        raise bad_request(f"the request body is nested more than {MAX_DEPTH} levels deep", "<root>") from None
    except (ValueError, yaml.YAMLError) as exc:
        text = str(exc).replace("\n", " ")
        raise bad_request(f"the request body could not be decoded: {text[:300]}") from None
    if body is None:
        body = {}
    check_json_value(body)
    if isinstance(body, list) and allow_list:
        return body
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, not {_json_type(body)}: json: cannot "
                          f"unmarshal {_json_type(body)} into Go value of type map[string]interface {{}}",
                          "<root>")
    return body


# --------------------------------------------------------------------------------------------- types

# A tiny schema language for the fields the sandbox reads. A spec is a type name or a dict (an object with
# these fields; other fields may be anything) or a 1-tuple (a list of that spec).
Spec = Any
STR, INT, BOOL, NUM, ANYOBJ, MAPSTR, INTSTR = "string", "int64", "bool", "float64", "object", "map[string]string", \
    "IntOrString"

OBJECT_META: Spec = {
    "name": STR, "generateName": STR, "namespace": STR, "uid": STR, "resourceVersion": STR, "generation": INT,
    "creationTimestamp": STR, "deletionTimestamp": STR, "deletionGracePeriodSeconds": INT,
    "labels": MAPSTR, "annotations": MAPSTR, "finalizers": (STR,), "managedFields": (ANYOBJ,),
    "ownerReferences": ({"apiVersion": STR, "kind": STR, "name": STR, "uid": STR, "controller": BOOL,
                         "blockOwnerDeletion": BOOL},),
}
ENV_VAR: Spec = {"name": STR, "value": STR, "valueFrom": {
    "fieldRef": {"apiVersion": STR, "fieldPath": STR}, "resourceFieldRef": ANYOBJ,
    "configMapKeyRef": {"name": STR, "key": STR, "optional": BOOL},
    "secretKeyRef": {"name": STR, "key": STR, "optional": BOOL}}}
CONTAINER: Spec = {
    "name": STR, "image": STR, "command": (STR,), "args": (STR,), "workingDir": STR, "imagePullPolicy": STR,
    "env": (ENV_VAR,), "envFrom": (ANYOBJ,), "ports": ({"name": STR, "containerPort": INT, "hostPort": INT,
                                                         "protocol": STR, "hostIP": STR},),
    "resources": ANYOBJ, "volumeMounts": ({"name": STR, "mountPath": STR, "readOnly": BOOL},),
    "livenessProbe": ANYOBJ, "readinessProbe": ANYOBJ, "startupProbe": ANYOBJ, "lifecycle": ANYOBJ,
    "securityContext": ANYOBJ, "stdin": BOOL, "tty": BOOL, "terminationMessagePath": STR,
    "terminationMessagePolicy": STR,
}
POD_SPEC: Spec = {
    "containers": (CONTAINER,), "initContainers": (CONTAINER,), "restartPolicy": STR,
    "terminationGracePeriodSeconds": INT, "activeDeadlineSeconds": INT, "serviceAccountName": STR,
    "serviceAccount": STR, "dnsPolicy": STR, "nodeName": STR, "hostname": STR, "subdomain": STR,
    "nodeSelector": MAPSTR, "volumes": ({"name": STR},), "securityContext": ANYOBJ, "affinity": ANYOBJ,
    "tolerations": (ANYOBJ,), "imagePullSecrets": ({"name": STR},), "schedulerName": STR, "priority": INT,
    "enableServiceLinks": BOOL, "automountServiceAccountToken": BOOL, "hostNetwork": BOOL,
}
CONDITION: Spec = {"type": STR, "status": STR, "reason": STR, "message": STR, "lastTransitionTime": STR,
                   "lastProbeTime": STR, "lastUpdateTime": STR, "observedGeneration": INT}
LABEL_SELECTOR: Spec = {"matchLabels": MAPSTR,
                        "matchExpressions": ({"key": STR, "operator": STR, "values": (STR,)},)}
TEMPLATE: Spec = {"metadata": OBJECT_META, "spec": POD_SPEC}
WORKLOAD_SPEC: Spec = {
    "replicas": INT, "selector": LABEL_SELECTOR, "template": TEMPLATE, "minReadySeconds": INT,
    "revisionHistoryLimit": INT, "progressDeadlineSeconds": INT, "paused": BOOL,
    "strategy": {"type": STR, "rollingUpdate": {"maxUnavailable": INTSTR, "maxSurge": INTSTR}},
}
WORKLOAD_STATUS: Spec = {
    "replicas": INT, "readyReplicas": INT, "availableReplicas": INT, "updatedReplicas": INT,
    "unavailableReplicas": INT, "fullyLabeledReplicas": INT, "observedGeneration": INT,
    "conditions": (CONDITION,),
}
POD_STATUS: Spec = {
    "phase": STR, "podIP": STR, "hostIP": STR, "startTime": STR, "qosClass": STR, "reason": STR, "message": STR,
    "conditions": (CONDITION,), "podIPs": ({"ip": STR},), "hostIPs": ({"ip": STR},),
    "containerStatuses": ({"name": STR, "image": STR, "imageID": STR, "ready": BOOL, "started": BOOL,
                           "restartCount": INT, "containerID": STR, "state": ANYOBJ, "lastState": ANYOBJ},),
}
SERVICE_SPEC: Spec = {
    "ports": ({"name": STR, "port": INT, "targetPort": INTSTR, "protocol": STR, "nodePort": INT,
               "appProtocol": STR},),
    "selector": MAPSTR, "clusterIP": STR, "clusterIPs": (STR,), "type": STR, "sessionAffinity": STR,
    "externalIPs": (STR,), "externalName": STR, "ipFamilies": (STR,), "ipFamilyPolicy": STR,
    "internalTrafficPolicy": STR, "externalTrafficPolicy": STR, "loadBalancerIP": STR,
    "publishNotReadyAddresses": BOOL,
}
ENDPOINT_ADDRESS: Spec = {"ip": STR, "hostname": STR, "nodeName": STR, "targetRef": ANYOBJ}
POLICY_RULE: Spec = {"verbs": (STR,), "apiGroups": (STR,), "resources": (STR,), "resourceNames": (STR,),
                     "nonResourceURLs": (STR,)}
SUBJECT: Spec = {"kind": STR, "apiGroup": STR, "name": STR, "namespace": STR}
SCHEMAS: dict[str, Spec] = {
    "Pod": {"spec": POD_SPEC, "status": POD_STATUS},
    "Deployment": {"spec": WORKLOAD_SPEC, "status": WORKLOAD_STATUS},
    "ReplicaSet": {"spec": WORKLOAD_SPEC, "status": WORKLOAD_STATUS},
    "Service": {"spec": SERVICE_SPEC, "status": ANYOBJ},
    "Endpoints": {"subsets": ({"addresses": (ENDPOINT_ADDRESS,), "notReadyAddresses": (ENDPOINT_ADDRESS,),
                               "ports": ({"name": STR, "port": INT, "protocol": STR, "appProtocol": STR},)},)},
    "Event": {"involvedObject": {"kind": STR, "namespace": STR, "name": STR, "uid": STR, "apiVersion": STR,
                                 "resourceVersion": STR, "fieldPath": STR},
              "reason": STR, "message": STR, "type": STR, "count": INT, "firstTimestamp": STR,
              "lastTimestamp": STR, "eventTime": STR, "reportingComponent": STR, "reportingInstance": STR,
              "action": STR, "source": {"component": STR, "host": STR}, "related": ANYOBJ,
              "series": {"count": INT, "lastObservedTime": STR}},
    "Namespace": {"spec": {"finalizers": (STR,)}, "status": {"phase": STR}},
    "ServiceAccount": {"secrets": (ANYOBJ,), "imagePullSecrets": ({"name": STR},),
                       "automountServiceAccountToken": BOOL},
    "ConfigMap": {"data": MAPSTR, "binaryData": MAPSTR, "immutable": BOOL},
    "DeleteOptions": {"gracePeriodSeconds": INT, "propagationPolicy": STR, "dryRun": (STR,),
                      "orphanDependents": BOOL, "preconditions": {"uid": STR, "resourceVersion": STR}},
    "Scale": {"spec": {"replicas": INT}},
    "TokenRequest": {"spec": {"audiences": (STR,), "expirationSeconds": INT,
                              "boundObjectRef": {"kind": STR, "apiVersion": STR, "name": STR, "uid": STR}}},
    "SelfSubjectAccessReview": {"spec": {
        "resourceAttributes": {"namespace": STR, "verb": STR, "group": STR, "version": STR, "resource": STR,
                               "subresource": STR, "name": STR},
        "nonResourceAttributes": {"path": STR, "verb": STR}}},
    "SelfSubjectRulesReview": {"spec": {"namespace": STR}},
    "Role": {"rules": (POLICY_RULE,)},
    "ClusterRole": {"rules": (POLICY_RULE,), "aggregationRule": ANYOBJ},
    "RoleBinding": {"subjects": (SUBJECT,), "roleRef": {"apiGroup": STR, "kind": STR, "name": STR}},
    "ClusterRoleBinding": {"subjects": (SUBJECT,), "roleRef": {"apiGroup": STR, "kind": STR, "name": STR}},
}
_GO_TYPE = {STR: "string", INT: "int64", BOOL: "bool", NUM: "float64", ANYOBJ: "map[string]interface {}",
            MAPSTR: "map[string]string", INTSTR: "intstr.IntOrString"}


def _type_error(kind: str, path: str, value: Any, go_type: str) -> ValidationError:
    message = (f'{kind} in version "v1" cannot be handled as a {kind}: json: cannot unmarshal '
               f"{_json_type(value)} into Go struct field {kind}.{path} of type {go_type}")
    return ValidationError(400, "BadRequest", message, {"kind": kind, "causes": [
        {"reason": "FieldValueTypeInvalid", "message": message, "field": path}]})


def check_types(kind: str, obj: dict[str, Any]) -> None:
    """Check the JSON types of the fields the sandbox reads, and drop the ones that are ``null``.

    A ``null`` in a typed field means "unset", as the Go decoder reads it, so it is removed: no later reader
    finds a None where it expects an object. Fields the sandbox does not know are left as they are.

    Raises:
        ValidationError: 400 ``BadRequest`` naming the first field of the wrong type.
    """
    schema = {"apiVersion": STR, "kind": STR, "metadata": OBJECT_META, **SCHEMAS.get(kind, {})}
    _check_fields(kind, obj, schema, "")


def _check_fields(kind: str, obj: dict[str, Any], schema: dict[str, Spec], prefix: str) -> None:
    for key, spec in schema.items():
        if key not in obj:
            continue
        if obj[key] is None:
            del obj[key]
            continue
        _check_value(kind, obj[key], spec, f"{prefix}{key}")


def _check_value(kind: str, value: Any, spec: Spec, path: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _type_error(kind, path, value, "struct")
        _check_fields(kind, value, spec, f"{path}.")
    elif isinstance(spec, tuple):
        if not isinstance(value, list):
            raise _type_error(kind, path, value, f"[]{_go_name(spec[0])}")
        for i, item in enumerate(value):
            if item is None and isinstance(spec[0], dict):
                raise _type_error(kind, f"{path}[{i}]", item, "struct")
            _check_value(kind, item, spec[0], f"{path}[{i}]")
    elif spec == MAPSTR:
        if not isinstance(value, dict):
            raise _type_error(kind, path, value, _GO_TYPE[MAPSTR])
        for k, v in value.items():
            if not isinstance(v, str):
                raise _type_error(kind, f"{path}.{k}", v, "string")
    elif not _is_type(value, spec):
        raise _type_error(kind, path, value, _GO_TYPE[spec])


def _go_name(spec: Spec) -> str:
    return "struct" if isinstance(spec, dict) else _GO_TYPE.get(spec, "interface {}")


def _is_type(value: Any, spec: str) -> bool:
    if spec == STR:
        return isinstance(value, str)
    if spec == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if spec == BOOL:
        return isinstance(value, bool)
    if spec == NUM:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec == ANYOBJ:
        return isinstance(value, dict)
    if spec == INTSTR:
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    return True


# --------------------------------------------------------------------------------------------- names and labels


def name_errors(field: str, value: str, rule: str) -> list[FieldError]:
    """Errors of ``value`` as a name under ``rule``: ``subdomain``, ``label``, ``dns1035`` or ``path``."""
    if rule == "path":  # any path segment; the few forbidden ones are refused by rbac.check_object
        return []
    limit, rx, msg = {"subdomain": (253, DNS1123_SUBDOMAIN, SUBDOMAIN_MSG), "label": (63, DNS1123_LABEL, LABEL_MSG),
                      "dns1035": (63, DNS1035_LABEL, DNS1035_MSG)}[rule]
    errors = []
    if len(value) > limit:
        errors.append(invalid_value(field, value, f"must be no more than {limit} characters"))
    if not rx.match(value):
        errors.append(invalid_value(field, value, msg))
    return errors


def qualified_name_errors(field: str, key: str) -> list[FieldError]:
    """Errors of a label or annotation key (``[prefix/]name``)."""
    prefix, slash, name = key.rpartition("/")
    errors = []
    if slash:
        if not prefix:
            errors.append(invalid_value(field, key, "prefix part must be non-empty"))
        elif len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            errors.append(invalid_value(field, key, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        errors.append(invalid_value(field, key, "name part must be non-empty"))
    else:
        if len(name) > 63:
            errors.append(invalid_value(field, key, "name part must be no more than 63 characters"))
        if not QUALIFIED_NAME.match(name):
            errors.append(invalid_value(field, key, QUALIFIED_MSG))
    return errors


def label_errors(field: str, labels: Mapping[str, str]) -> list[FieldError]:
    errors = []
    for key, value in labels.items():
        errors += qualified_name_errors(field, key)
        if len(value) > 63:
            errors.append(invalid_value(field, value, "must be no more than 63 characters"))
        if not LABEL_VALUE.match(value):
            errors.append(invalid_value(field, value, LABEL_VALUE_MSG))
    return errors


NAME_RULES = {"Service": "dns1035", "Namespace": "label", "ServiceAccount": "subdomain",
              **dict.fromkeys(("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"), "path")}
"""How a kind's name is checked; RBAC names are path segments (``system:discovery``), checked in rbac.py."""


def meta_errors(kind: str, meta: dict[str, Any], namespaced: bool) -> list[FieldError]:
    """Errors of ``metadata``: name, generateName, namespace, labels, annotations, owner references."""
    rule = NAME_RULES.get(kind, "subdomain")
    errors: list[FieldError] = []
    name = meta.get("name")
    gen = meta.get("generateName")
    if name:
        errors += name_errors("metadata.name", name, rule)
    elif gen:
        # The prefix must itself be valid once its trailing dash is masked (a suffix is appended).
        masked = gen[:-1] + "a" if gen.endswith("-") else gen
        errors += name_errors("metadata.generateName", masked[:-5] if len(masked) > 5 else masked, rule)
    else:
        errors.append(required("metadata.name", "name or generateName is required"))
    ns = meta.get("namespace")
    if namespaced and ns:
        errors += name_errors("metadata.namespace", ns, "label")
    errors += label_errors("metadata.labels", meta.get("labels") or {})
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errors += qualified_name_errors("metadata.annotations", key)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        errors.append(too_long("metadata.annotations", None, MAX_ANNOTATIONS_BYTES))
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                errors.append(required(f"metadata.ownerReferences[{i}].{key}"))
    return errors


# --------------------------------------------------------------------------------------------- kinds


def _no_nul(field: str, value: str) -> list[FieldError]:
    return [invalid_value(field, value, "must not contain a NUL character")] if "\x00" in value else []


def pod_spec_errors(spec: dict[str, Any], prefix: str) -> list[FieldError]:
    errors: list[FieldError] = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(required(f"{prefix}.containers"))
    seen: set[str] = set()
    for group in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(group) or []):
            at = f"{prefix}.{group}[{i}]"
            cname = c.get("name")
            if not cname:
                errors.append(required(f"{at}.name"))
            else:
                errors += name_errors(f"{at}.name", cname, "label")
                if cname in seen:
                    errors.append(FieldError(f"{at}.name", "FieldValueDuplicate", f'Duplicate value: "{cname}"'))
                seen.add(cname)
            if not c.get("image", "").strip():
                errors.append(required(f"{at}.image"))
            else:
                errors += _no_nul(f"{at}.image", c["image"])
            for key in ("command", "args"):
                for j, arg in enumerate(c.get(key) or []):
                    errors += _no_nul(f"{at}.{key}[{j}]", arg)
            for j, env in enumerate(c.get("env") or []):
                ename = env.get("name")
                if not ename:
                    errors.append(required(f"{at}.env[{j}].name"))
                elif not ENV_VAR_NAME.match(ename):
                    errors.append(invalid_value(f"{at}.env[{j}].name", ename, ENV_MSG))
                errors += _no_nul(f"{at}.env[{j}].value", env.get("value") or "")
            for j, port in enumerate(c.get("ports") or []):
                cp = port.get("containerPort")
                if cp is None:
                    errors.append(required(f"{at}.ports[{j}].containerPort"))
                elif not 1 <= cp <= 65535:
                    errors.append(invalid_value(f"{at}.ports[{j}].containerPort", cp,
                                                "must be between 1 and 65535, inclusive"))
                if "protocol" in port and port["protocol"] not in ("TCP", "UDP", "SCTP"):
                    errors.append(not_supported(f"{at}.ports[{j}].protocol", port["protocol"],
                                                ("SCTP", "TCP", "UDP")))
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in ("Always", "OnFailure", "Never"):
        errors.append(not_supported(f"{prefix}.restartPolicy", policy, ("Always", "OnFailure", "Never")))
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and not 0 <= grace <= MAX_GRACE_SECONDS:
        errors.append(invalid_value(f"{prefix}.terminationGracePeriodSeconds", grace,
                                    f"must be between 0 and {MAX_GRACE_SECONDS}, inclusive"))
    return errors


def _selector_errors(selector: dict[str, Any], field: str) -> list[FieldError]:
    errors = label_errors(f"{field}.matchLabels", selector.get("matchLabels") or {})
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        at = f"{field}.matchExpressions[{i}]"
        op = expr.get("operator")
        if not expr.get("key"):
            errors.append(required(f"{at}.key"))
        else:
            errors += qualified_name_errors(f"{at}.key", expr["key"])
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            errors.append(not_supported(f"{at}.operator", op, ("DoesNotExist", "Exists", "In", "NotIn")))
        elif op in ("In", "NotIn") and not expr.get("values"):
            errors.append(required(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist") and expr.get("values"):
            errors.append(FieldError(f"{at}.values", "FieldValueForbidden",
                                     "Forbidden: may not be specified when `operator` is 'Exists' or "
                                     "'DoesNotExist'"))
    return errors


def workload_errors(spec: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    replicas = spec.get("replicas")
    if replicas is not None and not 0 <= replicas <= MAX_REPLICAS:
        errors.append(invalid_value("spec.replicas", replicas,
                                    f"must be between 0 and {MAX_REPLICAS}, inclusive (each sandbox pod is a "
                                    "process)"))
    selector = spec.get("selector")
    if not selector:
        errors.append(required("spec.selector"))
    else:
        errors += _selector_errors(selector, "spec.selector")
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errors.append(invalid_value("spec.selector", selector, "empty selector is invalid for deployment"))
    template = spec.get("template")
    if not template:
        errors.append(required("spec.template"))
    else:
        tmeta = template.get("metadata") or {}
        errors += label_errors("spec.template.metadata.labels", tmeta.get("labels") or {})
        errors += pod_spec_errors(template.get("spec") or {}, "spec.template.spec")
    return errors


def service_errors(spec: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    ports = spec.get("ports") or []
    names = set()
    for i, p in enumerate(ports):
        at = f"spec.ports[{i}]"
        port = p.get("port")
        if port is None:
            errors.append(required(f"{at}.port"))
        elif not 1 <= port <= 65535:
            errors.append(invalid_value(f"{at}.port", port, "must be between 1 and 65535, inclusive"))
        target = p.get("targetPort")
        if isinstance(target, int) and not 1 <= target <= 65535:
            errors.append(invalid_value(f"{at}.targetPort", target, "must be between 1 and 65535, inclusive"))
        elif isinstance(target, str) and (not IANA_SVC_NAME.match(target) or len(target) > 15):
            errors.append(invalid_value(f"{at}.targetPort", target, "must contain only alpha-numeric characters "
                                        "(a-z, 0-9), and hyphens (-), at most 15 characters"))
        if "protocol" in p and p["protocol"] not in ("TCP", "UDP", "SCTP"):
            errors.append(not_supported(f"{at}.protocol", p["protocol"], ("SCTP", "TCP", "UDP")))
        pname = p.get("name")
        if pname:
            errors += name_errors(f"{at}.name", pname, "label")
            if pname in names:
                errors.append(FieldError(f"{at}.name", "FieldValueDuplicate", f'Duplicate value: "{pname}"'))
            names.add(pname)
        elif len(ports) > 1:
            errors.append(required(f"{at}.name"))
    errors += label_errors("spec.selector", spec.get("selector") or {})
    stype = spec.get("type")
    if stype is not None and stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        errors.append(not_supported("spec.type", stype, ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")))
    return errors


def event_errors(obj: dict[str, Any], namespace: str | None) -> list[FieldError]:
    errors: list[FieldError] = []
    involved = obj.get("involvedObject")
    if not isinstance(involved, dict):
        errors.append(required("involvedObject"))
    elif namespace and involved.get("namespace") not in (None, "", namespace):
        errors.append(invalid_value("involvedObject.namespace", involved.get("namespace"),
                                    "does not match event.namespace"))
    return errors


def validate_object(kind: str, obj: dict[str, Any], *, namespaced: bool = True) -> None:
    """Validate an object about to be created or updated, as the real API server's validation does.

    ``obj`` must have passed :func:`check_types`. ``metadata.name`` may be absent when ``generateName`` is set.

    Raises:
        ValidationError: 422 ``Invalid`` with one cause per invalid field.
    """
    meta = obj.get("metadata") or {}
    errors = meta_errors(kind, meta, namespaced)
    spec = obj.get("spec") or {}
    if kind == "Pod":
        errors += pod_spec_errors(spec, "spec")
    elif kind in ("Deployment", "ReplicaSet"):
        errors += workload_errors(spec)
    elif kind == "Service":
        errors += service_errors(spec)
    elif kind == "Event":
        errors += event_errors(obj, meta.get("namespace"))
    if errors:
        name = meta.get("name") or meta.get("generateName") or ""
        raise invalid(kind, name if isinstance(name, str) else str(name), errors)


def check_storable(kind: str, obj: dict[str, Any]) -> None:
    """The last gate before the store: the object serialises to JSON (within etcd's size) and reads back equal.

    Raises:
        ValidationError: 400 when it does not serialise or read back equal; 413 when it is too large.
    """
    check_json_value(obj, f"the {kind}")
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError) as exc:
        raise bad_request(f"the {kind} cannot be stored: it does not serialise to JSON ({exc})", "<root>") from None
    if len(text) > MAX_OBJECT_BYTES:
        raise ValidationError(413, "RequestEntityTooLarge",
                              f"the {kind} is too large to store: {len(text)} bytes, limit is {MAX_OBJECT_BYTES}")
    if json.loads(text) != obj:
        raise bad_request(f"the {kind} cannot be stored: it does not read back equal to what was sent", "<root>")


# --------------------------------------------------------------------------------------------- query parameters

BOOL_PARAMS = ("watch", "allowWatchBookmarks", "follow", "previous", "timestamps", "stdin", "stdout", "stderr",
               "tty", "sendInitialEvents", "insecureSkipTLSVerifyBackend", "pretty", "force")
# name -> (minimum, maximum); every one of them is an int64 in the real API.
INT_PARAMS = {"timeoutSeconds": (0, INT64_MAX), "gracePeriodSeconds": (0, INT64_MAX), "limit": (0, INT64_MAX),
              "tailLines": (0, INT64_MAX), "limitBytes": (1, INT64_MAX), "sinceSeconds": (1, INT64_MAX)}
ENUM_PARAMS = {"dryRun": ("All",), "propagationPolicy": ("Background", "Foreground", "Orphan"),
               "fieldValidation": ("Ignore", "Strict", "Warn"),
               "resourceVersionMatch": ("Exact", "NotOlderThan")}
TEXT_PARAMS = ("container", "fieldManager", "continue", "command", "ports", "port", "sinceTime", "timeout",
               "labelSelector", "fieldSelector", "resourceVersion")
MAX_PARAM_CHARS = 16 * 1024


@dataclass(frozen=True)
class QueryParams:
    """The checked query parameters of one request; booleans normalised to ``true``/``false``."""

    ints: dict[str, int]
    bools: dict[str, bool]
    normalised: list[tuple[str, str]]
    changed: bool


def parse_query(items: list[tuple[str, str]]) -> QueryParams:
    """Check every known query parameter of a request.

    Integers must be decimal int64 within range (``timeoutSeconds=nan`` or ``1e3`` is refused), booleans are
    true unless ``0`` or ``false`` (as the real API server reads them), enums one of their values;
    ``resourceVersion`` is a decimal number or empty; selectors must parse. Unknown parameters pass, as on the
    real API server.

    Returns:
        The parsed values and the query with booleans spelled ``true``/``false`` (``changed`` says whether it
        differs from the one given).

    Raises:
        ValidationError: 400 ``BadRequest`` naming the parameter.
    """
    ints: dict[str, int] = {}
    bools: dict[str, bool] = {}
    out: list[tuple[str, str]] = []
    changed = False
    for key, value in items:
        if len(value) > MAX_PARAM_CHARS:
            raise bad_request(f"{key}: Too long: must have at most {MAX_PARAM_CHARS} characters", key,
                              "FieldValueTooLong")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request(f"{key}: Invalid value: the value is not valid UTF-8", key) from None
        if key in BOOL_PARAMS:
            # The real API server reads any value but "0" and "false" (any case) as true, and never refuses one.
            bools[key] = not (value == "0" or value.lower() == "false")
            canonical = "true" if bools[key] else "false"
            changed |= canonical != value
            out.append((key, canonical))
            continue
        if key in INT_PARAMS:
            lo, hi = INT_PARAMS[key]
            if not re.fullmatch(r"[-+]?[0-9]{1,19}", value):
                raise bad_request(f"{key}: Invalid value: {_quote(value)}: strconv.ParseInt: parsing "
                                  f"{_quote(value)}: invalid syntax", key)
            number = int(value)
            if not lo <= number <= hi:
                raise bad_request(f"{key}: Invalid value: {number}: must be between {lo} and {hi}, inclusive"
                                  if hi < INT64_MAX else
                                  f"{key}: Invalid value: {number}: must be greater than or equal to {lo}", key)
            ints[key] = number
        elif key in ENUM_PARAMS and value not in ENUM_PARAMS[key]:
            raise bad_request(f"{key}: Unsupported value: {_quote(value)}: supported values: "
                              + ", ".join(f'"{v}"' for v in ENUM_PARAMS[key]), key, "FieldValueNotSupported")
        elif key == "resourceVersion" and value and not re.fullmatch(r"-?[0-9]{1,18}", value):
            # (a negative version is older than any history: the watch answers 410 Gone, as before)
            raise bad_request(f"resourceVersion: Invalid value: {_quote(value)}: must be a decimal resource "
                              "version", key)
        elif key in ("labelSelector", "fieldSelector"):
            try:
                (parse_label_selector if key == "labelSelector" else parse_field_selector)(value)
            except (SelectorError, ValueError, RecursionError) as exc:
                raise bad_request(f"{key}: Invalid value: {_quote(value)}: {exc}", key) from None
        out.append((key, value))
    return QueryParams(ints, bools, out, changed)


@dataclass(frozen=True)
class DeleteOptions:
    """What a DELETE asks for, from its query and its ``DeleteOptions`` body (the query wins)."""

    grace: int | None
    propagation: str
    dry_run: bool


def delete_options(query: Mapping[str, str], body: dict[str, Any]) -> DeleteOptions:
    """Check a DELETE's options; the grace period is capped at :data:`MAX_GRACE_SECONDS`.

    Raises:
        ValidationError: 400 naming the bad option.
    """
    check_types("DeleteOptions", body)
    grace: int | None = body.get("gracePeriodSeconds")
    if "gracePeriodSeconds" in query:
        grace = int(query["gracePeriodSeconds"])  # parse_query checked it
    if grace is not None and grace < 0:
        grace = 0  # the real API server treats a negative grace period as "now"
    if grace is not None:
        grace = min(grace, MAX_GRACE_SECONDS)
    propagation = query.get("propagationPolicy") or body.get("propagationPolicy") or "Background"
    if propagation not in ENUM_PARAMS["propagationPolicy"]:
        raise bad_request(f"propagationPolicy: Unsupported value: {_quote(propagation)}: supported values: "
                          '"Background", "Foreground", "Orphan"', "propagationPolicy", "FieldValueNotSupported")
    dry = body.get("dryRun") or []
    for value in dry:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: {_quote(value)}: supported values: "All"', "dryRun",
                              "FieldValueNotSupported")
    return DeleteOptions(grace, propagation, query.get("dryRun") == "All" or bool(dry))
