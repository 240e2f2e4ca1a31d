"""Soak: hundreds of kills under traffic, with a recorder, and exact restart accounting.

    python benchmarks/soak.py                  # 1000 kills (~7 min), results in benchmarks/results/soak.json
    python benchmarks/soak.py --kills 60       # a short run (too short for the memory verdict)

One sandbox (time scale 0.02, so the kubelet's back-off tops out at 6 s), a recorder watching every pod, and a
traffic thread fetching the productpage through the ingress and ratings from the tester pod. The loop kills the
main process of a Bookinfo pod (``pkill ruby|node|java|gunicorn``) whenever that pod is Ready and its previous
kill has been accounted for, so that every kill that takes effect (``pkill`` exit code 0) must give exactly one
restart. At the end three counts must be equal for every pod: restarts counted by the API (``restartCount``),
restarts seen by the recorder (the increments in its timeline), and kills that took effect.

Memory is measured after boot, at each ``--checkpoints`` kill count and after the run: PSS of the sandbox process
alone, of the processes it started (by command), their number, and the API server's open descriptors. The sandbox
process grows until its watch history is full: every write is kept :data:`~labkit.sandbox.store.COMPACT_AFTER`
seconds (5 min, as etcd compacts) for watches that resume from a resourceVersion, so it takes that long under a
steady write rate to reach its plateau. "Flat" is therefore judged from the first checkpoint after that warm-up
to the end: the sandbox PSS may grow at most :data:`FLAT_MB`, descriptors (from boot) at most :data:`FLAT_FDS`,
and the run must end with as many processes as it started with. A run shorter than the warm-up gives no memory verdict
(``"flat": null``). The containers' own PSS is reported, not judged: each restart is a fresh fork of the zygote,
whose memory is that of one new process, whatever the number of kills before it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
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
from labkit.sandbox.store import COMPACT_AFTER

HERE = Path(__file__).resolve().parent
FLAT_MB = 10.0
"""Most the sandbox process's PSS may grow, in MB, between the end of the warm-up and the end of the run."""
FLAT_FDS = 8
"""Most the API server's open descriptors may grow from boot to the end, both with every pod Ready (connections of
the run's clients may still be closing; mid-run checkpoints, with pods down, hold fewer and are not compared)."""
PROCESS = {"details": "ruby", "ratings": "node", "reviews": "java", "productpage": "gunicorn"}


def resources(sb: Sandbox) -> dict[str, Any]:
    """PSS of the sandbox process alone and of the processes it started (by command), and its descriptors."""
    if os.environ.get("LABKIT_TRACEMALLOC"):
        os.kill(sb.pid, signal.SIGUSR1)  # the sandbox appends its top allocation sites to tracemalloc.txt
    children = descendants(sb.pid)
    own = memory_kib({sb.pid})
    by_command: Counter[str] = Counter()
    for pid in children:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        by_command[name] += memory_kib({pid})["pss_kib"]
    total = memory_kib(children | {sb.pid})
    return {"pss_mb": round(total["pss_kib"] / 1024, 1), "rss_mb": round(total["rss_kib"] / 1024, 1),
            "sandbox_pss_mb": round(own["pss_kib"] / 1024, 1),
            "children_pss_mb": round((total["pss_kib"] - own["pss_kib"]) / 1024, 1),
            "children_by_command_mb": {k: round(v / 1024, 1) for k, v in sorted(by_command.items())},
            "processes": len(children) + 1, "api_fds": len(list(Path(f"/proc/{sb.pid}/fd").iterdir()))}


def verdict(phases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Growth from the first checkpoint after the warm-up (the watch history's span) to the end, and whether it
    stays within the bounds; None when the run is too short to have a warm-up behind it."""
    warm = next((p for p in phases[1:-1] if p["seconds"] >= COMPACT_AFTER), None)
    if warm is None:
        return None
    end, start = phases[-1], phases[0]
    growth = round(end["sandbox_pss_mb"] - warm["sandbox_pss_mb"], 1)
    fds = end["api_fds"] - start["api_fds"]
    return {"from_kills": warm["kills"], "from_seconds": warm["seconds"], "sandbox_pss_growth_mb": growth,
            "bound_mb": FLAT_MB, "api_fds_growth": fds, "bound_fds": FLAT_FDS,
            "processes_start": start["processes"], "processes_end": end["processes"],
            "ok": growth <= FLAT_MB and fds <= FLAT_FDS and end["processes"] == start["processes"]}


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
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--out", default=str(HERE / "results" / "soak.json"))
    parser.add_argument("--checkpoints", default="100,200,400,600,800",
                        help="kill counts at which memory is measured (those above --kills are skipped)")
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
            marks = sorted(int(k) for k in args.checkpoints.split(",") if 0 < int(k) < args.kills)
            phases: list[dict[str, Any]] = [{"kills": 0, "seconds": 0.0, **before}]
            while sum(kills.values()) < args.kills:
                if marks and sum(kills.values()) >= marks[0]:
                    phases.append({"kills": marks.pop(0), "seconds": round(time.monotonic() - t0, 1),
                                   **resources(sb)})
                    print(json.dumps({k: v for k, v in phases[-1].items() if k != "children_by_command_mb"}),
                          flush=True)
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
            phases.append({"kills": sum(kills.values()), "seconds": round(elapsed, 1), **after})
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
    flat = verdict(phases)
    names = sorted(set(api) | set(kills) | set(seen))
    mismatched = {p: {"api": api.get(p, 0), "recorder": seen.get(p, 0), "kills": kills.get(p, 0)}
                  for p in names if not api.get(p, 0) == seen.get(p, 0) == kills.get(p, 0)}
    summary = {
        "kills_effective": sum(kills.values()), "kill_attempts": attempts,
        "restarts_api": sum(api.values()), "restarts_recorder": sum(seen.values()),
        "pods": len(names), "mismatched_pods": mismatched, "seconds": round(elapsed, 1),
        "recorder_relists": rec.relists, "recorder_reconnects": rec.reconnects,
        "traffic_productpage": dict(traffic.page), "traffic_ratings": dict(traffic.ratings),
        "resources_before": before, "resources_after": after,
        "phases": phases, "flat": flat, "time_scale": args.time_scale,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0 if not mismatched and (flat is None or flat["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
