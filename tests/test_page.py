"""labkit.page: reading the product page of both Bookinfo generations, and showing it in a notebook.

The pure tests build pages two ways: the sandbox's own renderer (the legacy Bootstrap generation, exactly what
the sandbox serves) and a small renderer of the current Tailwind generation's structure written here from
the reference (its error texts have no "!", its stars are SVGs in a ``gap-x-1`` row, and its reviews block
starts with the template's unclosed attribute quote). The sandbox tests fetch the real page from the host and
from the tester pod, and export a notebook that displays it.
"""

from __future__ import annotations

import html
import itertools
import re
from typing import Any

import pytest

import labkit
from labkit import page as page_mod
from labkit.errors import LabkitError
from labkit.page import SECTIONS, ProductPage, fetch_page, parse_sections
from labkit.sandbox.images import productpage as legacy

DETAILS = {"id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback", "pages": 200,
           "publisher": "PublisherA", "language": "English", "ISBN-10": "1234567890",
           "ISBN-13": "123-1234567890"}
TEXTS = ("An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
         "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by "
         "Shakespeare.")


def reviews_json(version: str, ratings_ok: bool = True) -> dict[str, Any]:
    """What reviews v1/v2/v3 answer (ratings up or down)."""
    items: list[dict[str, Any]] = []
    for i, (text, stars) in enumerate(zip(TEXTS, (5, 4), strict=True)):
        review: dict[str, Any] = {"reviewer": f"Reviewer{i + 1}", "text": text}
        if version != "v1":
            review["rating"] = ({"stars": stars, "color": "black" if version == "v2" else "red"} if ratings_ok
                                else {"error": "Ratings service is currently unavailable"})
        items.append(review)
    return {"id": "0", "podname": f"reviews-{version}-5d7b9c8f4-abcde", "clustername": "null",
            "reviews": items}


def legacy_page(details_ok: bool, reviews_ok: bool, version: str = "v1", ratings_ok: bool = True) -> str:
    details = (200, DETAILS) if details_ok else (500, {"error": legacy.DETAILS_ERROR})
    reviews = ((200, reviews_json(version, ratings_ok)) if reviews_ok
               else (503, {"error": legacy.REVIEWS_ERROR}))
    return legacy.render_product_page("", details, reviews, legacy._PRODUCTS[0])


_FULL_STAR = '<svg class="h-5 w-5" viewBox="0 0 20 20" fill="currentColor"><path d="M10 2z"/></svg>'
_EMPTY_STAR = '<svg fill="none" viewBox="0 0 24 24" stroke="currentColor" class="h-5 w-5"><path/></svg>'


def current_page(details_ok: bool, reviews_ok: bool, version: str = "v1", ratings_ok: bool = True) -> str:
    """The current (Tailwind, Istio >= 1.23) page's structure: no <html>/<head>/<body> (bookinfo.md §2.2)."""
    out = ['<meta charset="utf-8">\n<title>Simple Bookstore App</title>\n'
           '<script src="static/tailwind/tailwind.css"></script>\n'
           '<script>addEventListener("DOMContentLoaded", () => {/* Book Details dialog */});</script>\n'
           '<nav class="bg-gray-800"><a href="#">BookInfo Sample</a>'
           '<button type="button" id="sign-in-button">Sign in</button></nav>\n'
           '<dialog id="dialog"><h2>Sign in to BookInfo</h2></dialog>\n'
           '<div class="container mt-8"><h1 class="text-5xl">The Comedy of Errors</h1>'
           f'<p class="mt-6 text-xl">{legacy._PRODUCTS[0]["descriptionHtml"]}</p></div>\n'
           '<div class="container mt-8"><div class="flow-root">\n']
    if details_ok:
        out.append('<h4 class="text-3xl font-semibold">Book Details</h4>\n<table><thead><tr>'
                   + "".join(f"<th>{h}</th>" for h in ("ISBN-10", "Publisher", "Pages", "Type", "Language"))
                   + "</tr></thead><tbody><tr>"
                   + "".join(f"<td>{DETAILS[k]}</td>" for k in ("ISBN-10", "publisher", "pages", "type",
                                                                 "language"))
                   + "</tr></tbody></table>\n")
    else:
        out.append('<p class="text-2xl text-red-500">Error fetching product details</p>\n'
                   f'<p class="text-lg text-gray-600">{legacy.DETAILS_ERROR}</p>\n')
    # The template's quirk: the reviews container's class attribute is never closed.
    out.append('</div></div>\n<div class="bg-blue-600/5 py-12 mx-auto" >\n'
               '  <div class="container mx-auto px-4 sm:px-6 lg:px-8>\n    <div class="max-w-2xl">\n')
    if reviews_ok:
        data = reviews_json(version, ratings_ok)
        out.append('<h4 class="text-3xl font-semibold">Book Reviews</h4>\n<div class="flex flex-col">\n')
        for review in data["reviews"]:
            out.append('<section class="px-6 py-12"><div class="mx-auto max-w-2xl">\n')
            rating = review.get("rating") or {}
            if rating.get("stars"):
                out.append(f'<div class="flex gap-x-1 text-{rating["color"]}-500">'
                           + _FULL_STAR * rating["stars"] + _EMPTY_STAR * (5 - rating["stars"]) + "</div>\n")
            elif rating.get("error"):
                out.append(f'<p class="text-red-500">{rating["error"]}</p>\n')
            out.append(f'<blockquote class="mt-10"><p>"{html.escape(review["text"])}"</p></blockquote>\n'
                       '<div class="mt-4"><img src="/static/img/izzy.png" alt="Izzy">'
                       f'<div class="font-semibold">{review["reviewer"]}</div>'
                       f'<div class="font-mono">Reviews served by: \n {data["podname"]}\n</div></div>\n'
                       "</div></section>\n")
        out.append("</div>\n")
    else:
        out.append('<p class="text-2xl text-red-500">Error fetching product reviews</p>\n'
                   f'<p class="text-lg text-gray-600">{legacy.REVIEWS_ERROR}</p>\n')
    out.append("</div>\n</div>\n</div>\n")
    return "".join(out)


GENERATIONS = {"legacy": legacy_page, "current": current_page}


def expected(details_ok: bool, reviews_ok: bool, version: str, ratings_ok: bool) -> dict[str, bool | None]:
    ratings = None if not reviews_ok or version == "v1" else ratings_ok
    return {"details": details_ok, "reviews": reviews_ok, "ratings": ratings}


CASES = list(itertools.product((True, False), (True, False), ("v1", "v2", "v3"), (True, False)))


@pytest.mark.parametrize("generation", list(GENERATIONS))
@pytest.mark.parametrize(("details_ok", "reviews_ok", "version", "ratings_ok"), CASES)
def test_parse_sections_every_failure_combination(generation: str, details_ok: bool, reviews_ok: bool,
                                                  version: str, ratings_ok: bool) -> None:
    body = GENERATIONS[generation](details_ok, reviews_ok, version, ratings_ok)
    assert parse_sections(body) == expected(details_ok, reviews_ok, version, ratings_ok)


@pytest.mark.parametrize("generation", list(GENERATIONS))
def test_the_generations_differ_in_the_error_texts_the_parser_accepts(generation: str) -> None:
    body = GENERATIONS[generation](False, False)
    bang = generation == "legacy"
    assert ("Error fetching product details!" in body) is bang
    assert "Error fetching product details" in body
    assert "<title>Simple Bookstore App</title>" in body


def test_text_decides_without_the_sandbox_data_attributes() -> None:
    # A real (non-sandbox) legacy page carries no data-* hints: the visible text alone must do.
    for details_ok, reviews_ok, version, ratings_ok in CASES:
        body = re.sub(r' data-[a-z]+="[^"]*"', "", legacy_page(details_ok, reviews_ok, version, ratings_ok))
        assert "data-section" not in body
        assert parse_sections(body) == expected(details_ok, reviews_ok, version, ratings_ok)


def test_data_attributes_are_a_fallback_when_the_text_says_nothing() -> None:
    body = ('<div data-section="details" data-status="error"></div>'
            '<div data-section="reviews" data-status="ok"><blockquote data-ratings="ok" data-stars="0">'
            "</blockquote></div>")
    # Zero stars: the legacy template shows none, only the hint tells ratings answered.
    assert parse_sections(body) == {"details": False, "reviews": True, "ratings": True}


def test_minimal_snippets_of_both_generations() -> None:
    assert parse_sections("<h4>Error fetching product details!</h4><p>Sorry, product details are currently "
                          "unavailable for this book.</p><h4>Book Reviews</h4>") == \
        {"details": False, "reviews": True, "ratings": None}
    assert parse_sections('<p class="text-2xl text-red-500">Error fetching product reviews</p>'
                          '<h4 class="text-3xl">Book Details</h4>') == \
        {"details": True, "reviews": False, "ratings": None}
    assert parse_sections("<h4>Book Details</h4><h4>Book Reviews</h4><blockquote><p><i>Ratings service is "
                          "currently   unavailable</i></p></blockquote>") == \
        {"details": True, "reviews": True, "ratings": False}
    assert parse_sections('<h4>Book Details</h4><h4>Book Reviews</h4><font color="red">'
                          '<span class="glyphicon glyphicon-star"></span></font>') == \
        {"details": True, "reviews": True, "ratings": True}


@pytest.mark.parametrize("body", ["", "Product page is healthy", "<html><h1>Not Found</h1></html>",
                                  "<script>document.write('Book Details')</script>", "<p>unclosed <b"])
def test_not_a_product_page_gives_none_everywhere(body: str) -> None:
    assert parse_sections(body) == dict.fromkeys(SECTIONS)


def make_page(body: str, status: int = 200, error: str = "") -> ProductPage:
    import pandas as pd

    sections = parse_sections(body) if status == 200 else page_mod.failed_sections()
    return ProductPage(url="http://127.0.0.1:1/productpage", status=status, html=body,
                       fetched_at=pd.Timestamp.now(tz="UTC"), elapsed_ms=12.3, sections=sections, error=error)


def test_product_page_health_and_failing() -> None:
    healthy = make_page(legacy_page(True, True, "v3"))
    assert healthy.healthy and healthy.failing == [] and healthy.recognised
    assert "healthy" in healthy.summary() and "ratings ok" in healthy.summary()
    degraded = make_page(current_page(False, True, "v2", ratings_ok=False))
    assert not degraded.healthy
    assert degraded.failing == ["details", "ratings"]
    assert "gradual degradation" in degraded.summary()
    down = make_page("", status=0, error="connection failed: Connection refused")
    assert down.failing == ["page", "details", "reviews"]
    assert "no response" in down.summary() and "Connection refused" in down.summary()
    other = make_page("<h1>hello</h1>")
    assert not other.recognised and other.failing == ["page"]
    assert "ProductPage 200" in repr(healthy) and "<html" not in repr(healthy)
    assert healthy.to_dict()["details"] is True and "html" not in healthy.to_dict()


def iframe_srcdoc(markup: str) -> str:
    match = re.search(r'<iframe sandbox srcdoc="([^"]*)"', markup)
    assert match, markup[:500]
    return html.unescape(match.group(1))


def test_repr_html_is_a_sandboxed_iframe_with_the_page_escaped() -> None:
    body = legacy_page(False, True, "v2")
    markup = make_page(body)._repr_html_()
    assert markup.count("<iframe") == 1
    assert "allow-scripts" not in markup
    # The page is only inside the attribute: no raw tag of it leaks into the notebook's DOM.
    outside = re.sub(r'srcdoc="[^"]*"', "", markup)
    assert "<nav" not in outside and "Error fetching" not in outside
    base = '<base href="http://127.0.0.1:1/productpage">'
    assert iframe_srcdoc(markup) == body.replace("<head>", "<head>" + base, 1)
    assert "gradual degradation" in markup
    # The current generation has no <head>: the <base> goes first, before nothing else of the page.
    current = current_page(True, True)
    assert iframe_srcdoc(make_page(current)._repr_html_()) == base + current


def test_repr_html_of_a_page_that_did_not_answer() -> None:
    markup = make_page("", status=0, error="timed out after 5 s")._repr_html_()
    assert "timed out after 5 s" in iframe_srcdoc(markup)


def test_bad_arguments_are_refused_before_any_request() -> None:
    class NoUrl:
        productpage_url = None

    with pytest.raises(LabkitError, match="via must be 'host' or 'tester'"):
        fetch_page(NoUrl(), via="pod")  # type: ignore[arg-type]
    with pytest.raises(LabkitError, match=r"no productpage URL reachable from this machine.*via='tester'"):
        fetch_page(NoUrl())  # type: ignore[arg-type]


# -- against the sandbox ----------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["host", "tester"])
def test_fetch_the_healthy_page_from_the_sandbox(lab: labkit.Lab, via: str) -> None:
    page = fetch_page(lab, via=via)  # type: ignore[arg-type]
    assert page.status == 200, page.summary()
    assert page.via == via
    assert page.url == (lab.productpage_url if via == "host" else "http://productpage:9080/productpage")
    assert page.sections == {"details": True, "reviews": True, "ratings": None}  # reviews v1: no stars
    assert page.healthy and page.failing == []
    assert "<title>Simple Bookstore App</title>" in page.html
    assert page.fetched_at.tzinfo is not None and page.elapsed_ms > 0
    srcdoc = iframe_srcdoc(page._repr_html_())
    if via == "host":  # relative links resolve against productpage: a <base> inside the page's <head>
        assert f'<head><base href="{lab.productpage_url}">' in srcdoc
        assert srcdoc.replace(f'<base href="{lab.productpage_url}">', "") == page.html
    else:
        assert srcdoc == page.html


def test_a_page_nobody_answers_is_a_record_not_an_exception(lab: labkit.Lab) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = fetch_page(lab, url=f"http://127.0.0.1:{port}/productpage", timeout=2)
    assert page.status == 0 and not page.healthy
    assert "connection failed" in page.error
    bad = fetch_page(lab, via="tester", url="http://productpage:9080/nothere")
    assert bad.status == 404 and bad.failing[0] == "page" and bad.error == "HTTP 404"


def test_the_page_survives_nbconvert_html_export(lab: labkit.Lab, ready_sandbox, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import labkit\n"
            f"lab = labkit.connect(sandbox_dir={str(ready_sandbox.dir)!r}, start=False)"),
        nbformat.v4.new_code_cell("lab.page()"),
    ]
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = nb.cells[1].outputs
    assert outputs and "text/html" in outputs[0]["data"], outputs
    body, _ = HTMLExporter().from_notebook_node(nb)
    (tmp_path / "page.html").write_text(body)
    # nbconvert re-serialises the output's HTML: the bare attribute may come back as sandbox="".
    match = re.search(r'<iframe sandbox(?:="")? srcdoc="([^"]*)"', body)
    assert match, "the exported HTML has no sandboxed iframe"
    srcdoc = html.unescape(match.group(1))
    assert srcdoc.startswith("<!DOCTYPE html>")
    assert "<title>Simple Bookstore App</title>" in srcdoc and "Book Details" in srcdoc
    assert srcdoc.rstrip().endswith("</html>")
    assert "details ok" in body and "healthy" in body
