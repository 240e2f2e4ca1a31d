"""The sandbox's state folder: certificate, token, kubeconfig, pid, lock and logs, all in one place.

Default ``~/.labkit/sandbox``; ``--dir`` or ``LABKIT_SANDBOX_DIR`` choose another. A running sandbox holds an
exclusive ``flock`` on ``lock`` for its whole life, so a stale folder (a crashed or SIGKILLed run) is recognised
with certainty: if the lock can be taken, nobody is running there, whatever ``state.json`` says.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "LABKIT_SANDBOX_DIR"


def default_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".labkit" / "sandbox"


@dataclass
class StatePaths:
    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def cert(self) -> Path:
        return self.root / "pki" / "apiserver.crt"

    @property
    def key(self) -> Path:
        return self.root / "pki" / "apiserver.key"

    @property
    def log(self) -> Path:
        return self.root / "sandbox.log"

    @property
    def kubecache(self) -> Path:
        return self.root / "kubecache"


def make_certificate(cert_path: Path, key_path: Path) -> bytes:
    """A self-signed ECDSA certificate for 127.0.0.1 and localhost; returns the PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labkit-sandbox-apiserver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    make_private_dirs(cert_path.parent)
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    cert_path.write_bytes(pem)
    return pem


class CertificateJob:
    """:func:`make_certificate` in a child process, started early and collected when the server needs the files.

    The ``cryptography`` package costs a long-lived daemon about 10 MB for a certificate made once at boot; in a
    child it is loaded, used and gone, while the daemon goes on with its own imports in parallel. The child dies
    with the daemon (``PR_SET_PDEATHSIG``).
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        import subprocess

        self.cert_path, self.key_path = cert_path, key_path
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "labkit.sandbox.state", "certificate", str(cert_path), str(key_path),
             str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def result(self, timeout: float = 60.0) -> bytes:
        """Wait for the child; the certificate's PEM. Raises RuntimeError with the child's error if it failed."""
        _, err = self._proc.communicate(timeout=timeout)
        if self._proc.returncode != 0:
            raise RuntimeError(f"making the sandbox's certificate failed (exit {self._proc.returncode}): "
                               f"{err.decode(errors='replace').strip()[-2000:]}")
        return self.cert_path.read_bytes()


def die_with_parent(parent: int, sig: int = 15) -> None:
    """Linux: get ``sig`` (default SIGTERM) when the process that started us dies; exit now if it already has."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents as 0700 folders; a folder that exists keeps its permissions.

    Pointed at a shared folder (``--dir /tmp/shared``), labkit must not change who can read it: only the folders
    it creates are private (the secrets inside are 0600 files and a 0700 ``pki`` folder of its own).
    """
    missing = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        if cur.parent == cur:
            break
        cur = cur.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (created 0600, never briefly world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def kubeconfig_text(server: str, ca_pem: bytes, token: str, namespace: str = "default") -> str:
    ca = base64.b64encode(ca_pem).decode()
    return (
        "apiVersion: v1\nkind: Config\n"
        "clusters:\n- name: labkit-sandbox\n  cluster:\n"
        f"    server: {server}\n    certificate-authority-data: {ca}\n"
        "contexts:\n- name: labkit-sandbox\n  context:\n"
        f"    cluster: labkit-sandbox\n    user: labkit-sandbox\n    namespace: {namespace}\n"
        "current-context: labkit-sandbox\n"
        "users:\n- name: labkit-sandbox\n  user:\n"
        f"    token: {token}\n"
    )


class Lock:
    """The sandbox's exclusive lock on ``<dir>/lock``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def is_running(paths: StatePaths) -> bool:
    """Whether a live sandbox holds this folder's lock."""
    if not paths.lock.exists():
        return False
    probe = Lock(paths.lock)
    if probe.acquire():
        probe.release()
        return False
    return True


def read_state(paths: StatePaths) -> dict[str, Any] | None:
    try:
        return dict(json.loads(paths.state.read_text()))
    except (OSError, ValueError):
        return None


def write_state(paths: StatePaths, state: dict[str, Any]) -> None:
    tmp = paths.state.with_name("state.json.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, paths.state)


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (read from /proc): the processes a sandbox started."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except (OSError, IndexError):
                continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier}
        found |= frontier
    return found


def memory_kib(pids: set[int]) -> dict[str, int]:
    """Summed proportional (PSS) and resident (RSS) memory of processes, in KiB, from smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return {"pss_kib": pss, "rss_kib": rss}


def _main(argv: list[str]) -> int:
    """``python -m labkit.sandbox.state certificate CERT KEY PARENT_PID`` (see :class:`CertificateJob`)."""
    if len(argv) != 4 or argv[0] != "certificate":
        print("usage: python -m labkit.sandbox.state certificate CERT KEY PARENT_PID", file=sys.stderr)
        return 2
    die_with_parent(int(argv[3]), 9)
    try:
        make_certificate(Path(argv[1]), Path(argv[2]))
    except OSError as exc:  # a folder that cannot hold the files: one line for the daemon's report
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
