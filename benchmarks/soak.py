"""Soak: hundreds of kills under traffic, with a recorder, and exact restart accounting.

    python benchmarks/soak.py                  # 300 kills, results in benchmarks/results/soak.json
    python benchmarks/soak.py --kills 60       # a short run

One sandbox (time scale 0.02, so the kubelet's back-off tops out at 6 s), a recorder watching every pod, and a
traffic thread fetching the productpage through the ingress and ratings from the tester pod. The loop kills the
main process of a Bookinfo pod (``pkill ruby|node|java|gunicorn``) whenever that pod is Ready and its previous
kill has been accounted for, so that every kill that takes effect (``pkill`` exit code 0) must give exactly one
restart. At the end three counts must be equal for every pod: restarts counted by the API (``restartCount``),
restarts seen by the recorder (the increments in its timeline), and kills that took effect. Memory (PSS of the
whole sandbox) and the API server's open descriptors are measured after boot and after the run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import labkit
from labkit.sandbox import Sandbox
from labkit.sandbox.state import descendants, memory_kib

HERE = Path(__file__).resolve().parent
PROCESS = {"details": "ruby", "ratings": "node", "reviews": "java", "productpage": "gunicorn"}


def resources(sb: Sandbox) -> dict[str, Any]:
    pids = descendants(sb.pid) | {sb.pid}
    mem = memory_kib(pids)
    return {"pss_mb": round(mem["pss_kib"] / 1024, 1), "rss_mb": round(mem["rss_kib"] / 1024, 1),
            "processes": len(pids), "api_fds": len(list(Path(f"/proc/{sb.pid}/fd").iterdir()))}


class Traffic(threading.Thread):
    """The productpage through the ingress and ratings from the tester pod, as fast as they answer."""

    def __init__(self, sb: Sandbox) -> None:
        super().__init__(daemon=True)
        self.sb = sb
        self.stop = threading.Event()
        self.page: Counter[str] = Counter()
        self.ratings: Counter[str] = Counter()

    def run(self) -> None:
        lab = labkit.connect(sandbox_dir=self.sb.dir)
        try:
            while not self.stop.is_set():
                try:
                    with urllib.request.urlopen(self.sb.productpage_url, timeout=10) as resp:
                        self.page[str(resp.status)] += 1
                except Exception as exc:
                    self.page[type(exc).__name__] += 1
                try:
                    code = lab.request("http://ratings:9080/ratings/7", timeout=10).returncode
                    self.ratings["ok" if code == 0 else f"curl exit {code}"] += 1
                except Exception as exc:
                    self.ratings[type(exc).__name__] += 1
        finally:
            lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labkit-soak-") as folder:
        sb = Sandbox(folder, time_scale=args.time_scale).start()
        lab = labkit.connect(sandbox_dir=sb.dir)
        try:
            time.sleep(1.0)  # let start-up garbage settle before measuring
            before = resources(sb)
            start_restarts = {r["name"]: int(r["restarts"]) for _, r in lab.pods().iterrows()}
            rec = lab.record()
            traffic = Traffic(sb)
            traffic.start()
            kills: Counter[str] = Counter()
            attempts = 0
            t0 = time.monotonic()
            rng = random.Random(8)
            while sum(kills.values()) < args.kills:
                pods = lab.pods()
                ready = [r for _, r in pods.iterrows()
                         if r["app"] in PROCESS and r["ready"] == "1/1"
                         and int(r["restarts"]) == start_restarts.get(r["name"], 0) + kills[r["name"]]]
                if not ready:
                    time.sleep(0.02)
                    continue
                row = rng.choice(ready)
                attempts += 1
                result = lab.exec(str(row["name"]), ["pkill", PROCESS[str(row["app"])]])
                if result.returncode == 0:
                    kills[str(row["name"])] += 1
            lab.wait_ready(timeout=600, progress=False)
            elapsed = time.monotonic() - t0
            traffic.stop.set()
            traffic.join(30)
            rec.sync()
            rec.stop()
            time.sleep(1.0)
            after = resources(sb)
            api = {r["name"]: int(r["restarts"]) - start_restarts.get(r["name"], 0) for _, r in lab.pods().iterrows()}
            seen: Counter[str] = Counter()
            last: dict[str, int] = {}
            for _, row in rec.timeline.iterrows():
                pod, restarts = str(row["pod"]), int(row["restarts"])
                if pod in last and restarts > last[pod]:
                    seen[pod] += restarts - last[pod]
                last[pod] = restarts
        finally:
            lab.close()
            sb.stop()
    pods = sorted(set(api) | set(kills) | set(seen))
    mismatched = {p: {"api": api.get(p, 0), "recorder": seen.get(p, 0), "kills": kills.get(p, 0)}
                  for p in pods if not api.get(p, 0) == seen.get(p, 0) == kills.get(p, 0)}
    result = {
        "kills_effective": sum(kills.values()), "kill_attempts": attempts,
        "restarts_api": sum(api.values()), "restarts_recorder": sum(seen.values()),
        "pods": len(pods), "mismatched_pods": mismatched, "seconds": round(elapsed, 1),
        "recorder_relists": rec.relists, "recorder_reconnects": rec.reconnects,
        "traffic_productpage": dict(traffic.page), "traffic_ratings": dict(traffic.ratings),
        "resources_before": before, "resources_after": after, "time_scale": args.time_scale,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if not mismatched else 1


if __name__ == "__main__":
    sys.exit(main())
