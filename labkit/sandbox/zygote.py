"""The container runtime's zygote: containers forked from one process that has already imported their code.

A container is a Python process (see :mod:`labkit.sandbox.images`). Started from scratch, each one pays for an
interpreter and its imports, about 14 MB and 100 ms apiece. The zygote pays once: it is started by the kubelet as
``python -S -m labkit.sandbox.zygote``, imports everything the images import, freezes the garbage collector
(so collections in the children do not write to the shared pages), and then forks one child per container. The
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

Fork is used only where it is safe: on Linux, in the single-threaded zygote. Elsewhere, when the zygote cannot
be started, or with ``LABKIT_ZYGOTE=0`` in the sandbox's environment, containers are spawned as before
(``python -S -m labkit.sandbox.images.run <image> <argv...>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import traceback
from collections import deque
from dataclasses import dataclass, field
from types import CodeType, ModuleType
from typing import Any, Protocol

log = logging.getLogger("labkit.sandbox.zygote")

ENV_MODE = "LABKIT_ZYGOTE"
"""``0``/``off``/``spawn`` forces the spawn path; anything else (or unset) uses the zygote where it can."""

IMAGES = ("details", "ratings", "reviews", "productpage", "curl")
TITLE_ROOM = 1024
"""Bytes of command line reserved in the zygote's argv (as empty arguments) for the children's titles."""
READY_FD = 3
START_TIMEOUT = 15.0
MAX_RESTARTS = 3
_MAX_PACKET = 1 << 20
_REPLY_PACKET = 4096
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


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


def zygote_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether containers should be forked from a zygote: on Linux with fork, unless the environment says no."""
    value = (environ if environ is not None else os.environ).get(ENV_MODE, "").strip().lower()
    if value in ("0", "off", "no", "false", "spawn"):
        return False
    return sys.platform == "linux" and hasattr(os, "fork") and hasattr(socket, "send_fds")


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

    def __init__(self, proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
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
        """Stop the zygote; it kills any child still running before it exits."""
        self._lost("the zygote was stopped")
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


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
        # Containers import labkit from the same place as the kubelet, whatever the install.
        here = os.path.dirname(os.path.abspath(__file__))
        self.python_path = python_path or os.path.dirname(os.path.dirname(here))
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
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": self.python_path,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        try:
            with open(os.path.join(self.state_dir, "zygote.log"), "ab") as logf:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-S", "-m", "labkit.sandbox.zygote", "--fd", str(theirs.fileno()),
                    "--parent", str(os.getpid()), *([""] * TITLE_ROOM),
                    env=env, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                    pass_fds=(theirs.fileno(),), start_new_session=True, cwd=self.state_dir)
        except OSError as exc:
            log.warning("cannot start the zygote (%s); containers are spawned", exc)
            ours.close()
            return None
        finally:
            theirs.close()
        z = _Zygote(proc, ours)
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
        # The zygote died (or never came up): start a fresh one, a bounded number of times.
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


# --- the zygote's side ----------------------------------------------------------------------------


def _prctl(option: int, arg: int | bytes) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


_MODULE_DUNDERS = ("__doc__", "__file__", "__spec__", "__loader__", "__package__", "__path__", "__cached__")


@dataclass(frozen=True)
class _Pristine:
    """An image module before its code runs: its name and import-system attributes."""

    name: str
    dunders: dict[str, Any]


def _preload() -> dict[str, tuple[_Pristine, CodeType]]:
    """Import what every image imports; compile each image's own module (run afresh in each child).

    Each image module is executed once here, in a throwaway namespace, only so that everything it imports is
    in ``sys.modules`` before the fork; the children execute its code again with their own environment.
    """
    from labkit.sandbox.images import run

    run._skip_openssl()
    # Not the exec toolbox (and asyncio with it): only a curl-image container whose main command is a tool
    # needs it (``kubectl exec`` runs in the kubelet), so that rare container imports it itself.
    from labkit.sandbox.images import runtime  # noqa: F401

    codes: dict[str, tuple[_Pristine, CodeType]] = {}
    for image in IMAGES:
        name = f"labkit.sandbox.images.{image}"
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
            continue
        code = spec.loader.get_code(name)
        if code is None:
            continue
        throwaway = importlib.util.module_from_spec(spec)
        sys.modules[name] = throwaway
        try:
            exec(code, throwaway.__dict__)
        finally:
            sys.modules.pop(name, None)
        # Keep only what a fresh module needs before its code runs: the rest would be dead weight in every child.
        codes[image] = (_Pristine(name, {k: throwaway.__dict__[k] for k in _MODULE_DUNDERS if k in throwaway.__dict__}),
                        code)
        throwaway.__dict__.clear()
    return codes


def set_title(argv: list[str]) -> None:
    """Rewrite this process's ``/proc/self/cmdline`` in place (within the room its argv had)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end: fields 48 and 49 of stat
    except (OSError, IndexError, ValueError):
        return
    room = end - start
    if room <= 1:
        return
    data = b"".join(os.fsencode(a) + b"\0" for a in argv)[: room - 1]
    ctypes.memmove(start, data.ljust(room, b"\0"), room)


def _child(req: dict[str, Any], log_fd: int, ready_fd: int, zygote_pid: int,
           codes: dict[str, tuple[_Pristine, CodeType]]) -> None:
    """In the forked child: become the container process, run the image, exit with its code. Never returns."""
    code = 1
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(ready_fd, READY_FD)
        os.closerange(READY_FD + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        os.chdir(req["cwd"])
        env = dict(req["env"])
        env["LABKIT_READY_FD"] = str(READY_FD)
        env["LABKIT_PARENT_PID"] = str(zygote_pid)
        os.environ.clear()
        os.environ.update(env)
        set_title(list(req["title"]))
        image, argv = str(req["image"]), [str(a) for a in req["argv"]]
        from labkit.sandbox.images import run

        sys.argv = [str(run.__file__), image, *argv]  # what ``python -m ...images.run`` would have
        if image in codes:
            pristine, module_code = codes[image]
            module = ModuleType(pristine.name)
            module.__dict__.update(pristine.dunders)
            sys.modules[pristine.name] = module
            exec(module_code, module.__dict__)
        code = run.main([image, *argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code & 0xFF)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(sock: socket.socket) -> int:
    """The zygote's loop: fork a child per request, report every exit, until the kubelet goes away."""
    codes = _preload()
    gc.collect()
    gc.freeze()  # collections in the children must not touch (and so copy) the objects they share
    me = os.getpid()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kubelet stops us (socket EOF or SIGTERM), not a terminal
    children: set[int] = set()

    def send(msg: dict[str, Any]) -> None:
        sock.send(json.dumps(msg).encode())

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            send({"exited": pid, "status": status})

    send({"ready": me})
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    reap()
                    continue
                data, fds, _, _ = socket.recv_fds(sock, _MAX_PACKET, 2)
                if not data:
                    return 0
                req = json.loads(data)
                if len(fds) != 2:
                    for fd_ in fds:
                        os.close(fd_)
                    send({"id": req.get("id"), "error": "expected the log file and the readiness pipe"})
                    continue
                log_fd, ready_fd = fds
                if _threads() > 1:
                    send({"id": req["id"], "error": "the zygote has threads: fork is not safe"})
                else:
                    try:
                        pid = os.fork()
                    except OSError as exc:
                        send({"id": req["id"], "error": f"fork failed: {exc}"})
                    else:
                        if pid == 0:
                            sock.close()
                            _child(req, log_fd, ready_fd, me, codes)
                        children.add(pid)
                        send({"id": req["id"], "pid": pid})
                os.close(log_fd)
                os.close(ready_fd)
            reap()
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def main(argv: list[str]) -> int:
    """``python -S -m labkit.sandbox.zygote --fd N --parent PID [room...]``: the kubelet starts this."""
    try:
        fd = int(argv[argv.index("--fd") + 1])
        parent = int(argv[argv.index("--parent") + 1])
    except (ValueError, IndexError):
        sys.stderr.write("usage: python -S -m labkit.sandbox.zygote --fd N --parent PID\n")
        return 2
    # Die with the kubelet; check after arming, in case it died before the prctl call.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return 1
    _prctl(_PR_SET_NAME, b"labkit-zygote")
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    return serve(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
