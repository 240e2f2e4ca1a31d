"""Raw HTTPS requests to a sandbox's API server, for tests that send what no client library would."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from labkit.sandbox import Sandbox
from labkit.sandbox.control import _read_kubeconfig


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)

    def is_status(self) -> bool:
        """A ``Status`` object as the real API server sends with every error."""
        try:
            doc = self.json()
        except ValueError:
            return False
        return (isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("apiVersion") == "v1"
                and doc.get("status") == "Failure" and doc.get("code") == self.status
                and isinstance(doc.get("message"), str) and bool(doc["message"]) and isinstance(doc.get("reason"), str))


class RawApi:
    """One keep-alive HTTPS connection to the sandbox's API server, with its token."""

    def __init__(self, sb: Sandbox, timeout: float = 20.0) -> None:
        kc = _read_kubeconfig(sb.kubeconfig)
        self.token = kc["token"]
        self.ctx = ssl.create_default_context(cadata=kc["ca"])
        url = urlsplit(sb.api_url)
        self.host, self.port = url.hostname or "127.0.0.1", int(url.port or 443)
        self.timeout = timeout
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | list[tuple[str, str]]
                | None = None, content_type: str = "application/json", token: str | None = "") -> Reply:
        """Send one request; ``body`` may be bytes (sent as they are) or a JSON value."""
        if query:
            path = f"{path}?{urlencode(query, doseq=True, errors='surrogatepass')}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        given = self.token if token == "" else token
        if given:
            headers["Authorization"] = f"Bearer {given}"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.close()
                return Reply(resp.status, payload, resp.getheader("Content-Type", ""))
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str, **query: Any) -> Reply:
        return self.request("GET", path, query=query or None)
