"""The API fuzzer's long run: ten minutes of random seeds against one sandbox, then the lesson.

    python benchmarks/fuzz.py                 # 600 s, results in benchmarks/results/fuzz.json
    python benchmarks/fuzz.py --seconds 120   # a short run

The fuzzer is the one ``make test`` runs for about a minute (``tests/fuzzapi.py``): schemathesis over the served
OpenAPI and hypothesis strategies for hostile objects, queries and exec arguments. Here every round draws a new
seed. It reports requests, answers by status code, findings (a 5xx, a 4xx that is not a Status or names no field,
an object stored that cannot be read back, a request left unanswered), the sandbox's memory and descriptors before
and after, and whether the lesson works afterwards (every pod Ready, ratings from the tester pod, a kill and its
restart). Exit code 1 when there is any finding or the lesson fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fuzzapi import Fuzzer  # noqa: E402

import labkit  # noqa: E402
from labkit.sandbox import Sandbox  # noqa: E402
from labkit.sandbox.state import descendants, memory_kib  # noqa: E402


def resources(sb: Sandbox) -> dict[str, Any]:
    """PSS of the sandbox and its containers, and the API server process's open descriptors."""
    pids = descendants(sb.pid) | {sb.pid}
    fds = len(list(Path(f"/proc/{sb.pid}/fd").iterdir()))
    return {"pss_mb": round(memory_kib(pids)["pss_kib"] / 1024, 1), "processes": len(pids), "api_fds": fds}


def lesson_works(sb: Sandbox) -> dict[str, Any]:
    lab = labkit.connect(sandbox_dir=sb.dir)
    try:
        lab.wait_ready(timeout=180, progress=False)
        answer = lab.request("http://ratings:9080/ratings/7")
        pods = lab.pods("app=details")
        pod = str(pods["name"].iloc[0])
        before = int(pods.set_index("name").loc[pod, "restarts"])
        lab.exec(pod, ["pkill", "ruby"], check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if int(lab.pods("app=details").set_index("name").loc[pod, "restarts"]) == before + 1:
                break
            time.sleep(0.1)
        lab.wait_ready("app=details", timeout=120, progress=False)
        after = int(lab.pods("app=details").set_index("name").loc[pod, "restarts"])
        return {"ratings_ok": answer.returncode == 0 and '"id":7' in answer.stdout.replace(" ", ""),
                "restart_ok": after == before + 1, "all_ready": True}
    finally:
        lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--examples", type=int, default=2000, help="examples per source and round")
    parser.add_argument("--out", default=str(HERE / "results" / "fuzz.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labkit-fuzz-") as folder:
        sb = Sandbox(folder, time_scale=0.25).start()
        try:
            start = resources(sb)
            t0 = time.monotonic()
            fuzzer = Fuzzer(sb, budget=args.seconds)
            rounds = []
            while not fuzzer.out_of_time():
                seed = random.SystemRandom().randrange(1 << 32)
                before = fuzzer.requests
                fuzzer.run(args.examples, seed=seed)
                rounds.append({"seed": seed, "requests": fuzzer.requests - before})
                print(f"round {len(rounds)} seed {seed}: {fuzzer.requests} requests, {len(fuzzer.findings)} "
                      f"findings, {time.monotonic() - t0:.0f} s", file=sys.stderr)
            fuzzer.clean_up()
            elapsed = time.monotonic() - t0
            lesson = lesson_works(sb)
            end = resources(sb)
            fuzzer.close()
        finally:
            sb.stop()
    result = {"seconds": round(elapsed, 1), "requests": fuzzer.requests,
              "requests_per_s": round(fuzzer.requests / elapsed, 1), "codes": dict(sorted(fuzzer.codes.items())),
              "findings": fuzzer.findings, "rounds": rounds, "lesson": lesson,
              "resources_before": start, "resources_after": end}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))
    return 0 if not fuzzer.findings and all(lesson.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
