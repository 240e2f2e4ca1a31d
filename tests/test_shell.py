"""The toolbox's ``sh``: the loops tutorials type, in process and through the real kubectl (``-c``, stdin, ``-it``)."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import time

import pytest
from conftest import Kubectl
from helpers import run_bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit.sandbox import Sandbox
from labkit.sandbox.toolbox import ExecContext, has_command, run

RATINGS_7 = '{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}'
FILES = {"/etc/hosts": b"127.0.0.1\tlocalhost\n", "/etc/hostname": b"sleep-88ddbcfdd-l9zq4\n"}


def sh(script: str, stdin: bytes = b"", **fields: object) -> tuple[int, str, str]:
    fields.setdefault("files", dict(FILES))
    ctx = ExecContext(pod="sleep-88ddbcfdd-l9zq4", stdin=stdin, env={"PATH": "/usr/bin:/bin", "HOME": "/root"},
                      **fields)  # type: ignore[arg-type]
    code = asyncio.run(run(["sh", "-c", script], ctx))
    return code, bytes(ctx.stdout).decode(), bytes(ctx.stderr).decode()


@pytest.mark.parametrize(
    ("script", "out"),
    [
        ("echo hi; echo $HOME", "hi\n/root\n"),
        ("for i in 1 2 3; do echo $i; done | grep 2", "2\n"),
        ("x=5; echo $((x * 2 + 1)) $((7 / -2)) $((7 % 3)); echo ${y:-default} ${#HOME}", "11 -3 1\ndefault 5\n"),
        ("false || echo fallback && echo and; true && false || echo either", "fallback\nand\neither\n"),
        ("i=0; while [ $i -lt 3 ]; do echo n$i; i=$((i+1)); done", "n0\nn1\nn2\n"),
        ("i=0; until [ $i -ge 2 ]; do i=$((i + 1)); done; echo $i", "2\n"),
        ("echo $(hostname) \"$(echo a   b)\" `echo back`", "sleep-88ddbcfdd-l9zq4 a b back\n"),
        ("echo hi > /tmp/f; echo more >> /tmp/f; cat /tmp/f; wc -l < /tmp/f", "hi\nmore\n2\n"),
        ("nosuch 2>/dev/null; echo $?", "127\n"),
        ("if [ -f /etc/hosts ]; then echo file; elif true; then echo no; else echo never; fi", "file\n"),
        ("echo 'single $HOME' \"double $HOME\" back\\ slash", "single $HOME double /root back slash\n"),
        ("for i in 1 2 3 4; do [ $i = 2 ] && continue; [ $i = 4 ] && break; echo $i; done", "1\n3\n"),
        ("(exit 4); echo $?; ! true; echo $?", "4\n1\n"),
        ("ls /nope 2>&1 | wc -l; ls /nope > /dev/null 2>&1; echo $?", "1\n2\n"),
        ("echo a b | { read x y; echo got $y $x; }", "got b a\n"),
        ("x=outer; (x=inner); echo $x; A=1 env | grep '^A='", "outer\nA=1\n"),
        ("while true; do echo y; done | head -n 2", "y\ny\n"),
        ("set -- a b; for arg; do echo [$arg]; done; echo $#", "[a]\n[b]\n2\n"),
        ("# a comment\necho one \\\n  two", "one two\n"),
    ],
)
def test_scripts(script: str, out: str) -> None:
    assert sh(script) == (0, out, "")


def test_exit_codes_and_errors_as_ash_reports_them() -> None:
    assert sh("exit 3")[0] == 3
    assert sh("false")[0] == 1
    assert sh("nosuch") == (127, "", "sh: nosuch: not found\n")
    assert sh("for x in a b; do echo $x") == (2, "", 'sh: syntax error: unexpected end of file (expecting "done")\n')
    assert sh("fi") == (2, "", 'sh: syntax error: unexpected "fi"\n')
    assert sh("echo $((1 / 0))") == (2, "", "sh: divide by zero\n")
    assert sh("cat < /nope") == (1, "", "sh: can't open '/nope': No such file or directory\n")
    assert sh("[ 1 -lt x ]") == (2, "", "sh: [: x: bad number\n")
    assert sh("echo ${x:?is required}") == (2, "", "sh: x: is required\n")


def test_scripts_from_stdin_and_files() -> None:
    ctx = ExecContext(pod="p", stdin=b"echo one\nfor i in 1 2\ndo echo $i\ndone\nexit 7\necho never\n")
    assert asyncio.run(run(["sh"], ctx)) == 7
    assert bytes(ctx.stdout) == b"one\n1\n2\n"
    ctx = ExecContext(pod="p", files={"/tmp/s.sh": b"echo from $0 with $1\n"})
    assert asyncio.run(run(["/bin/sh", "/tmp/s.sh", "arg"], ctx)) == 0
    assert bytes(ctx.stdout) == b"from sh with arg\n"
    assert has_command("sh") and has_command("/bin/sh") and not has_command("bash")


def test_limits_hold_inside_the_shell() -> None:
    code, out, err = sh("x=a; while :; do x=$x$x; done")
    assert (code, err) == (2, "sh: out of memory (variables past the sandbox's limit)\n")
    code, out, err = sh("sh /tmp/self", files={"/tmp/self": b"sh /tmp/self\n"})
    assert (code, err) == (2, "sh: too many nested shells\n")
    code, out, err = sh("while :; do echo 0123456789 >> /tmp/grow; done", files_limit=1000)
    assert (code, err) == (2, "sh: write error: /tmp/grow: File too large\n")
    code, out, err = sh("echo x | grep -E '(a+)+$' ; echo status $?")
    assert out == "status 1\n"


def test_a_busy_loop_leaves_the_event_loop_to_others() -> None:
    async def main() -> tuple[int, bool]:
        task = asyncio.create_task(run(["sh", "-c", "while :; do :; done"], ExecContext(pod="p")))
        ticks = 0
        for _ in range(20):  # other tasks keep running while the loop spins
            await asyncio.sleep(0.001)
            ticks += 1
        task.cancel()
        await asyncio.wait({task}, timeout=30)
        return ticks, task.cancelled()

    assert asyncio.run(main()) == (20, True)


# -- through the real kubectl -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tester(kubectl: Kubectl, sandbox: Sandbox) -> str:
    return kubectl("get", "pod", "-l", "app=sleep", "-o", "jsonpath={.items[0].metadata.name}").stdout


def test_kubectl_exec_sh_c_runs_the_tutorial_loop(ready_sandbox: Sandbox, kubectl: Kubectl, tester: str) -> None:
    script = ("for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code}\\n' http://ratings:9080/ratings/7; done "
              "| grep -c 200; curl -s ratings:9080/ratings/7 | grep -o Reviewer1 && echo ok")
    result = kubectl("exec", tester, "--", "sh", "-c", script)
    assert result.stdout == "3\nReviewer1\nok\n"
    failed = kubectl("exec", tester, "--", "sh", "-c", "curl -sS http://nope:9080/; exit 6", check=False)
    assert failed.returncode == 6
    assert "curl: (6) Could not resolve host: nope" in failed.stderr


def test_kubectl_exec_i_sh_reads_commands_from_stdin(ready_sandbox: Sandbox, kubectl: Kubectl, tester: str) -> None:
    result = kubectl("exec", "-i", tester, "--", "sh", input="echo $HOSTNAME\ncurl -s ratings:9080/ratings/7\n"
                                                           "exit 4\n", check=False)
    assert result.returncode == 4
    assert result.stdout == f"{tester}\n{RATINGS_7}"


class Terminal:
    """The real kubectl in a pseudo-terminal, as a person at a keyboard runs ``kubectl exec -it POD -- sh``."""

    def __init__(self, kubectl: Kubectl, tester: str, command: tuple[str, ...] | list[str] = ("sh",)) -> None:
        master, slave = pty.openpty()
        self.fd = master
        self.proc = subprocess.Popen([kubectl.binary, "exec", "-it", tester, "--", *command], env=kubectl.env,
                                     stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def wait_for(self, text: bytes, timeout: float = 60) -> bytes:
        """Everything shown up to and including ``text``; what came after it stays for the next wait."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; the terminal shows {self.seen!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the terminal closed: kubectl exited
                    raise AssertionError(f"terminal closed before {text!r}; it showed {self.seen!r}") from None
        end = self.seen.index(text) + len(text)
        found, self.seen = self.seen[:end], self.seen[end:]
        return found

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.fd)


def test_kubectl_exec_it_sh_is_an_interactive_shell(ready_sandbox: Sandbox, kubectl: Kubectl, tester: str) -> None:
    term = Terminal(kubectl, tester)
    try:
        term.wait_for(b"/ # ")
        term.type(b"echo $((6 * 7))\r")
        assert b"echo $((6 * 7))\r\n42\r\n" in term.wait_for(b"/ # ")
        term.type(b"for i in 1 2; do\r")
        term.wait_for(b"> ")
        term.type(b"echo n$i; done\r")
        assert b"n1\r\nn2\r\n" in term.wait_for(b"/ # ")
        term.type(b"curl -sS http://nope:9080/\r")  # stderr shows on the terminal, as with a real pty
        assert b"curl: (6) Could not resolve host: nope" in term.wait_for(b"/ # ")
        term.type(b"ech\x7fho typo fixed\r")
        assert b"typo fixed\r\n" in term.wait_for(b"/ # ")
        term.type(b"sleep 1000\r")
        term.wait_for(b"sleep 1000\r\n")
        term.type(b"\x03")
        term.wait_for(b"^C")
        term.wait_for(b"/ # ")
        term.type(b"echo status $?\r")
        assert b"status 130" in term.wait_for(b"/ # ")
        term.type(b"exit 5\r")
    finally:
        code = term.close()
    assert code == 5


def test_kubectl_exec_it_shows_a_commands_errors(ready_sandbox: Sandbox, kubectl: Kubectl, tester: str) -> None:
    term = Terminal(kubectl, tester, ["curl", "-sS", "http://nope:9080/"])
    try:
        assert b"curl: (6) Could not resolve host: nope\r\n" in term.wait_for(b"nope\r\n")
    finally:
        code = term.close()
    assert code == 6


# -- fuzzing the language -------------------------------------------------------------------------------------

FUZZ_EXAMPLES = int(os.environ.get("LABKIT_FUZZ_EXAMPLES", "300"))
SHELL_WORDS = ["echo", "x", "$x", "x=1", "|", ";", "&&", "||", "(", ")", "{", "}", "for", "i", "in", "do", "done",
               "while", "until", "true", "false", "if", "then", "elif", "else", "fi", "!", "$(", "`", "'", '"',
               "$((", "1+", "*", "))", ">", ">>", "/tmp/a", "<", "2>&1", ">&2", "\n", "break", "continue", "exit",
               "[", "]", "-eq", "-z", "=", "read", "cat", "head", "-n", "1", "grep", "a", "wc", "${x:-d}", "${#x}",
               "\\", "#", "sh", "-c", "export", "unset", "set", "--", "$?", "$1", "$@", ":", "cd", "/nope"]


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(st.sampled_from(SHELL_WORDS), max_size=14), stdin=st.binary(max_size=40))
def test_any_script_gives_an_exit_code(words: list[str], stdin: bytes) -> None:
    script = " ".join(words)
    ctx = ExecContext(pod="p", stdin=stdin, files=dict(FILES), files_limit=4096)

    code = asyncio.run(run_bounded(["sh", "-c", script], ctx, seconds=3))
    if code is None:  # only a loop may run past the deadline
        assert {"while", "until"} & set(words), f"{script!r} hung"
    else:
        assert 0 <= code <= 255, (script, code)
    assert sum(len(v) for v in ctx.files.values()) <= 4096


def test_the_tools_of_counting_loops() -> None:
    script = "for i in $(seq 1 5); do echo v$((i % 2 + 1)); done | sort | uniq -c | sort -rn"
    assert sh(script) == (0, "      3 v2\n      2 v1\n", "")
    assert sh("seq 10 -4 1; seq -s , 3; seq 1 1000000000000 | head -n 2") == (0, "10\n6\n2\n1,2,3\n1\n2\n", "")
    assert sh("printf '%s=%03d|%-3s|\\n' a 7 b c 8 d; printf '100%%\\n'") == (0, "a=007|b  |\nc=008|d  |\n100%\n", "")
    assert sh("printf '%d' x")[::2] == (1, "printf: x: invalid number\n")
    assert sh("printf '%s\\n' b a b | sort -u") == (0, "a\nb\n", "")
    big = asyncio.run(_sorted(b"x\n" * (600 << 10)))
    assert big == (2, b"", b"sort: -: input past 1 MiB, the sandbox's limit for sort\n")
    code, out, _ = sh("date +%Y-%m-%d; date")
    assert code == 0 and re.fullmatch(r"\d{4}-\d\d-\d\d\n\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}\n", out)


async def _sorted(stdin: bytes) -> tuple[int, bytes, bytes]:
    ctx = ExecContext(pod="p", stdin=stdin)
    code = await run(["sort"], ctx)
    return code, bytes(ctx.stdout), bytes(ctx.stderr)
