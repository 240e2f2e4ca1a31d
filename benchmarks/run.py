"""labkit's benchmarks: the figures the README reports, measured on the embedded sandbox.

    python benchmarks/run.py            # everything, results in benchmarks/results/latest.json
    python benchmarks/run.py up exec    # a subset
    python benchmarks/run.py scale      # cost per pod: 13, ~100, ~300 pods; up with and without the zygote
    python benchmarks/run.py mesh       # Istio: up with every pod meshed, two sidecars' latency, split, faults

Each benchmark starts its own sandbox in a temporary folder and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.sandbox.state import descendants, memory_kib

if TYPE_CHECKING:
    from labkit.records import PodState

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench_up(runs: int = 5) -> dict[str, Any]:
    """`labkit sandbox up` wall time to 13 pods Ready, then memory of the whole sandbox."""
    times, mem = [], []
    for _ in range(runs):
        d = tempfile.mkdtemp(prefix="labkit-bench-up-")
        env = {**os.environ, "LABKIT_SANDBOX_DIR": d}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "up"], env=env, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - t0)
        info = json.loads((Path(d) / "state.json").read_text())
        time.sleep(1.0)  # let start-up garbage settle before measuring memory
        pids = descendants(info["pid"]) | {info["pid"]}
        mem.append({**memory_kib(pids), "processes": len(pids)})
        subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "down"], env=env, check=True,
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
    return {
        "up_seconds": [round(t, 3) for t in times],
        "up_median_s": round(median(times), 3),
        "memory_pss_mb_median": round(median([m["pss_kib"] for m in mem]) / 1024, 1),
        "memory_rss_mb_median": round(median([m["rss_kib"] for m in mem]) / 1024, 1),
        "processes": mem[0]["processes"],
    }


def _sandbox(time_scale: float = 1.0) -> Any:
    from labkit.sandbox import Sandbox

    return Sandbox(tempfile.mkdtemp(prefix="labkit-bench-"), time_scale=time_scale).start()


def bench_restart() -> dict[str, Any]:
    """Kill one container at a time (first restart, time scale 1): kill -> Ready again, and the degraded window."""
    import labkit

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        from kubernetes import watch

        backs: list[float] = []
        for app, proc in (("details", "ruby"), ("ratings", "node"), ("reviews", "java"), ("productpage", "gunicorn")):
            for pod in lab.pod_names(f"app={app}"):
                w = watch.Watch()
                t0 = time.perf_counter()
                lab.exec(pod, ["pkill", proc])
                down_seen = False
                for ev in w.stream(lab.core.list_namespaced_pod, "default", field_selector=f"metadata.name={pod}",
                                   timeout_seconds=20):
                    cs = ev["object"].status.container_statuses[0]
                    if not cs.ready:
                        down_seen = True
                    elif down_seen and cs.restart_count >= 1:
                        backs.append(time.perf_counter() - t0)
                        w.stop()
        # The degraded page: kill details everywhere and watch the host URL until it is whole again.
        from labkit import kubestatus  # noqa: F401  (keeps the import cost out of the window)

        url = sb.productpage_url
        sb2 = _sandbox(1.0)
        lab2 = labkit.connect(sandbox_dir=sb2.dir)
        for pod in lab2.pod_names("app=details"):
            lab2.exec(pod, ["pkill", "ruby"])
        t0 = time.perf_counter()
        degraded_until = 0.0
        while time.perf_counter() - t0 < 5:
            page = urllib.request.urlopen(sb2.productpage_url, timeout=5).read().decode()
            if "Error fetching product details!" in page:
                degraded_until = time.perf_counter() - t0
            time.sleep(0.02)
        sb2.stop()
        del url
        return {
            "first_restart_back_to_ready_s": [round(b, 3) for b in backs],
            "first_restart_median_s": round(median(backs), 3),
            "first_restart_min_s": round(min(backs), 3),
            "first_restart_max_s": round(max(backs), 3),
            "degraded_page_visible_for_s_after_killing_all_details": round(degraded_until, 3),
        }
    finally:
        sb.stop()


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_exec_and_pods() -> dict[str, Any]:
    """labkit exec vs kubectl exec of the same command, side by side; pods() on the 13 lesson pods."""
    import labkit

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        tester = lab.tester_pod()
        cmd = ["curl", "-s", "http://ratings:9080/ratings/7"]
        env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "KUBECACHEDIR": tempfile.mkdtemp()}
        beside = Path(sys.executable).parent / "kubectl"
        kubectl = str(beside) if beside.exists() else (shutil.which("kubectl") or "kubectl")
        subprocess.run([kubectl, "exec", tester, "--", *cmd], env=env, check=True, capture_output=True)  # warm cache
        lab.exec(tester, cmd)
        ours, theirs = [], []
        for _ in range(30):  # interleaved, so both see the same machine state
            ours += _time(lambda: lab.exec(tester, cmd, check=True), 1)
            theirs += _time(lambda: subprocess.run([kubectl, "exec", tester, "--", *cmd], env=env, check=True,
                                                   capture_output=True), 1)
        pods = _time(lambda: lab.pods(), 50)
        assert len(lab.pods()) == 13
        return {
            "exec_labkit_median_ms": round(median(ours) * 1000, 2),
            "exec_kubectl_median_ms": round(median(theirs) * 1000, 2),
            "exec_speedup": round(median(theirs) / median(ours), 1),
            "pods_median_ms": round(median(pods) * 1000, 2),
        }
    finally:
        sb.stop()


def _is_down(pod: str, state: PodState) -> bool:
    return state.pod == pod and not state.ready


def _kill_details_lags(lab: Any, kubeconfig: Path, row_timeout: float) -> tuple[list[float], list[float]]:
    """Kill details (``pkill ruby``) in each of its pods; per pod, seconds from a bare watch's not-Ready to the
    recorder's row, and from the kill's exec returning to that row.

    A bare watch (the official client, its own connection) stamps the moment the API server delivers the pod's
    not-Ready status; the recorder's row for the same change is compared with it.
    """
    from kubernetes import client, config, watch

    from labkit import observe

    bare_client = config.new_client_from_config(config_file=str(kubeconfig))
    bare_core = client.CoreV1Api(bare_client)
    first_down: dict[str, float] = {}
    w = watch.Watch()

    def bare() -> None:
        for ev in w.stream(bare_core.list_namespaced_pod, "default", label_selector="app=details",
                           timeout_seconds=60):
            pod = ev["object"].metadata.name
            statuses = ev["object"].status.container_statuses or []
            if statuses and not statuses[0].ready and pod not in first_down and ev["type"] == "MODIFIED":
                first_down[pod] = time.time()

    lags: list[float] = []
    end_to_end: list[float] = []
    try:
        with observe.Recorder(lab, "app=details") as rec:
            watcher = threading.Thread(target=bare, daemon=True)
            watcher.start()
            time.sleep(0.5)
            for pod in lab.pod_names("app=details"):
                lab.exec(pod, ["pkill", "ruby"])
                t_exec = time.time()
                row = rec.wait_for(partial(_is_down, pod), timeout=row_timeout)
                t_row = pd_timestamp(row.time)
                deadline = time.monotonic() + 5
                while pod not in first_down and time.monotonic() < deadline:
                    time.sleep(0.001)
                lags.append(t_row - first_down[pod])
                end_to_end.append(t_row - t_exec)
            w.stop()
    finally:
        bare_client.close()
    return lags, end_to_end


def bench_recorder() -> dict[str, Any]:
    """How long after the kubelet reports a container's death the recorder has the row.

    A bare watch (the official client, its own connection) stamps the moment the API server delivers the pod's
    not-Ready status; the recorder's row for the same change is compared with it. Also the end-to-end time from
    the kill's exec returning to the row.
    """
    import labkit

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        lags, end_to_end = _kill_details_lags(lab, sb.kubeconfig, row_timeout=5)
        return {"recorder_behind_bare_watch_ms": [round(x * 1000, 2) for x in lags],
                "recorder_behind_bare_watch_median_ms": round(median(lags) * 1000, 2),
                "kill_exec_returned_to_row_ms": [round(x * 1000, 2) for x in end_to_end]}
    finally:
        sb.stop()


def pd_timestamp(value: Any) -> float:
    return float(value.timestamp())


def bench_tour() -> dict[str, Any]:
    """`labkit tour` wall time at time scale 1 (it starts and stops its own sandbox)."""
    out = tempfile.mkdtemp(prefix="labkit-tour-")
    env = {**os.environ, "LABKIT_SANDBOX_DIR": tempfile.mkdtemp(prefix="labkit-tour-sb-")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "labkit.cli", "tour", "--out", out], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    return {"tour_wall_s": round(wall, 1), "tour_ok": proc.returncode == 0,
            "tour_tail": proc.stderr.strip().splitlines()[-3:]}


# Sizes of the scale benchmark: (pods wanted, copies of the lesson, replicas). A copy is 4 * replicas + 1 pods,
# so 100 and 300 are approximated by 8 and 23 copies (104 and 299 pods).
SCALE_SIZES = ((13, 1, 3), (100, 8, 3), (300, 23, 3))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _idle_cpu_percent(pids: set[int], seconds: float) -> float:
    """CPU used by ``pids`` over ``seconds`` of wall time, in percent of one core."""

    def total() -> float:
        out = 0.0
        for pid in pids:
            try:
                out += _cpu_seconds(pid)
            except OSError:
                continue
        return out

    before, t0 = total(), time.perf_counter()
    time.sleep(seconds)
    return 100.0 * (total() - before) / (time.perf_counter() - t0)


def _up_cli(copies: int, replicas: int, zygote: bool) -> tuple[float, dict[str, Any]]:
    """`labkit sandbox up` wall time to every pod Ready, then the memory of the whole sandbox; stops it."""
    d = tempfile.mkdtemp(prefix="labkit-bench-scale-")
    env = {**os.environ, "LABKIT_SANDBOX_DIR": d, "LABKIT_ZYGOTE": "1" if zygote else "0"}
    cli_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "up", "--copies", str(copies),
                    "--replicas", str(replicas)], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        info = json.loads((Path(d) / "state.json").read_text())
        pids = descendants(info["pid"]) | {info["pid"]}
        # CPU spent bringing the sandbox up (the CLI, the daemon, the zygote and every container): unlike the
        # wall time it hardly depends on what else the machine is doing.
        cpu = (after.ru_utime + after.ru_stime - cli_cpu.ru_utime - cli_cpu.ru_stime
               + sum(_cpu_seconds(p) for p in pids if Path(f"/proc/{p}").exists()))
        time.sleep(1.0)  # let start-up garbage settle before measuring memory
        mem = {**memory_kib(pids), "processes": len(pids), "daemon_pss_kib": memory_kib({info["pid"]})["pss_kib"],
               "cpu_s": cpu}
    finally:
        subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "down"], env=env, check=True,
                       capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
    return wall, mem


def _restart_to_recorder(lab: Any, kubeconfig: Path) -> dict[str, Any]:
    """Kill details in each of its pods: the recorder's row against a bare watch, and against the kill's return."""
    lags, end_to_end = _kill_details_lags(lab, kubeconfig, row_timeout=10)
    return {"recorder_behind_bare_watch_median_ms": round(median(lags) * 1000, 2),
            "kill_exec_returned_to_row_median_ms": round(median(end_to_end) * 1000, 2)}


def _scale_point(pods_wanted: int, copies: int, replicas: int) -> dict[str, Any]:
    """One size of the scale benchmark, on one sandbox (time scale 1, the zygote on)."""
    import labkit
    from labkit.sandbox import Sandbox

    d = tempfile.mkdtemp(prefix="labkit-bench-scale-")
    t0 = time.perf_counter()
    sb = Sandbox(d, copies=copies, replicas=replicas, boot_timeout=120).start()
    ready_s = time.perf_counter() - t0
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        pods = len(sb.pods())
        time.sleep(1.0)
        pids = descendants(sb.pid) | {sb.pid}
        mem = memory_kib(pids)
        daemon_idle = _idle_cpu_percent({sb.pid}, 5.0)
        tree_idle = _idle_cpu_percent(pids, 5.0)
        pods_ms = _time(lambda: lab.pods(), 30)
        env = {**os.environ, "KUBECONFIG": str(sb.kubeconfig), "KUBECACHEDIR": tempfile.mkdtemp()}
        beside = Path(sys.executable).parent / "kubectl"
        kubectl = str(beside) if beside.exists() else (shutil.which("kubectl") or "kubectl")
        subprocess.run([kubectl, "get", "pods"], env=env, check=True, capture_output=True)  # warm the cache
        get_ns = _time(lambda: subprocess.run([kubectl, "get", "pods"], env=env, check=True, capture_output=True),
                       10)
        get_all = _time(lambda: subprocess.run([kubectl, "get", "pods", "-A"], env=env, check=True,
                                               capture_output=True), 10)
        tester = lab.tester_pod()
        cmd = ["curl", "-s", "http://ratings:9080/ratings/7"]
        lab.exec(tester, cmd, check=True)
        exec_ms = _time(lambda: lab.exec(tester, cmd, check=True), 30)
        restart = _restart_to_recorder(lab, sb.kubeconfig)
        lab.close()
        return {
            "pods": pods,
            "namespaces": copies,
            "all_ready_s": round(ready_s, 3),
            "memory_pss_mb": round(mem["pss_kib"] / 1024, 1),
            "memory_rss_mb": round(mem["rss_kib"] / 1024, 1),
            "pss_per_pod_mb": round(mem["pss_kib"] / 1024 / pods, 2),
            "processes": len(pids),
            "lab_pods_one_namespace_median_ms": round(median(pods_ms) * 1000, 2),
            "kubectl_get_pods_median_ms": round(median(get_ns) * 1000, 1),
            "kubectl_get_pods_all_namespaces_median_ms": round(median(get_all) * 1000, 1),
            "exec_round_trip_median_ms": round(median(exec_ms) * 1000, 2),
            **restart,
            "daemon_idle_cpu_percent": round(daemon_idle, 2),
            "sandbox_idle_cpu_percent": round(tree_idle, 2),
        }
    finally:
        sb.stop()
        shutil.rmtree(d, ignore_errors=True)


def bench_scale(runs: int = 7) -> dict[str, Any]:
    """Cost per pod: 13, ~100 and ~300 pods; and the 13-pod `up` with and without the zygote, interleaved."""
    with_z: list[float] = []
    without: list[float] = []
    mem_with: list[dict[str, Any]] = []
    mem_without: list[dict[str, Any]] = []
    for _ in range(runs):  # interleaved, so both see the same machine state
        t, m = _up_cli(1, 3, zygote=True)
        with_z.append(t)
        mem_with.append(m)
        t, m = _up_cli(1, 3, zygote=False)
        without.append(t)
        mem_without.append(m)

    def pss(ms: list[dict[str, Any]], key: str = "pss_kib") -> float:
        return round(median([m[key] for m in ms]) / 1024, 1)

    out: dict[str, Any] = {
        "up_13_pods": {
            "zygote": {"up_seconds": [round(t, 3) for t in with_z], "up_median_s": round(median(with_z), 3),
                       "up_min_s": round(min(with_z), 3),
                       "up_cpu_s_median": round(median([m["cpu_s"] for m in mem_with]), 3),
                       "memory_pss_mb_median": pss(mem_with), "memory_rss_mb_median": pss(mem_with, "rss_kib"),
                       "daemon_pss_mb_median": pss(mem_with, "daemon_pss_kib"),
                       "processes": mem_with[0]["processes"]},
            "spawn": {"up_seconds": [round(t, 3) for t in without], "up_median_s": round(median(without), 3),
                      "up_min_s": round(min(without), 3),
                      "up_cpu_s_median": round(median([m["cpu_s"] for m in mem_without]), 3),
                      "memory_pss_mb_median": pss(mem_without),
                      "memory_rss_mb_median": pss(mem_without, "rss_kib"),
                      "daemon_pss_mb_median": pss(mem_without, "daemon_pss_kib"),
                      "processes": mem_without[0]["processes"]},
        },
    }
    for wanted, copies, replicas in SCALE_SIZES:
        print(f"   scale: {wanted} pods", file=sys.stderr, flush=True)
        out[f"pods_{wanted}"] = _scale_point(wanted, copies, replicas)
    out["load_average_at_end"] = os.getloadavg()
    return out


def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    kubectl = Path(sys.executable).parent / "kubectl"
    proc = subprocess.run([str(kubectl if kubectl.exists() else "kubectl"), *args], input=stdin, text=True,
                          capture_output=True, env={**os.environ, "KUBECONFIG": str(kubeconfig)}, check=True)
    return proc.stdout


def _http(source_ip: str, ip: str, port: int, path: str, headers: dict[str, str] | None = None,
          method: str = "GET", body: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection from ``source_ip``: a meshed pod's address sends it through that pod's
    sidecar (the network hands connections from a meshed pod's address to it, as iptables would)."""
    import http.client

    conn = http.client.HTTPConnection(ip, port, timeout=60, source_address=(source_ip, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _get_from(source_ip: str, ip: str, port: int, path: str, headers: dict[str, str] | None = None) -> bytes:
    return _http(source_ip, ip, port, path, headers)[2]


def _bookinfo(sb: Any, manifests: Path, pods_wanted: int) -> tuple[str, dict[str, str]]:
    """Reviews v2 and v3 added and every pod Ready: the sleep pod's address and the Services' addresses."""
    kc = sb.kubeconfig
    _kubectl(kc, "apply", "-f", str(manifests / "reviews-v2-v3.yaml"), "-f",
             str(manifests / "istio" / "destination-rule-all.yaml"))

    def ready() -> bool:
        items = json.loads(_kubectl(kc, "get", "pods", "-o", "json"))["items"]
        return len(items) >= pods_wanted and all(all(c["ready"] for c in p["status"].get("containerStatuses") or
                                                      [{"ready": False}]) for p in items)

    deadline = time.monotonic() + 120
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    pods = json.loads(_kubectl(kc, "get", "pods", "-o", "json"))["items"]
    sleep_ip = next(p["status"]["podIP"] for p in pods if p["metadata"]["labels"].get("app") == "sleep")
    svcs = {s["metadata"]["name"]: s["spec"]["clusterIP"]
            for s in json.loads(_kubectl(kc, "get", "svc", "-o", "json"))["items"]}
    return sleep_ip, svcs


def _within(measured: float, expected: float) -> dict[str, float]:
    return {"expected_s": expected, "measured_median_s": round(measured, 3),
            "error_percent": round((measured - expected) / expected * 100, 2)}


def bench_mesh(runs: int = 3) -> dict[str, Any]:
    """Istio in the sandbox: up with every pod meshed (and its memory), the latency two sidecars add per request
    against a sandbox without the mesh, a 50/50 split over 1,000 requests, and the delay and timeout lessons'
    latencies against their configured values."""
    os.environ["LABKIT_SANDBOX_MESH"] = "1"
    try:
        up = bench_up(runs)
        sb = _sandbox()
    finally:
        os.environ.pop("LABKIT_SANDBOX_MESH", None)
    plain_sb = _sandbox()
    out: dict[str, Any] = {"up_all_meshed": up}
    manifests = Path(__file__).resolve().parent.parent / "labkit" / "sandbox" / "manifests"
    try:
        kc = sb.kubeconfig
        sleep_ip, svcs = _bookinfo(sb, manifests, 15)
        plain_sleep, plain_svcs = _bookinfo(plain_sb, manifests, 15)
        pods = json.loads(_kubectl(kc, "get", "pods", "-o", "json"))["items"]
        out["meshed_pods"] = sum(len(p["spec"]["containers"]) == 2 for p in pods)
        # The same request from the sleep pod's address to ratings, interleaved between two sandboxes: without the
        # mesh (network -> ratings) and with it (network -> sleep's sidecar -> ratings' sidecar -> ratings).
        n = 1000
        plain, meshed = [], []
        for _ in range(50):  # warm-up: first connections, pools, caches
            _get_from(sleep_ip, svcs["ratings"], 9080, "/ratings/0")
            _get_from(plain_sleep, plain_svcs["ratings"], 9080, "/ratings/0")
        for _ in range(n):
            t0 = time.perf_counter()
            _get_from(plain_sleep, plain_svcs["ratings"], 9080, "/ratings/0")
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _get_from(sleep_ip, svcs["ratings"], 9080, "/ratings/0")
            meshed.append(time.perf_counter() - t0)
        plain.sort()
        meshed.sort()
        out["latency_ratings_ms"] = {
            "requests": n, "no_mesh_p50": round(median(plain) * 1000, 2),
            "two_sidecars_p50": round(median(meshed) * 1000, 2),
            "added_p50": round((median(meshed) - median(plain)) * 1000, 2),
            "no_mesh_p90": round(plain[int(n * 0.9)] * 1000, 2),
            "two_sidecars_p90": round(meshed[int(n * 0.9)] * 1000, 2),
            "added_p90": round((meshed[int(n * 0.9)] - plain[int(n * 0.9)]) * 1000, 2)}
        plain_sb.stop()

        _kubectl(kc, "apply", "-f", str(manifests / "istio" / "virtual-service-reviews-50-v3.yaml"))
        time.sleep(0.5)
        v3 = sum(b'"color": "red"' in _get_from(sleep_ip, svcs["reviews"], 9080, "/reviews/0") for _ in range(1000))
        sd = (1000 * 0.5 * 0.5) ** 0.5
        out["split_50_50_of_1000"] = {"v3": v3, "v1": 1000 - v3, "binomial_sd": round(sd, 2),
                                      "z": round((v3 - 500) / sd, 2)}

        # Fault injection (istio.io's task): jason's ratings calls held 7 s; productpage waits 3 s for reviews,
        # twice, so his page takes about 6 s.
        _kubectl(kc, "apply", "-f", str(manifests / "istio" / "virtual-service-all-v1.yaml"), "-f",
                 str(manifests / "istio" / "virtual-service-reviews-test-v2.yaml"), "-f",
                 str(manifests / "istio" / "virtual-service-ratings-test-delay.yaml"))
        time.sleep(0.5)
        _, headers, _ = _http(sleep_ip, svcs["productpage"], 9080, "/login", method="POST",
                              body="username=jason&passwd=password",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        jason = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
        delays = _time(lambda: _get_from(sleep_ip, svcs["ratings"], 9080, "/ratings/0", {"end-user": "jason"}), 3)
        out["fault_delay_7s"] = _within(median(delays), 7.0)
        pages = _time(lambda: _get_from(sleep_ip, svcs["productpage"], 9080, "/productpage", jason), 3)
        out["fault_delay_jason_page"] = _within(median(pages), 6.0)

        # Request timeouts (istio.io's task): ratings delayed 2 s for everyone, reviews v2; then a 0.5 s timeout
        # on reviews, which productpage meets twice.
        ratings_vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings}\n"
                      "spec:\n  hosts: [ratings]\n  http:\n  - fault: {delay: {percentage: {value: 100}, "
                      "fixedDelay: 2s}}\n    route: [{destination: {host: ratings, subset: v1}}]\n")
        reviews_vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n"
                      "spec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v2}}]\n")
        _kubectl(kc, "apply", "-f", "-", stdin=ratings_vs + "---\n" + reviews_vs)
        time.sleep(0.5)
        pages = _time(lambda: _get_from(sleep_ip, svcs["productpage"], 9080, "/productpage"), 3)
        out["timeout_task_page_with_2s_delay"] = _within(median(pages), 2.0)
        _kubectl(kc, "apply", "-f", "-", stdin=reviews_vs.replace("  - route:", "  - timeout: 0.5s\n    route:"))
        time.sleep(0.5)
        timeouts = _time(lambda: _get_from(sleep_ip, svcs["reviews"], 9080, "/reviews/0"), 5)
        out["route_timeout_0_5s"] = _within(median(timeouts), 0.5)
        pages = _time(lambda: _get_from(sleep_ip, svcs["productpage"], 9080, "/productpage"), 3)
        out["timeout_task_page_with_0_5s_timeout"] = _within(median(pages), 1.0)
    finally:
        sb.stop()
        plain_sb.stop()
    return out


def bench_reset() -> dict[str, Any]:
    """`lab.reset(lesson)` for each lesson, from the state lesson 4 leaves (every details pod crashed twice, one in
    CrashLoopBackOff back-off), at time scale 1: the call's wall time, which includes waiting for the fresh pods."""
    import labkit
    from labkit import lessons, workshop

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        times: dict[str, float] = {}
        steps: dict[str, int] = {}
        for lesson in workshop.LESSONS:
            rec = lab.record("app=details")
            try:
                first = lab.kill("app=details", "ruby", mode="all")
                lessons.wait_recovered(rec, first, progress=False)
                second = lab.kill("app=details", "ruby", mode="all")
                lessons.wait_status(rec, "CrashLoopBackOff", since=second)
            finally:
                rec.stop()
            t0 = time.perf_counter()
            record = lab.reset(lesson)
            times[lesson] = time.perf_counter() - t0
            steps[lesson] = len(record.steps)
        dry = _time(lambda: lab.reset("04", dry_run=True), 10)
        lab.close()
        return {"reset_seconds": {k: round(v, 3) for k, v in times.items()},
                "reset_median_s": round(median(list(times.values())), 3),
                "reset_max_s": round(max(times.values()), 3),
                "reset_steps": steps,
                "reset_dry_run_median_s": round(median(dry), 4)}
    finally:
        sb.stop()


def bench_provision(attendees: int = 5, runs: int = 3) -> dict[str, Any]:
    """`labkit.provision.provision` of 5 attendees (Bookinfo at 3 replicas + sleep each: 65 pods) until every
    deployment is rolled out, then teardown until every pod is gone; and what RBAC adds to one request (a pod list
    with the administrator's token against an attendee's, interleaved)."""
    from kubernetes import client, config

    import labkit
    from labkit import provision
    from labkit.kubestatus import is_pod_ready

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        up: list[float] = []
        down: list[float] = []
        ready_counts: list[int] = []
        admin_ms: list[float] = []
        attendee_ms: list[float] = []
        with tempfile.TemporaryDirectory() as out:
            for run in range(runs):
                t0 = time.perf_counter()
                result = provision.provision(lab, attendees, out_dir=out, replicas=3)
                up.append(time.perf_counter() - t0)
                pods = [p for a in result.attendees for p in lab.list_pods(namespace=a.namespace).items]
                ready_counts.append(sum(1 for p in pods if is_pod_ready(p)))
                if run == 0:
                    first = result.attendees[0]
                    attendee_client = config.new_client_from_config(config_file=str(first.kubeconfig))
                    apis = {"admin": client.CoreV1Api(lab.api_client),
                            "attendee": client.CoreV1Api(attendee_client)}
                    for _ in range(30):
                        for who, samples in (("admin", admin_ms), ("attendee", attendee_ms)):
                            t1 = time.perf_counter()
                            apis[who].list_namespaced_pod(first.namespace, _preload_content=False).read()
                            samples.append(time.perf_counter() - t1)
                    attendee_client.close()
                t0 = time.perf_counter()
                provision.teardown(lab, out_dir=out)
                down.append(time.perf_counter() - t0)
        lab.close()
        return {"provision_attendees": attendees, "provision_pods": attendees * 13,
                "provision_seconds": [round(x, 3) for x in up], "provision_median_s": round(median(up), 3),
                "provision_ready_pods": ready_counts,
                "teardown_seconds": [round(x, 3) for x in down], "teardown_median_s": round(median(down), 3),
                "pod_list_admin_median_ms": round(median(admin_ms) * 1000, 2),
                "pod_list_attendee_median_ms": round(median(attendee_ms) * 1000, 2)}
    finally:
        sb.stop()


BENCHES: dict[str, Callable[[], dict[str, Any]]] = {
    "up": bench_up,
    "restart": bench_restart,
    "exec": bench_exec_and_pods,
    "recorder": bench_recorder,
    "tour": bench_tour,
    "scale": bench_scale,
    "mesh": bench_mesh,
    "reset": bench_reset,
    "provision": bench_provision,
}


def warm_bytecode() -> None:
    """Byte-compile labkit first, so that every figure is of a start after the first, as on a user's machine.

    A wheel install compiles at install time and an editable one on its first import; but a shell with
    ``PYTHONDONTWRITEBYTECODE`` set (or files edited since the last run) would otherwise make every start compile
    the changed modules again (tens of milliseconds of ``up``).
    """
    import compileall

    import labkit

    compileall.compile_dir(str(Path(labkit.__file__).parent), quiet=1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="*", choices=[*BENCHES, []], default=[])
    args = p.parse_args()
    chosen = args.which or list(BENCHES)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "latest.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    warm_bytecode()
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[name] = BENCHES[name]()
        print(json.dumps(results[name], indent=2), f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        if name == "scale":  # its own file: a long run, taken apart from the lesson's figures
            scale = {"machine": results["machine"], "scale": results.pop("scale")}
            (RESULTS / "scale.json").write_text(json.dumps(scale, indent=2) + "\n")
            continue
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    sys.exit(main())
