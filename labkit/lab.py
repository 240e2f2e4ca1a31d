"""The :class:`Lab`: one object with kubectl's verbs and the lesson's, for notebooks. Create it with :func:`connect`.

A Lab is a :class:`~labkit.client.Client` (the connection, pods, exec, the pod watch) with the features' verbs on
top, each delegating to its module: :mod:`labkit.chaos` (``kill``, ``delete_pods``), :mod:`labkit.observe`
(``record``, ``wait_ready``, ``live_pods``), :mod:`labkit.page` (``page``) and :mod:`labkit.traffic`
(``traffic``), :mod:`labkit.deploy` (``apply``, ``label``, ``pod_ip``, ``owners``, ``delete_deployment``,
``wait_rollout``, ``wait_deleted``) and :mod:`labkit.mesh` (``enable_injection``, ``apply_rule``, ``rules``,
``remove_rules``, ``access_log``, ``mesh_requests``). Nothing in labkit imports this module back: features take a
Client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import chaos, client, deploy, mesh, observe, workshop
from .client import POD_COLUMNS, Client
from .page import ProductPage, fetch_page
from .records import ExecResult
from .traffic import Traffic

if TYPE_CHECKING:
    import ipywidgets

    from .records import ApplyResult, ChaosAction, LabelResult

__all__ = ["POD_COLUMNS", "ExecResult", "Lab", "connect"]

Selector = str | Mapping[str, str]


class Lab(Client):
    """A connection to one cluster and one lab namespace, with kubectl's verbs and the lesson's.

    Example:
        >>> lab = labkit.connect()
        >>> lab.pods("app=details")
        >>> lab.request("http://ratings:9080/ratings/7").stdout
        '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
    """

    # -- the rest of the library, as verbs on the Lab (each delegates to its module)
    def kill(self, selector: Selector, process: str = "ruby", **options: Any) -> ChaosAction:
        """Kill a process in one, all or some pods (the lesson's ``pkill ruby``); see :func:`labkit.chaos.kill`.

        Example:
            >>> lab.kill("app=details", "ruby", mode="one")
        """
        return chaos.kill(self, selector, process, **options)

    def delete_pods(self, selector: Selector, **options: Any) -> ChaosAction:
        """Delete pods (their ReplicaSet makes new ones); see :func:`labkit.chaos.delete_pods`."""
        return chaos.delete_pods(self, selector, **options)

    def record(self, selector: Selector | None = None, **options: Any) -> observe.Recorder:
        """A started :class:`labkit.observe.Recorder` of the pods' changes (use it as a context manager)."""
        return observe.Recorder(self, selector, **options).start()

    def wait_ready(self, selector: Selector | None = None, **options: Any) -> pd.DataFrame:
        """Wait until the matching pods are Ready, watching, with progress; see :func:`labkit.observe.wait_ready`."""
        return observe.wait_ready(self, selector, **options)

    def live_pods(self, selector: Selector | None = None, **options: Any) -> ipywidgets.HTML:
        """A pods table widget that updates live; see :func:`labkit.observe.live_pods`."""
        return observe.live_pods(self, selector, **options)

    def page(self, **options: Any) -> ProductPage:
        """Fetch the productpage and tell which sections are healthy (``user="jason"`` signs in first); see
        :func:`labkit.page.fetch_page`."""
        return fetch_page(self, **options)

    def traffic(self, rate: float = 5.0, **options: Any) -> Traffic:
        """A (not yet started) traffic generator against the productpage; see :class:`labkit.traffic.Traffic`."""
        return Traffic(self, rate=rate, **options)

    # -- versions: apply, label, release, roll back (labkit.deploy)
    def apply(self, source: str | os.PathLike[str], **options: Any) -> ApplyResult:
        """``kubectl apply [-l SELECTOR] -f SOURCE`` and wait for the rollout; see :func:`labkit.deploy.apply`.

        Example:
            >>> lab.apply("reviews-v2-v3.yaml", selector="app=reviews_test,version=v2",
            ...           replace={"app: reviews": "app: reviews_test"})
            deployment.apps/reviews-v2 created
        """
        return deploy.apply(self, source, **options)

    def label(self, target: Selector, labels: Mapping[str, str | None], **options: Any) -> LabelResult:
        """``kubectl label pods -l SELECTOR key=value [--overwrite]``; see :func:`labkit.deploy.label`.

        Example:
            >>> lab.label("version=v2", {"app": "reviews"}, overwrite=True)
        """
        return deploy.label(self, target, labels, **options)

    def pod_ip(self, selector: Selector, **options: Any) -> str:
        """The first matching pod's IP (``{.items[0].status.podIP}``); see :func:`labkit.deploy.pod_ip`."""
        return deploy.pod_ip(self, selector, **options)

    def owners(self, selector: Selector | None = None, **options: Any) -> pd.DataFrame:
        """The pods with their controller (a released pod has none); see :func:`labkit.deploy.owners`."""
        return deploy.owners(self, selector, **options)

    def delete_deployment(self, name: str, **options: Any) -> str:
        """``kubectl delete deployment NAME``, its pods gone; see :func:`labkit.deploy.delete_deployment`."""
        return deploy.delete_deployment(self, name, **options)

    def wait_rollout(self, deployment: str, **options: Any) -> pd.DataFrame:
        """``kubectl rollout status deploy/NAME``; see :func:`labkit.deploy.wait_rollout`."""
        return deploy.wait_rollout(self, deployment, **options)

    def wait_deleted(self, selector: Selector, **options: Any) -> int:
        """Wait until no pod matches ``selector``; see :func:`labkit.deploy.wait_deleted`."""
        return deploy.wait_deleted(self, selector, **options)

    # -- the mesh: Istio's sidecars and traffic rules (labkit.mesh)
    def enable_injection(self, **options: Any) -> mesh.Injection:
        """``kubectl label namespace NS istio-injection=enabled`` + ``kubectl rollout restart deployment``, then wait
        until every pod is 2/2 (with progress); see :func:`labkit.mesh.inject`.

        Example:
            >>> lab.enable_injection()
        """
        return mesh.inject(self, **options)

    def disable_injection(self, **options: Any) -> mesh.Injection:
        """Remove the injection label and restart: every pod back to 1/1; see :func:`labkit.mesh.uninject`."""
        return mesh.uninject(self, **options)

    def apply_rule(self, rule: Mapping[str, Any] | str | os.PathLike[str], **options: Any) -> mesh.RuleResult:
        """``kubectl apply -f`` for Istio rules: a dict, YAML text, a file or a sample's name; the result shows the
        equivalent command and YAML; see :func:`labkit.mesh.apply`.

        Example:
            >>> lab.apply_rule("virtual-service-reviews-test-v2.yaml")
        """
        return mesh.apply(self, rule, **options)

    def rules(self, **options: Any) -> pd.DataFrame:
        """``kubectl get vs,dr,gw`` as a DataFrame, routes in words; see :func:`labkit.mesh.rules`."""
        return mesh.rules(self, **options)

    def remove_rules(self, what: str | Mapping[str, Any] | os.PathLike[str] | None = None,
                     name: str | None = None, **options: Any) -> mesh.RemoveResult:
        """``kubectl delete -f FILE`` / ``kubectl delete virtualservice --all``; see :func:`labkit.mesh.remove`."""
        return mesh.remove(self, what, name, **options)

    def access_log(self, selector: str, **options: Any) -> pd.DataFrame:
        """``kubectl logs -l SELECTOR -c istio-proxy`` as rows; see :func:`labkit.mesh.access_log`."""
        return mesh.access_log(self, selector, **options)

    def mesh_requests(self, selector: str = "", **options: Any) -> pd.DataFrame:
        """``istio_requests_total`` summed by source, destination, version, code; see
        :func:`labkit.mesh.requests_total`."""
        return mesh.requests_total(self, selector, **options)

    def mesh_metrics(self, selector: str, name: str = "istio_requests_total", **options: Any) -> pd.DataFrame:
        """One metric's samples from the sidecars of the matching pods; see :func:`labkit.mesh.metrics`."""
        return mesh.metrics(self, selector, name, **options)

    def reset(self, lesson: str | int, **options: Any) -> workshop.ResetRecord:
        """Return the lab to the state ``lesson`` starts from (fresh pods, its objects); see
        :func:`labkit.workshop.reset`. ``dry_run=True`` says what it would do.

        Example:
            >>> lab.reset("04")
        """
        return workshop.reset(self, lesson, **options)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(*, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
            namespace: str | None = None, sandbox_dir: str | os.PathLike[str] | None = None,
            start: bool = True, productpage_url: str | None = None) -> Lab:
    """Connect to the embedded sandbox (the default) or to a cluster you name.

    A real cluster is used only when named: ``kubeconfig=``/``context=`` or the environment variables
    ``LABKIT_KUBECONFIG``/``LABKIT_CONTEXT`` (never silently the current context of ``~/.kube/config``).
    Otherwise the sandbox in ``sandbox_dir`` (``LABKIT_SANDBOX_DIR``, ``~/.labkit/sandbox``) is attached,
    or started in the background when none runs and ``start`` is true.

    Args:
        kubeconfig: a kubeconfig file of a real cluster (kind, minikube, a cloud cluster).
        context: a context in that kubeconfig (default: its current context).
        namespace: the lab namespace, where chaos is allowed (default: the context's namespace, or ``default``;
            also ``LABKIT_NAMESPACE``).
        sandbox_dir: the sandbox's state folder.
        start: start the sandbox if it is not running.
        productpage_url: where the host reaches productpage on a real cluster (the lesson's Ingress URL).

    Raises:
        ClusterUnreachable: no sandbox runs and ``start`` is false, or the cluster does not answer.
    """
    return client.connect(Lab, kubeconfig=kubeconfig, context=context, namespace=namespace,
                          sandbox_dir=sandbox_dir, start=start, productpage_url=productpage_url)
