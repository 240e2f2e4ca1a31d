"""``pods/NAME/portforward``: TCP tunnels from the real kubectl and the official Python client to a pod's ports.

A pod here is a set of processes listening on the pod's own loopback address, so forwarding a port is opening
``pod_ip:port`` and copying bytes both ways. What is hard is speaking each client's framing, which
the Kubernetes wire reference records as observed from the real clients:

* **Python client** (``kubernetes.stream.portforward``): a WebSocket with the channel protocol
  ``v4.channel.k8s.io`` (never v5: its close channel 255 breaks that client). ``?ports=9080,9081`` gives one
  connection per port; port *i* has data channel ``2i`` and error channel ``2i+1``, each opened by a 3-byte frame
  ``[channel, port_lo, port_hi]``. An error text on ``2i+1`` ends that port. The WebSocket closes once every
  port's connection has ended, which is how the client sees EOF.
* **kubectl 1.31 and later**: a WebSocket with the subprotocol ``SPDY/3.1+portforward.k8s.io`` whose binary
  messages carry a plain SPDY/3.1 byte stream (:class:`SpdySession`). For each local connection kubectl opens an
  error stream and a data stream sharing a ``requestid``; every SYN_STREAM gets a SYN_REPLY, backend bytes go back
  as DATA on the data stream, and the end of the backend connection is a FIN on both streams. A failure is its
  text on the error stream, then FIN on both (kubectl reads the error stream only once the data stream ended).
* **kubectl 1.30 and older, or a failed WebSocket upgrade**: ``POST`` with ``Upgrade: SPDY/3.1`` and
  ``X-Stream-Protocol-Version: portforward.k8s.io``, then the same SPDY stream on the raw TCP connection. aiohttp
  only upgrades for WebSocket, so :func:`_raw_spdy` answers 101 itself and takes the connection's bytes over with
  the protocol's ``set_parser`` hook, the way aiohttp's own WebSocket support does.

:func:`handle` is the whole interface; the API server's router calls it for GET and POST on the subresource.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .status import error
from .wsframes import incoming_bytes

__all__ = ["SPDY_DICTIONARY", "SPDY_WEBSOCKET_PROTOCOL", "V4_PROTOCOL", "SpdySession", "handle"]

log = logging.getLogger("labkit.sandbox.portforward")

SPDY_WEBSOCKET_PROTOCOL = "SPDY/3.1+portforward.k8s.io"  # kubectl 1.31+: SPDY inside WebSocket messages
V4_PROTOCOL = "v4.channel.k8s.io"  # the Python client's channel protocol, the only one offered to it
STREAM_PROTOCOL = "portforward.k8s.io"  # X-Stream-Protocol-Version of the raw SPDY upgrade
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024


# --- SPDY/3 header dictionary -------------------------------------------------------------------------------------
# The zlib dictionary of SPDY/3 header compression (draft 3, section 2.6.10.1): 1423 bytes, Adler-32 0xe3c6a7c2.
# It is a run of words each prefixed by its length as a big-endian u32, then a run of plain text.
_DICT_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges age "
    "allow authorization cache-control connection content-base content-encoding content-language content-length "
    "content-location content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status |200 OK| version HTTP/1.1 url public set-cookie "
    "keep-alive origin"
)  # split on spaces, except that |...| is one word
_DICT_TEXT = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _spdy_dictionary() -> bytes:
    words: list[str] = []
    for i, part in enumerate(_DICT_WORDS.split("|")):
        words += [part] if i % 2 else part.split()
    return b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + _DICT_TEXT.encode()


SPDY_DICTIONARY = _spdy_dictionary()

# SPDY/3 frame types and flags (draft 3, section 2.6).
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR = 1


class ProtocolError(Exception):
    """The peer sent bytes that are not the SPDY this module speaks; the session ends."""


class ForwardError(Exception):
    """Forwarding one port failed; the message is what the client prints, as the kubelet words it."""


# --- the pod side ---------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """Where a port-forward request's connections go: one pod's address and the ports it may reach."""

    ip: str
    allowed_ports: set[int] | None
    pod: str

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        prefix = f"error forwarding port {port} to pod {self.pod}"
        if self.allowed_ports is not None and port not in self.allowed_ports:
            declared = ", ".join(str(p) for p in sorted(self.allowed_ports)) or "none"
            raise ForwardError(f"{prefix}: port {port} is not a container port of the pod (declared: {declared})")
        try:
            return await asyncio.wait_for(asyncio.open_connection(self.ip, port), CONNECT_TIMEOUT)
        except ConnectionRefusedError as exc:
            raise ForwardError(f"{prefix}: dial tcp {self.ip}:{port}: connect: connection refused") from exc
        except TimeoutError as exc:
            raise ForwardError(f"{prefix}: dial tcp {self.ip}:{port}: i/o timeout") from exc
        except OSError as exc:
            raise ForwardError(f"{prefix}: dial tcp {self.ip}:{port}: connect: {exc.strerror or exc}") from exc


async def _pump_to_backend(inbox: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter) -> None:
    """Client bytes to the pod, in order; ``None`` is the client's half-close."""
    try:
        while (chunk := await inbox.get()) is not None:
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def _close_writer(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


# --- entry point -----------------------------------------------------------------------------------------------
async def handle(request: web.Request, pod_ip: str, allowed_ports: set[int] | None) -> web.StreamResponse:
    """Serve ``GET``/``POST .../pods/NAME/portforward`` for a pod at *pod_ip*.

    *allowed_ports* is the set of ports a client may reach (the pod's declared container ports), or None for any.
    Picks the framing from the request: a WebSocket offering ``SPDY/3.1+portforward.k8s.io`` (kubectl 1.31+), any
    other WebSocket (the Python client, ``v4.channel.k8s.io``), or a raw ``Upgrade: SPDY/3.1`` (older kubectl).
    """
    target = Target(pod_ip, allowed_ports, _pod_name(request.path))
    upgrade = request.headers.get("Upgrade", "").strip().lower()
    if upgrade == "websocket":
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if SPDY_WEBSOCKET_PROTOCOL in offered:
            return await _spdy_over_websocket(request, target)
        return await _channel_websocket(request, target)
    if upgrade.startswith("spdy/3.1"):
        versions = [v.strip() for v in request.headers.get("X-Stream-Protocol-Version", "").split(",")]
        if STREAM_PROTOCOL not in versions:
            return error(403, "Forbidden", "unable to upgrade: unable to negotiate protocol: client supports "
                           f"{versions}, server supports [{STREAM_PROTOCOL}]")
        return await _raw_spdy(request, target)
    return error(400, "BadRequest", "Upgrade request required")


def _pod_name(path: str) -> str:
    seg = [s for s in path.split("/") if s]
    for i in range(len(seg) - 2):
        if seg[i] == "pods" and seg[i + 2] == "portforward":
            return seg[i + 1]
    return "unknown"


# --- the Python client: channel WebSocket (v4) --------------------------------------------------------------------
def _query_ports(request: web.Request) -> list[int]:
    """``ports`` (what clients send to the API server) or ``port`` (what the kubelet reads); repeated or
    comma-separated. Raises ValueError with the API server's wording."""
    values = request.query.getall("ports", []) + request.query.getall("port", [])
    if not values:
        raise ValueError('query parameter "ports" is required')
    ports: list[int] = []
    for value in values:
        for text in value.split(","):
            try:
                port = int(text.strip())
            except ValueError:
                raise ValueError(f'unable to parse "{text}" as a port: invalid syntax') from None
            if not 0 < port < 65536:
                raise ValueError(f'port "{text}" must be between 1 and 65535')
            ports.append(port)
    return ports


async def _channel_websocket(request: web.Request, target: Target) -> web.StreamResponse:
    try:
        ports = _query_ports(request)
    except ValueError as exc:
        return error(400, "BadRequest", str(exc))
    ws = web.WebSocketResponse(protocols=(V4_PROTOCOL,), autoping=True, heartbeat=None, max_msg_size=0)
    await ws.prepare(request)
    lock = asyncio.Lock()

    async def send(channel: int, payload: bytes) -> None:
        if ws.closed:
            return
        async with lock:
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(bytes([channel]) + payload)

    for i, port in enumerate(ports):
        preamble = struct.pack("<H", port)
        await send(2 * i, preamble)
        await send(2 * i + 1, preamble)
    inboxes: list[asyncio.Queue[bytes | None]] = [asyncio.Queue() for _ in ports]

    async def forward(i: int, port: int) -> None:
        try:
            reader, writer = await target.connect(port)
        except ForwardError as exc:
            await send(2 * i + 1, str(exc).encode())
            return
        upstream = asyncio.create_task(_pump_to_backend(inboxes[i], writer))
        try:
            while chunk := await reader.read(READ_SIZE):
                await send(2 * i, chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            upstream.cancel()
            _close_writer(writer)

    async def read_client() -> None:
        async for data in incoming_bytes(ws):
            channel = data[0] if data else 1
            if channel % 2 == 0 and channel // 2 < len(inboxes) and len(data) > 1:
                inboxes[channel // 2].put_nowait(bytes(data[1:]))

    forwards = asyncio.gather(*(forward(i, port) for i, port in enumerate(ports)))
    reading = asyncio.create_task(read_client())
    try:
        either: list[asyncio.Future[Any]] = [forwards, reading]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        forwards.cancel()
        with contextlib.suppress(BaseException):
            await forwards
        # Every port's connection has ended (or the client left): closing is the EOF the client's sockets see.
        with contextlib.suppress(Exception):
            await ws.close()
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading
    return ws


# --- kubectl: SPDY/3.1 --------------------------------------------------------------------------------------------
@dataclass
class _Pair:
    """One forwarded connection: kubectl's error and data streams with the same request id."""

    port: str = ""
    error_id: int = 0
    data_id: int = 0
    inbox: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    ended: set[int] = field(default_factory=set)  # streams this side may no longer write: FIN sent or RST received
    client_reset: bool = False  # the client reset the data stream: drop the pod connection


class SpdySession:
    """The server side of one SPDY/3.1 port-forward connection, over any byte transport.

    Feed it the client's bytes in chunks of any size with :meth:`feed`; it writes its frames with *write*. Header
    blocks use one zlib context per direction for the whole connection, seeded with :data:`SPDY_DICTIONARY` and
    flushed with Z_SYNC_FLUSH per block, as spdystream (kubectl's SPDY library) requires.
    """

    def __init__(self, target: Target, write: Callable[[bytes], Awaitable[None]]) -> None:
        self.target = target
        self._write = write
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, SPDY_DICTIONARY)
        self._lock = asyncio.Lock()
        self._pairs: dict[str, _Pair] = {}
        self._by_stream: dict[int, _Pair] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.closed = False

    # -- input
    async def feed(self, data: bytes) -> bool:
        """Consume client bytes; False once the session is over (GOAWAY, protocol error, transport gone)."""
        self._buf += data
        while not self.closed and len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                break
            head = bytes(self._buf[:8])
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            try:
                if head[0] & 0x80:
                    await self._control(head, payload)
                else:
                    self._data(int.from_bytes(head[:4], "big") & 0x7FFFFFFF, head[4], payload)
            except ProtocolError as exc:
                log.warning("port-forward to %s: %s", self.target.pod, exc)
                self.closed = True
        return not self.closed

    async def _control(self, head: bytes, payload: bytes) -> None:
        version = int.from_bytes(head[:2], "big") & 0x7FFF
        ftype, flags = int.from_bytes(head[2:4], "big"), head[4]
        if version != 3:
            raise ProtocolError(f"unsupported SPDY version {version}")
        if ftype == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            sid = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            headers = self._decode_headers(payload[10:])
            await self._syn_stream(sid, headers, bool(flags & FLAG_FIN))
        elif ftype in (SYN_REPLY, HEADERS):
            self._decode_headers(payload[4:])  # nothing to act on, but the zlib context must stay in step
        elif ftype == RST_STREAM:
            self._reset(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif ftype == PING:
            await self._send(head + payload)  # the identical frame back
        elif ftype == GOAWAY:
            self.closed = True
        # SETTINGS and WINDOW_UPDATE: spdystream does no flow control, and neither does this side.

    def _decode_headers(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as exc:
            raise ProtocolError(f"bad header block: {exc}") from exc
        headers: dict[str, str] = {}
        try:
            (count,), pos = struct.unpack_from(">I", raw), 4
            for _ in range(count):
                (n,) = struct.unpack_from(">I", raw, pos)
                name = raw[pos + 4:pos + 4 + n].decode("latin-1")
                pos += 4 + n
                (n,) = struct.unpack_from(">I", raw, pos)
                value = raw[pos + 4:pos + 4 + n].decode("latin-1")
                pos += 4 + n
                headers[name.lower()] = value.split("\x00")[0]
        except struct.error as exc:
            raise ProtocolError("truncated header block") from exc
        return headers

    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            raw += struct.pack(">I", len(name)) + name.encode() + struct.pack(">I", len(value)) + value.encode()
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    async def _syn_stream(self, sid: int, headers: dict[str, str], fin: bool) -> None:
        # The client waits for the reply before it opens the next stream: answer first.
        async with self._lock:
            block = self._encode_headers({})  # compressed under the lock: blocks must leave in compression order
            await self._raw_write(struct.pack(">HHI", 0x8003, SYN_REPLY, 4 + len(block)) + struct.pack(">I", sid)
                                  + block)
        kind = headers.get("streamtype", "")
        if kind not in ("error", "data"):
            await self._send(struct.pack(">HHIII", 0x8003, RST_STREAM, 8, sid, RST_PROTOCOL_ERROR))
            return
        # Clients before request ids opened the error stream, then the data stream, two ids apart.
        key = headers.get("requestid") or str(sid if kind == "error" else sid - 2)
        pair = self._pairs.setdefault(key, _Pair(port=headers.get("port", "")))
        pair.port = pair.port or headers.get("port", "")
        if kind == "error":
            pair.error_id = sid
        else:
            pair.data_id = sid
            if fin:
                pair.inbox.put_nowait(None)
        self._by_stream[sid] = pair
        if pair.error_id and pair.data_id and pair.task is None:
            pair.task = asyncio.create_task(self._forward(key, pair))

    def _data(self, sid: int, flags: int, payload: bytes) -> None:
        pair = self._by_stream.get(sid)
        if pair is None or sid != pair.data_id or pair.client_reset:
            return  # the client half-closes its error stream at once; nothing is ever read from it
        if payload:
            pair.inbox.put_nowait(payload)
        if flags & FLAG_FIN:
            pair.inbox.put_nowait(None)

    def _reset(self, sid: int) -> None:
        pair = self._by_stream.pop(sid, None)
        if pair is None:
            return
        pair.ended.add(sid)
        if sid == pair.data_id:
            pair.client_reset = True
            if pair.task is not None:
                pair.task.cancel()
            # client-go resets the data stream, then waits for the error stream to end: always end it.
            if pair.error_id not in pair.ended:
                self._spawn(self._send_data(pair, pair.error_id, b"", fin=True))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- output
    async def _raw_write(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            await self._write(frame)
        except (ConnectionError, RuntimeError, OSError):
            self.closed = True

    async def _send(self, frame: bytes) -> None:
        async with self._lock:
            await self._raw_write(frame)

    async def _send_data(self, pair: _Pair, sid: int, data: bytes, fin: bool = False) -> None:
        if sid in pair.ended:
            return
        if fin:
            pair.ended.add(sid)
        await self._send(struct.pack(">II", sid, (FLAG_FIN if fin else 0) << 24 | len(data)) + data)

    # -- one forwarded connection
    async def _forward(self, key: str, pair: _Pair) -> None:
        try:
            try:
                port = int(pair.port)
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                raise ForwardError(f'invalid port "{pair.port}"') from None
            reader, writer = await self.target.connect(port)
        except ForwardError as exc:
            await self._send_data(pair, pair.error_id, str(exc).encode(), fin=True)
            await self._send_data(pair, pair.data_id, b"", fin=True)
            self._forget(key, pair)
            return
        upstream = asyncio.create_task(_pump_to_backend(pair.inbox, writer))
        try:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await reader.read(READ_SIZE):
                    await self._send_data(pair, pair.data_id, chunk)
            # The pod closed: FIN the data stream (the client's EOF), then the error stream (no error).
            await self._send_data(pair, pair.data_id, b"", fin=True)
            await self._send_data(pair, pair.error_id, b"", fin=True)
            await upstream  # whatever the client still sends, until it half-closes or resets the streams
        finally:
            upstream.cancel()
            _close_writer(writer)
            self._forget(key, pair)

    def _forget(self, key: str, pair: _Pair) -> None:
        """The connection is over: later frames on its streams (a late RST, say) are ignored."""
        self._pairs.pop(key, None)
        for sid in (pair.error_id, pair.data_id):
            self._by_stream.pop(sid, None)

    async def close(self) -> None:
        """End every forwarded connection (the transport is gone)."""
        self.closed = True
        tasks = [p.task for p in self._pairs.values() if p.task is not None] + list(self._background)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def _spdy_over_websocket(request: web.Request, target: Target) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(SPDY_WEBSOCKET_PROTOCOL,), autoping=True, heartbeat=None, max_msg_size=0)
    await ws.prepare(request)
    session = SpdySession(target, ws.send_bytes)
    try:
        async for data in incoming_bytes(ws):
            if not await session.feed(data):
                break
    finally:
        await session.close()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


class _RawStream:
    """Takes the place of aiohttp's WebSocket reader on a hijacked connection: queues what arrives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")


async def _raw_spdy(request: web.Request, target: Target) -> web.StreamResponse:
    resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                   "X-Stream-Protocol-Version": STREAM_PROTOCOL})
    resp.force_close()
    await resp.prepare(request)
    stream = _RawStream()
    request.protocol.set_parser(stream)  # type: ignore[arg-type]  # from now on the connection's bytes are ours
    request.protocol.keep_alive(False)
    session = SpdySession(target, resp.write)
    try:
        while data := await stream.queue.get():
            if not await session.feed(data):
                break
    finally:
        await session.close()
        if request.transport is not None:
            request.transport.close()
    return resp
