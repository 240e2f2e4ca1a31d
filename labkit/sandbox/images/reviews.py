"""Bookinfo's reviews service (the real one is a JAX-RS application on Open Liberty, port 9080).

One program serves all three versions; the image's environment picks the behaviour:

* v1: ``ENABLE_RATINGS=false``; the reviews carry no ``rating``.
* v2: ``ENABLE_RATINGS=true``, ``STAR_COLOR=black``; ratings are fetched with a 10 s timeout.
* v3: ``ENABLE_RATINGS=true``, ``STAR_COLOR=red``; ratings are fetched with a 2.5 s timeout.

Routes: ``GET /reviews/<int>`` (always 200, even when ratings fails: each review then carries an ``error``
rating) and ``GET /health``. The JSON bodies are assembled by string concatenation in the original, irregular
spacing included, and are reproduced byte for byte.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

from labkit.sandbox.images import runtime

HTTP_PORT = 9080  # fixed in the image's server.xml, not taken from the command line

# Headers reviews copies from its request onto its call to ratings, when present (tracing, identity, session).
FORWARDED_HEADERS = (
    *runtime.TRACE_HEADERS,
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)

_REVIEWS = (
    ("Reviewer1", "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
)
_NO_STARS = -1  # the original's marker for "no rating for this reviewer"
_INT32 = re.compile(r"[+-]?[0-9]+")


class Config:
    """The reviews settings read from the environment, as the Java code reads them at start-up."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        # Java's Boolean.valueOf: "true" in any letter case, everything else (or unset) is false.
        self.ratings_enabled = environ.get("ENABLE_RATINGS", "").lower() == "true"
        self.star_color = environ.get("STAR_COLOR") or "black"
        domain = environ.get("SERVICES_DOMAIN")
        self.ratings_host = environ.get("RATINGS_HOSTNAME", "ratings") + (f".{domain}" if domain is not None else "")
        self.ratings_port = environ.get("RATINGS_SERVICE_PORT", "9080")
        # A missing variable prints as Java's null.
        self.pod_name = environ.get("HOSTNAME", "null")
        self.cluster_name = environ.get("CLUSTER_NAME", "null")
        # The original waits 10 s for black stars (v2) and 2.5 s for any other colour (v3).
        self.ratings_timeout = 10.0 if self.star_color == "black" else 2.5

    @property
    def ratings_service(self) -> str:
        return f"http://{self.ratings_host}:{self.ratings_port}/ratings"


def java_int(text: str) -> int | None:
    """JAX-RS's conversion of a path segment to ``int`` (``Integer.valueOf``); None where it fails (a 404)."""
    if not _INT32.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**31) <= value < 2**31 else None


def reviews_body(config: Config, product_id: int, stars: tuple[int, int]) -> str:
    """The ``/reviews/<id>`` body, spacing exactly as the original's string concatenation produces it.

    Args:
        config: The service settings.
        product_id: The requested id, echoed back as a string.
        stars: Reviewer1's and Reviewer2's stars; ``-1`` means the ratings call gave nothing for that
        reviewer.
    """
    parts = [
        "{",
        f'"id": "{product_id}",',
        f'"podname": "{config.pod_name}",',
        f'"clustername": "{config.cluster_name}",',
        '"reviews": [',
    ]
    for index, ((reviewer, text), count) in enumerate(zip(_REVIEWS, stars, strict=True)):
        parts.append(f'{{  "reviewer": "{reviewer}",  "text": "{text}"')
        if config.ratings_enabled:
            if count != _NO_STARS:
                parts.append(f', "rating": {{"stars": {count}, "color": "{config.star_color}"}}')
            else:
                parts.append(', "rating": {"error": "Ratings service is currently unavailable"}')
        parts.append("}," if index < len(_REVIEWS) - 1 else "}")
    parts.append("]}")
    return "".join(parts)


class RatingsUnusable(Exception):
    """Ratings answered 200 with JSON the Java code cannot read; the original then fails the request (500)."""


def fetch_stars(config: Config, product_id: int, headers: Mapping[str, str]) -> tuple[int, int]:
    """Ask ratings for the product's stars; ``(-1, -1)`` when ratings fails.

    Raises:
        RatingsUnusable: The body is not a JSON object with numeric ratings.
    """
    try:
        status, body = runtime.http_get(
            config.ratings_host,
            int(config.ratings_port),
            f"/ratings/{product_id}",
            {"Accept": "application/json", "User-Agent": "Apache-CXF/3.5.5", **headers},
            config.ratings_timeout,
        )
    except (runtime.DownstreamError, ValueError) as exc:
        runtime.log_error(f"Error: unable to contact {config.ratings_service} got exception {exc}")
        return _NO_STARS, _NO_STARS
    if status != 200:
        runtime.log(f"Error: unable to contact {config.ratings_service} got status of {status}")
        return _NO_STARS, _NO_STARS
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RatingsUnusable(f"ratings sent invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RatingsUnusable("ratings sent JSON that is not an object")
    ratings = document.get("ratings")
    if ratings is None and "ratings" not in document:
        return _NO_STARS, _NO_STARS
    if not isinstance(ratings, dict):
        raise RatingsUnusable("ratings.ratings is not an object")
    stars = []
    for reviewer, _ in _REVIEWS:
        if reviewer not in ratings:
            stars.append(_NO_STARS)
            continue
        value = ratings[reviewer]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RatingsUnusable(f"ratings.ratings.{reviewer} is not a number")
        stars.append(int(value))  # JsonNumber.intValue() truncates a fraction
    return stars[0], stars[1]


_config = Config(os.environ)


class ReviewsHandler(runtime.Handler):
    """The JAX-RS resource: ``/reviews/{productId}`` and ``/health``."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._json(200, '{"status": "Reviews is healthy"}')
            return
        match = re.fullmatch(r"/reviews/([^/]+)", path)
        product_id = java_int(unquote(match.group(1))) if match else None
        if product_id is None:
            self.reply(404)
            return
        stars = (_NO_STARS, _NO_STARS)
        if _config.ratings_enabled:
            forwarded = {}
            for name in FORWARDED_HEADERS:
                values = self.headers.get_all(name)
                if values:
                    forwarded[name] = ",".join(values)
            try:
                stars = fetch_stars(_config, product_id, forwarded)
            except RatingsUnusable as exc:
                runtime.log_error(f"[ERROR   ] reviews: {exc}")
                self.reply(500)
                return
        self._json(200, reviews_body(_config, product_id, stars))

    do_HEAD = do_GET  # JAX-RS answers HEAD from the GET method

    def _other_method(self) -> None:
        # JAX-RS answers OPTIONS itself and refuses the other methods on a path that exists.
        path = urlsplit(self.path).path
        if not (path == "/health" or re.fullmatch(r"/reviews/[^/]+", path)):
            self.reply(404)
        else:
            self.reply(200 if self.command == "OPTIONS" else 405, b"", [("Allow", "HEAD,GET,OPTIONS")])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    def _json(self, status: int, body: str) -> None:
        self.reply(status, body.encode(), [("Content-Type", "application/json")])


def main(argv: list[str]) -> int:
    """Run ``/opt/ol/wlp/bin/server run defaultServer`` (or another command, such as ``sleep``).

    Args:
        argv: The container's command line.

    Returns:
        The exit code; a server that started never returns.
    """
    if not argv or os.path.basename(argv[0]) != "server":
        return runtime.run_command(argv)
    server_name = argv[2] if len(argv) > 2 else "defaultServer"
    runtime.log(f"Launching {server_name} (Open Liberty 24.0.0.12) on Eclipse OpenJ9 VM, version 17 (en_US)")
    runtime.log(f"[AUDIT   ] CWWKE0001I: The server {server_name} has been launched.")

    def started() -> None:
        runtime.log(
            f"[AUDIT   ] CWWKT0016I: Web application available (default_host): http://{_config.pod_name}:{HTTP_PORT}/"
        )
        runtime.log(f"[AUDIT   ] CWWKF0011I: The {server_name} server is ready to run a smarter planet.")

    return runtime.serve(ReviewsHandler, HTTP_PORT, program="Open Liberty", on_listen=started)
