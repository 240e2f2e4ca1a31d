"""The container runtime's zygote: containers forked from one process that has already imported their code.

A container is a Python process (see :mod:`labkit.sandbox.images`). Started from scratch, each one pays for an
interpreter and its imports, about 14 MB and 100 ms apiece. The zygote pays once: it is started as
``python -S -m labkit.sandbox.images.zygote`` (by the sandbox process first thing, so that its imports overlap
the API server's; the kubelet adopts it), imports everything the images import, freezes the garbage collector (so
collections in the children do not write to the shared pages), and then forks one child per container. The
children share the zygote's pages copy-on-write.

Each child is set up the way ``asyncio.create_subprocess_exec`` set up a container before:

- its own session and process group, stdin from ``/dev/null``, stdout and stderr to the container's log file,
  the readiness pipe as fd 3, the container's environment (wholesale) and working directory;
- ``PR_SET_PDEATHSIG`` (armed first thing, in :func:`labkit.sandbox.images.runtime.setup`): the child dies with
  the zygote, and the zygote dies with the kubelet, so a SIGKILLed sandbox leaves no process behind;
- its command name (``comm``) is the image's program (``ruby``, ``node``, ``java``, ``gunicorn``, ``sleep``), so
  ``ps`` and ``pkill ruby`` see what they saw before, and its command line (``/proc/<pid>/cmdline``) is rewritten
  in place to the one a spawned container had (the zygote is started with room for it);
- the image's own module is executed afresh in the child (from code compiled once in the zygote), because the
  images read their environment at import time.

The zygote is the children's parent, so it reaps them and reports each exit status to the kubelet over the
control socket; :class:`ZygoteProcess` is the kubelet's handle on such a child and behaves like the
``asyncio.subprocess.Process`` it replaces (``pid``, ``returncode``, ``wait()``, ``send_signal()``, ``kill()``):
a container killed by SIGTERM still reports exit code 143, by SIGKILL 137.

The control socket is a ``SOCK_SEQPACKET`` socket pair, one JSON message per packet. Kubelet to zygote:
``{"id": n, "image": ..., "argv": [...], "env": {...}, "cwd": ..., "title": [...]}`` with the log file and the
readiness pipe attached as ``SCM_RIGHTS``. Zygote to kubelet: ``{"ready": pid}`` once, then
``{"id": n, "pid": pid}`` (or ``{"id": n, "error": ...}``) per request and ``{"exited": pid, "status": wstatus}``
per child that ended.

This module is the kubelet's side; the zygote process itself is :mod:`labkit.sandbox.images.zygote` (standard
library only, like everything a container imports).

Fork is used only where it is safe: on Linux, in the single-threaded zygote. Elsewhere, when the zygote cannot
be started, or with ``LABKIT_ZYGOTE=0`` in the sandbox's environment, containers are spawned as before
(``python -S -m labkit.sandbox.images.run <image> <argv...>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from .images.zygote import ENV_MODE, default_python_path, launch, take_prestarted, zygote_wanted

__all__ = ["ENV_MODE", "ContainerProcess", "ContainerRuntime", "LaunchSpec", "ZygoteError", "ZygoteProcess",
           "zygote_wanted"]

log = logging.getLogger("labkit.sandbox.zygote")

START_TIMEOUT = 15.0
MAX_RESTARTS = 3
_REPLY_PACKET = 4096


# --- the kubelet's side ---------------------------------------------------------------------------


class ContainerProcess(Protocol):
    """What the kubelet needs of a container's process (``asyncio.subprocess.Process`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...


@dataclass(frozen=True)
class LaunchSpec:
    """One container process to start.

    Attributes:
        image: The image's program family (``details``, ``ratings``, ``reviews``, ``productpage``, ``curl``).
        argv: The container's command line (command + args, or the image's default).
        env: The process's whole environment, as the kubelet computed it.
        cwd: The working directory.
    """

    image: str
    argv: list[str]
    env: dict[str, str]
    cwd: str


def spawn_command(spec: LaunchSpec) -> list[str]:
    """The command line of a spawned container (and the title a forked one shows)."""
    return [sys.executable, "-S", "-m", "labkit.sandbox.images.run", spec.image, *spec.argv]


class ZygoteError(RuntimeError):
    """The zygote could not start a container (it is gone, or it refused); the caller spawns instead."""


@dataclass(eq=False)
class ZygoteProcess:
    """A container process forked by the zygote: the kubelet's handle, shaped like ``asyncio.subprocess.Process``.

    The zygote reaps it and reports its wait status; :attr:`returncode` follows ``subprocess``'s convention
    (negative signal number for a signal death), so the kubelet turns SIGTERM into 143 and SIGKILL into 137.
    """

    pid: int
    _done: asyncio.Future[int] = field(repr=False)

    @property
    def returncode(self) -> int | None:
        return self._done.result() if self._done.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _exited(self, returncode: int) -> None:
        if not self._done.done():
            self._done.set_result(returncode)


class _Zygote:
    """One running zygote process and the kubelet's end of its control socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[int] = self.loop.create_future()
        self.pending: dict[int, asyncio.Future[int]] = {}
        self.children: dict[int, ZygoteProcess] = {}
        self.early_exits: dict[int, int] = {}
        self.outbox: deque[tuple[int, bytes, list[int]]] = deque()
        self.next_id = 0
        self.alive = True
        self.loop.add_reader(sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while self.alive:
            try:
                data = self.sock.recv(_REPLY_PACKET)  # the zygote's messages are small and carry no fds
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lost("the zygote closed its control socket")
                return
            self._dispatch(json.loads(data))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "ready" in msg:
            if not self.ready.done():
                self.ready.set_result(int(msg["ready"]))
        elif "exited" in msg:
            pid, code = int(msg["exited"]), os.waitstatus_to_exitcode(int(msg["status"]))
            child = self.children.pop(pid, None)
            if child is not None:
                child._exited(code)
            else:  # ended before the kubelet saw its start reply (a child that fails at once)
                self.early_exits[pid] = code
        elif "id" in msg:
            fut = self.pending.pop(int(msg["id"]), None)
            if fut is not None and not fut.done():
                if "pid" in msg:
                    fut.set_result(int(msg["pid"]))
                else:
                    fut.set_exception(ZygoteError(str(msg.get("error", "refused"))))

    def _flush(self) -> None:
        while self.outbox and self.alive:
            rid, data, fds = self.outbox[0]
            try:
                socket.send_fds(self.sock, [data], fds)
            except (BlockingIOError, InterruptedError):
                self.loop.add_writer(self.sock.fileno(), self._flush)
                return
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    self._lost(f"the zygote's control socket failed: {exc}")
                    return
                # Too big for one packet (an enormous environment): this container is spawned instead.
                fut = self.pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_exception(ZygoteError(f"request of {len(data)} bytes is too big for the socket"))
            self.outbox.popleft()
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.sock.fileno())

    async def start(self, spec: LaunchSpec, title: list[str], log_fd: int, ready_fd: int) -> ZygoteProcess:
        if not self.alive:
            raise ZygoteError("the zygote is gone")
        self.next_id += 1
        rid = self.next_id
        fut: asyncio.Future[int] = self.loop.create_future()
        self.pending[rid] = fut
        msg = {"id": rid, "image": spec.image, "argv": spec.argv, "env": spec.env, "cwd": spec.cwd,
               "title": title}
        self.outbox.append((rid, json.dumps(msg).encode(), [log_fd, ready_fd]))
        self._flush()
        pid = await fut  # the fds are in the zygote once it answers: the caller may close its copies then
        child = ZygoteProcess(pid, self.loop.create_future())
        if pid in self.early_exits:
            child._exited(self.early_exits.pop(pid))
        else:
            self.children[pid] = child
        return child

    def _lost(self, why: str) -> None:
        """The zygote is gone: its children died with it (PR_SET_PDEATHSIG), report them killed."""
        if not self.alive:
            return
        self.alive = False
        log.warning("%s; containers it forked are reported killed", why)
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(self.sock.fileno())
        self.sock.close()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ZygoteError(why))
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(ZygoteError(why))
        for child in self.children.values():
            child._exited(-signal.SIGKILL)
        self.children.clear()

    async def close(self) -> None:
        """Stop the zygote (it kills any child still running before it exits) and reap it."""
        self._lost("the zygote was stopped")
        deadline = self.loop.time() + 3
        while self.proc.poll() is None and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ContainerRuntime:
    """Starts container processes for the kubelet: forked by the zygote where possible, spawned otherwise.

    Args:
        state_dir: The sandbox's folder (the zygote's own log goes to ``zygote.log`` there).
        python_path: ``PYTHONPATH`` for the zygote; default: where this labkit is imported from.
        use_zygote: Fork from a zygote; default :func:`zygote_wanted` (``LABKIT_ZYGOTE=0`` says no).

    Example (inside the kubelet's event loop)::

        runtime = ContainerRuntime(state_dir)
        runtime.start()
        proc = await runtime.run(LaunchSpec("details", ["ruby", "details.rb", "9080"], env, cwd), log_fd, ready_fd)
        code = await proc.wait()
    """

    def __init__(self, state_dir: str, *, python_path: str | None = None, use_zygote: bool | None = None) -> None:
        self.python_path = python_path or default_python_path()
        self.state_dir = state_dir
        self.use_zygote = zygote_wanted() if use_zygote is None else use_zygote
        self._zygote: _Zygote | None = None
        self._starting: asyncio.Task[_Zygote | None] | None = None
        self._restarts = 0
        self.forked = 0
        self.spawned = 0

    def start(self) -> None:
        """Begin starting the zygote in the background (the first container waits for it)."""
        if self.use_zygote and self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start_zygote())

    @property
    def zygote_pid(self) -> int | None:
        z = self._zygote
        return z.proc.pid if z is not None and z.alive else None

    async def _start_zygote(self) -> _Zygote | None:
        # The sandbox process may have started one already, before its own imports (images.zygote.prestart).
        early = take_prestarted(self.state_dir) if self._zygote is None else None
        try:
            proc, sock = early or launch(self.state_dir, self.python_path)
        except OSError as exc:
            log.warning("cannot start the zygote (%s); containers are spawned", exc)
            return None
        z = _Zygote(proc, sock)
        try:
            await asyncio.wait_for(asyncio.shield(z.ready), START_TIMEOUT)
        except (TimeoutError, ZygoteError) as exc:
            log.warning("the zygote did not start (%s); containers are spawned", exc or "timeout")
            await z.close()
            return None
        log.info("zygote %d ready", proc.pid)
        self._zygote = z
        return z

    async def _current(self) -> _Zygote | None:
        if not self.use_zygote:
            return None
        if self._starting is None:
            self.start()
        assert self._starting is not None
        z = await self._starting
        if z is not None and z.alive:
            return z
        if z is None:  # it never came up: spawn from now on
            self.use_zygote = False
            return None
        if self._restarts >= MAX_RESTARTS:
            return None
        # The zygote died: reap it and start a fresh one, a bounded number of times.
        z.proc.poll()
        self._restarts += 1
        self._starting = asyncio.get_running_loop().create_task(self._start_zygote())
        z = await self._starting
        return z if z is not None and z.alive else None

    async def run(self, spec: LaunchSpec, log_fd: int, ready_fd: int) -> ContainerProcess:
        """Start one container process with stdout/stderr on ``log_fd`` and the readiness pipe ``ready_fd``.

        The caller keeps ownership of both fds and closes them once this returns.

        Raises:
            OSError: The process could not be started at all.
        """
        z = await self._current()
        if z is not None:
            try:
                proc = await z.start(spec, spawn_command(spec), log_fd, ready_fd)
            except ZygoteError as exc:
                log.warning("zygote could not start %s (%s); spawning it", spec.image, exc)
            else:
                self.forked += 1
                return proc
        self.spawned += 1
        env = {**spec.env, "LABKIT_READY_FD": str(ready_fd), "LABKIT_PARENT_PID": str(os.getpid())}
        return await asyncio.create_subprocess_exec(
            *spawn_command(spec), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
            pass_fds=(ready_fd,), start_new_session=True, cwd=spec.cwd)

    async def close(self) -> None:
        """Stop the zygote (after the kubelet stopped the containers)."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(BaseException):
                await self._starting
        if self._zygote is not None:
            await self._zygote.close()
            self._zygote = None
