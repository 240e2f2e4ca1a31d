"""labkit: test microservices in production on Kubernetes, from a notebook.

Example:
    >>> import labkit
    >>> lab = labkit.connect()              # the embedded sandbox, started if needed
    >>> lab.pods("app=details")             # kubectl get pods -l app=details, as a DataFrame
    >>> lab.request("http://ratings:9080/ratings/7").stdout

The library's layers (each imports only the layers below it; ``tests/test_layers.py`` and the import-linter
contract ``layers`` in pyproject.toml check it)::

    faces     cli, lessons, export,          commands, the tour, publishing,
              classroom, room                `labkit reset`/`progress`, the instructor's room page
    display   plots, widgets, experiment,    what notebooks show and run,
              checks                         the exercises' checks, solutions and progress file
    facade    lab                            Lab: one object, every verb, delegating below
    features  chaos, observe, traffic,       kill/delete, recorder and waits, traffic, the product page,
              page, deploy, mesh, workshop   apply, label, release and roll back versions, reset to a lesson
    core      client, records, progress,     connection, pods, exec, the one pod watch, the error boundary;
              report                         the records that cross modules (PodState, ChaosAction, recovery);
                                             what a kit posts to the instructor's room, in the background
    facts     kubestatus, bookinfo, errors   pod status as kubectl computes it, Bookinfo's facts, the errors
"""

from __future__ import annotations

from importlib import resources as _resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    ApiError,
    BadSelector,
    ClusterUnreachable,
    Conflict,
    ExecError,
    ExecTimeout,
    Forbidden,
    HypothesisFailed,
    LabkitError,
    NoPodsMatch,
    NotFound,
    SafetyError,
    WaitTimeout,
)

if TYPE_CHECKING:
    from .client import POD_COLUMNS
    from .lab import Lab, connect
    from .records import ExecResult

__version__ = "0.1.0"

# The library's heavy parts (pandas, the kubernetes client) load on first use: the sandbox's container processes
# import labkit.sandbox and must stay small and quick to start.
_LAZY = {"POD_COLUMNS": "client", "ExecResult": "records", "Lab": "lab", "connect": "lab"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")


def manifest_path(name: str) -> Path:
    """The path of a manifest shipped with labkit (``bookinfo.yaml``, ``reviews-v2-v3.yaml``, ``sleep.yaml``).

    The same files deploy on a real cluster: ``kubectl apply -f $(python -c "import labkit;
    print(labkit.manifest_path('bookinfo.yaml'))")``.
    """
    path = Path(str(_resources.files("labkit.sandbox") / "manifests" / name))
    if not path.exists():
        raise FileNotFoundError(f"labkit ships no manifest {name!r}; it has bookinfo.yaml, reviews-v2-v3.yaml and "
                                "sleep.yaml")
    return path


__all__ = [
    "POD_COLUMNS",
    "ApiError",
    "BadSelector",
    "ClusterUnreachable",
    "Conflict",
    "ExecError",
    "ExecResult",
    "ExecTimeout",
    "Forbidden",
    "HypothesisFailed",
    "Lab",
    "LabkitError",
    "NoPodsMatch",
    "NotFound",
    "SafetyError",
    "WaitTimeout",
    "__version__",
    "connect",
    "manifest_path",
]
