"""The one way tests wait: poll a condition until it holds, or fail saying what never happened; and the few
process and port helpers several test files share.

Tests never assert how long something took (speed is measured in benchmarks/), and never `sleep` to let state
settle: they wait for the state itself, with a deadline generous enough for a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from labkit.sandbox.toolbox import ExecContext

T = TypeVar("T")


def eventually(predicate: Callable[[], T | None], timeout: float = 30.0, what: str = "the condition",
               interval: float = 0.05, ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``predicate`` until it returns something truthy, and return that; fail after ``timeout`` seconds.

    Args:
        predicate: what to check; its truthy result is returned.
        timeout: the deadline, in seconds (a bound against hanging, not a speed claim).
        what: what is awaited, for the failure message ("the 13 pods Ready").
        interval: seconds between two checks.
        ignore: exceptions that mean "not yet" (a server still starting: ``ConnectionError``...).

    Raises:
        AssertionError: the deadline passed; the message names ``what`` and the last result or exception.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def never(predicate: Callable[[], object], during: float, what: str = "the condition",
          interval: float = 0.05) -> None:
    """Check that ``predicate`` stays falsy for ``during`` seconds (absence, proved by looking the whole time).

    Raises:
        AssertionError: it became truthy; the message names ``what`` and the value.
    """
    deadline = time.monotonic() + during
    while True:
        result = predicate()
        if result:
            raise AssertionError(f"{what} happened: {result!r}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``ip`` now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[int]:
    """The live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


async def run_bounded(argv: list[str], ctx: ExecContext, seconds: float) -> int | None:
    """Run ``argv`` in the sandbox's toolbox: the exit code, or None when the command was still running at the
    deadline (it is then cancelled, and must stop)."""
    from labkit.sandbox.toolbox import run

    task = asyncio.create_task(run(argv, ctx))
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=30)
    assert task.cancelled(), f"{argv} did not stop when cancelled"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium through Playwright for Python (its own browser download is not available here).

    Skips the test without Playwright or chromium, except in CI (``CI`` set), where a missing chromium fails.
    """
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                   "(pip install -e '.[dev]')")
    executable = os.environ.get("LABKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        message = "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its own sandbox
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def kubectl_port_forward(binary: str, env: dict[str, str], target: str, port: int) -> Iterator[int]:
    """``kubectl port-forward TARGET 0:PORT`` while the block runs; yields the local port kubectl chose."""
    proc = subprocess.Popen([binary, "port-forward", target, f"0:{port}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 9080"
        assert line.startswith("Forwarding from 127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        yield int(line.split(":")[1].split()[0])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bookstore_title_at(port: int, path: str = "/productpage") -> bool:
    """Whether ``http://127.0.0.1:PORT/PATH`` answers with Bookinfo's product page (its ``<title>``)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return "<title>Simple Bookstore App</title>" in conn.getresponse().read().decode()
    finally:
        conn.close()


def every_pod_meshed(kubectl: Callable[..., Any], pods: int) -> bool:
    """Whether the namespace has exactly ``pods`` live pods, each with an ``istio-proxy`` sidecar last and every
    container Ready (``kubectl`` is the tests' Kubectl)."""
    import json

    items = json.loads(kubectl("get", "pods", "-o", "json").stdout)["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    return len(live) == pods and all(
        [c["name"] for c in p["spec"]["containers"]][-1] == "istio-proxy"
        and all(cs["ready"] for cs in p["status"].get("containerStatuses") or [{"ready": False}]) for p in live)
