"""Connection hygiene: what keeps a flood of connections or errors from taking the sandbox down.

- :class:`ConnectionGuard` caps the connections that have not yet shown a valid token (the oldest is closed to
  make room for a new one) and the connections in all, and closes one that shows no token within
  :data:`AUTH_DEADLINE` seconds, so idle sockets cannot use up the
  file descriptors the API server, the ingress and exec need.
- :class:`GuardedSite` is aiohttp's ``TCPSite`` with the guard in front and a TLS handshake deadline.
- :class:`RateLimitFilter` lets the log say a thing a few times a minute, then counts the repeats, so a flood of
  failing requests cannot fill the disk with tracebacks.
- :func:`raise_fd_limit` lifts the soft descriptor limit to the hard one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from typing import Any

from aiohttp import web

AUTH_DEADLINE = 10.0
"""Seconds a new connection has to send a request with a valid token."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds allowed for a TLS handshake (asyncio's default is 60)."""
IDLE_TIMEOUT = 60.0
"""Seconds an authenticated keep-alive connection may stay idle (aiohttp's default is an hour)."""
MAX_UNAUTHENTICATED = 64
"""Connections at once that have not shown a valid token yet; more are closed at once."""
MAX_CONNECTIONS = 2048
"""Connections at once in all (watches, execs, port-forwards included)."""


class ConnectionGuard:
    """Counts connections and closes the ones that do not authenticate in time or exceed the caps."""

    def __init__(self, *, max_unauthenticated: int = MAX_UNAUTHENTICATED, max_connections: int = MAX_CONNECTIONS,
                 auth_deadline: float = AUTH_DEADLINE) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.max_connections = max_connections
        self.auth_deadline = auth_deadline
        self.open = 0
        self.refused = 0
        self.expired = 0
        self._pending: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    @property
    def unauthenticated(self) -> int:
        return len(self._pending)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a new connection may be served; it then has :attr:`auth_deadline` seconds to authenticate.

        At the cap of unauthenticated connections the oldest of them is closed to make room, so idle sockets
        cannot lock out a client that is about to show its token.
        """
        if self.open >= self.max_connections:
            self.refused += 1
            return False
        if len(self._pending) >= self.max_unauthenticated:
            oldest = next(iter(self._pending))
            self._expire(oldest)
        self.open += 1
        loop = asyncio.get_running_loop()
        self._pending[transport] = loop.call_later(self.auth_deadline, self._expire, transport)
        return True

    def authenticated(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection showed a valid token: it now lives by the idle timeout only."""
        if transport is not None:
            handle = self._pending.pop(transport, None)
            if handle is not None:
                handle.cancel()

    def forget(self, transport: asyncio.BaseTransport) -> None:
        self.open -= 1
        handle = self._pending.pop(transport, None)
        if handle is not None:
            handle.cancel()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if self._pending.pop(transport, None) is not None:
            self.expired += 1
            with contextlib.suppress(Exception):
                transport.abort()  # type: ignore[attr-defined]

    def protocol_factory(self, inner: Any) -> Any:
        """Wrap a protocol factory (aiohttp's ``Server``) so that every connection passes the guard."""
        guard = self

        def factory() -> asyncio.Protocol:
            return _Guarded(guard, inner())

        return factory


class _Guarded(asyncio.Protocol):
    """A protocol in front of aiohttp's: admits or refuses the connection, forwards everything else."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.guard.admit(transport):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.admitted = True
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted and self.transport is not None:
            self.guard.forget(self.transport)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` with a :class:`ConnectionGuard` in front and a TLS handshake deadline."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        self._runner._reg_site(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {"ssl": self._ssl_context}
        if self._ssl_context is not None:
            tls["ssl_handshake_timeout"] = HANDSHAKE_TIMEOUT
        self._server = await loop.create_server(
            self.guard.protocol_factory(server), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port, **tls)


class RateLimitFilter(logging.Filter):
    """At most ``burst`` records per message template and logger every ``window`` seconds; repeats are counted
    and the count is reported with the next record let through."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, int, str], tuple[float, int, int]] = {}  # key -> (window start, shown, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        start, shown, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self.window:
            start, shown = now, 0
        if shown >= self.burst:
            self._seen[key] = (start, shown, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar messages suppressed]"
        self._seen[key] = (start, shown + 1, 0)
        if len(self._seen) > 10000:  # unbounded templates (messages built without arguments): start afresh
            self._seen.clear()
        return True


def raise_fd_limit(target: int = 65536) -> int:
    """Lift the soft limit on open files towards the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft
