"""Other Kubernetes clients than kubectl and the official one: kr8s, lightkube and kubernetes_asyncio.

Each lists pods, watches them, runs a command in a pod and reads a pod's logs against the sandbox, as it would
against a real cluster. They exercise the wire where kubectl does not: kr8s asks ``/version/`` with a trailing
slash, kubernetes_asyncio writes booleans as ``True`` (``watch=True``, ``follow=True``), lightkube sends
``timestamps``/``sinceSeconds`` from typed parameters.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Kubectl
from helpers import eventually

from labkit.sandbox import Sandbox

NGINX = "web"
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (.*)$")
READY_LINE = "/docker-entrypoint.sh: Configuration complete; ready for start up"


@pytest.fixture(scope="module")
def nginx(sandbox: Sandbox, kubectl: Kubectl) -> Iterator[str]:
    """An nginx pod (``kubectl run web --image=nginx``) whose start-up lines are in its log."""
    kubectl("run", NGINX, "--image=nginx")
    kubectl("wait", "--for=condition=Ready", f"pod/{NGINX}", "--timeout=60s")
    eventually(lambda: READY_LINE in kubectl("logs", NGINX).stdout, what="nginx's start-up lines in its log")
    yield NGINX
    kubectl("delete", "pod", NGINX, "--wait=false")


def sleep_pod(kubectl: Kubectl) -> str:
    return kubectl("get", "pods", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout


# --------------------------------------------------------------------------------------------- kr8s


def test_kr8s_lists_watches_execs_and_reads_logs(ready_sandbox: Sandbox, kubectl: Kubectl, nginx: str) -> None:
    import kr8s
    from kr8s.objects import Pod

    api = kr8s.api(kubeconfig=str(ready_sandbox.kubeconfig))
    assert api.version()["major"] == "1"  # GET /version/
    names = {p.name for p in kr8s.get("pods", namespace="default", api=api)}
    assert nginx in names and any(n.startswith("details-v1-") for n in names)
    for event, obj in api.watch("pods", namespace="default", field_selector=f"metadata.name={nginx}"):
        assert (event, obj.name) == ("ADDED", nginx)
        break
    sleeper = Pod.get(sleep_pod(kubectl), namespace="default", api=api)
    done = sleeper.exec(["echo", "hello", "from", "kr8s"])
    assert done.stdout.decode() == "hello from kr8s\n" and done.returncode == 0
    web = Pod.get(nginx, namespace="default", api=api)
    assert READY_LINE in list(web.logs())
    stamped = list(web.logs(timestamps=True))
    assert all(STAMPED.match(line) for line in stamped), stamped
    assert READY_LINE in [STAMPED.match(line).group(1) for line in stamped]  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- lightkube


def test_lightkube_lists_watches_execs_and_reads_logs(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                      nginx: str) -> None:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Pod

    client = Client(config=KubeConfig.from_file(str(ready_sandbox.kubeconfig)))
    names = {p.metadata.name for p in client.list(Pod, namespace="default") if p.metadata}
    assert nginx in names
    for event, pod in client.watch(Pod, namespace="default", fields={"metadata.name": nginx}):
        assert event == "ADDED" and pod.metadata is not None and pod.metadata.name == nginx
        break
    done = client.exec(sleep_pod(kubectl), namespace="default", command=["echo", "hi", "lightkube"],
                       stdout=True, stderr=True)
    assert done.stdout == "hi lightkube\n" and done.exit_code == 0
    lines = [line.rstrip("\n") for line in client.log(nginx, namespace="default")]
    assert READY_LINE in lines
    recent = [line.rstrip("\n") for line in client.log(nginx, namespace="default", since=3600, timestamps=True)]
    assert [STAMPED.match(line).group(1) for line in recent if STAMPED.match(line)] == lines  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- kubernetes_asyncio


def test_kubernetes_asyncio_lists_watches_execs_and_reads_logs(ready_sandbox: Sandbox, kubectl: Kubectl,
                                                               nginx: str) -> None:
    from kubernetes_asyncio import client, config, watch
    from kubernetes_asyncio.stream import WsApiClient

    sleeper = sleep_pod(kubectl)

    async def scenario() -> None:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(ready_sandbox.kubeconfig), client_configuration=cfg)
        async with client.ApiClient(configuration=cfg) as api_client:
            v1 = client.CoreV1Api(api_client)
            pods = await v1.list_namespaced_pod("default")
            assert nginx in {p.metadata.name for p in pods.items}
            # Watch().stream sends watch=True (a capital T): a server that took only "true" would answer a List.
            w = watch.Watch()
            async with w.stream(v1.list_namespaced_pod, "default", field_selector=f"metadata.name={nginx}",
                                timeout_seconds=30) as stream:
                async for event in stream:
                    assert event["type"] == "ADDED" and event["object"].metadata.name == nginx
                    w.stop()
                    break
            text = await v1.read_namespaced_pod_log(nginx, "default", timestamps=True, since_seconds=3600)
            assert READY_LINE in [STAMPED.match(line).group(1) for line in text.splitlines()]  # type: ignore[union-attr]
            # follow=True (capital T) streams: the start-up lines come first, then the connection stays open.
            resp: Any = await v1.read_namespaced_pod_log(nginx, "default", follow=True, _preload_content=False)
            got = b""
            while READY_LINE.encode() not in got:
                got += await asyncio.wait_for(resp.content.readline(), 30)
            resp.close()
        async with WsApiClient(configuration=cfg) as ws_client:
            command: Any = ["echo", "hi", "asyncio"]  # typed as str in the client, sent as repeated params
            out = await client.CoreV1Api(ws_client).connect_get_namespaced_pod_exec(
                sleeper, "default", command=command, stderr=True, stdin=False, stdout=True,
                tty=False)
            assert out == "hi asyncio\n"

    asyncio.run(scenario())
