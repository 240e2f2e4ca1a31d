"""A container's environment: what the kubelet passes to a container process and what the process reads back.

Kept apart from :mod:`labkit.sandbox.images.runtime` (the containers' HTTP server and helpers) so that the kubelet,
in the daemon, does not import the containers' runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

__all__ = ["HOST_SENSITIVE", "HOST_SENSITIVE_PREFIXES", "POD_ENV", "host_sensitive", "pod_environ", "process_environ"]

# What the host's dynamic loader and C library read from the environment (glibc's list of variables it ignores
# for setuid programs), and the Python interpreter's own variables: a pod's env must never steer the host's
# loader or interpreter, which run every container here.
HOST_SENSITIVE = frozenset({
    "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "NIS_PATH", "NLSPATH",
    "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR", "PATH",
})
HOST_SENSITIVE_PREFIXES = ("LD_", "PYTHON", "MALLOC_", "LABKIT_", "__PYVENV")
POD_ENV = "LABKIT_POD_ENV"


def host_sensitive(name: str) -> bool:
    """Whether the host's loader or interpreter reads ``name`` (``LD_PRELOAD``, ``PYTHONHOME``...)."""
    return name in HOST_SENSITIVE or name.startswith(HOST_SENSITIVE_PREFIXES)


def process_environ(pod_env: Mapping[str, str], system: Mapping[str, str]) -> dict[str, str]:
    """The environment a container process is started with.

    The pod's variables that the host's loader or interpreter would read are left out; the whole pod env travels
    in ``LABKIT_POD_ENV`` (JSON), which is what ``env`` inside the container prints.

    Args:
        pod_env: The container's env as the pod spec and the kubelet make it.
        system: The kubelet's own variables (``PATH``, ``PYTHONPATH``, ``LABKIT_*``), which always win.
    """
    environ = {k: v for k, v in pod_env.items() if not host_sensitive(k)}
    environ.update(system)
    environ[POD_ENV] = json.dumps(dict(pod_env), separators=(",", ":"))
    return environ


def pod_environ() -> dict[str, str]:
    """The container's env as its pod spec gave it (including what was kept from the host's loader)."""
    raw = os.environ.get(POD_ENV)
    if raw:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return {str(k): str(v) for k, v in decoded.items()}
    return {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "PYTHON"))}
