"""Bookinfo's productpage (the real one is Flask, served by ``gunicorn -b [::]:9080 productpage:app``).

The book page calls details, then reviews, and always answers 200: a failed call turns its half of the page
into an error notice ("gradual degradation"), which is what the "Test in production" lesson shows. The page is
the legacy Bootstrap 3 generation the tutorial's screenshots show, made self-contained: one HTML document, its
style inline, nothing fetched from anywhere. Each half also carries a machine-readable hint, ``data-section``
with ``data-status="ok|error"``, and each review ``data-ratings="ok|error|none"``.

Routes: ``/``, ``/index.html``, ``/productpage``, ``POST /login``, ``/logout``, ``/health``, ``/metrics`` and
the JSON API ``/api/v1/products[/<id>[/reviews|/ratings]]``. Calls to other services go through cluster DNS on
a new connection each time; details gets one 3 s attempt, reviews two, ratings (API only) one.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import html
import json
import os
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

from labkit.sandbox.images import runtime

CALL_TIMEOUT = 3.0
"""Seconds productpage waits to connect to, and for each read from, details, reviews and ratings."""
REVIEWS_ATTEMPTS = 2
"""The original retries reviews once, on purpose: the fault-injection lesson relies on the doubled wait."""

_PRODUCTS = [
    {
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": (
            '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: '
            "The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. "
            "It is his shortest and one of his most farcical comedies, "
            "with a major part of the humour coming from slapstick and mistaken identity, "
            "in addition to puns and word play."
        ),
    }
]

DETAILS_ERROR = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR = "Sorry, product ratings are currently unavailable for this book."

# Copied verbatim from the incoming request to every downstream call, when present. B3 headers are handled
# apart (they pass through a tracing propagator), and end-user comes from the session only.
FORWARDED_HEADERS = (
    *runtime.TRACE_HEADERS,
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)

# Flask signs the session cookie with a fixed secret so that every worker and replica accepts every other's
# cookie; a fixed key here gives the same property across pods.
_SESSION_SECRET = b"labkit sandbox bookinfo productpage session"
_SESSION_COOKIE = "session"


# --- settings -------------------------------------------------------------------------------------


class Service:
    """A downstream service as productpage addresses it: ``http://<host><.domain>:<port>/<endpoint>``."""

    def __init__(self, environ: Mapping[str, str], name: str) -> None:
        domain = environ.get("SERVICES_DOMAIN")
        self.host = environ.get(f"{name.upper()}_HOSTNAME", name) + (f".{domain}" if domain is not None else "")
        self.port = environ.get(f"{name.upper()}_SERVICE_PORT", "9080")
        self.endpoint = name

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


_details = Service(os.environ, "details")
_reviews = Service(os.environ, "reviews")
_ratings = Service(os.environ, "ratings")


# --- session --------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(data: Mapping[str, object]) -> str:
    """The signed cookie value for a session: ``<base64 JSON>.<base64 HMAC-SHA256>``."""
    payload = _b64(json.dumps(data, separators=(",", ":")).encode())
    signature = hmac.new(_SESSION_SECRET, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def decode_session(value: str | None) -> dict[str, object]:
    """The session in a cookie value; empty when absent, malformed or not signed with our key."""
    if not value or "." not in value:
        return {}
    payload, _, signature = value.rpartition(".")
    expected = hmac.new(_SESSION_SECRET, payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(signature), expected):
            return {}
        data = json.loads(_unb64(payload))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _cookie(header: str | None, name: str) -> str | None:
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"')
    return None


# --- header propagation ---------------------------------------------------------------------------

_TRACE_ID = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")
_SPAN_ID = re.compile(r"[0-9a-fA-F]{16}")
_SAMPLED = frozenset({"1", "True", "true", "d"})


def b3_headers(incoming: Mapping[str, str]) -> dict[str, str]:
    """What OpenTelemetry's B3 multi-header propagator writes for the incoming trace context.

    The ids pass through unchanged (a 64-bit trace id is widened to 32 hex digits); ``x-b3-parentspanid`` and
    ``x-b3-flags`` are not written. With no valid incoming context nothing is written.
    """
    trace, span = incoming.get("x-b3-traceid"), incoming.get("x-b3-spanid")
    sampled, flags = incoming.get("x-b3-sampled"), incoming.get("x-b3-flags")
    single = incoming.get("b3")
    if single and not (trace and span):
        fields = single.split("-")
        if len(fields) >= 2:
            trace, span = fields[0], fields[1]
            sampled = fields[2] if len(fields) > 2 else sampled
    if not (trace and span and _TRACE_ID.fullmatch(trace) and _SPAN_ID.fullmatch(span)):
        return {}
    if int(trace, 16) == 0 or int(span, 16) == 0:
        return {}
    return {
        "x-b3-traceid": f"{int(trace, 16):032x}",
        "x-b3-spanid": f"{int(span, 16):016x}",
        "x-b3-sampled": "1" if sampled in _SAMPLED or flags == "1" else "0",
    }


def forward_headers(incoming: Mapping[str, str], session: Mapping[str, object]) -> dict[str, str]:
    """The headers productpage sends downstream for a request with these headers and this session.

    Args:
        incoming: The request's headers, looked up by lower-case name.
        session: The decoded session; its ``user`` becomes ``end-user`` (an incoming ``end-user`` is dropped).
    """
    headers = b3_headers(incoming)
    user = session.get("user")
    if user is not None:
        headers["end-user"] = str(user)
    for name in FORWARDED_HEADERS:
        value = incoming.get(name)
        if value is not None:
            headers[name] = value
    return headers


# --- metrics --------------------------------------------------------------------------------------


def go_float(value: float) -> str:
    """A sample value the way prometheus_client writes it (``3.0``, ``1.7e+09``, ``+Inf``)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(float(value))
    dot = text.find(".")
    # Go prints large numbers with an exponent where Python would print all the digits.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


class RequestResults:
    """The ``request_result`` counter: call outcomes by ``destination_app`` and ``response_code``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, str], list[float]] = {}  # labels -> [count, created]

    def inc(self, app: str, code: int) -> None:
        with self._lock:
            sample = self._samples.setdefault((app, str(code)), [0.0, time.time()])
            sample[0] += 1

    def exposition(self) -> list[str]:
        with self._lock:
            samples = sorted(self._samples.items())
        lines = ["# HELP request_result_total Results of requests", "# TYPE request_result_total counter"]
        lines += [
            f'request_result_total{{destination_app="{app}",response_code="{code}"}} {go_float(count)}'
            for (app, code), (count, _) in samples
        ]
        lines += ["# HELP request_result_created Results of requests", "# TYPE request_result_created gauge"]
        lines += [
            f'request_result_created{{destination_app="{app}",response_code="{code}"}} {go_float(created)}'
            for (app, code), (_, created) in samples
        ]
        return lines


def _metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [
        f"{name}{labels} {go_float(value)}" for labels, value in samples
    ]


def _process_metrics() -> list[str]:
    """prometheus_client's default process and Python collectors, read from /proc like they do."""
    lines: list[str] = []
    stats = gc.get_stats()
    for name, key, help_text in (
        ("python_gc_objects_collected_total", "collected", "Objects collected during gc"),
        ("python_gc_objects_uncollectable_total", "uncollectable", "Uncollectable objects found during GC"),
        ("python_gc_collections_total", "collections", "Number of times this generation was collected"),
    ):
        samples = [(f'{{generation="{i}"}}', float(s[key])) for i, s in enumerate(stats)]
        lines += _metric(name, "counter", help_text, samples)
    v = sys.version_info
    implementation = "CPython" if sys.implementation.name == "cpython" else sys.implementation.name
    info = (
        f'{{implementation="{implementation}",'
        f'major="{v.major}",minor="{v.minor}",patchlevel="{v.micro}",version="{v.major}.{v.minor}.{v.micro}"}}'
    )
    lines += _metric("python_info", "gauge", "Python platform information", [(info, 1.0)])
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith(b"btime"))
        ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
        open_fds = len(os.listdir("/proc/self/fd"))
    except (OSError, StopIteration, ValueError):
        return lines
    # Field numbers from proc(5), counted after the command name: utime 14, stime 15, starttime 22, vsize 23,
    # rss 24.
    utime, stime, start, vsize, rss = (float(fields[i - 3]) for i in (14, 15, 22, 23, 24))
    lines += _metric("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", [("", vsize)])
    lines += _metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [("", rss * page)])
    lines += _metric(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        [("", boot + start / ticks)],
    )
    lines += _metric(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        [("", (utime + stime) / ticks)],
    )
    lines += _metric("process_open_fds", "gauge", "Number of open file descriptors.", [("", float(open_fds))])
    max_fds = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    lines += _metric("process_max_fds", "gauge", "Maximum number of open file descriptors.", [("", max_fds)])
    return lines


_results = RequestResults()


# --- downstream calls -----------------------------------------------------------------------------


# Characters the requests library leaves as they are in a URL path; everything else is percent-encoded.
_PATH_SAFE = "!$&'()*+,:;=@~"


def _call(service: Service, product_id: str, headers: Mapping[str, str]) -> tuple[int, object] | None:
    """One GET ``/<endpoint>/<id>``; the status and parsed JSON, or None on a connection error or timeout."""
    path = f"/{service.endpoint}/{quote(product_id, safe=_PATH_SAFE)}"
    request_headers = {
        "User-Agent": "python-requests/2.32.3",
        "Accept": "*/*",
        "Connection": "close",
        **headers,
    }
    # The lines urllib3 logs at DEBUG level, which the real productpage enables.
    runtime.log_error(f"DEBUG:urllib3.connectionpool:Starting new HTTP connection (1): {service.host}:{service.port}")
    try:
        status, body = runtime.http_get(service.host, int(service.port), path, request_headers, CALL_TIMEOUT)
    except (runtime.DownstreamError, ValueError):
        return None
    runtime.log_error(f'DEBUG:urllib3.connectionpool:{service.url} "GET {path} HTTP/1.1" {status} {len(body)}')
    if status != 200:
        return status, None
    try:
        return status, json.loads(body)
    except ValueError:
        return None  # a 200 that is not JSON is as useless as no answer


def _fetch(
    service: Service, product_id: str, headers: Mapping[str, str], attempts: int, error: str
) -> tuple[int, object]:
    """Call a service up to ``attempts`` times; ``(200, json)`` or ``(status, {"error": ...})``.

    The status of a failure is the downstream's own status, or 500 when no response came (as in the original).
    """
    outcome: tuple[int, object] | None = None
    for _ in range(attempts):
        outcome = _call(service, product_id, headers)
        if outcome is not None and outcome[0] == 200:
            _results.inc(service.endpoint, 200)
            return outcome
    status = outcome[0] if outcome is not None else 500
    _results.inc(service.endpoint, status)
    return status, {"error": error}


def product_details(product_id: str, headers: Mapping[str, str]) -> tuple[int, object]:
    return _fetch(_details, product_id, headers, 1, DETAILS_ERROR)


def product_reviews(product_id: str, headers: Mapping[str, str]) -> tuple[int, object]:
    return _fetch(_reviews, product_id, headers, REVIEWS_ATTEMPTS, REVIEWS_ERROR)


def product_ratings(product_id: str, headers: Mapping[str, str]) -> tuple[int, object]:
    return _fetch(_ratings, product_id, headers, 1, RATINGS_ERROR)


# --- HTML -----------------------------------------------------------------------------------------

# A small stand-in for Bootstrap 3's look (dark navbar, blue headings, two columns) and its glyph icons, so
# the page needs nothing from the network.
_STYLE = """
*{box-sizing:border-box}
body{margin:0;font-family:"Helvetica Neue",Helvetica,Arial,sans-serif;font-size:14px;line-height:1.42857;
  color:#333;background:#fff}
a{color:#337ab7;text-decoration:none}a:hover{text-decoration:underline}
h3,h4{font-weight:500;line-height:1.1;margin:20px 0 10px}h3{font-size:24px}h4{font-size:18px}
.navbar{background:#222;border-bottom:1px solid #080808;min-height:50px;margin-bottom:20px}
.navbar .container{max-width:1170px;margin:0 auto;padding:0 15px;display:flex;align-items:center;
  justify-content:space-between}
.navbar-brand{color:#9d9d9d;font-size:18px;line-height:20px;padding:15px 0}
.navbar-brand:hover{color:#fff;text-decoration:none}
.navbar-text{color:#9d9d9d;margin:15px 0}.navbar-text a{color:#9d9d9d;text-decoration:underline}
.btn{display:inline-block;padding:6px 12px;font-size:14px;border:1px solid #ccc;border-radius:4px;
  background:#fff;color:#333;cursor:pointer}
.btn-primary{background:#337ab7;border-color:#2e6da4;color:#fff}.navbar-btn{margin:8px 0}
.container-fluid{padding:0 15px}.row{display:flex;flex-wrap:wrap;margin:0 -15px}
.col-md-12,.col-md-6{width:100%;padding:0 15px}@media(min-width:992px){.col-md-6{width:50%}}
.text-center{text-align:center}.text-primary{color:#337ab7}
blockquote{padding:10px 20px;margin:0 0 20px;font-size:17.5px;border-left:5px solid #eee}
blockquote p{margin:0 0 10px}
blockquote small{display:block;font-size:80%;color:#777}blockquote small:before{content:"\\2014 \\00A0"}
dl{margin:0 0 20px}dt{font-weight:700}
.glyphicon{display:inline-block;font-style:normal;line-height:1}
.glyphicon-star:before{content:"\\2605"}.glyphicon-star-empty:before{content:"\\2606"}.glyphicon-user:before{content:"\\263A"}
.modal{display:none;position:fixed;inset:0;background:rgba(0,0,0,.5);z-index:10}.modal:target{display:block}
.modal-dialog{width:300px;margin:80px auto;background:#fff;border-radius:6px;padding:0 15px 15px}
.form-control{width:100%;padding:6px 12px;border:1px solid #ccc;border-radius:4px}
.table{border-collapse:collapse;margin-bottom:20px}
.table th,.table td{border:1px solid #ddd;padding:5px;text-align:left;vertical-align:top}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _document(body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Simple Bookstore App</title>\n"
        '<meta charset="utf-8">\n<meta http-equiv="X-UA-Compatible" content="IE=edge">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _navbar(user: object) -> str:
    if user:
        account = (
            '<p class="navbar-text navbar-right">\n'
            '  <i class="glyphicon glyphicon-user" aria-hidden="true"></i>\n'
            f'  <span style="padding-left: 5px;">{_e(user)} ( <a href="logout">sign out</a> )</span>\n'
            "</p>\n"
        )
    else:
        # Bootstrap opens the modal with JavaScript; here the fragment link and the :target rule do it.
        account = '<a class="btn btn-default navbar-btn navbar-right" href="#login-modal">Sign in</a>\n'
    return (
        '<nav class="navbar navbar-inverse navbar-static-top">\n<div class="container">\n'
        '<div class="navbar-header"><a class="navbar-brand" href="#">BookInfo Sample</a></div>\n'
        f"{account}</div>\n</nav>\n"
        '<div class="modal" id="login-modal" role="dialog" aria-labelledby="login-title">\n'
        '<div class="modal-dialog">\n<h4 class="modal-title" id="login-title">Please sign in</h4>\n'
        '<form method="post" action="login" name="login_form">\n'
        '<p><input type="text" class="form-control" name="username" id="username" '
        'placeholder="User Name"></p>\n'
        '<p><input type="password" class="form-control" name="passwd" placeholder="Password"></p>\n'
        '<p><button type="submit" class="btn btn-primary">Sign in</button> '
        '<a href="#" class="btn btn-default">Cancel</a></p>\n'
        "</form>\n</div>\n</div>\n"
    )


def _details_html(status: int, details: object) -> str:
    if status == 200 and isinstance(details, dict):
        rows = "".join(
            f"  <dt>{label}:</dt>{_e(details.get(key, ''))}\n"
            for label, key in (
                ("Type", "type"),
                ("Pages", "pages"),
                ("Publisher", "publisher"),
                ("Language", "language"),
                ("ISBN-10", "ISBN-10"),
                ("ISBN-13", "ISBN-13"),
            )
        )
        return (
            '<div class="col-md-6" data-section="details" data-status="ok">\n'
            '<h4 class="text-center text-primary">Book Details</h4>\n'
            f"<dl>\n{rows}</dl>\n</div>\n"
        )
    return (
        '<div class="col-md-6" data-section="details" data-status="error">\n'
        '<h4 class="text-center text-primary">Error fetching product details!</h4>\n'
        f"<p>{_e(DETAILS_ERROR)}</p>\n</div>\n"
    )


def _review_html(review: Mapping[str, object]) -> str:
    rating = review.get("rating")
    attrs, marks = ' data-ratings="none"', ""
    stars = rating.get("stars") if isinstance(rating, dict) else None
    if isinstance(rating, dict) and isinstance(stars, int | float) and not isinstance(stars, bool):
        count = int(stars)
        attrs = f' data-ratings="ok" data-stars="{count}"'
        if count:  # the original template shows nothing for zero stars
            full = '<span class="glyphicon glyphicon-star"></span>\n' * count
            empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * max(5 - count, 0)
            marks = f'<font color="{_e(rating.get("color", ""))}">\n{full}{empty}</font>\n'
    elif isinstance(rating, dict) and rating.get("error"):
        attrs, marks = ' data-ratings="error"', f"<p><i>{_e(rating['error'])}</i></p>\n"
    return (
        f"<blockquote{attrs}>\n"
        f"<p>{_e(review.get('text', ''))}</p>\n"
        f"<small>{_e(review.get('reviewer', ''))}</small>\n"
        f"{marks}</blockquote>\n"
    )


def _reviews_html(status: int, reviews: object) -> str:
    if status == 200 and isinstance(reviews, dict):
        items = reviews.get("reviews")
        quotes = "".join(_review_html(r) for r in items if isinstance(r, dict)) if isinstance(items, list) else ""
        served = f"<u>{_e(reviews.get('podname', ''))}</u>"
        cluster = reviews.get("clustername", "null")
        if cluster != "null":
            served += f" on cluster <u>{_e(cluster)}</u>"
        return (
            '<div class="col-md-6" data-section="reviews" data-status="ok">\n'
            '<h4 class="text-center text-primary">Book Reviews</h4>\n'
            f"{quotes}<dl>\n<dt>Reviews served by:</dt>\n{served}\n</dl>\n</div>\n"
        )
    return (
        '<div class="col-md-6" data-section="reviews" data-status="error">\n'
        '<h4 class="text-center text-primary">Error fetching product reviews!</h4>\n'
        f"<p>{_e(REVIEWS_ERROR)}</p>\n</div>\n"
    )


def render_product_page(
    user: object, details: tuple[int, object], reviews: tuple[int, object], product: Mapping[str, object]
) -> str:
    """The book page: title and summary always; details and reviews, or their error notices."""
    return _document(
        _navbar(user) + '<div class="container-fluid">\n<div class="row">\n<div class="col-md-12">\n'
        f'<h3 class="text-center text-primary">{_e(product["title"])}</h3>\n'
        f"<p>Summary: {product['descriptionHtml']}</p>\n"  # trusted HTML with a link, shown unescaped
        "</div>\n</div>\n"
        f'<div class="row">\n{_details_html(*details)}{_reviews_html(*reviews)}</div>\n</div>\n'
    )


def _json2html(value: object, attributes: str) -> str:
    """A table rendering of nested JSON in the style of the json2html package the original uses."""
    if isinstance(value, dict):
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_json2html(v, attributes)}</td></tr>" for k, v in value.items())
        return f"<table {attributes}>{rows}</table>"
    if isinstance(value, list):
        if not value:
            return ""
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            head = "".join(f"<th>{_e(k)}</th>" for k in keys)
            body = "".join(
                "<tr>" + "".join(f"<td>{_json2html(v.get(k, ''), attributes)}</td>" for k in keys) + "</tr>"
                for v in value
            )
            return f"<table {attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return "<ul>" + "".join(f"<li>{_json2html(v, attributes)}</li>" for v in value) + "</ul>"
    return _e(value)


def _service_tree() -> dict[str, object]:
    def node(service: Service, children: list[object]) -> dict[str, object]:
        return {"name": service.url, "endpoint": service.endpoint, "children": children}

    details = node(_details, [])
    reviews = node(_reviews, [node(_ratings, [])])
    # The original's root row repeats details' name and endpoint; kept, since the index page shows it.
    return {"name": _details.url, "endpoint": "details", "children": [details, reviews]}


def render_index(user: object) -> str:
    """The landing page: the service tree and links for a normal user and a tester."""
    table = _json2html(_service_tree(), 'class="table table-condensed table-bordered table-hover"')
    return _document(
        _navbar(user) + '<div class="container-fluid">\n'
        "<h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3>\n"
        f"{table}\n"
        "<h4>Click on one of the links below to auto generate a request to the backend "
        "as a real user or a tester</h4>\n"
        '<p><a href="/productpage?u=normal">Normal user</a></p>\n'
        '<p><a href="/productpage?u=test">Test user</a></p>\n'
        "</div>\n"
    )


def _status_page(code: int, reason: str, message: str) -> bytes:
    return (
        f"<!doctype html>\n<html lang=en>\n<title>{code} {reason}</title>\n<h1>{reason}</h1>\n<p>{message}</p>\n"
    ).encode()


# --- the web application --------------------------------------------------------------------------

_HTML = "text/html; charset=utf-8"
_JSON = "application/json"

Route = tuple[re.Pattern[str], tuple[str, ...], str]
_ROUTES: list[Route] = [
    (re.compile(r"/|/index\.html"), ("GET",), "index"),
    (re.compile(r"/productpage"), ("GET",), "productpage"),
    (re.compile(r"/login"), ("POST",), "login"),
    (re.compile(r"/logout"), ("GET",), "logout"),
    (re.compile(r"/health"), ("GET",), "health"),
    (re.compile(r"/metrics"), ("GET",), "metrics"),
    (re.compile(r"/api/v1/products"), ("GET",), "api_products"),
    (re.compile(r"/api/v1/products/(?P<product_id>[^/]+)"), ("GET",), "api_details"),
    (re.compile(r"/api/v1/products/(?P<product_id>[^/]+)/reviews"), ("GET",), "api_reviews"),
    (re.compile(r"/api/v1/products/(?P<product_id>[^/]+)/ratings"), ("GET",), "api_ratings"),
]


class ProductPageHandler(runtime.Handler):
    """The Flask application's routes."""

    server_header = "gunicorn"

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        path = unquote(urlsplit(self.path).path)
        method = "GET" if self.command == "HEAD" else self.command
        for pattern, methods, view in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = sorted({*methods, "OPTIONS", *(("HEAD",) if "GET" in methods else ())})
            if method == "OPTIONS":
                self.reply(200, b"", [("Content-Type", _HTML), ("Allow", ", ".join(allowed))])
            elif method in methods:
                getattr(self, f"_view_{view}")(**match.groupdict())
            else:
                body = _status_page(405, "Method Not Allowed", "The method is not allowed for the requested URL.")
                self.reply(405, body, [("Content-Type", _HTML), ("Allow", ", ".join(allowed))])
            return
        if path.startswith("/static/"):
            body = _status_page(
                404, "Not Found", "This sandbox image ships no static files; the page is self-contained."
            )
        else:
            body = _status_page(404, "Not Found", "The requested URL was not found on the server.")
        self.reply(404, body, [("Content-Type", _HTML)])

    # -- helpers

    def _session(self) -> dict[str, object]:
        return decode_session(_cookie(self.headers.get("Cookie"), _SESSION_COOKIE))

    def _forward(self) -> dict[str, str]:
        incoming = {name.lower(): value for name, value in reversed(self.headers.items())}  # first value wins
        return forward_headers(incoming, self._session())

    def _send(self, status: int, body: str, content_type: str, headers: list[tuple[str, str]] | None = None) -> None:
        self.reply(status, body.encode(), [("Content-Type", content_type), *(headers or [])])

    def _redirect_back(self, cookie: str) -> None:
        # Flask's redirect(request.referrer): with no Referer the target is the string "None".
        target = self.headers.get("Referer") or "None"
        body = (
            "<!doctype html>\n<html lang=en>\n<title>Redirecting...</title>\n"
            f'<p>Redirecting to <a href="{_e(target)}">{_e(target)}</a>.</p>\n'
        )
        self._send(302, body, _HTML, [("Location", target), ("Vary", "Cookie"), ("Set-Cookie", cookie)])

    # -- views

    def _view_index(self) -> None:
        self._send(200, render_index(self._session().get("user")), _HTML, [("Vary", "Cookie")])

    def _view_productpage(self) -> None:
        headers = self._forward()
        user = self._session().get("user", "")
        details = product_details("0", headers)  # the page always shows product 0, details first, then reviews
        reviews = product_reviews("0", headers)
        self._send(200, render_product_page(user, details, reviews, _PRODUCTS[0]), _HTML, [("Vary", "Cookie")])

    def _view_login(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        form: dict[str, list[str]] = {}
        body = self.read_body()
        if (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"))
        # request.values: the query string first, then the form; "passwd" is never checked.
        names: list[str | None] = [*(query.get("username") or form.get("username") or []), None]
        user = names[0]
        session = {**self._session(), "user": user}
        self._redirect_back(f"{_SESSION_COOKIE}={encode_session(session)}; HttpOnly; Path=/")

    def _view_logout(self) -> None:
        session = self._session()
        session.pop("user", None)
        if session:
            cookie = f"{_SESSION_COOKIE}={encode_session(session)}; HttpOnly; Path=/"
        else:
            cookie = f"{_SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/"
        self._redirect_back(cookie)

    def _view_health(self) -> None:
        self._send(200, "Product page is healthy", _HTML)

    def _view_metrics(self) -> None:
        self._send(200, "\n".join([*_process_metrics(), *_results.exposition()]) + "\n", _HTML)

    def _view_api_products(self) -> None:
        self._send(200, json.dumps(_PRODUCTS), _JSON)

    def _api(self, fetch: Callable[[str, Mapping[str, str]], tuple[int, object]], product_id: str) -> None:
        status, payload = fetch(product_id, self._forward())
        self._send(status, json.dumps(payload), _JSON)

    def _view_api_details(self, product_id: str) -> None:
        self._api(product_details, product_id)

    def _view_api_reviews(self, product_id: str) -> None:
        self._api(product_reviews, product_id)

    def _view_api_ratings(self, product_id: str) -> None:
        self._api(product_ratings, product_id)


# --- command line ---------------------------------------------------------------------------------


def _gunicorn_port(args: list[str]) -> int | None:
    """The port of gunicorn's ``-b/--bind`` address (``[::]:9080``, ``0.0.0.0:9080``); 8000 when absent."""
    bind = "127.0.0.1:8000"
    for i, arg in enumerate(args):
        if arg in ("-b", "--bind") and i + 1 < len(args):
            bind = args[i + 1]
        elif arg.startswith("--bind="):
            bind = arg.split("=", 1)[1]
        elif arg.startswith("-b") and len(arg) > 2:
            bind = arg[2:]
    host, sep, port = bind.rpartition(":")
    if not sep or host.endswith("["):  # "host" alone, or a bare IPv6 literal: gunicorn's default port
        return 8000
    return int(port) if port.isdigit() and int(port) < 65536 else None


def _gunicorn_log(message: str) -> None:
    runtime.log_error(f"[{runtime.utc_now('%Y-%m-%d %H:%M:%S +0000')}] [{os.getpid()}] [INFO] {message}")


def main(argv: list[str]) -> int:
    """Run ``gunicorn -b <addr>:<port> productpage:app ...`` or ``python productpage.py <port>``.

    Args:
        argv: The container's command line.

    Returns:
        The exit code; a server that started never returns.
    """
    program = os.path.basename(argv[0]) if argv else ""
    if program == "gunicorn":
        port = _gunicorn_port(argv[1:])
        if port is None:
            runtime.log_error(f"Error: {argv[1:]!r} does not give a usable bind address")
            return 1
        worker_class = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-k", "--worker-class")), "sync")
        bind = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-b", "--bind")), "127.0.0.1:8000")

        def listening() -> None:
            _gunicorn_log("Starting gunicorn 23.0.0")
            _gunicorn_log(f"Listening at: http://{bind} ({os.getpid()})")
            _gunicorn_log(f"Using worker: {worker_class}")
            # One threaded process stands in for gunicorn's workers.
            _gunicorn_log(f"Booting worker with pid: {os.getpid()}")

        return runtime.serve(ProductPageHandler, port, program="gunicorn", on_listen=listening)
    if program.startswith("python") and len(argv) > 1 and os.path.basename(argv[1]) == "productpage.py":
        if len(argv) < 3 or not argv[2].isdigit():
            runtime.log_error(f"ERROR:root:usage: {argv[1]} port")
            return 255
        port = int(argv[2])
        return runtime.serve(
            ProductPageHandler,
            port,
            program="productpage.py",
            on_listen=lambda: runtime.log_error(f"INFO:root:start at port {port}"),
        )
    return runtime.run_command(argv)
