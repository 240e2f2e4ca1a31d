"""The embedded sandbox cluster: Bookinfo as real local processes behind a Kubernetes API.

Start it from Python (tests, notebooks)::

    from labkit.sandbox import Sandbox
    with Sandbox(time_scale=0.2) as sb:
        print(sb.kubeconfig, sb.productpage_url)

or from the shell with ``labkit sandbox up`` / ``status`` / ``down``.

The package is laid out like the cluster it stands in for: :mod:`.apiserver` serves the API over :mod:`.store`,
:mod:`.controllers` keep Deployments, ReplicaSets and Endpoints, :mod:`.kubelet` runs containers as processes
from :mod:`.images`, :mod:`.network` gives pods and Services their addresses, and :mod:`.toolbox` is what
``kubectl exec`` can run inside a pod. Container processes import this package, so nothing is imported here
until it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .control import Sandbox, SandboxError

__all__ = ["Sandbox", "SandboxError"]


def __getattr__(name: str) -> object:
    if name in ("Sandbox", "SandboxError", "_read_kubeconfig"):
        from . import control

        return getattr(control, name)
    raise AttributeError(f"module 'labkit.sandbox' has no attribute {name!r}")
