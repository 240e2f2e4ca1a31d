"""``curl`` (curl 8): plain HTTP/1.1 from the pod, with curl's output, messages and exit codes.

A pod dials from its own address, so servers see the pod as the peer and ``localhost`` is the pod itself;
names resolve through ``/etc/hosts`` and then cluster DNS. The options are the ones the lessons, the tests and
workshop attendees type: ``-s -S -f -o -w -I -i -m -X -H -d --json -L -v`` and friends. Files written with
``-o`` count against the container's file cap (exit code 23 past it).

Exit codes as curl's: 1 unsupported protocol, 2 bad usage, 3 malformed URL, 6 unknown host, 7 refused,
22 HTTP error with ``-f``, 23 write error, 28 timeout, 47 too many redirects, 52 empty reply, 56 receive error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .context import ExecContext
from .fs import DEVICES, TOO_LARGE, abspath, err, files_room, is_dir, out, read_input
from .registry import tool

CURL_VERSION = "8.16.0"
"""The curl the test pod's image (``curlimages/curl:8.16.0``) ships; curl's ``User-Agent`` names it."""


class _CurlError(Exception):
    """A failed transfer: curl's exit code and the text after ``curl: (N) ``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _CurlOptions:
    urls: list[str] = field(default_factory=list)
    silent: bool = False
    show_error: bool = False
    fail: bool = False
    fail_with_body: bool = False
    outputs: list[str] = field(default_factory=list)
    write_out: str | None = None
    head: bool = False
    include: bool = False
    max_time: float | None = None
    connect_timeout: float | None = None
    request: str | None = None
    headers: list[str] = field(default_factory=list)
    data: list[tuple[str, str]] = field(default_factory=list)
    location: bool = False
    max_redirs: int = 50
    verbose: bool = False
    user_agent: str | None = None
    no_progress: bool = False
    help: bool = False
    version: bool = False


# long option -> (attribute, kind); kinds: flag, str, list, float, int, data:<mode>, output, url
_CURL_LONG: dict[str, tuple[str, str]] = {
    "silent": ("silent", "flag"), "show-error": ("show_error", "flag"), "fail": ("fail", "flag"),
    "fail-with-body": ("fail_with_body", "flag"), "output": ("outputs", "output"),
    "write-out": ("write_out", "str"), "head": ("head", "flag"), "include": ("include", "flag"),
    "max-time": ("max_time", "float"), "connect-timeout": ("connect_timeout", "float"),
    "request": ("request", "str"), "header": ("headers", "list"), "data": ("data", "data:data"),
    "data-raw": ("data", "data:raw"), "data-binary": ("data", "data:binary"), "json": ("data", "data:json"),
    "location": ("location", "flag"), "max-redirs": ("max_redirs", "int"), "verbose": ("verbose", "flag"),
    "user-agent": ("user_agent", "str"), "no-progress-meter": ("no_progress", "flag"),
    "url": ("urls", "url"), "help": ("help", "flag"), "version": ("version", "flag"),
    # Accepted and ignored: they change nothing a plain-HTTP, IPv4 sandbox could show.
    "insecure": ("", "flag"), "http1.1": ("", "flag"), "ipv4": ("", "flag"), "no-buffer": ("", "flag"),
    "globoff": ("", "flag"),
}
_CURL_SHORT = {
    "s": "silent", "S": "show-error", "f": "fail", "o": "output", "w": "write-out", "I": "head", "i": "include",
    "m": "max-time", "X": "request", "H": "header", "d": "data", "L": "location", "v": "verbose",
    "A": "user-agent", "k": "insecure", "4": "ipv4", "N": "no-buffer", "g": "globoff", "h": "help",
    "V": "version",
}
_CURL_TAKES_VALUE = {name for name, (_, kind) in _CURL_LONG.items() if kind != "flag"}

_CURL_HELP = """Usage: curl [options...] <url>
 -d, --data <data>           HTTP POST data
 -f, --fail                  Fail fast with no output on HTTP errors
 -h, --help <category>       Get help for commands
 -H, --header <header/@file> Pass custom header(s) to server
 -i, --include               Include response headers in output
 -I, --head                  Show document info only
 -L, --location              Follow redirects
 -m, --max-time <seconds>    Maximum time allowed for transfer
 -o, --output <file>         Write to file instead of stdout
 -s, --silent                Silent mode
 -S, --show-error            Show error even when -s is used
 -v, --verbose               Make the operation more talkative
 -w, --write-out <format>    Use output FORMAT after completion
 -X, --request <method>      Specify request method to use

This is not the full help; this sandbox's curl speaks plain HTTP/1.1 only.
"""


def _curl_version() -> str:
    return (f"curl {CURL_VERSION} (x86_64-pc-linux-musl) libcurl/{CURL_VERSION}\n"
            "Release-Date: 2025-09-10\nProtocols: http\nFeatures: IPv6 Largefile\n")


def _parse_curl_args(args: list[str]) -> _CurlOptions:
    """curl's command line, the way curl 8 reads it (no ``--opt=value``; ``--no-`` turns a flag off).

    Raises:
        _CurlUsage: curl would exit 2; the message is its first line.
    """
    opts = _CurlOptions()
    i = 0

    def apply(name: str, shown: str, value: str | None, on: bool = True) -> None:
        attr, kind = _CURL_LONG[name]
        if not attr:
            return
        if kind == "flag":
            setattr(opts, attr, on)
        elif kind in ("str",):
            setattr(opts, attr, value)
        elif kind == "list":
            assert value is not None
            opts.headers.append(value)
        elif kind == "url":
            assert value is not None
            opts.urls.append(value)
        elif kind == "output":
            assert value is not None
            opts.outputs.append(value)
        elif kind.startswith("data:"):
            assert value is not None
            opts.data.append((kind[5:], value))
        elif kind in ("float", "int"):
            assert value is not None
            try:
                number: float = float(value) if kind == "float" else int(value)
            except ValueError:
                raise _CurlUsage(f"option {shown}: expected a proper numerical parameter") from None
            if number < 0:
                raise _CurlUsage(f"option {shown}: expected a proper numerical parameter")
            setattr(opts, attr, number)

    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:]
            on = True
            negated = name.startswith("no-") and _CURL_LONG.get(name[3:], ("", ""))[1] == "flag"
            if name not in _CURL_LONG and negated:
                name, on = name[3:], False
            if name not in _CURL_LONG:
                raise _CurlUsage(f"option {arg}: is unknown")
            value = None
            if name in _CURL_TAKES_VALUE:
                if i >= len(args):
                    raise _CurlUsage(f"option {arg}: requires parameter")
                value = args[i]
                i += 1
            apply(name, arg, value, on)
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            j = 0
            while j < len(letters):
                letter = letters[j]
                j += 1
                name = _CURL_SHORT.get(letter, "")
                if not name:
                    raise _CurlUsage(f"option {arg}: is unknown")
                if name in _CURL_TAKES_VALUE:
                    value = letters[j:]
                    if not value:
                        if i >= len(args):
                            raise _CurlUsage(f"option -{letter}: requires parameter")
                        value = args[i]
                        i += 1
                    apply(name, f"-{letter}", value)
                    break
                apply(name, f"-{letter}", None)
        else:
            opts.urls.append(arg)
    return opts


class _CurlUsage(Exception):
    """A command line curl refuses with exit code 2."""


@dataclass
class _Url:
    scheme: str
    userinfo: str
    host: str
    port: int
    explicit_port: bool
    target: str  # path and query, as sent on the request line

    def __str__(self) -> str:
        user = f"{self.userinfo}@" if self.userinfo else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{user}{host}{port}{self.target}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail


def _parse_url(raw: str) -> _Url:
    """A URL as curl 8 reads it: no scheme means http, the port defaults to 80, the fragment is dropped.

    Raises:
        _CurlError: Codes 1 (a scheme other than http) and 3 (malformed).
    """
    if not raw or re.search(r"[\x00-\x20\x7f]", raw):
        raise _CurlError(3, "URL rejected: Malformed input to a URL function")
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", raw)
    scheme, rest = (match.group(1).lower(), raw[match.end() :]) if match else ("http", raw)
    if scheme != "http":
        raise _CurlError(1, f'Protocol "{match.group(1) if match else scheme}" not supported')
    rest = rest.split("#", 1)[0]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if target.startswith("?") or not target:
        target = "/" + target
    userinfo, _, hostport = authority.rpartition("@")
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket:
            raise _CurlError(3, "URL rejected: Bad IPv6 address")
        port_text = after[1:] if after.startswith(":") else after
        if after and not after.startswith(":"):
            raise _CurlError(3, "URL rejected: Bad IPv6 address")
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise _CurlError(3, "URL rejected: No host part in the URL")
    if not hostport.startswith("[") and not re.fullmatch(r"[A-Za-z0-9._~%!$&'()*+,;=-]+", host):
        raise _CurlError(3, "URL rejected: Bad hostname")
    port = 80
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise _CurlError(3, "URL rejected: Port number was not a decimal number between 0 and 65535")
        port = int(port_text)
    path, question, query = target.partition("?")
    path = _remove_dot_segments(path)
    return _Url(scheme, userinfo, host.lower(), port, bool(port_text), path + question + query)


def _resolve(ctx: ExecContext, host: str) -> str | None:
    """The address a pod would reach for ``host``: IP literal, then /etc/hosts, then cluster DNS."""
    name = host.strip("[]").rstrip(".").lower()
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    hosts = ctx.files.get("/etc/hosts")
    if hosts:
        found: list[str] = []
        for line in hosts.decode("utf-8", "replace").splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) > 1 and name in (p.lower() for p in parts[1:]):
                found.append(parts[0])
        found.sort(key=lambda ip: ":" in ip)  # IPv4 first, as curl's default resolver order tends to be
        if found:
            return found[0]
    if name in (ctx.hostname.lower(), ctx.pod.lower()) and ctx.pod_ip:
        return ctx.pod_ip
    return ctx.resolver.resolve(name)


def _dial_plan(ctx: ExecContext, ip: str) -> tuple[str, str | None]:
    """``(address to connect to, source address to bind)`` for a resolved address.

    In the sandbox every pod owns a loopback address and serves there, so inside a pod ``localhost`` is the
    pod's own address, and the source of a connection is the pod's address, as a server would see on a
    cluster.
    """
    try:
        target = ipaddress.ip_address(ip)
        own = ipaddress.ip_address(ctx.pod_ip) if ctx.pod_ip else None
    except ValueError:
        return ip, None
    if own is None or not own.is_loopback or own.version != 4 or not target.is_loopback:
        return ip, None
    if str(target) in ("127.0.0.1", "::1"):
        return ctx.pod_ip, ctx.pod_ip
    return ip, (ctx.pod_ip if target.version == 4 else None)


async def _open_connection(ip: str, port: int, bind: str | None) -> tuple[asyncio.StreamReader,
                                                                          asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if bind:
            with contextlib.suppress(OSError):  # the address may not exist on this host: connect without it
                sock.bind((bind, 0))
        await loop.sock_connect(sock, (ip, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


@dataclass
class _Stats:
    """What one transfer learned; ``--write-out`` and the error messages read it."""

    url: str = ""
    method: str = "GET"
    t_start: float = 0.0
    t_single: float = 0.0
    t_namelookup: float = 0.0
    t_connect: float = 0.0
    t_pretransfer: float = 0.0
    t_starttransfer: float = 0.0
    t_redirect: float = 0.0
    t_total: float = 0.0
    http_code: int = 0
    http_version: str = "0"
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = ""
    redirect_url: str = ""
    remote_ip: str = ""
    remote_port: int = 0
    local_ip: str = ""
    local_port: int = 0
    size_download: int = 0
    size_upload: int = 0
    size_header: int = 0
    size_request: int = 0
    expected: int | None = None
    num_connects: int = 0
    num_redirects: int = 0
    phase: str = "resolve"
    host: str = ""
    port: int = 0
    exitcode: int = 0
    errormsg: str = ""
    filename: str = ""


class _Sink:
    """Where a transfer's output goes: stdout, a file in the pod, /dev/null or stderr.

    A file's bytes collect in a buffer and land in the container's files when the transfer ends, complete or
    not (as a real curl leaves a partial file behind), never past the container's file cap.
    """

    def __init__(self, ctx: ExecContext, target: str | None) -> None:
        self.ctx = ctx
        self.path = None if target is None or target in ("-", "/dev/stdout") else abspath(target)
        self.to_terminal = self.path is None and ctx.tty
        self.buffer: bytearray | None = None
        self.room = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self.path is None:
            await self.ctx.write_stdout(data)
        elif self.path == "/dev/stderr":
            await self.ctx.write_stderr(data)
        elif self.path == "/dev/null":
            return
        else:
            if self.buffer is None:
                self._open()
            assert self.buffer is not None
            if len(self.buffer) + len(data) > self.room:
                self.buffer += data[: max(self.room - len(self.buffer), 0)]
                self._too_large()
            self.buffer += data

    def _open(self) -> None:
        assert self.path is not None
        folder = self.path.rpartition("/")[0] or "/"
        if not is_dir(self.ctx, folder) or is_dir(self.ctx, self.path):
            raise _CurlError(23, "Failure writing output to destination")
        self.buffer = bytearray()
        self.room = files_room(self.ctx, self.path)

    def close(self, ok: bool) -> None:
        """Store the file; an empty but successful transfer still creates it, as curl does."""
        if self.path is None or self.path in DEVICES:
            return
        if self.buffer is None and ok:
            self._open()
        if self.buffer is None:
            return
        room = files_room(self.ctx, self.path)  # another exec may have written files meanwhile
        self.ctx.files[self.path] = bytes(self.buffer[: max(room, 0)])
        if len(self.buffer) > room:
            self._too_large()

    def _too_large(self) -> None:
        limit = self.ctx.files_limit / (1 << 20)
        raise _CurlError(23, f"Failure writing output to destination: {self.path}: {TOO_LARGE} (a container "
                             f"keeps at most {limit:g} MiB of files in memory)")


def _max5(value: int) -> str:
    kib, mib = 1024, 1024 * 1024
    if value < 100000:
        return f"{value:5d}"
    if value < 10000 * kib:
        return f"{value // kib:4d}k"
    if value < 100 * mib:
        return f"{value // mib:2d}.{(value % mib) // (mib // 10)}M"
    if value < 10000 * mib:
        return f"{value // mib:4d}M"
    return f"{value // (1024 * mib):4d}G"


def _meter_time(seconds: float) -> str:
    total = int(seconds)
    if total <= 0:
        return "--:--:--"
    hours, rest = divmod(total, 3600)
    if hours > 99:
        return f"{hours // 24:3d}d {hours % 24:02d}h"
    return f"{hours:2d}:{rest // 60:02d}:{rest % 60:02d}"


_METER_HEADER = (
    "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n"
    "                                 Dload  Upload   Total   Spent    Left  Speed\n"
)


def _meter_line(stats: _Stats, now: float) -> str:
    spent = max(now - stats.t_start, 0.0)
    down, up = stats.size_download, stats.size_upload
    expected_down = stats.expected if stats.expected is not None else down
    total = expected_down + up
    millis = max(int(spent * 1000), 1)  # curl's own guard against dividing by a zero-length transfer
    speed_down, speed_up = down * 1000 // millis, up * 1000 // millis
    pct_total = (down + up) * 100 // total if total else 0
    pct_down = down * 100 // stats.expected if stats.expected else 0
    pct_up = 100 if up else 0
    est_total = expected_down / speed_down if stats.expected and speed_down else 0.0
    left = est_total - spent if est_total else 0.0
    return (f"{pct_total:3d} {_max5(total)}  {pct_down:3d} {_max5(down)}  {pct_up:3d} {_max5(up)}  "
            f"{_max5(speed_down)}  {_max5(speed_up)} {_meter_time(est_total)} {_meter_time(spent)} "
            f"{_meter_time(left)} {_max5(max(speed_down, speed_up))}")


class _Curl:
    """One ``curl`` command: its options, the pod and the transfers it makes."""

    def __init__(self, ctx: ExecContext, opts: _CurlOptions) -> None:
        self.ctx = ctx
        self.opts = opts
        self.show_meter = not opts.silent and not opts.no_progress

    async def warn(self, text: str) -> None:
        if not self.opts.silent:
            await err(self.ctx, f"{text}\n")

    async def verbose(self, text: str) -> None:
        if self.opts.verbose:
            await err(self.ctx, text if text.endswith("\n") else text + "\n")

    async def main(self) -> int:
        opts = self.opts
        if opts.help:
            await out(self.ctx, _CURL_HELP)
            return 0
        if opts.version:
            await out(self.ctx, _curl_version())
            return 0
        if not opts.urls:
            await err(self.ctx, "curl: no URL specified\n"
                                 "curl: try 'curl --help' or 'curl --manual' for more information\n")
            return 2
        inferred = "HEAD" if opts.head else "POST" if opts.data else "GET"
        if opts.request and opts.request.upper() == inferred and inferred != "HEAD":
            await self.warn(f"Note: Unnecessary use of -X or --request, {inferred} is already inferred.")
        body = await self.request_body()
        code = 0
        for index, raw in enumerate(opts.urls):
            target = opts.outputs[index] if index < len(opts.outputs) else None
            code, _ = await self.transfer(raw, target, body)
        return code

    async def request_body(self) -> bytes | None:
        """The body ``-d``/``--data-*``/``--json`` ask for, or None for none."""
        if not self.opts.data:
            return None
        pieces: list[tuple[str, bytes]] = []
        for mode, value in self.opts.data:
            if mode != "raw" and value.startswith("@"):
                raw = await self.read_data_file(value[1:])
                pieces.append((mode, raw.replace(b"\r", b"").replace(b"\n", b"") if mode == "data" else raw))
            else:
                pieces.append((mode, value.encode("utf-8", "surrogateescape")))
        body = bytearray()
        for index, (mode, piece) in enumerate(pieces):
            body += (b"" if index == 0 or mode == "json" else b"&") + piece
        return bytes(body)

    async def read_data_file(self, name: str) -> bytes:
        data = await read_input(self.ctx, name)
        if isinstance(data, str):
            await self.warn(f'Warning: Couldn\'t read data from file "{name}", this makes an empty POST.')
            return b""
        return data

    async def transfer(self, raw: str, target: str | None, body: bytes | None) -> tuple[int, _Stats]:
        """One URL, redirects included; prints the meter, the error line and ``--write-out``."""
        opts = self.opts
        loop = asyncio.get_running_loop()
        stats = _Stats(url=raw, t_start=loop.time())
        stats.t_single = stats.t_start
        sink = _Sink(self.ctx, target)
        stats.filename = target or ""
        meter = self.show_meter and not sink.to_terminal
        if meter:
            await err(self.ctx, _METER_HEADER + "\r" + _meter_line(stats, loop.time()))
        code, message = 0, ""
        try:
            async with asyncio.timeout(opts.max_time):
                await self.follow(raw, body, stats, sink)
        except _CurlError as exc:
            code, message = exc.code, exc.message
        except TimeoutError:  # --max-time ran out (or, rarely, the kernel gave up on the socket)
            code, message = 28, self.timeout_message(stats, loop.time())
        try:
            sink.close(ok=code == 0)
        except _CurlError as exc:
            code, message = exc.code, exc.message
        return await self.finish(stats, meter, code, message)

    def timeout_message(self, stats: _Stats, now: float) -> str:
        spent = int((now - stats.t_start) * 1000)
        if stats.phase in ("resolve", "connect"):
            single = int((now - stats.t_single) * 1000)
            return (f"Failed to connect to {stats.host} port {stats.port} after {single} ms: "
                    "Timeout was reached")
        if stats.expected is not None:
            return (f"Operation timed out after {spent} milliseconds with {stats.size_download} out of "
                    f"{stats.expected} bytes received")
        return f"Operation timed out after {spent} milliseconds with {stats.size_download} bytes received"

    async def finish(self, stats: _Stats, meter: bool, code: int, message: str) -> tuple[int, _Stats]:
        loop = asyncio.get_running_loop()
        stats.t_total = loop.time() - stats.t_start
        stats.exitcode, stats.errormsg = code, message
        if meter:
            await err(self.ctx, "\r" + _meter_line(stats, loop.time()) + "\n")
        if code and (not self.opts.silent or self.opts.show_error):
            await err(self.ctx, f"curl: ({code}) {message}\n")
        if self.opts.write_out is not None:
            await self.write_out(stats)
        return code, stats

    async def follow(self, raw: str, body: bytes | None, stats: _Stats, sink: _Sink) -> None:
        opts = self.opts
        url = _parse_url(raw)
        method = opts.request or ("HEAD" if opts.head else "POST" if body is not None else "GET")
        while True:
            stats.url = str(url)
            stats.method = method
            location = await self.exchange(url, method, body, stats, sink)
            if location is None:
                return
            if stats.num_redirects >= opts.max_redirs:
                raise _CurlError(47, f"Maximum ({opts.max_redirs}) redirects followed")
            stats.num_redirects += 1
            await self.verbose(f"* Issue another request to this URL: '{location}'")
            code = stats.http_code
            # curl turns a POST into a GET after 301/302/303, and keeps a method set with -X.
            becomes_get = (code == 303 and method != "HEAD") or (code in (301, 302) and method == "POST")
            if becomes_get and not opts.request:
                method, body = "GET", None
            url = _parse_url(location)
            stats.t_redirect = asyncio.get_running_loop().time() - stats.t_start

    def request_head(self, url: _Url, method: str, body: bytes | None) -> bytes:
        opts = self.opts
        json_body = any(mode == "json" for mode, _ in opts.data)
        defaults: list[tuple[str, str]] = [("Host", url.host_header)]
        agent = opts.user_agent if opts.user_agent is not None else f"curl/{CURL_VERSION}"
        defaults.append(("User-Agent", agent))
        defaults.append(("Accept", "application/json" if json_body else "*/*"))
        custom: list[tuple[str, str]] = []
        removed: set[str] = set()
        for line in opts.headers:
            if ":" in line:
                name, _, value = line.partition(":")
                name, value = name.strip(), value.strip()
                if value:
                    custom.append((name, value))
                else:
                    removed.add(name.lower())
            elif line.rstrip().endswith(";"):
                custom.append((line.rstrip()[:-1].strip(), ""))
        overridden = removed | {name.lower() for name, _ in custom}
        if opts.user_agent == "":
            overridden.add("user-agent")
        headers = [(n, v) for n, v in defaults if n.lower() not in overridden] + custom
        if body is not None:
            if "content-length" not in overridden:
                headers.append(("Content-Length", str(len(body))))
            if "content-type" not in overridden:
                ctype = "application/json" if json_body else "application/x-www-form-urlencoded"
                headers.append(("Content-Type", ctype))
        lines = [f"{method} {url.target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    async def exchange(self, url: _Url, method: str, body: bytes | None, stats: _Stats,
                       sink: _Sink) -> str | None:
        """One request and its response; returns the Location to follow, or None when done."""
        opts = self.opts
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        stats.t_single = loop.time()
        stats.host, stats.port, stats.phase = url.host, url.port, "resolve"
        stats.expected = None
        ip = _resolve(ctx, url.host)
        if ip is None:
            raise _CurlError(6, f"Could not resolve host: {url.host}")
        stats.t_namelookup = loop.time() - stats.t_start
        family = "IPv6" if ":" in ip else "IPv4"
        other = "IPv4" if family == "IPv6" else "IPv6"
        await self.verbose(f"* Host {url.host}:{url.port} was resolved.\n"
                           f"* {other}: (none)\n* {family}: {ip}\n*   Trying {ip}:{url.port}...")
        stats.phase = "connect"
        dial, bind = _dial_plan(ctx, ip)
        if not ctx.resolver.reachable(dial):  # the host's loopback, another sandbox, outside: routed nowhere
            spent = int((loop.time() - stats.t_single) * 1000)
            await self.verbose(f"* connect to {ip} port {url.port} from 0.0.0.0 port 0 failed: Connection refused")
            raise _CurlError(7, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                "Couldn't connect to server")
        try:
            async with asyncio.timeout(opts.connect_timeout):
                reader, writer = await _open_connection(dial, url.port, bind)
        except TimeoutError:  # --connect-timeout, or the kernel's own connect timeout
            spent = int((loop.time() - stats.t_single) * 1000)
            raise _CurlError(28, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                 "Timeout was reached") from None
        except OSError as exc:
            spent = int((loop.time() - stats.t_single) * 1000)
            reason = os.strerror(exc.errno) if exc.errno else "Connection refused"
            await self.verbose(f"* connect to {ip} port {url.port} from 0.0.0.0 port 0 failed: {reason}")
            raise _CurlError(7, f"Failed to connect to {url.host} port {url.port} after {spent} ms: "
                                "Couldn't connect to server") from None
        try:
            return await self.converse(url, method, body, stats, sink, ip, reader, writer)
        finally:
            writer.transport.abort()

    async def converse(self, url: _Url, method: str, body: bytes | None, stats: _Stats, sink: _Sink, ip: str,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        opts = self.opts
        loop = asyncio.get_running_loop()
        stats.num_connects += 1
        stats.t_connect = stats.t_pretransfer = loop.time() - stats.t_start
        stats.remote_ip, stats.remote_port = ip, url.port
        local = writer.get_extra_info("sockname") or ("", 0)
        stats.local_ip, stats.local_port = str(local[0]), int(local[1])
        stats.phase = "transfer"
        await self.verbose(f"* Connected to {url.host} ({ip}) port {url.port}\n* using HTTP/1.x")
        head = self.request_head(url, method, body)
        stats.size_request += len(head) + len(body or b"")
        if opts.verbose:
            shown = head.decode("utf-8", "replace").split("\r\n")[:-1]
            await err(self.ctx, "".join(f"> {line}\n" for line in shown))
        try:
            writer.write(head + (body or b""))
            await writer.drain()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _CurlError(55, f"Send failure: {exc.strerror or 'Connection reset by peer'}") from None
        stats.size_upload += len(body or b"")
        await self.verbose("* Request completely sent off")
        try:
            return await self.receive(url, method, stats, sink, reader)
        except ConnectionResetError:
            raise _CurlError(56, "Recv failure: Connection reset by peer") from None
        except ValueError:  # a header line longer than the reader's limit
            raise _CurlError(56, "Too large response headers") from None
        except TimeoutError:
            raise
        except OSError as exc:
            raise _CurlError(56, f"Recv failure: {exc.strerror or exc}") from None

    async def receive(self, url: _Url, method: str, stats: _Stats, sink: _Sink,
                      reader: asyncio.StreamReader) -> str | None:
        opts = self.opts
        loop = asyncio.get_running_loop()
        while True:  # skip interim 1xx responses
            raw_head, status_line = await self.read_head(reader, stats)
            match = re.match(r"HTTP/(\d(?:\.\d)?) (\d{3})", status_line)
            if match is None:
                raise _CurlError(8, "Invalid status line")
            code = int(match.group(2))
            if not (100 <= code < 200) or code == 101:
                break
        stats.t_starttransfer = loop.time() - stats.t_start
        stats.http_code, stats.http_version = code, match.group(1)
        stats.headers = []
        for line in raw_head.decode("latin-1").split("\n")[1:]:
            name, sep, value = line.rstrip("\r").partition(":")
            if sep and name.strip():
                stats.headers.append((name.strip(), value.strip()))
        header = {n.lower(): v for n, v in stats.headers}
        stats.content_type = header.get("content-type", "")
        stats.size_header += len(raw_head)
        if opts.verbose:
            shown = raw_head.decode("latin-1").replace("\r\n", "\n").split("\n")[:-1]
            await err(self.ctx, "".join(f"< {line}\n" for line in shown))
        if code >= 400 and opts.fail and not opts.fail_with_body:
            raise _CurlError(22, f"The requested URL returned error: {code}")
        location = header.get("location")
        resolved = urllib.parse.urljoin(str(url), location) if location else ""
        stats.redirect_url = resolved if 300 <= code < 400 else ""
        if opts.include or opts.head:
            await sink.write(raw_head)
        if opts.location and resolved and code in (301, 302, 303, 307, 308):
            return resolved  # the redirect's own body is not shown
        no_body = method.upper() == "HEAD" or opts.head or code in (204, 304)
        if not no_body:
            await self.read_body(reader, header, stats, sink)
        if code >= 400 and opts.fail_with_body:
            raise _CurlError(22, f"The requested URL returned error: {code}")
        await self.verbose(f"* Connection #0 to host {url.host} left intact")
        return None

    async def read_head(self, reader: asyncio.StreamReader, stats: _Stats) -> tuple[bytes, str]:
        first = await reader.readline()
        if not first:
            raise _CurlError(52, "Empty reply from server")
        if not first.startswith(b"HTTP/"):
            raise _CurlError(1, "Received HTTP/0.9 when not allowed")
        raw = bytearray(first)
        while True:
            line = await reader.readline()
            if not line:
                raise _CurlError(56, "Recv failure: Connection was closed before the response headers ended")
            raw += line
            if line in (b"\r\n", b"\n"):
                return bytes(raw), first.decode("latin-1").strip()

    async def read_body(self, reader: asyncio.StreamReader, header: dict[str, str], stats: _Stats,
                        sink: _Sink) -> None:
        async def deliver(data: bytes) -> None:
            stats.size_download += len(data)
            await sink.write(data)

        if "chunked" in header.get("transfer-encoding", "").lower():
            await self.read_chunked(reader, deliver)
        elif "content-length" in header:
            text = header["content-length"].split(",")[0].strip()
            if not re.fullmatch(r"[0-9]{1,18}", text):
                raise _CurlError(8, f"Invalid Content-Length: {header['content-length']}")
            remaining = int(text)
            stats.expected = remaining
            while remaining > 0:
                chunk = await reader.read(min(remaining, 65536))
                if not chunk:
                    raise _CurlError(18, f"end of response with {remaining} bytes missing")
                remaining -= len(chunk)
                await deliver(chunk)
        else:
            while chunk := await reader.read(65536):
                await deliver(chunk)

    async def read_chunked(self, reader: asyncio.StreamReader,
                           deliver: Callable[[bytes], Awaitable[None]]) -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise _CurlError(18, "transfer closed with outstanding read data remaining")
            size_text = line.split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
                raise _CurlError(56, "chunk hex-length char not a hex digit")
            size = int(size_text, 16)
            if size == 0:
                while (trailer := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    del trailer
                return
            while size > 0:
                chunk = await reader.read(min(size, 65536))
                if not chunk:
                    raise _CurlError(18, "transfer closed with outstanding read data remaining")
                size -= len(chunk)
                await deliver(chunk)
            await reader.readline()  # the CRLF after the chunk's data

    async def write_out(self, stats: _Stats) -> None:
        fmt = self.opts.write_out or ""
        pieces: list[str] = []
        i = 0
        while i < len(fmt):
            char = fmt[i]
            if char == "\\" and fmt[i + 1 : i + 2] in _WRITE_OUT_ESCAPES:
                pieces.append(_WRITE_OUT_ESCAPES[fmt[i + 1]])
                i += 2
                continue
            if fmt.startswith("%%", i):
                pieces.append("%")
                i += 2
                continue
            var = _WRITE_OUT_VAR.match(fmt, i)
            if var is None:
                pieces.append(char)
                i += 1
                continue
            i = var.end()
            value = _write_out_value(stats, var.group(1))
            if value is None:
                await err(self.ctx, f"curl: unknown --write-out variable: '{var.group(1)}'\n")
            else:
                pieces.append(value)
        await out(self.ctx, "".join(pieces))


_WRITE_OUT_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
_WRITE_OUT_VAR = re.compile(r"%\{([^}]*)\}")


def _write_out_vars(stats: _Stats) -> dict[str, str | int | float]:
    total = stats.t_total
    return {
        "content_type": stats.content_type,
        "errormsg": stats.errormsg,
        "exitcode": stats.exitcode,
        "filename_effective": stats.filename,
        "http_code": f"{stats.http_code:03d}",
        "http_connect": "000",
        "http_version": stats.http_version,
        "local_ip": stats.local_ip,
        "local_port": stats.local_port,
        "method": stats.method,
        "num_connects": stats.num_connects,
        "num_headers": len(stats.headers),
        "num_redirects": stats.num_redirects,
        "redirect_url": stats.redirect_url,
        "remote_ip": stats.remote_ip,
        "remote_port": stats.remote_port,
        "response_code": f"{stats.http_code:03d}",
        "scheme": "http" if stats.http_code else "",
        "size_download": stats.size_download,
        "size_header": stats.size_header,
        "size_request": stats.size_request,
        "size_upload": stats.size_upload,
        "speed_download": int(stats.size_download / total) if total > 0 else 0,
        "speed_upload": int(stats.size_upload / total) if total > 0 else 0,
        "time_appconnect": 0.0,
        "time_connect": stats.t_connect,
        "time_namelookup": stats.t_namelookup,
        "time_pretransfer": stats.t_pretransfer,
        "time_redirect": stats.t_redirect,
        "time_starttransfer": stats.t_starttransfer,
        "time_total": total,
        "url": stats.url,
        "url_effective": stats.url,
        "urlnum": 0,
    }


def _write_out_value(stats: _Stats, name: str) -> str | None:
    values = _write_out_vars(stats)
    if name not in values:
        return None
    value = values[name]
    return f"{value:.6f}" if isinstance(value, float) else str(value)


@tool("curl")
async def _curl(argv: list[str], ctx: ExecContext) -> int:
    try:
        opts = _parse_curl_args(argv[1:])
    except _CurlUsage as exc:
        await err(ctx, f"curl: {exc}\ncurl: try 'curl --help' for more information\n")
        return 2
    return await _Curl(ctx, opts).main()
