"""Discovery, ``/version`` and OpenAPI documents of the sandbox's API server, derived from the registry.

What the clients fetch, and what answers them:

============================================  ===========================================================
``GET /api``, ``GET /apis``                   :func:`aggregated_discovery` when the Accept header asks for
                                              ``as=APIGroupDiscoveryList`` (sent with
                                              :data:`AGGREGATED_CONTENT_TYPE`), else :func:`api_versions`
                                              and :func:`api_group_list`
``GET /api/v1``, ``GET /apis/apps/v1``        :func:`resource_list` (only fetched after legacy answers)
``GET /version``                              :func:`version_info`
``GET /openapi/v3``                           :func:`openapi_v3_root`
``GET /openapi/v3/api/v1?hash=...``           :func:`openapi_v3_document` (``kubectl create/apply -f``)
============================================  ===========================================================

kubectl needs ``shortNames`` (``po``, ``deploy``...) to resolve short names, and uses the OpenAPI v3 documents
only to learn that PATCH accepts ``fieldValidation``, after which it validates on the server side.

    >>> [r["name"] for r in resource_list("apps/v1")["resources"]][:3]
    ['deployments', 'deployments/scale', 'deployments/status']
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from typing import Any

from labkit.sandbox import openapi_schemas
from labkit.sandbox.resources import GROUP_VERSIONS, RESOURCES, Resource, served_as

__all__ = [
    "AGGREGATED_CONTENT_TYPE",
    "GIT_VERSION",
    "aggregated_discovery",
    "api_group_list",
    "api_versions",
    "openapi_v3_document",
    "openapi_v3_root",
    "resource_list",
    "version_info",
    "wants_aggregated",
]

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
"""The exact Content-Type of an aggregated discovery answer; with anything else kubectl ignores the body."""

MAJOR, MINOR = "1", "33"
"""Kubernetes version reported. Keep the minor at 32 or 33: the gcloud kubectl dispatcher picks its binary
from it, and one for 1.29 or older would use SPDY for exec."""
GIT_VERSION = f"v{MAJOR}.{MINOR}.0-labkit-sandbox"

_SUBRESOURCE_GROUPS: dict[str, tuple[str, str]] = {"Scale": ("autoscaling", "v1"),
                                                   "TokenRequest": ("authentication.k8s.io", "v1")}
"""Kinds of subresources that live in another group-version than their parent."""


def wants_aggregated(accept: str | None) -> bool:
    """Whether a discovery request's Accept header asks for aggregated (v2) discovery.

    Args:
        accept: The request's Accept header.

    Returns:
        True when ``as=APIGroupDiscoveryList`` with ``v=v2`` is acceptable; kubectl offers it on ``/api``
        and ``/apis``.
    """
    for media_range in (accept or "").split(","):
        params = {p.strip() for p in media_range.split(";")[1:]}
        if {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"} <= params:
            return True
    return False


def api_versions(server_address: str) -> dict[str, Any]:
    """The legacy ``/api`` document: the core group's versions.

    Args:
        server_address: ``host:port`` clients should use, e.g. ``"127.0.0.1:46443"``.

    Returns:
        An ``APIVersions`` object.
    """
    return {
        "kind": "APIVersions",
        "versions": [gv for gv in GROUP_VERSIONS if "/" not in gv],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _named_groups() -> dict[str, list[str]]:
    """Named (non-core) groups and their versions, in registry order."""
    groups: dict[str, list[str]] = {}
    for gv in GROUP_VERSIONS:
        if "/" in gv:
            group, version = gv.split("/", 1)
            groups.setdefault(group, []).append(version)
    return groups


def api_group_list() -> dict[str, Any]:
    """The legacy ``/apis`` document: every named group with its versions.

    Returns:
        An ``APIGroupList`` object (``apps`` with ``apps/v1``).
    """
    groups = []
    for group, versions in _named_groups().items():
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _in(group_version: str) -> list[Resource]:
    served = [r for r in RESOURCES if r.group_version == group_version]
    served += [served_as(r, v) for r in RESOURCES for v in r.also_served if f"{r.group}/{v}" == group_version]
    return sorted(served, key=lambda r: r.plural)


def _subresource_gvk(resource: Resource, kind: str) -> tuple[str, str]:
    return _SUBRESOURCE_GROUPS.get(kind, (resource.group, resource.version))


def resource_list(group_version: str) -> dict[str, Any] | None:
    """The legacy per-group-version document (``/api/v1``, ``/apis/apps/v1``).

    Subresources get their own entries (``pods/exec`` of kind ``PodExecOptions``; ``deployments/scale`` of
    kind ``Scale`` in group ``autoscaling`` version ``v1``), without short names.

    Args:
        group_version: ``"v1"`` or ``"apps/v1"``.

    Returns:
        An ``APIResourceList``, or None when the group-version is not served (answer 404).
    """
    if group_version not in GROUP_VERSIONS:
        return None
    entries: list[dict[str, Any]] = []
    for resource in _in(group_version):
        entry: dict[str, Any] = {
            "name": resource.plural,
            "singularName": resource.singular or resource.kind.lower(),
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        entries.append(entry)
        for sub, (kind, verbs) in sorted(resource.subresources.items()):
            sub_entry: dict[str, Any] = {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": kind,
                "verbs": list(verbs),
            }
            group, version = _subresource_gvk(resource, kind)
            if (group, version) != (resource.group, resource.version):
                sub_entry["group"], sub_entry["version"] = group, version
            entries.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }


def _discovery_resource(resource: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource.plural,
        "responseKind": {"group": resource.group, "version": resource.version, "kind": resource.kind},
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular or resource.kind.lower(),
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    subresources = []
    for sub, (kind, verbs) in sorted(resource.subresources.items()):
        group, version = _subresource_gvk(resource, kind)
        subresources.append(
            {
                "subresource": sub,
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": list(verbs),
            }
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def _discovery_group(group: str, versions: list[str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"creationTimestamp": None}
    if group:
        metadata["name"] = group
    return {
        "metadata": metadata,
        "versions": [
            {
                "version": version,
                "resources": [
                    _discovery_resource(r) for r in _in(f"{group}/{version}" if group else version)
                ],
                "freshness": "Current",
            }
            for version in versions
        ],
    }


def aggregated_discovery(core: bool) -> dict[str, Any]:
    """The aggregated (v2) discovery document for ``/api`` (``core=True``) or ``/apis``.

    Send it with Content-Type :data:`AGGREGATED_CONTENT_TYPE` when :func:`wants_aggregated` says the client
    accepts it; kubectl then makes no per-group-version requests.

    Args:
        core: True for the core group under ``/api``, False for the named groups under ``/apis``.

    Returns:
        An ``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``.
    """
    if core:
        items = [_discovery_group("", [gv for gv in GROUP_VERSIONS if "/" not in gv])]
    else:
        items = [_discovery_group(group, versions) for group, versions in _named_groups().items()]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }


def _platform() -> str:
    machine = platform.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "i386": "386",
        "i686": "386",
    }.get(machine, machine or "unknown")
    return f"{platform.system().lower() or 'unknown'}/{arch}"


def version_info() -> dict[str, Any]:
    """The ``/version`` document (``kubectl version``; the gcloud dispatcher reads ``minor``).

    Returns:
        A ``version.Info`` with ``gitVersion`` :data:`GIT_VERSION` and the platform of this machine.
    """
    return {
        "major": MAJOR,
        "minor": MINOR,
        "emulationMajor": MAJOR,
        "emulationMinor": MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        # Not a Go binary: say honestly what runs it.
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": _platform(),
    }


# --- OpenAPI v3 ---------------------------------------------------------------------------------------------


def _schema_name(group: str, version: str, kind: str) -> str:
    return f"io.k8s.api.{group.split('.')[0] or 'core'}.{version}.{kind}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": kind, "uniqueItems": True},
    }


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


_DRY_RUN = _query("dryRun", 'When present, modifications are not persisted (only "All" is accepted).')
_FIELD_MANAGER = _query("fieldManager", "A name for the actor making these changes.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "How to handle unknown or duplicate fields in the request body: Ignore, Warn or Strict.",
)
_FORCE = _query("force", "Force Apply requests, re-acquiring conflicting fields.", "boolean")
_WRITE_PARAMS = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]

_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")
"""Patch bodies advertised. ``application/strategic-merge-patch+json`` is left out on purpose: with it,
kubectl apply tries to derive the patch from these free-form schemas, fails and prints ``warning: error
calculating patch from openapi v3 spec``; without it, kubectl quietly derives the same strategic merge patch
from its compiled-in types."""


def _operation(
    resource: Resource,
    action: str,
    verb: str,
    *,
    body: bool,
    patch: bool = False,
    list_response: bool = False,
) -> dict[str, Any]:
    gvk = {"group": resource.group, "kind": resource.kind, "version": resource.version}
    name = _schema_name(resource.group, resource.version, resource.kind + ("List" if list_response else ""))
    group_tag = (resource.group or "core").capitalize()
    scope = "Namespaced" if resource.namespaced else ""
    operation: dict[str, Any] = {
        "tags": [f"{group_tag}_{resource.version}"],
        "description": f"{action} {resource.kind}",
        "operationId": f"{verb}{group_tag}{resource.version.capitalize()}{scope}{resource.kind}"
        + ("List" if list_response else ""),
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": _ref(name)}}},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": gvk,
    }
    if body:
        content_types = _PATCH_TYPES if patch else ("application/json", "application/yaml")
        schema = {"type": "object"} if patch else _ref(name)
        operation["requestBody"] = {
            "content": {content_type: {"schema": schema} for content_type in content_types},
            "required": True,
        }
        operation["parameters"] = [*_WRITE_PARAMS, _FORCE] if patch else list(_WRITE_PARAMS)
    if verb == "post":
        operation["responses"]["201"] = operation["responses"]["200"]
    return operation


def _paths(resource: Resource) -> dict[str, Any]:
    prefix = f"/apis/{resource.group}/{resource.version}" if resource.group else f"/api/{resource.version}"
    namespace = _path_param("namespace", "object name and auth scope, such as for teams and projects")
    scoped = (
        f"{prefix}/namespaces/{{namespace}}/{resource.plural}"
        if resource.namespaced
        else f"{prefix}/{resource.plural}"
    )
    collection_params = [namespace] if resource.namespaced else []
    item_params = [_path_param("name", f"name of the {resource.kind}"), *collection_params]
    kind = resource.kind
    return {
        scoped: {
            "get": _operation(
                resource, f"list or watch objects of kind {kind}", "list", body=False, list_response=True
            ),
            "post": _operation(resource, f"create a {kind}", "post", body=True),
            "parameters": collection_params,
        },
        f"{scoped}/{{name}}": {
            "get": _operation(resource, f"read the specified {kind}", "get", body=False),
            "put": _operation(resource, f"replace the specified {kind}", "put", body=True),
            "patch": _operation(
                resource, f"partially update the specified {kind}", "patch", body=True, patch=True
            ),
            "delete": _operation(resource, f"delete a {kind}", "delete", body=False),
            "parameters": item_params,
        },
    }


def _free_form(resource: Resource, kind: str) -> dict[str, Any]:
    return {
        "description": f"{kind} ({resource.group_version}), free-form in the labkit sandbox.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [
            {"group": resource.group, "kind": kind, "version": resource.version}
        ],
    }


@functools.cache
def _document(group_version: str) -> dict[str, Any] | None:
    resources = _in(group_version)
    if not resources:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for resource in resources:
        paths.update(_paths(resource))
        name = _schema_name(resource.group, resource.version, resource.kind)
        if name in openapi_schemas.schemas():
            # A kind with real fields: its schema, everything it references, and its list (``kubectl explain``).
            schemas.update(openapi_schemas.closure([name]))
            schemas[name + "List"] = openapi_schemas.list_schema(name, resource.group, resource.version,
                                                                 resource.kind)
            continue
        for kind in (resource.kind, resource.list_kind):
            schemas[_schema_name(resource.group, resource.version, kind)] = _free_form(resource, kind)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (labkit sandbox)", "version": GIT_VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer token",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }


def _url_path(group_version: str) -> str:
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


@functools.cache
def _hash(group_version: str) -> str:
    document = _document(group_version)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha512(text.encode()).hexdigest().upper()


def openapi_v3_root() -> dict[str, Any]:
    """The ``/openapi/v3`` index: one document per group-version, addressed with a content hash.

    kubectl caches each document under its URL, so the hash changes exactly when the document does.

    Returns:
        ``{"paths": {"api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=..."}, ...}}``.
    """
    return {
        "paths": {
            _url_path(gv): {"serverRelativeURL": f"/openapi/v3/{_url_path(gv)}?hash={_hash(gv)}"}
            for gv in GROUP_VERSIONS
        }
    }


def openapi_v3_document(group_version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group-version, compact but valid.

    For every kind it has the collection path (``get`` list, ``post``) and the item path (``get``, ``put``,
    ``patch``, ``delete``), each operation tagged with ``x-kubernetes-group-version-kind``; the write
    operations accept the ``fieldValidation`` query parameter, which is what makes ``kubectl create -f`` and
    ``kubectl apply -f`` validate on the server instead of downloading ``/openapi/v2``. Object schemas are
    free-form.

    Args:
        group_version: ``"v1"`` or ``"apps/v1"``; the URL forms ``"api/v1"`` and ``"apis/apps/v1"`` work too.

    Returns:
        The document (a fresh copy the caller may change), or None when the group-version is not served.
    """
    for prefix in ("apis/", "api/"):
        if group_version.startswith(prefix):
            group_version = group_version[len(prefix) :]
            break
    document = _document(group_version)
    return json.loads(json.dumps(document)) if document is not None else None
