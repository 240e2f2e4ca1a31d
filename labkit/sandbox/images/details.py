"""Bookinfo's details service (the real one is Ruby on WEBrick, run as ``ruby details.rb 9080``).

Routes, mounted on path prefixes the way WEBrick mounts them:

* ``GET /details/<id>``: 200 with the book's details as compact JSON (178 bytes for id 0). The id is the last
path
  segment, parsed like Ruby's ``Integer()`` (so ``010`` is 8 and ``0x1A`` is 26); anything else, including
  plain ``/details``, is 400 ``{"error":"please provide numeric product id"}``.
* ``GET /health``: 200 ``{"status":"Details is healthy"}``.
* Anything else: WEBrick's 404 HTML page.

The process logs WEBrick-style start-up lines and two access-log lines per request on stderr.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import unquote, urlsplit

from labkit.sandbox.images import runtime

_SERVER_SOFTWARE = "WEBrick/1.9.1 (Ruby/3.4.4/2025-05-14)"
_ID_ERROR = "please provide numeric product id"
_MOUNTS = ("/details", "/health")

# Ruby's Integer() accepts a sign, a radix prefix and single underscores between digits.
_RUBY_RADIX = {"0x": (16, "0-9a-f"), "0b": (2, "01"), "0o": (8, "0-7"), "0d": (10, "0-9")}


def ruby_integer(text: str) -> int | None:
    """The value Ruby's ``Integer(text)`` gives, or None where it raises.

    Example:
        >>> [ruby_integer(t) for t in ("7", " -7 ", "010", "0x1A", "1_000")]
        [7, -7, 8, 26, 1000]
        >>> ruby_integer("abc") is None, ruby_integer("08") is None
        (True, True)
    """
    s = text.strip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in ("+", "-"):
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    prefix = s[:2].lower()
    if prefix in _RUBY_RADIX:
        base, digits = _RUBY_RADIX[prefix]
        s = s[2:]
    elif len(s) > 1 and s[0] == "0":
        base, digits, s = 8, "0-7", s[1:].removeprefix("_")  # a leading zero means octal
    else:
        base, digits = 10, "0-9"
    if not re.fullmatch(f"[{digits}]+(?:_[{digits}]+)*", s, flags=re.IGNORECASE):
        return None
    return sign * int(s.replace("_", ""), base)


def book_details(product_id: int) -> dict[str, object]:
    """The canned details of every book, with ``id`` echoed back (the key order is part of the contract)."""
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _normalize(path: str) -> str | None:
    """WEBrick's path clean-up: slashes collapse, dot segments resolve; None when ``..`` climbs out."""
    collapsed = re.sub("/+", "/", path)
    segments: list[str] = []
    for segment in collapsed.split("/")[1:]:
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        elif segment != ".":
            segments.append(segment)
    trailing = "/" if collapsed.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def _error_page(reason: str, message: str, host: str) -> bytes:
    """WEBrick's built-in error page layout."""

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")

    return (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN">\n'
        "<HTML>\n"
        f"  <HEAD><TITLE>{esc(reason)}</TITLE></HEAD>\n"
        "  <BODY>\n"
        f"    <H1>{esc(reason)}</H1>\n"
        f"    {esc(message)}\n"
        "    <HR>\n"
        "    <ADDRESS>\n"
        f"     {esc(_SERVER_SOFTWARE)} at\n"
        f"     {esc(host)}\n"
        "    </ADDRESS>\n"
        "  </BODY>\n"
        "</HTML>\n"
    ).encode("latin-1", "replace")


class DetailsHandler(runtime.Handler):
    """WEBrick with ``/details`` and ``/health`` mounted."""

    server_header = _SERVER_SOFTWARE
    disable_nagle_algorithm = True  # details.rb sets TCP_NODELAY on its sockets

    def do_GET(self) -> None:
        status, body, content_type = self._route()
        self.reply(status, body, [("Content-Type", content_type)])
        self._access_log(status, len(body))

    # WEBrick answers HEAD from the GET handler, and mount_proc handlers take POST too.
    do_HEAD = do_GET
    do_POST = do_GET

    def _not_allowed(self) -> None:
        self.close_connection = True  # WEBrick closes the connection after an error it raised itself
        body = _error_page("Method Not Allowed", f"unsupported method `{self.command}'.", self._host())
        self.reply(405, body, [("Content-Type", "text/html; charset=ISO-8859-1")])
        self._access_log(405, len(body))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _host(self) -> str:
        address = self.server.server_address
        port = address[1] if isinstance(address, tuple) else 9080
        host = self.headers.get("Host") or f"{runtime.pod_ip()}:{port!s}"
        return host if ":" in host else f"{host}:80"

    def _route(self) -> tuple[int, bytes, str]:
        path = _normalize(unquote(urlsplit(self.path).path))
        if path is None:
            self.close_connection = True
            return 400, _error_page("Bad Request", f"abnormal path `{self.path}'", self._host()), "text/html"
        mount = next((m for m in _MOUNTS if path == m or path.startswith(m + "/")), None)
        if mount == "/health":
            return 200, _compact({"status": "Details is healthy"}), "application/json"
        if mount == "/details":
            # Ruby's String#split drops trailing empty fields, so "/details/7/" still yields "7".
            product_id = ruby_integer(path.rstrip("/").split("/")[-1])
            if product_id is None:
                return 400, _compact({"error": _ID_ERROR}), "application/json"
            return 200, _compact(book_details(product_id)), "application/json"
        body = _error_page("Not Found", f"`{path}' not found.", self._host())
        return 404, body, "text/html; charset=ISO-8859-1"

    def _access_log(self, status: int, size: int) -> None:
        # WEBrick's default access log: the common log format, then the referer log, both on stderr.
        when = runtime.utc_now("%d/%b/%Y:%H:%M:%S UTC")
        runtime.log_error(f'{self.client_ip} - - [{when}] "{self.requestline}" {status} {size or "-"}')
        runtime.log_error(f"{self.headers.get('Referer') or '-'} -> {urlsplit(self.path).path}")


def _info(message: str) -> None:
    runtime.log_error(f"[{runtime.utc_now('%Y-%m-%d %H:%M:%S')}] INFO  {message}")


def main(argv: list[str]) -> int:
    """Run ``ruby details.rb <port>`` (or another command, such as ``sleep``).

    Args:
        argv: The container's command line.

    Returns:
        The exit code: 255 for a missing port (``exit(-1)`` in Ruby), 1 for a bad one, else never returns.
    """
    if not argv or os.path.basename(argv[0]) != "ruby":
        return runtime.run_command(argv)
    args = [a for a in argv[1:] if not a.startswith("-")]  # interpreter switches such as -W0
    if not args:
        return 0  # ruby with no script reads one from stdin, and a container's stdin is empty
    script, script_args = args[0], args[1:]
    if os.path.basename(script) != "details.rb":
        runtime.log_error(f"ruby: No such file or directory -- {script} (LoadError)")
        return 1
    if not script_args:
        runtime.log(f"usage: {script} port")
        return 255
    port = ruby_integer(script_args[0])
    if port is None or not 0 <= port <= 65535:
        runtime.log_error(f"{script}: invalid value for Integer(): {json.dumps(script_args[0])} (ArgumentError)")
        return 1
    _info("WEBrick 1.9.1")
    _info("ruby 3.4.4 (2025-05-14) +PRISM [x86_64-linux]")
    return runtime.serve(
        DetailsHandler,
        port,
        program="details.rb",
        on_listen=lambda: _info(f"WEBrick::HTTPServer#start: pid={os.getpid()} port={port}"),
    )
