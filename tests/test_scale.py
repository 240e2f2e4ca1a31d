"""Scale in the sandbox: ``--copies N`` (one namespace per copy of the lesson) and ``--replicas``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAST, Kubectl

from labkit.sandbox import Sandbox
from labkit.sandbox.state import descendants


def test_two_copies_each_with_its_own_bookinfo_and_tester(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", replicas=1, copies=2, time_scale=FAST) as sb:
        assert sb.info["namespaces"] == ["default", "bookinfo-2"] and sb.info["copies"] == 2
        kubectl = Kubectl(sb.kubeconfig, tmp_path / "cache")
        rows = kubectl("get", "pods", "-A", "--no-headers").stdout.splitlines()
        per_ns = Counter(r.split()[0] for r in rows)
        assert per_ns == {"default": 5, "bookinfo-2": 5}
        assert all(r.split()[2] == "1/1" and r.split()[3] == "Running" for r in rows), rows
        # The second copy's tester calls its own services by their short names.
        tester = kubectl("get", "pods", "-n", "bookinfo-2", "-l", "app=sleep",
                         "-o", "jsonpath={.items[0].metadata.name}").stdout
        out = kubectl("exec", "-n", "bookinfo-2", tester, "--", "curl", "-s", "http://ratings:9080/ratings/7").stdout
        assert json.loads(out)["id"] == 7
        page = kubectl("exec", "-n", "bookinfo-2", tester, "--", "curl", "-s",
                       "http://productpage:9080/productpage").stdout
        assert "The Comedy of Errors" in page and "Error fetching product details" not in page
        # Scaling one copy leaves the other alone.
        kubectl("scale", "deployment", "ratings-v1", "-n", "bookinfo-2", "--replicas", "3")
        kubectl("rollout", "status", "deployment", "ratings-v1", "-n", "bookinfo-2", "--timeout", "60s")
        assert len(kubectl("get", "pods", "-n", "bookinfo-2", "-l", "app=ratings", "--no-headers"
                           ).stdout.splitlines()) == 3
        assert len(kubectl("get", "pods", "-l", "app=ratings", "--no-headers").stdout.splitlines()) == 1
        status = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "status"], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "LABKIT_SANDBOX_DIR": str(sb.dir)})
        lines = status.stdout.splitlines()
        assert any(line.split()[:2] == ["NAMESPACE", "NAME"] for line in lines if line.strip())
        assert sum(1 for line in lines if line.strip().startswith("bookinfo-2 ")) == 7


def test_a_hundred_pods_come_up_in_eight_namespaces(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sb", replicas=3, copies=8, time_scale=FAST, boot_timeout=120) as sb:
        kubectl = Kubectl(sb.kubeconfig, tmp_path / "cache")
        rows = kubectl("get", "pods", "-A", "--no-headers").stdout.splitlines()
        assert len(rows) == 104
        assert Counter(r.split()[0] for r in rows) == {ns: 13 for ns in sb.info["namespaces"]}
        assert all(r.split()[2] == "1/1" for r in rows)
        procs = descendants(sb.pid)
        assert len(procs) == 105  # 104 containers and the zygote


@pytest.mark.parametrize(("args", "message"), [
    (["--copies", "0"], "copies must be between 1 and 100"),
    (["--copies", "101"], "copies must be between 1 and 100"),
    (["--copies", "40", "--replicas", "3"], "40 copies of 3 replicas make 520 pods; the sandbox's pod network "
                                            "holds 500: lower --copies or --replicas"),
])
def test_too_many_or_too_few_copies_say_what_to_do(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "LABKIT_SANDBOX_DIR": str(tmp_path / "sb")}
    up = subprocess.run([sys.executable, "-m", "labkit.cli", "sandbox", "up", *args], env=env,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 2 and message in up.stderr, up.stderr
    assert not (tmp_path / "sb" / "state.json").exists()
