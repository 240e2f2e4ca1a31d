"""The image toolbox: the commands that ``kubectl exec`` runs inside a sandbox pod.

A sandbox container is a real local process, but ``kubectl exec POD -- CMD ...`` never starts a host shell.
The API server runs CMD here instead, as a coroutine on its own event loop, much as a busybox binary runs
inside a real image. Every image carries the same small set of tools, by family:

    curl                                            :mod:`.curl`
    kill  pkill  pgrep  ps                          :mod:`.proc`
    cat  date  echo  env  false  head  hostname     :mod:`.coreutils`
    ls  printenv  printf  seq  sleep  sort  true
    uniq  wc
    grep                                            :mod:`.grep`
    sh                                              :mod:`.shell`, :mod:`.shell_syntax`

A command may also be named by path (``/usr/bin/curl``, ``/bin/sleep``). ``sh`` is a small POSIX shell
(pipelines, ``&&``, loops, variables, redirections) over these same tools, for ``kubectl exec POD -- sh -c
'...'`` and an interactive ``kubectl exec -it POD -- sh``; there is no ``bash``.

Each tool prints what the real one prints (curl 8, procps-ng, GNU coreutils and grep) for the options the
lessons, the tests and workshop attendees use, and returns the real exit code. A tool never raises because of
a user mistake. Cancelling the task that runs a tool (the client went away, or a deadline passed) stops it at
once, even ``sleep infinity`` or a curl waiting on a server that never answers.

One command cannot stop the others. Everything a tool does on the event loop is linear in its input, and
inputs are bounded: a container's in-memory files (:data:`FILES_LIMIT`, ``curl -o`` past it fails with exit
code 23) and a whole stdin read into memory (:data:`INPUT_LIMIT`). Regular expressions, the one thing that can
run for hours on a short input, run in a worker process with a CPU-time and memory limit (:mod:`.regex`).

The tools see the pod only through an :class:`ExecContext`: its environment, its in-memory filesystem (no host
file is ever read), the cluster resolver, stdio and the pod's processes. Signals go through
:meth:`ExecContext.send_signal`, so the kubelet decides what a pid means and no tool can reach a process
outside the pod.

Example, shaped like the lesson's first step::

    ctx = ExecContext(pod="sleep-88ddbcfdd-l9zq4", pod_ip="127.64.0.5", resolver=Resolver(hosts_file))
    code = await run(["curl", "-sS", "http://ratings:9080/ratings/7"], ctx)
    code, bytes(ctx.stdout)
    # (0, b'{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}')
"""

from __future__ import annotations

from . import coreutils, grep, proc, shell  # noqa: F401  (importing a family registers its commands)
from .context import FILES_LIMIT, INPUT_LIMIT, ExecContext, PodProcess
from .curl import CURL_VERSION
from .registry import commands, has_command, not_found_message, run

__all__ = [
    "CURL_VERSION",
    "FILES_LIMIT",
    "INPUT_LIMIT",
    "UNKNOWN",
    "ExecContext",
    "PodProcess",
    "commands",
    "has_command",
    "not_found_message",
    "run",
]

UNKNOWN = -1
"""The exit code of a command that never finished (its task was cancelled), so it has none to report."""
