"""Bookinfo's ratings service (the real one is Node.js with the ``httpdispatcher`` router, run as
``node ratings.js 9080``).

Routes:

* ``GET /ratings/<id>``: 200 ``{"id":7,"ratings":{"Reviewer1":5,"Reviewer2":4}}``. The id is JavaScript's
  ``parseInt`` of whatever follows the last ``/`` of the raw URL (so ``/ratings/7?x=1`` is 7); ``NaN`` gives
  400 ``{"error":"please provide numeric product ID"}``.
* ``POST /ratings/<id>``: stores the JSON body as that product's ratings **in this process only** and echoes
it;
  a body that is not JSON gives 400 ``{"error":"please provide valid ratings JSON"}``.
* ``GET /health``: 200 ``{"status":"Ratings is healthy"}`` (500 while a ``v-unhealthy`` instance is
unhealthy).
* Any other GET or POST: 404 with an empty body.
* Any other method (PUT, DELETE, PATCH, HEAD, ...): the real router throws and the request is never answered.
This
  process does the same, until the client gives up or :data:`NO_ANSWER_LIMIT` seconds pass.

``SERVICE_VERSION`` selects the fault variants: ``v-faulty`` (half the GETs get 503), ``v-delayed`` (half the
GETs take 7 s more), ``v-unavailable`` (503 for every other minute) and ``v-unhealthy`` (unhealthy for every
other quarter hour). Responses are JSON with chunked transfer coding, like Node's.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from labkit.sandbox.images import runtime

NO_ANSWER_LIMIT = 60.0
"""Seconds an unanswered request (PUT, DELETE, ...) holds its connection before this process drops it."""

DELAY_SECONDS = 7.0  # v-delayed
UNAVAILABLE_PERIOD = 60.0  # v-unavailable flips between available and not every minute
UNHEALTHY_PERIOD = 900.0  # v-unhealthy flips every 15 minutes

_ID_ERROR = {"error": "please provide numeric product ID"}
_JSON_ERROR = {"error": "please provide valid ratings JSON"}
_UNAVAILABLE = {"error": "Service unavailable"}
_DEFAULT_RATINGS = {"Reviewer1": 5.0, "Reviewer2": 4.0}

# JavaScript's StrWhiteSpaceChar, which parseInt skips before the number.
_JS_SPACE = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


# --- JavaScript semantics -------------------------------------------------------------------------


def js_parse_int(text: str) -> float | None:
    """JavaScript's ``parseInt(text)``: the leading integer of ``text``; None for ``NaN``.

    Numbers in JavaScript are doubles, so the result is a float (infinite for absurdly long digit strings).

    Example:
        >>> js_parse_int("7?x=1"), js_parse_int("-1"), js_parse_int("0x1A"), js_parse_int("abc")
        (7.0, -1.0, 26.0, None)
    """
    s = text.lstrip(_JS_SPACE)
    sign = -1.0 if s[:1] == "-" else 1.0
    if s and s[0] in "+-":
        s = s[1:]
    base, allowed = 10, "0123456789"
    if s[:2].lower() == "0x":
        base, allowed, s = 16, "0123456789abcdefABCDEF", s[2:]
    end = 0
    while end < len(s) and s[end] in allowed:
        end += 1
    if end == 0:
        return None
    return sign * float(int(s[:end], base))


def js_number(value: float) -> str:
    """How ``JSON.stringify`` writes a number: ``7``, ``0.5``, ``1e+21``; ``null`` for NaN and infinities."""
    if value != value or value in (float("inf"), float("-inf")):
        return "null"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, the same digits JavaScript chooses; only the layout
    # differs.
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = f"{digits[:point]}.{digits[point:]}"
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        text = digits[0] + (f".{digits[1:]}" if k > 1 else "") + f"e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + text


def _array_index(key: str) -> int | None:
    if key.isdigit() and key.isascii() and (key == "0" or key[0] != "0") and int(key) < 2**32 - 1:
        return int(key)
    return None


def js_stringify(value: object) -> str:
    """``JSON.stringify`` of a value parsed by :func:`js_parse_json`.

    Objects list integer-like keys first, in ascending order, the way JavaScript orders an object's
    properties.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return js_number(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(js_stringify(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = list(value)
        indexed = sorted((k for k in keys if _array_index(k) is not None), key=lambda k: int(k))
        ordered = indexed + [k for k in keys if _array_index(k) is None]
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{js_stringify(value[k])}" for k in ordered) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def js_parse_json(text: str) -> object:
    """``JSON.parse``: strict JSON, every number a double.

    Raises:
        ValueError: ``text`` is not JSON (JavaScript's SyntaxError).
    """
    try:
        return json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise ValueError("too deeply nested") from exc


def _body(value: object) -> bytes:
    # A lone surrogate ("\ud800" in the input) cannot be UTF-8 encoded; JavaScript writes it as an escape.
    return js_stringify(value).encode("utf-8", "backslashreplace")


# --- the service ----------------------------------------------------------------------------------


class Ratings:
    """The state of one ratings process: its version, start time and the ratings POSTed to it."""

    def __init__(self, version: str, started: float | None = None) -> None:
        self.version = version
        self.started = time.monotonic() if started is None else started
        self._posted: dict[str, object] = {}
        self._lock = threading.Lock()

    def healthy(self, now: float | None = None) -> bool:
        """False during the odd quarter hours of a ``v-unhealthy`` instance's life."""
        if self.version != "v-unhealthy":
            return True
        elapsed = (time.monotonic() if now is None else now) - self.started
        return int(elapsed // UNHEALTHY_PERIOD) % 2 == 0

    def unavailable(self, now: float | None = None) -> bool:
        """True while a ``v-unavailable`` (odd minutes) or unhealthy ``v-unhealthy`` instance refuses GETs."""
        if self.version == "v-unavailable":
            elapsed = (time.monotonic() if now is None else now) - self.started
            return int(elapsed // UNAVAILABLE_PERIOD) % 2 == 1
        if self.version == "v-unhealthy":
            return not self.healthy(now)
        return False

    def get(self, product_id: float) -> dict[str, object]:
        """The ratings document for a product: what was POSTed to this process, else the defaults."""
        with self._lock:
            ratings = self._posted.get(js_number(product_id), _DEFAULT_RATINGS)
        return {"id": product_id, "ratings": ratings}

    def put(self, product_id: float, ratings: object) -> dict[str, object]:
        """Keep ``ratings`` (any JSON value, even null) for the product and return the stored document."""
        # Keyed like a JavaScript object property, i.e. by the number's string form: 7 and 07 are one product.
        with self._lock:
            self._posted[js_number(product_id)] = ratings
        return self.get(product_id)


_state = Ratings(os.environ.get("SERVICE_VERSION", "v1"))


class RatingsHandler(runtime.Handler):
    """Node's http server with httpdispatcher's GET and POST tables."""

    def do_GET(self) -> None:
        runtime.log(f"{self.command} {self.path}")
        path = urlsplit(self.path).path
        if path == "/health":
            if _state.healthy():
                self._send(200, {"status": "Ratings is healthy"})
            else:
                self._send(500, {"status": "Ratings is not healthy"})
            return
        if not path.startswith("/ratings/"):
            self._send(404, None)
            return
        product_id = js_parse_int(self.path.split("/")[-1])
        if product_id is None:
            self._send(400, _ID_ERROR)
        elif _state.version == "v2":
            # The database-backed version; the sandbox has no database for it to reach.
            self._send(500, {"error": "could not connect to ratings database"})
        elif (_state.version == "v-faulty" and random.random() <= 0.5) or _state.unavailable():
            self._send(503, _UNAVAILABLE)
        else:
            if _state.version == "v-delayed" and random.random() <= 0.5:
                time.sleep(DELAY_SECONDS)
            self._send(200, _state.get(product_id))

    def do_POST(self) -> None:
        runtime.log(f"{self.command} {self.path}")
        body = self.read_body()
        if not urlsplit(self.path).path.startswith("/ratings/"):
            self._send(404, None)
            return
        product_id = js_parse_int(self.path.split("/")[-1])
        if product_id is None:
            self._send(400, _ID_ERROR)
            return
        try:
            ratings = js_parse_json(body.decode("utf-8", "replace"))
        except ValueError:
            self._send(400, _JSON_ERROR)
            return
        if _state.version == "v2":
            self._send(501, {"error": "Post not implemented for database backed ratings"})
        else:
            self._send(200, _state.put(product_id, ratings))

    def __getattr__(self, name: str) -> Callable[[], None]:
        # http.server calls do_<METHOD>; httpdispatcher only has GET and POST tables and throws for the rest.
        if name.startswith("do_"):
            return self._never_answer
        raise AttributeError(name)

    def _never_answer(self) -> None:
        runtime.log(f"{self.command} {self.path}")
        runtime.log_error(f"TypeError: httpdispatcher has no {self.command} listeners; the request is left unanswered")
        self.close_connection = True
        deadline = time.monotonic() + NO_ANSWER_LIMIT
        try:
            # Wait for the client to give up (it closes the connection) rather than for the full limit.
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def _send(self, status: int, payload: object) -> None:
        headers = [] if payload is None else [("Content-type", "application/json")]
        if not self.close_connection:
            headers += [("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")]
        self.reply(status, b"" if payload is None else _body(payload), headers, chunked=True)


def main(argv: list[str]) -> int:
    """Run ``node ratings.js <port>`` (or another command, such as ``sleep``).

    Args:
        argv: The container's command line.

    Returns:
        The exit code: 255 for a missing port (``process.exit(-1)``), 1 for a bad one, else never returns.
    """
    if not argv or os.path.basename(argv[0]) != "node":
        return runtime.run_command(argv)
    args = [a for a in argv[1:] if not a.startswith("-")]  # interpreter switches such as --max-old-space-size
    if not args:
        return 0  # node with no script starts a REPL, which ends at once on the container's empty stdin
    script = args[0]
    if os.path.basename(script) not in ("ratings.js", "ratings"):
        runtime.log_error(f"Error: Cannot find module '{script}'")
        return 1
    if len(args) < 2:
        runtime.log_error(f"usage: {argv[0]} {script} port")
        return 255
    port = js_parse_int(args[1])
    if port is None or not 0 <= port < 65536:
        runtime.log_error(
            f"RangeError [ERR_SOCKET_BAD_PORT]: options.port should be >= 0 and < 65536. Received {args[1]!r}."
        )
        return 1
    return runtime.serve(
        RatingsHandler,
        int(port),
        program="ratings.js",
        on_listen=lambda: runtime.log(f"Server listening on: http://0.0.0.0:{int(port)}"),
    )
