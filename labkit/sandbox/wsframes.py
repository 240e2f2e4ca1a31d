"""The one rule both exec and port-forward need for incoming WebSocket messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web


async def incoming_bytes(ws: web.WebSocketResponse) -> AsyncIterator[bytes]:
    """Each data message from the client as bytes, until it closes.

    The Python client sends ``str`` data as TEXT frames and ``bytes`` as BINARY frames (kubectl only BINARY);
    a server that drops TEXT frames silently loses the Python client's stdin, so both count.
    """
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            yield bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            yield msg.data.encode("utf-8", "surrogateescape")
