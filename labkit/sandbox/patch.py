"""PATCH bodies: JSON merge patch, strategic merge patch (the subset kubectl sends) and JSON patch."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

# Lists of objects that strategic merge patch merges by a key instead of replacing.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "env": "name", "ports": None, "volumes": "name",
    "volumeMounts": "mountPath", "conditions": "type", "ownerReferences": "uid", "imagePullSecrets": "name",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _port_key(item: dict[str, Any]) -> Any:
    return item.get("containerPort", item.get("port"))


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch for the fields kubectl's client-side apply and edit touch."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "delete":
            return None
        if patch.get("$patch") == "replace":
            return {k: v for k, v in patch.items() if not k.startswith("$")}
        out = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                out.pop(key, None)
            else:
                merged = strategic_merge(out.get(key), value, key)
                if merged is None and isinstance(value, dict) and value.get("$patch") == "delete":
                    out.pop(key, None)
                else:
                    out[key] = merged
        return out
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(target, list) \
            and all(isinstance(x, dict) for x in patch + target):
        keyfn = (lambda d: d.get(MERGE_KEYS[field])) if MERGE_KEYS[field] else _port_key
        items = [copy.deepcopy(x) for x in target]
        for item in patch:
            k = keyfn(item)
            idx = next((i for i, cur in enumerate(items) if keyfn(cur) == k), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    items.pop(idx)
            elif idx is None:
                items.append({kk: v for kk, v in item.items() if not kk.startswith("$")})
            else:
                items[idx] = strategic_merge(items[idx], item, field)
        return items
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 operations: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(target)

    def parent(path: list[str]) -> tuple[Any, str]:
        cur = doc
        for part in path[:-1]:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        return cur, path[-1]

    def get(path: list[str]) -> Any:
        cur = doc
        for part in path:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        return cur

    for op in ops:
        kind, path = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind in ("add", "replace", "copy", "move"):
                value = copy.deepcopy(op["value"]) if kind in ("add", "replace") else copy.deepcopy(
                    get(_pointer(op["from"])))
                if kind == "move":
                    src, skey = parent(_pointer(op["from"]))
                    del src[int(skey) if isinstance(src, list) else skey]
                if not path:
                    doc = value
                    continue
                container, key = parent(path)
                if isinstance(container, list):
                    if key == "-":
                        container.append(value)
                    elif kind == "replace":
                        container[int(key)] = value
                    else:
                        container.insert(int(key), value)
                else:
                    if kind == "replace" and key not in container:
                        raise ValueError(f"replace operation does not apply: doc is missing key: {op['path']}")
                    container[key] = value
            elif kind == "remove":
                container, key = parent(path)
                del container[int(key) if isinstance(container, list) else key]
            elif kind == "test":
                if get(path) != op.get("value"):
                    raise ValueError(f"test operation failed at {op['path']}")
            else:
                raise ValueError(f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"the JSON patch cannot be applied at {op.get('path')!r}: {exc}") from exc
    return doc


def apply_patch(target: dict[str, Any], raw: bytes, content_type: str) -> dict[str, Any]:
    """Apply a PATCH body of the given content type to ``target`` and return the new object."""
    try:
        body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw or b"{}")
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"the patch could not be decoded: {exc}") from exc
    if content_type == "application/json-patch+json":
        if not isinstance(body, list):
            raise ValueError("a JSON patch must be a list of operations")
        result = json_patch(target, body)
    elif not isinstance(body, dict):
        raise ValueError("the patch must be a JSON object")
    elif content_type == "application/strategic-merge-patch+json":
        result = strategic_merge(target, body)
    else:
        result = merge_patch(target, body)
    if not isinstance(result, dict):
        raise ValueError("the patch must leave an object, not a " + type(result).__name__)
    return result
