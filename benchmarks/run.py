"""labkit's benchmarks: the figures the README reports, measured on the embedded sandbox.

    python benchmarks/run.py            # everything, results in benchmarks/results/latest.json
    python benchmarks/run.py up exec    # a subset

Each benchmark starts its own sandbox in a temporary folder and stops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from pathlib import Path
from typing import Any

from labkit.sandbox.state import descendants, memory_kib

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


def bench_recorder() -> dict[str, Any]:
    """How long after the kubelet reports a container's death the recorder has the row.

    A bare watch (the official client, its own connection) stamps the moment the API server delivers the pod's
    not-Ready status; the recorder's row for the same change is compared with it. Also the end-to-end time from
    the kill's exec returning to the row.
    """
    from kubernetes import config, watch

    import labkit
    from labkit import observe

    sb = _sandbox(1.0)
    try:
        lab = labkit.connect(sandbox_dir=sb.dir)
        from kubernetes import client

        bare_client = config.new_client_from_config(config_file=str(sb.kubeconfig))
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

        lags, end_to_end = [], []
        with observe.Recorder(lab, "app=details") as rec:
            watcher = threading.Thread(target=bare, daemon=True)
            watcher.start()
            time.sleep(0.5)
            for pod in lab.pod_names("app=details"):
                lab.exec(pod, ["pkill", "ruby"])
                t_exec = time.time()
                row = rec.wait_for(lambda s, p=pod: s.pod == p and not s.ready, timeout=5)
                t_row = pd_timestamp(row.time)
                deadline = time.monotonic() + 5
                while pod not in first_down and time.monotonic() < deadline:
                    time.sleep(0.001)
                lags.append(t_row - first_down[pod])
                end_to_end.append(t_row - t_exec)
            w.stop()
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


BENCHES: dict[str, Callable[[], dict[str, Any]]] = {
    "up": bench_up,
    "restart": bench_restart,
    "exec": bench_exec_and_pods,
    "recorder": bench_recorder,
    "tour": bench_tour,
}


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
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[name] = BENCHES[name]()
        print(json.dumps(results[name], indent=2), f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    sys.exit(main())
