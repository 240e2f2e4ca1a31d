"""A container's environment from ConfigMaps and Secrets, resolved as the kubelet does before it starts it.

``envFrom`` sources first (in order, with their prefix), then ``env`` entries, each overriding what came before.
A missing ConfigMap, Secret or key that is not ``optional`` stops the container with ``CreateContainerConfigError``
and the kubelet's message, until it appears.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from .store import Obj

Lookup = Callable[[str, str], Obj | None]
"""(kind "ConfigMap" or "Secret", name) -> the object in the pod's namespace, or None."""

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigError(Exception):
    """The kubelet cannot build the environment yet (``CreateContainerConfigError``)."""


def _values(kind: str, obj: Obj) -> dict[str, str]:
    if kind == "ConfigMap":
        return {k: str(v) for k, v in (obj.get("data") or {}).items()}
    out: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(str(value)).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            continue
    return out


def _source(lookup: Lookup, kind: str, name: str, optional: bool) -> dict[str, str] | None:
    obj = lookup(kind, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    return _values(kind, obj)


def resolve(container: Obj, namespace: str, lookup: Lookup) -> dict[str, str]:
    """The variables a container's ``envFrom`` and ``env`` take from ConfigMaps and Secrets (and plain values).

    Field references (``fieldRef``) are left to the caller, which knows the pod's address.

    Raises:
        ConfigError: with the kubelet's message, e.g. ``configmap "settings" not found``.
    """
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = src.get(key)
            if isinstance(ref, dict):
                values = _source(lookup, kind, str(ref.get("name", "")), bool(ref.get("optional")))
                for name, value in (values or {}).items():
                    if _ENV_NAME.match(prefix + name):
                        env[prefix + name] = value
    for item in container.get("env") or []:
        name = str(item.get("name", ""))
        if "value" in item:
            env[name] = str(item["value"])
            continue
        value_from = item.get("valueFrom") or {}
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            ref = value_from.get(key)
            if not isinstance(ref, dict):
                continue
            optional = bool(ref.get("optional"))
            values = _source(lookup, kind, str(ref.get("name", "")), optional)
            if values is None:
                continue
            wanted = str(ref.get("key", ""))
            if wanted not in values:
                if optional:
                    continue
                raise ConfigError(f"couldn't find key {wanted} in {kind} {namespace}/{ref.get('name')}")
            env[name] = values[wanted]
    return env
