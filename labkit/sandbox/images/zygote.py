"""The zygote process: ``python -S -m labkit.sandbox.images.zygote``, the parent of every forked container.

It imports what every image imports, compiles each image's own module, freezes the garbage collector (so
collections in the children do not write to the pages they share with it) and then, per request on its control
socket, forks a child that becomes one container process. It reaps its children and reports each exit status.
The kubelet's side, the wire protocol and the guarantees are described in :mod:`labkit.sandbox.zygote`.

Like every module of this package it is imported by container processes, so it uses the standard library only
(and not asyncio: a child must not inherit an event loop's state).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

IMAGES = ("details", "ratings", "reviews", "productpage", "curl", "istio_proxy")
ENV_MODE = "LABKIT_ZYGOTE"
"""``0``/``off``/``spawn`` forces the spawn path; anything else (or unset) uses the zygote where it can."""
TITLE_ROOM = 1024
"""Bytes of command line reserved in the zygote's argv (as empty arguments) for the children's titles."""
ENV_ROOM = 16384
"""Bytes reserved in the zygote's environment for the children's ``/proc/<pid>/environ``."""
READY_FD = 3
"""The readiness pipe's fd in a forked container (its number in ``LABKIT_READY_FD``)."""
MAX_PACKET = 1 << 20
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def zygote_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether containers should be forked from a zygote: on Linux with fork, unless the environment says no."""
    value = (environ if environ is not None else os.environ).get(ENV_MODE, "").strip().lower()
    if value in ("0", "off", "no", "false", "spawn"):
        return False
    return sys.platform == "linux" and hasattr(os, "fork") and hasattr(socket, "send_fds")


def default_python_path() -> str:
    """Where this labkit is imported from: the zygote and the containers import it from the same place."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def launch(state_dir: str, python_path: str | None = None) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start a zygote process; return it and the kubelet's end of its control socket (non-blocking).

    Its own output goes to ``zygote.log`` in ``state_dir``; it dies with the process that called this.

    Raises:
        OSError: The process could not be started.
    """
    import subprocess

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": python_path or default_python_path(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LABKIT_ENV_ROOM": "." * ENV_ROOM,  # room for a child's /proc/<pid>/environ (see set_title)
    }
    try:
        with open(os.path.join(state_dir, "zygote.log"), "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-m", "labkit.sandbox.images.zygote", "--fd", str(theirs.fileno()),
                 "--parent", str(os.getpid()), *([""] * TITLE_ROOM)],
                env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, pass_fds=(theirs.fileno(),),
                start_new_session=True, cwd=state_dir)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return proc, ours


_prestarted: dict[str, tuple[subprocess.Popen[bytes], socket.socket]] = {}


def prestart(state_dir: str) -> None:
    """Start the zygote now, for the kubelet to adopt later (:func:`take_prestarted`).

    The sandbox process calls this first thing, so that the zygote's imports run while the sandbox imports its
    API server, and the first container need not wait for them. Does nothing where fork is not used.
    """
    if zygote_wanted() and state_dir not in _prestarted:
        with contextlib.suppress(OSError):
            _prestarted[state_dir] = launch(state_dir)


def take_prestarted(state_dir: str) -> tuple[subprocess.Popen[bytes], socket.socket] | None:
    """The zygote :func:`prestart` started for ``state_dir``, handed over once (None if there is none)."""
    return _prestarted.pop(state_dir, None)


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


def set_title(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Rewrite this process's ``/proc/self/cmdline`` (and ``environ``) in place, within the room they had.

    The command line is cut to fit; the environment is written only when it fits whole (a cut one would lie),
    and only after the process's own environment no longer points into that memory.
    """
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # arg_start, arg_end, env_start, env_end: fields 48 to 51 of stat (counted from 1, the pid).
        arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    except (OSError, IndexError, ValueError):
        return
    room = arg_end - arg_start
    if room > 1:
        data = b"".join(os.fsencode(a) + b"\0" for a in argv)[: room - 1]
        ctypes.memmove(arg_start, data.ljust(room, b"\0"), room)
    if env is not None:
        room = env_end - env_start
        data = b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in env.items())
        if 0 < len(data) <= room:
            ctypes.memmove(env_start, data.ljust(room, b"\0"), room)


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
        set_title(list(req["title"]), env)
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
                data, fds, _, _ = socket.recv_fds(sock, MAX_PACKET, 2)
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
    """``python -S -m labkit.sandbox.images.zygote --fd N --parent PID [room...]``: the kubelet starts this."""
    try:
        fd = int(argv[argv.index("--fd") + 1])
        parent = int(argv[argv.index("--parent") + 1])
    except (ValueError, IndexError):
        sys.stderr.write("usage: python -S -m labkit.sandbox.images.zygote --fd N --parent PID\n")
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
