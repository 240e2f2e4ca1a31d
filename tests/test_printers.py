"""Pod status rules, ages and the server-side Tables, checked against what the Kubernetes printers produce."""

from __future__ import annotations

import copy
import doctest
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from labkit import kubestatus
from labkit.kubestatus import human_age, human_duration, is_pod_ready, pod_ready, pod_restarts, pod_status
from labkit.sandbox import printers, resources

NOW = datetime(2026, 11, 26, 16, 0, 0, tzinfo=UTC)


def ts(ago: timedelta) -> str:
    """An RFC 3339 timestamp ``ago`` before NOW."""
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- human_duration -----------------------------------------------------------------------------------------

MIN, HOUR, DAY, YEAR = 60, 3600, 86400, 365 * 86400


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-2, "<invalid>"),
        (-1.9, "0s"),  # under 2 s of clock skew counts as "now"
        (-1, "0s"),
        (0, "0s"),
        (0.9, "0s"),
        (1, "1s"),
        (45, "45s"),
        (59, "59s"),
        (60, "60s"),
        (119, "119s"),
        (119.99, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (330, "5m30s"),
        (599, "9m59s"),
        (600, "10m"),
        (601, "10m"),
        (3599, "59m"),
        (3600, "60m"),
        (3 * HOUR - 1, "179m"),
        (3 * HOUR, "3h"),
        (3 * HOUR + 5 * MIN, "3h5m"),
        (3 * HOUR + 5 * MIN + 59, "3h5m"),
        (8 * HOUR - 1, "7h59m"),
        (8 * HOUR, "8h"),
        (47 * HOUR + 59 * MIN, "47h"),
        (2 * DAY, "2d"),
        (2 * DAY + 5 * HOUR, "2d5h"),
        (8 * DAY - 1, "7d23h"),
        (8 * DAY, "8d"),
        (400 * DAY, "400d"),
        (2 * YEAR - 1, "729d"),
        (2 * YEAR, "2y"),
        (2 * YEAR + 10 * DAY, "2y10d"),
        (8 * YEAR - 1, "7y364d"),
        (8 * YEAR, "8y"),
        (20 * YEAR + 100 * DAY, "20y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_age() -> None:
    assert human_age(ts(timedelta(hours=1)), NOW) == "60m"
    assert human_age("2026-11-26T15:59:15.123456Z", NOW) == "44s"
    assert human_age(None, NOW) == "<unknown>"
    assert human_age("", NOW) == "<unknown>"
    assert human_age(ts(timedelta(seconds=30)), NOW.replace(tzinfo=None)) == "30s"  # naive means UTC


# --- pods ---------------------------------------------------------------------------------------------------


def container_status(
    name: str = "app", *, ready: bool = True, restarts: int = 0, **state: Any
) -> dict[str, Any]:
    """A containerStatus with every field the Python client requires; ``state`` defaults to running."""
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "image": f"example/{name}:1",
        "imageID": f"example/{name}@sha256:{'0' * 64}",
        "started": ready,
        "state": state or {"running": {"startedAt": ts(timedelta(minutes=10))}},
        "lastState": {},
    }


def make_pod(
    *statuses: dict[str, Any], phase: str = "Running", ready: bool | None = None, **extra: Any
) -> dict:
    """A pod with one container per status; the Ready condition follows the containers unless given."""
    names = [s["name"] for s in statuses] or ["app"]
    all_ready = all(s["ready"] for s in statuses) if ready is None else ready
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "details-v1-79f774bdb9-x2x7k",
            "namespace": "default",
            "uid": "0b6a4f58-3f7e-4bd0-9c2a-6d6c6c1f3f10",
            "resourceVersion": "42",
            "creationTimestamp": ts(timedelta(hours=1)),
            "labels": {"app": "details", "version": "v1"},
        },
        "spec": {
            "containers": [{"name": n, "image": f"example/{n}:1"} for n in names],
            "nodeName": "sandbox",
        },
        "status": {
            "phase": phase,
            "podIP": "127.0.1.7",
            "podIPs": [{"ip": "127.0.1.7"}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True" if all_ready else "False"},
            ],
            "containerStatuses": list(statuses),
        },
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        pod[section][field] = value
    return pod


def with_init(pod: dict[str, Any], specs: list[dict[str, Any]], statuses: list[dict[str, Any]]) -> dict:
    pod = copy.deepcopy(pod)
    pod["spec"]["initContainers"] = specs
    pod["status"]["initContainerStatuses"] = statuses
    pod["status"]["conditions"][0]["status"] = "False"
    return pod


RUNNING = make_pod(container_status())


def test_running_pod() -> None:
    assert pod_status(RUNNING) == "Running"
    assert pod_ready(RUNNING) == (1, 1)
    assert is_pod_ready(RUNNING)
    assert pod_restarts(RUNNING, NOW) == (0, "0")


def test_crash_loop_back_off() -> None:
    waiting = {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}
    }
    pod = make_pod(container_status(ready=False, restarts=3, **waiting))
    assert pod_status(pod) == "CrashLoopBackOff"
    assert pod_ready(pod) == (0, 1)
    assert not is_pod_ready(pod)


@pytest.mark.parametrize(
    ("terminated", "status"),
    [
        ({"exitCode": 1, "reason": "Error"}, "Error"),
        ({"exitCode": 0, "reason": "Completed"}, "Completed"),
        ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
        ({"exitCode": 143, "signal": 15}, "Signal:15"),
        ({"exitCode": 2}, "ExitCode:2"),
        ({}, "ExitCode:0"),
    ],
)
def test_terminated_container(terminated: dict[str, Any], status: str) -> None:
    pod = make_pod(container_status(ready=False, terminated=terminated), phase="Running")
    assert pod_status(pod) == status


def test_succeeded_pod_shows_completed() -> None:
    done = {"exitCode": 0, "reason": "Completed"}
    pod = make_pod(container_status(ready=False, terminated=done), phase="Succeeded")
    assert pod_status(pod) == "Completed"


def test_image_pull_errors() -> None:
    pod = make_pod(container_status(ready=False, waiting={"reason": "ErrImagePull"}), phase="Pending")
    assert pod_status(pod) == "ErrImagePull"
    pod = make_pod(container_status(ready=False, waiting={"reason": "ImagePullBackOff"}), phase="Pending")
    assert pod_status(pod) == "ImagePullBackOff"


def test_waiting_without_reason_keeps_phase() -> None:
    pod = make_pod(container_status(ready=False, waiting={}), phase="Pending")
    assert pod_status(pod) == "Pending"
    assert pod_status({"status": {"phase": "Pending"}}) == "Pending"
    assert pod_status({}) == ""


def test_first_container_wins_because_statuses_are_read_backwards() -> None:
    crashing = container_status("app", ready=False, waiting={"reason": "CrashLoopBackOff"})
    pulling = container_status("sidecar", ready=False, waiting={"reason": "ErrImagePull"})
    assert pod_status(make_pod(crashing, pulling)) == "CrashLoopBackOff"
    assert pod_status(make_pod(pulling, crashing)) == "ErrImagePull"


def test_completed_container_with_another_running() -> None:
    done = container_status("job", ready=False, terminated={"exitCode": 0, "reason": "Completed"})
    running = container_status("proxy")
    assert pod_status(make_pod(done, running, ready=True)) == "Running"
    assert pod_status(make_pod(done, running, ready=False)) == "NotReady"
    assert pod_ready(make_pod(done, running)) == (1, 2)


def test_running_but_not_ready_container_is_not_counted() -> None:
    pod = make_pod(container_status(ready=False))
    assert pod_status(pod) == "Running"
    assert pod_ready(pod) == (0, 1)


def test_status_reason_overrides_phase() -> None:
    pod = make_pod(
        container_status(ready=False, terminated={"exitCode": 0}), phase="Failed", status__reason="Evicted"
    )
    pod["status"]["containerStatuses"] = []
    assert pod_status(pod) == "Evicted"


def test_scheduling_gated() -> None:
    pod = {
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]}
    }
    assert pod_status(pod) == "SchedulingGated"


def test_terminating() -> None:
    pod = make_pod(container_status(), metadata__deletionTimestamp=ts(timedelta(seconds=3)))
    assert pod_status(pod) == "Terminating"
    lost = make_pod(
        container_status(), metadata__deletionTimestamp=ts(timedelta(0)), status__reason="NodeLost"
    )
    assert pod_status(lost) == "Unknown"
    done = container_status(ready=False, terminated={"exitCode": 0, "reason": "Completed"})
    finished = make_pod(done, phase="Succeeded", metadata__deletionTimestamp=ts(timedelta(0)))
    assert pod_status(finished) == "Completed"  # a final phase is not "Terminating"


INIT_SPECS = [{"name": "init-a", "image": "busybox"}, {"name": "init-b", "image": "busybox"}]


def test_init_progress() -> None:
    pending = make_pod(container_status(ready=False, waiting={"reason": "PodInitializing"}), phase="Pending")
    done_a = container_status("init-a", ready=False, terminated={"exitCode": 0, "reason": "Completed"})
    running_b = container_status("init-b", ready=False)
    waiting_b = container_status("init-b", ready=False, waiting={"reason": "PodInitializing"})
    assert pod_status(with_init(pending, INIT_SPECS, [done_a, running_b])) == "Init:1/2"
    assert pod_status(with_init(pending, INIT_SPECS, [done_a, waiting_b])) == "Init:1/2"
    assert pod_status(with_init(pending, INIT_SPECS, [])) == "PodInitializing"  # nothing reported yet


def test_init_failures() -> None:
    pending = make_pod(container_status(ready=False, waiting={"reason": "PodInitializing"}), phase="Pending")
    crash = container_status("init-a", ready=False, restarts=4, waiting={"reason": "CrashLoopBackOff"})
    assert pod_status(with_init(pending, INIT_SPECS, [crash])) == "Init:CrashLoopBackOff"
    error = container_status("init-a", ready=False, terminated={"exitCode": 1, "reason": "Error"})
    assert pod_status(with_init(pending, INIT_SPECS, [error])) == "Init:Error"
    code = container_status("init-a", ready=False, terminated={"exitCode": 3})
    assert pod_status(with_init(pending, INIT_SPECS, [code])) == "Init:ExitCode:3"
    signal = container_status("init-a", ready=False, terminated={"exitCode": 137, "signal": 9})
    assert pod_status(with_init(pending, INIT_SPECS, [signal])) == "Init:Signal:9"
    # While initialising, RESTARTS counts the init containers' restarts.
    assert pod_restarts(with_init(pending, INIT_SPECS, [crash]), NOW) == (4, "4")


def test_sidecar_init_container_counts_as_a_container() -> None:
    specs = [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]
    sidecar = container_status("proxy", restarts=1)
    sidecar["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": ts(timedelta(minutes=7))}}
    pod = with_init(make_pod(container_status(restarts=2)), specs, [sidecar])
    pod["status"]["conditions"][0]["status"] = "True"
    assert pod_status(pod) == "Running"
    assert pod_ready(pod) == (2, 2)
    assert pod_restarts(pod, NOW) == (3, "3 (7m ago)")


def test_restarts_cell() -> None:
    app = container_status(restarts=1)
    app["lastState"] = {
        "terminated": {"exitCode": 137, "reason": "Error", "finishedAt": ts(timedelta(seconds=5))}
    }
    assert pod_restarts(make_pod(app), NOW) == (1, "1 (5s ago)")
    # The most recent termination of any container is the one shown.
    other = container_status("proxy", restarts=2)
    other["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": ts(timedelta(minutes=5, seconds=30))}}
    assert pod_restarts(make_pod(app, other), NOW) == (3, "3 (5s ago)")
    # Unknown finish time: the count alone.
    unknown = container_status(restarts=2)
    unknown["lastState"] = {"terminated": {"exitCode": 1}}
    assert pod_restarts(make_pod(unknown), NOW) == (2, "2")


def test_crafted_pods_are_valid_for_the_python_client() -> None:
    """The sample pods are shaped like real ones: the strict client model accepts them."""
    pods = [
        RUNNING,
        make_pod(container_status(ready=False, restarts=3, waiting={"reason": "CrashLoopBackOff"})),
    ]
    for pod in pods:
        model = client.V1Pod.from_dict(pod)
        assert model.metadata.name == pod["metadata"]["name"]


# --- tables -------------------------------------------------------------------------------------------------

EXPECTED_COLUMNS = {
    "pods": (
        ["Name", "Ready", "Status", "Restarts", "Age"],
        ["IP", "Node", "Nominated Node", "Readiness Gates"],
    ),
    "deployments": (
        ["Name", "Ready", "Up-to-date", "Available", "Age"],
        ["Containers", "Images", "Selector"],
    ),
    "replicasets": (["Name", "Desired", "Current", "Ready", "Age"], ["Containers", "Images", "Selector"]),
    "services": (["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"], ["Selector"]),
    "endpoints": (["Name", "Endpoints", "Age"], []),
    "events": (
        ["Last Seen", "Type", "Reason", "Object", "Message"],
        ["Subobject", "Source", "First Seen", "Count", "Name"],
    ),
    "namespaces": (["Name", "Status", "Age"], []),
    "serviceaccounts": (["Name", "Secrets", "Age"], []),
    "configmaps": (["Name", "Data", "Age"], []),
}

TEMPLATE = {
    "metadata": {"labels": {"app": "reviews", "version": "v1"}},
    "spec": {
        "containers": [
            {"name": "reviews", "image": "bookinfo/reviews:1"},
            {"name": "proxy", "image": "envoy"},
        ]
    },
}


def meta(name: str, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "resourceVersion": "7",
        "creationTimestamp": ts(timedelta(minutes=90)),
        **more,
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "pods": RUNNING,
    "deployments": {
        "metadata": meta("reviews-v1", generation=2),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"version": "v1", "app": "reviews"}},
            "template": TEMPLATE,
        },
        "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2},
    },
    "replicasets": {
        "metadata": meta("reviews-v1-5b6c"),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "reviews"}}, "template": TEMPLATE},
        "status": {"replicas": 3, "readyReplicas": 1},
    },
    "services": {
        "metadata": meta("ratings"),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.12",
            "clusterIPs": ["10.96.0.12"],
            "ports": [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
            "selector": {"app": "ratings"},
        },
    },
    "endpoints": {
        "metadata": meta("ratings"),
        "subsets": [
            {
                "addresses": [{"ip": f"127.0.2.{i}"} for i in range(1, 5)],
                "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
            }
        ],
    },
    "events": {
        "metadata": meta("details-v1-x2x7k.17f1"),
        "involvedObject": {
            "kind": "Pod",
            "name": "details-v1-x2x7k",
            "namespace": "default",
            "fieldPath": "spec.containers{details}",
        },
        "reason": "BackOff",
        "message": "Back-off restarting failed container details\n",
        "type": "Warning",
        "source": {"component": "kubelet", "host": "sandbox"},
        "firstTimestamp": ts(timedelta(minutes=12)),
        "lastTimestamp": ts(timedelta(seconds=40)),
        "count": 5,
    },
    "namespaces": {"metadata": meta("bookinfo"), "status": {"phase": "Active"}},
    "serviceaccounts": {"metadata": meta("default"), "secrets": [{"name": "default-token"}]},
    "configmaps": {"metadata": meta("settings"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
}

EXPECTED_CELLS: dict[str, list[Any]] = {
    "pods": [
        "details-v1-79f774bdb9-x2x7k",
        "1/1",
        "Running",
        "0",
        "60m",
        "127.0.1.7",
        "sandbox",
        "<none>",
        "<none>",
    ],
    "deployments": [
        "reviews-v1",
        "2/3",
        3,
        2,
        "90m",
        "reviews,proxy",
        "bookinfo/reviews:1,envoy",
        "app=reviews,version=v1",
    ],
    "replicasets": [
        "reviews-v1-5b6c",
        3,
        3,
        1,
        "90m",
        "reviews,proxy",
        "bookinfo/reviews:1,envoy",
        "app=reviews",
    ],
    "services": ["ratings", "ClusterIP", "10.96.0.12", "<none>", "9080/TCP", "90m", "app=ratings"],
    "endpoints": ["ratings", "127.0.2.1:9080,127.0.2.2:9080,127.0.2.3:9080 + 1 more...", "90m"],
    "events": [
        "40s",
        "Warning",
        "BackOff",
        "pod/details-v1-x2x7k",
        "spec.containers{details}",
        "kubelet, sandbox",
        "Back-off restarting failed container details",
        "12m",
        5,
        "details-v1-x2x7k.17f1",
    ],
    "namespaces": ["bookinfo", "Active", "90m"],
    "serviceaccounts": ["default", 1, "90m"],
    "configmaps": ["settings", 3, "90m"],
}


@pytest.mark.parametrize("plural", sorted(EXPECTED_COLUMNS))
def test_table_shape(plural: str) -> None:
    resource = next(r for r in resources.RESOURCES if r.plural == plural)
    table = printers.to_table(resource, [SAMPLES[plural]], NOW, "123")
    assert (table["kind"], table["apiVersion"], table["metadata"]) == (
        "Table",
        "meta.k8s.io/v1",
        {"resourceVersion": "123"},
    )
    columns = table["columnDefinitions"]
    for column in columns:
        assert set(column) == {"name", "type", "format", "description", "priority"}
        assert column["type"] in ("string", "integer")
    always, wide = EXPECTED_COLUMNS[plural]
    assert [c["name"] for c in columns if c["priority"] == 0] == always
    assert [c["name"] for c in columns if c["priority"] == 1] == wide
    assert [c["name"] for c in columns if c["format"] == "name"] == ["Name"]
    (row,) = table["rows"]
    assert row["cells"] == EXPECTED_CELLS[plural]
    assert len(row["cells"]) == len(columns)
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert row["object"]["metadata"] == SAMPLES[plural]["metadata"]
    assert row["object"]["metadata"] is not SAMPLES[plural]["metadata"]  # a copy, not the stored object
    client.V1ObjectMeta.from_dict(row["object"]["metadata"])  # well-formed for the strict client


def test_every_registered_kind_prints() -> None:
    for resource in resources.RESOURCES:
        table = printers.to_table(resource, [SAMPLES.get(resource.plural, {"metadata": meta("x")})], NOW, "1")
        assert len(table["rows"][0]["cells"]) == len(table["columnDefinitions"])


def test_unknown_kind_prints_name_and_age() -> None:
    widget = resources.Resource("widgets", "Widget", group="example.com")
    table = printers.to_table(widget, [{"metadata": meta("w1")}], NOW, "1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"] == ["w1", "90m"]


def test_empty_list() -> None:
    table = printers.to_table(resources.lookup("", "pods"), [], NOW, "5")
    assert table["rows"] == []
    assert len(table["columnDefinitions"]) == 9


def test_pod_table_rows() -> None:
    crash = container_status(ready=False, restarts=2, waiting={"reason": "CrashLoopBackOff"})
    crash["lastState"] = {
        "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ts(timedelta(seconds=20))}
    }
    crashing = make_pod(crash)
    crashing["spec"]["readinessGates"] = [{"conditionType": "example.com/gate"}]
    crashing["status"]["conditions"].append({"type": "example.com/gate", "status": "True"})
    done = make_pod(
        container_status(ready=False, terminated={"exitCode": 0, "reason": "Completed"}), phase="Succeeded"
    )
    done["status"].pop("podIPs")
    del done["spec"]["nodeName"]
    table = printers.to_table(resources.lookup("", "pods"), [crashing, done], NOW, "9")
    first, second = table["rows"]
    assert first["cells"][1:4] == ["0/1", "CrashLoopBackOff", "2 (20s ago)"]
    assert first["cells"][8] == "1/1"
    assert "conditions" not in first
    assert second["cells"][2] == "Completed"
    assert second["cells"][5:7] == ["127.0.1.7", "<none>"]  # podIP alone still shows
    assert second["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]


def test_service_variants() -> None:
    service = resources.lookup("", "services")
    node_port = {
        "metadata": meta("productpage"),
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.9",
            "externalIPs": ["192.0.2.1"],
            "ports": [{"port": 9080, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}],
        },
    }
    balancer = {"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.3"]}}
    headless = {"metadata": meta("db"), "spec": {"clusterIP": "None"}}
    external = {"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "example.com"}}
    rows = printers.to_table(service, [node_port, balancer, headless, external], NOW, "1")["rows"]
    assert rows[0]["cells"][1:5] == ["NodePort", "10.96.0.9", "192.0.2.1", "9080:30080/TCP,53/UDP"]
    assert rows[0]["cells"][6] == "<none>"
    assert rows[1]["cells"][1:5] == ["LoadBalancer", "10.96.0.3", "<pending>", "<none>"]
    assert rows[2]["cells"][1:4] == ["ClusterIP", "None", "<none>"]
    assert rows[3]["cells"][1:4] == ["ExternalName", "<none>", "example.com"]


def test_endpoints_variants() -> None:
    assert printers.format_endpoints({}) == "<none>"
    two = {"subsets": [{"addresses": [{"ip": "127.0.2.1"}, {"ip": "127.0.2.2"}], "ports": [{"port": 9080}]}]}
    assert printers.format_endpoints(two) == "127.0.2.1:9080,127.0.2.2:9080"
    headless = {"subsets": [{"addresses": [{"ip": "127.0.2.1"}]}]}
    assert printers.format_endpoints(headless) == "127.0.2.1"
    two_ports = {
        "subsets": [{"addresses": [{"ip": "127.0.2.1"}, {"ip": "::1"}], "ports": [{"port": 1}, {"port": 2}]}]
    }
    assert printers.format_endpoints(two_ports) == "127.0.2.1:1,[::1]:1,127.0.2.1:2 + 1 more..."


def test_event_variants() -> None:
    events = resources.lookup("", "events")
    new_style = {
        "metadata": meta("e2"),
        "involvedObject": {"kind": "Deployment", "name": "reviews-v1"},
        "reason": "ScalingReplicaSet",
        "message": "Scaled up",
        "type": "Normal",
        "eventTime": "2026-11-26T15:58:00.000000Z",
        "reportingController": "deployment-controller",
    }
    series = {
        **new_style,
        "metadata": meta("e3"),
        "series": {"count": 4, "lastObservedTime": "2026-11-26T15:59:30.000000Z"},
    }
    cluster = {"metadata": meta("e4"), "involvedObject": {"kind": "Node"}, "reason": "Starting"}
    rows = printers.to_table(events, [new_style, series, cluster], NOW, "1")["rows"]
    assert rows[0]["cells"] == [
        "2m",
        "Normal",
        "ScalingReplicaSet",
        "deployment/reviews-v1",
        "",
        "deployment-controller",
        "Scaled up",
        "2m",
        1,
        "e2",
    ]
    assert [rows[1]["cells"][i] for i in (0, 7, 8)] == ["30s", "2m", 4]
    assert rows[2]["cells"][:4] == ["<unknown>", "", "Starting", "node"]


def test_label_selector_formatting() -> None:
    selector = {
        "matchLabels": {"version": "v1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "app", "operator": "Exists"},
            {"key": "zone", "operator": "NotIn", "values": ["b", "a"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert (
        printers.format_label_selector(selector)
        == "app,!canary,tier in (back,front),version=v1,zone notin (a,b)"
    )
    assert printers.format_label_selector(None) == "<none>"
    assert printers.format_label_selector({}) == "<none>"
    assert printers.format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert printers.format_labels({}) == "<none>"


def test_deployment_defaults() -> None:
    bare = {"metadata": meta("bare"), "spec": {"template": TEMPLATE}}
    cells = printers.to_table(resources.lookup("apps", "deployments"), [bare], NOW, "1")["rows"][0]["cells"]
    assert cells[1:4] == ["0/1", 0, 0]  # spec.replicas defaults to 1
    assert cells[7] == ""  # the deployment printer shows an empty selector as nothing


def test_summary_is_consistent() -> None:
    summary = kubestatus.summarize_pod(RUNNING)
    assert (summary.status, summary.ready, summary.total, summary.restarts) == ("Running", 1, 1, 0)
    assert summary.last_restart is None


@pytest.mark.parametrize("module", [kubestatus, printers], ids=lambda m: m.__name__)
def test_docstring_examples(module: object) -> None:
    failed, attempted = doctest.testmod(module)  # type: ignore[arg-type]
    assert attempted and not failed
