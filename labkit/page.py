"""Bookinfo's product page as the reader sees it: which sections work, and the page itself in the notebook.

The lesson's whole point is on this page: when details dies, productpage still answers 200 and only the
details half turns into an error notice ("gradual degradation"). :func:`parse_sections` reads that from the
page's visible text, so it works on both page generations Bookinfo has shipped (the Bootstrap one of Istio
≤ 1.22 and the Tailwind one of Istio ≥ 1.23, whose error headings lost their "!") and on the sandbox's page.
The sandbox's ``data-section``/``data-status``/``data-ratings`` hints count only when the text says nothing.

Example:
    >>> page = labkit.page.fetch_page(lab)
    >>> page.sections
    {'details': True, 'reviews': True, 'ratings': None}
    >>> page                      # shows the page itself, in a sandboxed iframe, with a health line above
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Literal

import pandas as pd

from .bookinfo import (
    DETAILS_ERRORS,
    DETAILS_HEADING,
    RATINGS_ERRORS,
    REVIEWS_ERRORS,
    REVIEWS_HEADING,
    SECTIONS,
    TESTER_URL,
)
from .errors import LabkitError
from .records import mime_bundle

if TYPE_CHECKING:
    from .client import Client

__all__ = ["SECTIONS", "STAR_VERSIONS", "ProductPage", "fetch_page", "login", "parse_sections", "reviews_served_by",
           "tester_url"]

Via = Literal["host", "tester"]


# Star markup: legacy ``<span class="glyphicon glyphicon-star">``; current ``<div class="flex gap-x-1
# text-red-500">`` around the star SVGs (for black stars the class is the non-existent ``text-black-500``).
_STAR_ROW = re.compile(r"(?:^|\s)gap-x-1(?:\s|$)")
_STAR_COLOR = re.compile(r"(?:^|\s)text-([a-z]+)-500(?:\s|$)")
_SERVED_BY = re.compile(r"reviews served by:\s*(\S+)", re.IGNORECASE)
_VERSION_IN_NAME = re.compile(r"^reviews-(v\d+)-")

STAR_VERSIONS: dict[str, str] = {"black": "v2", "red": "v3"}
"""Which reviews version draws stars of a colour (``STAR_COLOR`` of the Deployments); v1 draws no stars."""
_SKIPPED_TAGS = frozenset({"script", "style", "title", "head"})


class _PageReader(HTMLParser):
    """Collects the visible text, star markup and the sandbox's data-* hints of one page.

    html.parser never raises on bad markup, which matters: the current template has an unclosed attribute
    quote (``lg:px-8>``) right before the reviews.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.stars = 0
        self.hints: dict[str, str] = {}
        self.ratings_hints: list[str] = []
        self.star_colors: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "")
        if "glyphicon-star" in classes or (tag == "div" and _STAR_ROW.search(classes)):
            self.stars += 1
        if tag == "font" and a.get("color"):  # the legacy page wraps each review's stars in <font color=...>
            self.star_colors.append(a["color"].strip().lower())
        elif tag == "div" and _STAR_ROW.search(classes) and (color := _STAR_COLOR.search(classes)):
            self.star_colors.append(color.group(1))
        if "data-section" in a and "data-status" in a:
            self.hints[a["data-section"]] = a["data-status"]
        if "data-ratings" in a:
            self.ratings_hints.append(a["data-ratings"])

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _hint(value: str | None) -> bool | None:
    return {"ok": True, "error": False}.get(value or "")


def parse_sections(html_text: str) -> dict[str, bool | None]:
    """Which sections of a product page work: True (shown), False (its error notice is shown), None (absent).

    Reads the visible text of either page generation: "Error fetching product details[!]" / "Sorry, product
    details are currently unavailable..." mean details failed, the "Book Details" heading means it worked; the
    same for reviews; "Ratings service is currently unavailable" under a review means ratings failed, stars
    mean it worked. Ratings is None when reviews v1 served the page (it never calls ratings, so no stars) or
    when reviews itself failed. Anything that is not a product page gives None everywhere.

    Args:
        html_text: the body of ``GET /productpage``.

    Returns:
        ``{"details": ..., "reviews": ..., "ratings": ...}`` with the keys of :data:`SECTIONS`.

    Example:
        >>> parse_sections(requests.get(lab.productpage_url).text)
        {'details': True, 'reviews': True, 'ratings': None}
    """
    reader = _PageReader()
    reader.feed(html_text or "")
    reader.close()
    text = " ".join(" ".join(reader.text).split()).lower()

    def section(errors: tuple[str, ...], heading: str, name: str) -> bool | None:
        if any(e in text for e in errors):
            return False
        if heading in text:
            return True
        return _hint(reader.hints.get(name))

    details = section(DETAILS_ERRORS, DETAILS_HEADING, "details")
    reviews = section(REVIEWS_ERRORS, REVIEWS_HEADING, "reviews")
    ratings: bool | None = None
    if reviews:
        if any(e in text for e in RATINGS_ERRORS) or "error" in reader.ratings_hints:
            ratings = False
        elif reader.stars or "ok" in reader.ratings_hints:
            ratings = True
    return {"details": details, "reviews": reviews, "ratings": ratings}


def reviews_served_by(html_text: str) -> tuple[str, str]:
    """Which reviews version and pod served a product page: ``(version, pod)``, "" for what the page does not tell.

    The version comes from the stars: black ones are drawn by v2, red ones by v3, none at all (with the reviews
    shown and no ratings error) by v1. When ratings failed the stars are missing, and the version is read from the
    pod's name (``reviews-v2-...``) as the page's "Reviews served by" line gives it (Bookinfo images since 2022).

    Example:
        >>> reviews_served_by(requests.get(lab.productpage_url).text)
        ('v2', 'reviews-v2-7d9f8c6b5-x2x9k')
    """
    reader = _PageReader()
    reader.feed(html_text or "")
    reader.close()
    text = " ".join(" ".join(reader.text).split())
    served = _SERVED_BY.search(text)
    pod = served.group(1) if served else ""
    reviews = parse_sections(html_text)
    if reviews["reviews"] is not True:
        return "", pod
    colors = [STAR_VERSIONS[c] for c in reader.star_colors if c in STAR_VERSIONS]
    if colors:
        return colors[0], pod
    if reviews["ratings"] is None and not reader.stars:
        return "v1", pod
    named = _VERSION_IN_NAME.match(pod)
    return (named.group(1) if named else ""), pod


def failed_sections() -> dict[str, bool | None]:
    """The sections of a page that did not come back (no response, or an error status): the reader saw no
    details and no reviews, and cannot tell about ratings."""
    return {"details": False, "reviews": False, "ratings": None}


_STARS = {"v1": "no stars", "v2": "black stars", "v3": "red stars"}


def _word(value: bool | None) -> str:
    return {True: "ok", False: "FAILING", None: "not shown"}[value]


@dataclass
class ProductPage:
    """One fetch of the product page: status, timing, the HTML, and which sections work.

    Attributes:
        url: what was requested.
        status: the HTTP status; 0 when no response came (connection refused, timeout).
        html: the body ("" when no response came).
        fetched_at: when the request was sent (UTC).
        elapsed_ms: how long the answer took.
        sections: :func:`parse_sections` of the body; for a failed page details and reviews are False.
        via: "host" (this machine) or "tester" (curl in the tester pod).
        error: why the fetch failed ("" when it did not).
        user: who was signed in (``POST /login``) for this fetch; "" for nobody.
    """

    url: str
    status: int
    html: str
    fetched_at: pd.Timestamp
    elapsed_ms: float
    sections: dict[str, bool | None] = field(default_factory=dict)
    via: str = "host"
    error: str = ""
    user: str = ""

    @property
    def recognised(self) -> bool:
        """Whether the body is Bookinfo's product page at all (a details or a reviews section was found)."""
        return self.status == 200 and (self.sections.get("details") is not None
                                       or self.sections.get("reviews") is not None)

    @property
    def healthy(self) -> bool:
        """200, details and reviews shown, and ratings not failing (ratings may be absent: reviews v1)."""
        return (self.status == 200 and self.sections.get("details") is True
                and self.sections.get("reviews") is True and self.sections.get("ratings") is not False)

    @property
    def reviews_version(self) -> str:
        """Which reviews version drew the reviews: "v1" (no stars), "v2" (black), "v3" (red); "" when not shown."""
        return reviews_served_by(self.html)[0] if self.status == 200 else ""

    @property
    def failing(self) -> list[str]:
        """What the reader sees broken: "page" when the page itself failed, then the failing sections."""
        broken = [] if self.status == 200 and self.recognised else ["page"]
        return broken + [s for s in SECTIONS if self.sections.get(s) is False]

    def summary(self) -> str:
        """One line: status, time, each section, and the verdict.

        Example:
            >>> print(lab.page().summary())
            HTTP 200 in 9 ms · details FAILING · reviews ok · ratings not shown → gradual degradation
        """
        if self.status == 0:
            head = f"no response after {self.elapsed_ms:.0f} ms ({self.error or 'no answer'})"
        else:
            head = f"HTTP {self.status} in {self.elapsed_ms:.0f} ms"
        parts = ([f"as {self.user}"] if self.user else []) + [head]
        parts += [f"{s} {_word(self.sections.get(s))}" for s in SECTIONS]
        if self.reviews_version:
            parts.append(f"reviews {self.reviews_version} ({_STARS.get(self.reviews_version, '')})")
        if self.healthy:
            verdict = "healthy"
        elif "page" in self.failing:
            verdict = "the page itself failed" + ("" if self.status != 200 else f": {self.error}")
        else:
            verdict = "gradual degradation (the page works, " + ", ".join(self.failing) + " failing)"
        return " · ".join(parts) + f" → {verdict}"

    def __repr__(self) -> str:
        flags = " ".join(f"{s}={_word(self.sections.get(s))}" for s in SECTIONS)
        state = "healthy" if self.healthy else "failing: " + ",".join(self.failing)
        who = f" as {self.user}" if self.user else ""
        return (f"<ProductPage {self.status} {state} {flags} {self.elapsed_ms:.0f} ms "
                f"via {self.via} {self.url}{who}>")

    def _repr_html_(self) -> str:
        # The page goes into the iframe's srcdoc, escaped, and the iframe is sandboxed without allow-scripts:
        # the page's own scripts and forms cannot touch the notebook, and no JavaScript is needed to show it,
        # so it survives nbconvert's HTML export unchanged.
        color = "#2e7d32" if self.healthy else "#c62828"
        why = html.escape(self.error or "no response")
        body = self.html or f"<p style='font-family:sans-serif;color:#c62828'>No page: {why}</p>"
        if self.via == "host" and self.html and "<base" not in self.html.lower():
            # Relative links (static/..., login) then resolve against productpage, not the notebook server.
            base = f'<base href="{html.escape(self.url, quote=True)}">'
            # Inside <head> when there is one: anything before <!DOCTYPE> would put the page in quirks mode.
            head = re.search(r"<head[^>]*>", body, re.IGNORECASE)
            body = body[:head.end()] + base + body[head.end():] if head else base + body
        return (
            f"<div class='labkit-page'><div style='font-family:sans-serif;margin:4px 0'>"
            f"<b style='color:{color}'>● {html.escape(self.summary())}</b> "
            f"<small>{html.escape(self.url)} via {html.escape(self.via)}</small></div>"
            f"<iframe sandbox srcdoc=\"{html.escape(body, quote=True)}\" title=\"Bookinfo product page\" "
            "style='width:100%;height:480px;border:1px solid #ccc;resize:vertical'></iframe></div>")

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        record = {"kind": "page", "url": self.url, "status": self.status or None, "html": self.html,
                  "sections": {s: self.sections.get(s) is True for s in SECTIONS}}
        return mime_bundle(record, repr(self), self._repr_html_())

    def to_dict(self) -> dict[str, object]:
        """A plain record (no HTML) for journals and DataFrames."""
        return {"url": self.url, "via": self.via, "status": self.status,
                "fetched_at": self.fetched_at.isoformat(), "elapsed_ms": round(self.elapsed_ms, 3),
                **self.sections, "healthy": self.healthy,
                "failing": self.failing, "error": self.error, "user": self.user,
                "reviews_version": self.reviews_version}


def tester_url(url: str | None = None) -> str:
    """The URL the tester pod requests: ``url`` or productpage's in-cluster address."""
    return url or TESTER_URL


def host_url(lab: Client, url: str | None = None) -> str:
    """The URL this machine requests: ``url`` or ``lab.productpage_url``; says what to do without either."""
    found = url or lab.productpage_url
    if not found:
        raise LabkitError("this Lab has no productpage URL reachable from this machine: pass "
                          "url='http://<your ingress>/productpage' (the lesson's $MYHOST), set "
                          "LABKIT_PRODUCTPAGE_URL, or use via='tester' to ask the tester pod for the page")
    return str(found)


_MARK = "\n__labkit_http_code__="


def _fetch_host(url: str, timeout: float, cookie: str = "") -> tuple[int, str, str]:
    import requests

    headers = {"Connection": "close", **({"Cookie": cookie} if cookie else {})}
    try:
        # A new connection each time (as productpage itself does downstream), so requests spread over pods.
        resp = requests.get(url, timeout=timeout, headers=headers)
    except requests.Timeout:
        return 0, "", f"timed out after {timeout:g} s"
    except requests.ConnectionError as exc:
        return 0, "", f"connection failed: {_short(exc)}"
    except requests.RequestException as exc:
        return 0, "", f"{type(exc).__name__}: {_short(exc)}"
    return resp.status_code, resp.text, "" if resp.status_code == 200 else f"HTTP {resp.status_code}"


def _fetch_tester(lab: Client, pod: str, url: str, timeout: float, cookie: str = "") -> tuple[int, str, str]:
    # curl -sS prints its own error on stderr; -w appends the status after the body on a line of its own.
    extra = ["-H", f"Cookie: {cookie}"] if cookie else []
    res = lab.exec(pod, ["curl", "-sS", "-m", f"{timeout:g}", *extra, "-w", _MARK + "%{http_code}", url],
                   timeout=timeout + 10)
    body, sep, code = res.stdout.rpartition(_MARK)
    status = int(code.strip()) if sep and code.strip().isdigit() else 0
    if status == 0:
        return 0, "", (res.stderr.strip() or f"curl exited {res.returncode}")
    return status, body, "" if status == 200 else f"HTTP {status}"


def _short(exc: BaseException) -> str:
    # requests nests urllib3's reason three levels deep; the innermost words are the useful ones.
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] [^'\")\]]+|Connection refused|Read timed out|Name or service not known"
                      r"|Remote end closed connection without response|Connection reset by peer", text)
    return match.group(0) if match else text[:200]


_SET_COOKIE = re.compile(r"^set-cookie:\s*(session=[^;\r\n]*)", re.IGNORECASE | re.MULTILINE)


def login_url(page_url: str) -> str:
    """Where productpage's sign-in form posts: ``/login`` beside the page's URL."""
    from urllib.parse import urljoin

    return urljoin(page_url, "login")


def login(lab: Client, user: str, *, via: Via = "host", url: str | None = None, timeout: float = 10.0) -> str:
    """Sign in to productpage as ``user`` (its form's ``POST /login``, field ``username``) and return the session
    cookie (``session=...``) to send with later requests: productpage then adds ``end-user: USER`` to its calls,
    which Istio's rules can match.

    Raises:
        LabkitError: no session cookie came back (not Bookinfo's productpage, or it is down).
    """
    if not user or not isinstance(user, str):
        raise LabkitError(f"user must be a non-empty name such as 'jason', not {user!r}")
    target = login_url(host_url(lab, url) if via == "host" else tester_url(url))
    if via == "host":
        import requests

        try:
            resp = requests.post(target, data={"username": user, "passwd": ""}, timeout=timeout,
                                 allow_redirects=False, headers={"Connection": "close"})
        except requests.RequestException as exc:
            raise LabkitError(f"signing in as {user} at {target} failed: {_short(exc)}") from exc
        found = _SET_COOKIE.search("\n".join(f"{k}: {v}" for k, v in resp.headers.items()))
        status = resp.status_code
    else:
        res = lab.exec(lab.tester_pod(), ["curl", "-sS", "-i", "-m", f"{timeout:g}", "-d",
                                          f"username={user}&passwd=", target], timeout=timeout + 10)
        found = _SET_COOKIE.search(res.stdout)
        status = res.returncode
    if not found:
        raise LabkitError(f"signing in as {user} at {target} gave no session cookie (status {status}); is it "
                          "Bookinfo's productpage, and is it up? Try lab.page() first.")
    return found.group(1)


def fetch_page(lab: Client, *, via: Via = "host", url: str | None = None, timeout: float = 10.0,
               user: str | None = None) -> ProductPage:
    """Request the product page once and say what works on it.

    A page that does not answer is not an exception here: it comes back with ``status`` 0 and ``error`` set,
    because a dead productpage is one of the things the lesson shows.

    Args:
        lab: the connection.
        via: "host" requests ``lab.productpage_url`` (or ``url``) from this machine; "tester" runs
            ``curl`` in the tester pod against ``http://productpage:9080/productpage`` (or ``url``), as the
            lesson does with ``kubectl exec``.
        url: another URL (a real cluster's Ingress, ``?u=test``...).
        timeout: seconds to wait for the page.
        user: sign in first as this user (``POST /login``, as the page's "Sign in" button does) and fetch the
            page with the session cookie; productpage then sends ``end-user: USER`` downstream (Istio's
            request-routing task routes ``jason`` to reviews v2).

    Returns:
        A :class:`ProductPage`; in a notebook it displays the page itself.

    Raises:
        LabkitError: ``via`` is unknown, or "host" with no URL known for this Lab.
        NoPodsMatch: "tester" with no tester pod running.

    Example:
        >>> page = fetch_page(lab)
        >>> page.healthy, page.failing
        (False, ['details'])
    """
    if via not in ("host", "tester"):
        raise LabkitError(f"via must be 'host' or 'tester', not {via!r}")
    target = host_url(lab, url) if via == "host" else tester_url(url)
    cookie = login(lab, user, via=via, url=url, timeout=timeout) if user is not None else ""
    sent = pd.Timestamp.now(tz="UTC")
    started = time.perf_counter()
    if via == "host":
        status, body, error = _fetch_host(target, timeout, cookie)
    else:
        status, body, error = _fetch_tester(lab, lab.tester_pod(), target, timeout, cookie)
    elapsed = (time.perf_counter() - started) * 1000
    sections = parse_sections(body) if status == 200 else failed_sections()
    page = ProductPage(url=target, status=status, html=body, fetched_at=sent, elapsed_ms=elapsed,
                       sections=sections, via=via, error=error, user=user or "")
    if status == 200 and not page.recognised:
        page.error = "the response is not Bookinfo's product page (no details or reviews section on it)"
    return page
