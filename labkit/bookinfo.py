"""Bookinfo's facts, in one place: its services and their processes, the tester pod, the page's sections, its URLs
and the texts its page shows when a section fails.

A leaf: it imports only the standard library, so every layer may use it (the library, and the sandbox, which must
know nothing of the library above it).

Example:
    >>> from labkit import bookinfo
    >>> bookinfo.PROCESSES["details"]
    'ruby'
    >>> bookinfo.service_url("ratings", "/ratings/7")
    'http://ratings:9080/ratings/7'
"""

from __future__ import annotations

__all__ = [
    "DETAILS_ERRORS",
    "DETAILS_HEADING",
    "LANGUAGES",
    "LESSON_ORDER",
    "PORT",
    "PROCESSES",
    "RATINGS_ERRORS",
    "REVIEWS_ERRORS",
    "REVIEWS_HEADING",
    "SECTIONS",
    "SERVICES",
    "TESTER_APPS",
    "TESTER_SELECTORS",
    "TESTER_URL",
    "service_url",
]

SERVICES: tuple[str, ...] = ("productpage", "details", "reviews", "ratings")
"""Bookinfo's services, in the order a request goes through them."""

LESSON_ORDER: tuple[str, ...] = ("details", "ratings", "reviews", "productpage")
"""The services in the order the lesson breaks them (details first)."""

PROCESSES: dict[str, str] = {"details": "ruby", "ratings": "node", "reviews": "java", "productpage": "gunicorn"}
"""The main process of each service's container: what ``pkill`` must name to crash it."""

LANGUAGES: dict[str, str] = {"details": "Ruby (WEBrick)", "ratings": "Node.js", "reviews": "Java (Open Liberty)",
                             "productpage": "Python served by gunicorn"}
"""What each service is written in (why its process has the name it has)."""

PORT = 9080
"""The port every Bookinfo service listens on."""

TESTER_APPS: tuple[str, ...] = ("sleep", "curl")
"""``app`` labels of the lesson's tester pod (``sleep`` before Istio 1.24, ``curl`` after): never a chaos target."""

TESTER_SELECTORS: tuple[str, ...] = tuple(f"app={app}" for app in TESTER_APPS)
"""Label selectors that find the tester pod, in the order they are tried."""

SECTIONS: tuple[str, ...] = ("details", "reviews", "ratings")
"""The parts of the product page that come from other services, in the order productpage calls them."""


def service_url(service: str, path: str = "/") -> str:
    """A service's in-cluster URL, as the tester pod reaches it: ``http://SERVICE:9080PATH``."""
    return f"http://{service}:{PORT}{path if path.startswith('/') else '/' + path}"


TESTER_URL = service_url("productpage", "/productpage")
"""The page as the tester pod reaches it (the lesson's ``curl productpage:9080/productpage``)."""

# The page's visible texts, lower-cased, with the legacy page's trailing "!" left out so that one prefix matches
# "Error fetching product details!" (Istio <= 1.22) and "Error fetching product details" (>= 1.23) alike.
DETAILS_ERRORS: tuple[str, ...] = ("error fetching product details", "product details are currently unavailable")
"""Texts on the page (lower case) that mean the details section failed."""
REVIEWS_ERRORS: tuple[str, ...] = ("error fetching product reviews", "product reviews are currently unavailable")
"""Texts on the page (lower case) that mean the reviews section failed."""
RATINGS_ERRORS: tuple[str, ...] = ("ratings service is currently unavailable",)
"""Texts on the page (lower case) that mean ratings failed under a review."""
DETAILS_HEADING = "book details"
"""The heading (lower case) of a working details section."""
REVIEWS_HEADING = "book reviews"
"""The heading (lower case) of a working reviews section."""
