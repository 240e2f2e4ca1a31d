"""``kubectl exec`` against hostile and careless input: limits, error messages, and a fuzzer of exec arguments.

The in-process fuzzer drives :func:`labkit.sandbox.toolbox.run` with arbitrary argv (hundreds of examples);
the API fuzzer sends a bounded number through the real API server with the official client. Both assert that
any argv gives an exit code and text (never a crash or a 500), and afterwards the sandbox still serves the
lesson.

``LABKIT_FUZZ_EXAMPLES=5000 pytest tests/test_exec_hardening.py tests/test_shell.py -k any_`` is the longer run
(the API fuzzer takes a tenth of that number).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Kubectl, wait_all_ready
from helpers import alive, run_bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.stream import stream

from labkit.sandbox import Sandbox
from labkit.sandbox.state import descendants
from labkit.sandbox.toolbox import ExecContext, PodProcess, commands

FUZZ_EXAMPLES = int(os.environ.get("LABKIT_FUZZ_EXAMPLES", "300"))
RATINGS_7 = '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'

# Words that reach the tools' interesting branches: their options, files that exist or not, URLs that answer,
# refuse or do not resolve, patterns that backtrack or do not compile, numbers too big for any field.
WORDS = [
    "-", "--", "-s", "-S", "-sS", "-f", "-o", "/tmp/out", "-w", "%{http_code}", "%{bogus}", "-m", "0.2", "-X",
    "-H", "Host: x", "-d", "@/etc/hosts", "@-", "-L", "-v", "-I", "-i", "--json", "{}", "--max-redirs", "-1",
    "http://127.0.0.1:1/", "http://[::1]:1/", "ratings:9080", "http://no-such-host/", "file:///etc/passwd",
    "-9", "-KILL", "--signal", "BOGUS", "-f", "-x", "-e", "-c", "-l", "-a", "-n", "-v", "ruby", ".*", "(a+)+$",
    "[", "\\", "(", "a{99999}", "-E", "-F", "-o", "-w", "-q", "-m", "3", "-A", "2", "/etc/hosts", "/etc",
    "/nope", "/dev/null", "/etc/passwd", "aux", "-ef", "-o", "pid,comm", "pid=", "-p", "1,2", "-l", "-L",
    "-n", "-e", "-E", "\\x41\\c", "0", "1.5", "inf", "9" * 30, "9" * 5000, "²", "٣", "\x00", "\udcff",
    "A=1", "-u", "PATH", "-i", "-c", "1k", "-lwmc", "--lines", "--bogus", "x" * 10000,
]
ARG = st.one_of(st.sampled_from(WORDS), st.text(max_size=40), st.binary(max_size=20).map(
    lambda b: b.decode("utf-8", "surrogateescape")))
COMMAND = st.one_of(st.sampled_from(commands()), st.sampled_from(["/bin/cat", "/usr/bin/curl", "sh", "", "/x/y"]))
ARGV = st.builds(lambda name, args: [name, *args], COMMAND, st.lists(ARG, max_size=6))
# Commands that may legitimately wait past the fuzzer's deadline: they are cancelled, as a client would.
MAY_WAIT = ("sleep", "curl", "env")


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=ARGV, stdin=st.binary(max_size=200))
def test_any_argv_gives_an_exit_code_and_text(argv: list[str], stdin: bytes) -> None:
    signals: list[tuple[int, int]] = []
    ctx = ExecContext(
        pod="sleep-88ddbcfdd-l9zq4", pod_ip="127.0.0.1", stdin=stdin, files_limit=4096,
        files={"/etc/hosts": b"127.0.0.1\tlocalhost\n", "/etc/hostname": b"sleep-88ddbcfdd-l9zq4\n"},
        env={"PATH": "/usr/bin:/bin", "HOSTNAME": "sleep-88ddbcfdd-l9zq4"},
        process_lister=lambda: [PodProcess(1, 999999999, "sleep", ["sleep", "infinity"], "sleep", 0.0)],
        signaller=lambda proc, sig: signals.append((proc.pid, sig)),
    )
    code = asyncio.run(run_bounded(argv, ctx, seconds=3))
    if code is None:
        assert any(a.rpartition("/")[2] in MAY_WAIT for a in argv), f"{argv} hung"
    else:
        assert isinstance(code, int) and 0 <= code <= 255, (argv, code)
    assert sum(len(v) for v in ctx.files.values()) <= 4096
    assert all(pid == 1 for pid, _ in signals)
    text = bytes(ctx.stdout) + bytes(ctx.stderr)
    quiet = any(a.startswith("-") and not a.startswith("--") and ("s" in a or "q" in a) for a in argv[1:]) or (
        {"--silent", "--quiet", "--no-messages"} & set(argv))
    if code not in (0, 1, None) and not quiet:  # -s and -q silence errors by design
        assert text, f"{argv} failed with {code} and said nothing"


# -- through the real API server -----------------------------------------------------------------------------


def the_tester(kubectl: Kubectl) -> str:
    return kubectl("get", "pod", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout


def test_a_backtracking_grep_in_kubectl_exec_is_cut_and_the_cluster_carries_on(
        ready_sandbox: Sandbox, kubectl: Kubectl, tmp_path: Path) -> None:
    tester = the_tester(kubectl)
    lines = tmp_path / "lines"
    lines.write_text("a" * 64 + "!\n")
    with lines.open() as stdin:
        runaway = subprocess.Popen([kubectl.binary, "exec", "-i", tester, "--", "grep", "-E", "(a+)+$"],
                                   env=kubectl.env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
    try:
        # While the pattern runs, the API, exec and the services answer.
        assert kubectl("exec", tester, "--", "curl", "-sS", "http://ratings:9080/ratings/7").stdout == RATINGS_7
        assert len(kubectl("get", "pods", "-o", "name").stdout.split()) == 13
        out, err = runaway.communicate(timeout=120)
    finally:
        if runaway.poll() is None:
            runaway.kill()
            runaway.wait()
    assert runaway.returncode == 2, err
    assert out == ""
    assert "grep: regular expression stopped after 2 s of CPU time" in err
    assert "command terminated with exit code 2" in err
    wait_all_ready(ready_sandbox)


def test_wc_on_a_missing_file_is_an_error_message_not_a_traceback(ready_sandbox: Sandbox, kubectl: Kubectl) -> None:
    tester = the_tester(kubectl)
    result = kubectl("exec", tester, "--", "wc", "-l", "/no/such/file", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("wc: /no/such/file: No such file or directory\n")
    assert "Traceback" not in result.stderr and "error:" not in result.stderr.splitlines()[0]
    assert kubectl("exec", tester, "--", "wc", "-l", "/etc/hosts").stdout.endswith(" /etc/hosts\n")


API_ARG = st.one_of(st.sampled_from([w for w in WORDS if "\x00" not in w and "\udcff" not in w and len(w) < 100]),
                    st.text(alphabet=st.characters(codec="utf-8", blacklist_categories=("Cs", "Cc")), max_size=20))
# kill and pkill are left to the in-process fuzzer (its signaller only records): here `pkill .` would really
# stop the tester pod's process.
API_ARGV = st.builds(lambda name, args: [name, *args],
                     st.sampled_from([c for c in commands() if c not in ("kill", "pkill")]),
                     st.lists(API_ARG, max_size=5))


@pytest.fixture(scope="module")
def tester(sandbox: Sandbox, core: client.CoreV1Api) -> str:
    wait_all_ready(sandbox)
    return str(core.list_namespaced_pod("default", label_selector="app=sleep").items[0].metadata.name)


def test_fuzzed_exec_through_the_api_never_fails_the_server(ready_sandbox: Sandbox, core: client.CoreV1Api,
                                                            tester: str) -> None:
    seen: list[tuple[list[str], int | None]] = []

    @settings(max_examples=max(FUZZ_EXAMPLES // 10, 10), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
    @given(argv=API_ARGV)
    def one(argv: list[str]) -> None:
        ws = stream(core.connect_get_namespaced_pod_exec, tester, "default", command=argv, stderr=True,
                    stdin=False, stdout=True, tty=False, _preload_content=False)
        try:
            ws.run_forever(timeout=5)
            code = ws.returncode
        finally:
            ws.close()
        if code is None:
            assert argv[0] in MAY_WAIT, f"{argv} gave no exit code"
        seen.append((argv, code))

    one()
    assert seen
    # Afterwards nothing was killed by accident and the lesson's request still works.
    wait_all_ready(ready_sandbox)
    out = stream(core.connect_get_namespaced_pod_exec, tester, "default",
                 command=["curl", "-sS", "http://ratings:9080/ratings/7"], stderr=True, stdin=False, stdout=True,
                 tty=False)
    assert out == RATINGS_7


def regex_workers(pid: int) -> set[int]:
    found = set()
    for child in descendants(pid):
        try:
            if b"_regex_worker.py" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
        except OSError:
            continue
    return found


def gone(pids: set[int], timeout: float = 30) -> bool:
    """True once none of ``pids`` is alive, within a generous deadline."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("ending", ["stop", "SIGKILL"])
def test_regex_workers_die_with_the_sandbox(tmp_path: Path, ending: str) -> None:
    sb = Sandbox(tmp_path / "sb", replicas=1, time_scale=0.25).start()
    try:
        kubectl = Kubectl(sb.kubeconfig, tmp_path / "cache")
        result = kubectl("exec", the_tester(kubectl), "--", "grep", "-cE", "local(host)?", "/etc/hosts")
        assert result.stdout == "2\n"
        workers = regex_workers(sb.pid)
        assert workers, "the pattern ran in a worker process"
    finally:
        if ending == "SIGKILL":
            os.kill(sb.pid, signal.SIGKILL)
        sb.stop()
    assert gone(workers)
