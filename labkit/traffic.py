"""Steady traffic to the product page while you break things: the lesson's ``while :; do curl ...; done``.

:class:`Traffic` requests the page at a fixed rate from background threads and records, for every request, the
status, the latency and which sections of the page worked (:func:`labkit.page.parse_sections`). From that
record it tells the lesson's two outcomes apart: **gradual degradation** (the page keeps answering 200 while
one section shows its error notice) and **cascading failure** (the page itself fails).

Example:
    >>> traffic = Traffic(lab, rate=10).start()
    >>> lab.kill("app=details", mode="all")          # the lesson's for-loop of `pkill ruby`
    >>> traffic.stop()
    >>> traffic.verdict()
    'gradual degradation'
    >>> traffic.availability("1s")                    # per second: requests, ok, details/reviews/ratings 0..1
"""

from __future__ import annotations

import html
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from . import page as _page
from . import report
from .errors import LabkitError
from .progress import Progress
from .records import utc

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "AVAILABILITY_COLUMNS",
    "MAX_RATE",
    "SERVED_COLUMNS",
    "TRAFFIC_COLUMNS",
    "VERSION_COLUMNS",
    "SplitCheck",
    "Traffic",
    "Verdict",
    "availability",
    "by_version",
    "explain",
    "latency_percentiles",
    "split_within_noise",
    "summarize",
    "verdict",
    "version_split",
]

TRAFFIC_COLUMNS: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    "status": "int64",
    "latency_ms": "float64",
    "details": "boolean",
    "reviews": "boolean",
    "ratings": "boolean",
    "error": "string",
}
"""The columns of :attr:`Traffic.frame`, one row per request, in order of sending.

time: when the request was sent (UTC); status: the HTTP status, 0 when no response came; latency_ms: until the
whole page arrived (or the failure); details/reviews/ratings: True shown, False its error notice shown, <NA>
not shown (ratings with reviews v1, or a page that is not the product page); a failed page (no response or
not 200) has details and reviews False, since the reader saw neither; error: why it failed, "" if it did not.
"""

AVAILABILITY_COLUMNS: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    "requests": "int64",
    "ok": "int64",
    "page": "float64",
    "details": "float64",
    "reviews": "float64",
    "ratings": "float64",
}
"""The columns of :meth:`Traffic.availability`, one row per time bucket.

time: the bucket's start; requests: sent in the bucket; ok: how many got 200; page: ok / requests;
details/reviews/ratings: the share of requests (0..1) whose page showed that section working. Ratings counts
only requests where ratings could show (it is NaN throughout when no response ever showed ratings, as with
reviews v1). Buckets without requests have NaN shares.
"""

SERVED_COLUMNS: dict[str, str] = {
    "time": "datetime64[ns, UTC]",
    "version": "string",
    "pod": "string",
}
"""The columns of :attr:`Traffic.served`, one row per request whose page showed the reviews: which reviews version
served it (:func:`labkit.page.reviews_served_by`: v1 no stars, v2 black stars, v3 red stars) and the pod named on
the page ("" when the page does not name it)."""

VERSION_COLUMNS: dict[str, str] = {
    "version": "string",
    "requests": "int64",
    "share": "float64",
    "pods": "int64",
}
"""The columns of :meth:`Traffic.by_version`: per reviews version, the requests it served, their share (0..1)
of the requests that showed the reviews, and how many distinct pods served them."""

Moment = pd.Timestamp | datetime | str | None
"""A point in time for a window: a Timestamp (e.g. a ChaosAction's ``time``), a datetime or an ISO string."""

Verdict = Literal["healthy", "gradual degradation", "cascading failure"]

MAX_RATE = 200.0
"""Requests per second above which :class:`Traffic` refuses: this is a probe, not a load test."""

_SECTIONS = _page.SECTIONS


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


class Traffic:
    """Requests the product page at a steady rate in the background and records what each response showed.

    Args:
        lab: the connection.
        rate: requests per second (open loop: a slow page does not slow the sending down, like real users).
        url: the page to request; by default ``lab.productpage_url`` (host) or
            ``http://productpage:9080/productpage`` (tester).
        via: "host" requests from this machine with ``requests``, a new connection each time; "tester" runs
            ``curl`` in the tester pod through ``kubectl exec`` (for a real cluster whose page the host cannot
            reach; each request then costs an exec, so keep the rate modest).
        timeout: seconds a request may take before it counts as failed (status 0).
        user: sign in as this user first (:func:`labkit.page.login`) and send every request with the session
            cookie, so productpage adds ``end-user: USER`` to its calls (Istio's rules for ``jason``).

    Raises:
        ValueError: a rate that is not positive or above :data:`MAX_RATE`, or a timeout that is not positive.
        LabkitError: an unknown ``via``, or "host" with no URL known for this Lab.

    Example:
        >>> with Traffic(lab, rate=10) as traffic:
        ...     time.sleep(5)
        >>> traffic.summary()["details"]
        1.0
    """

    def __init__(self, lab: Client, *, rate: float = 5.0, url: str | None = None, via: _page.Via = "host",
                 timeout: float = 5.0, user: str | None = None) -> None:
        if not (isinstance(rate, int | float) and 0 < rate <= MAX_RATE):
            raise ValueError(f"rate must be between 0 and {MAX_RATE:g} requests per second, not {rate!r}")
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if via not in ("host", "tester"):
            raise LabkitError(f"via must be 'host' or 'tester', not {via!r}")
        self.lab = lab
        self.rate = float(rate)
        self.via: _page.Via = via
        self.timeout = float(timeout)
        self.url = _page.host_url(lab, url) if via == "host" else _page.tester_url(url)
        self.user = user or ""
        self._cookie = ""
        self._rows: list[tuple[int, int, float, bool | None, bool | None, bool | None, str]] = []
        self._served: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._scheduler: threading.Thread | None = None
        self._local = threading.local()
        self._labs: list[Client] = []
        self._tester: str = ""
        self.started_at: pd.Timestamp | None = None
        self.stopped_at: pd.Timestamp | None = None

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.is_alive()

    def start(self) -> Traffic:
        """Start sending in the background; returns self. Starting again after :meth:`stop` adds to the frame.

        Raises:
            LabkitError: it is already running.
            NoPodsMatch: ``via="tester"`` and no tester pod runs.
        """
        if self.running:
            raise LabkitError("this Traffic is already running; stop() it first (or use a new Traffic)")
        if self.via == "tester":
            self._tester = self.lab.tester_pod()
        if self.user and not self._cookie:
            self._cookie = _page.login(self.lab, self.user, via=self.via, url=None if self.via == "tester" and
                                       self.url == _page.tester_url() else self.url, timeout=self.timeout)
        self._stop.clear()
        self._queue = queue.Queue()
        # Enough workers that every request of a full timeout window can be in flight at once, so a hanging
        # page does not slow the sending down; execs are heavier, hence the lower cap for the tester.
        workers = max(2, min(64 if self.via == "host" else 16, math.ceil(self.rate * self.timeout) + 2))
        self._threads = [threading.Thread(target=self._work, name=f"labkit-traffic-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()
        self._scheduler = threading.Thread(target=self._schedule, name="labkit-traffic", daemon=True)
        self.started_at = pd.Timestamp.now(tz="UTC")
        self.stopped_at = None
        self._scheduler.start()
        return self

    def stop(self) -> Traffic:
        """Stop sending, wait for requests in flight (at most ``timeout``), join the threads; returns self."""
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.join()
        # Requests scheduled but not yet sent are dropped; one sentinel per worker ends it.
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(self.timeout + 15)
        self._threads = []
        for lab in self._labs:
            lab.close()
        self._labs = []
        if self.started_at is not None and self.stopped_at is None:
            self.stopped_at = pd.Timestamp.now(tz="UTC")
            self._report()
        return self

    def _report(self) -> None:
        """Tell the instructor's room, if there is one, this run's verdict and which sections dipped
        (:mod:`labkit.report`: in the background, never failing the run)."""
        if not self.requests or not report.room_url():
            return
        try:
            s = self.summary()
            dipped = ",".join(name for name in ("details", "reviews", "ratings") if (s[name] or 1.0) < 1.0)
            report.outcome("traffic", dipped, verdict=str(s["verdict"] or ""), availability=s["page"])
        except Exception:
            pass

    def run(self, seconds: float, *, progress: bool = True) -> Traffic:
        """Send for ``seconds``, blocking (with a progress line), then stop; returns self.

        Example:
            >>> Traffic(lab, rate=10).run(5).summary()
        """
        bar = Progress(progress, min_interval=0.5)
        self.start()
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._stop.wait(min(left, 0.25))
                bar.update(self._progress_text())
        finally:
            self.stop()
            bar.close(self._progress_text())
        return self

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _progress_text(self) -> str:
        with self._lock:
            rows = list(self._rows)
        ok = sum(1 for r in rows if r[1] == 200)
        failing = {s: sum(1 for r in rows if r[3 + i] is False) for i, s in enumerate(_SECTIONS)}
        broken = ", ".join(f"{s} failing in {n}" for s, n in failing.items() if n) or "no section failing"
        return f"traffic: {len(rows)} requests, {ok} answered 200, {broken}"

    # -- the threads
    def _schedule(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self._queue.put(time.time_ns())
            next_at += interval
            # After a pause (a suspended laptop, a blocked interpreter) start afresh instead of sending the
            # missed requests in one burst, which would look like a load spike to the services.
            if time.monotonic() - next_at > 1.0:
                next_at = time.monotonic()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            sent = time.time_ns()
            started = time.perf_counter()
            try:
                status, body, error = self._request()
            except Exception as exc:  # a worker must never die: the failure is a data point
                status, body, error = 0, "", f"{type(exc).__name__}: {exc}"[:300]
            latency = (time.perf_counter() - started) * 1000
            if status == 200:
                sections = _page.parse_sections(body)
                if sections["details"] is None and sections["reviews"] is None:
                    error = "not the product page (no details or reviews section on it)"
            else:
                sections = _page.failed_sections()
            row = (sent, status, latency, sections["details"], sections["reviews"], sections["ratings"], error)
            served = _page.reviews_served_by(body) if sections["reviews"] else None
            with self._lock:
                self._rows.append(row)
                if served is not None:
                    self._served.append((sent, *served))

    def _request(self) -> tuple[int, str, str]:
        if self.via == "host":
            return _page._fetch_host(self.url, self.timeout, self._cookie)
        return _page._fetch_tester(self._exec_lab(), self._tester, self.url, self.timeout, self._cookie)

    def _exec_lab(self) -> Client:
        # exec serialises execs on one client (kubernetes.stream swaps its request method), so each worker
        # gets its own Client; without a kubeconfig to build one from, the Lab's is shared.
        lab: Client | None = getattr(self._local, "lab", None)
        if lab is not None:
            return lab
        lab = self.lab.fresh()
        self._local.lab = lab
        if lab is not self.lab:
            with self._lock:
                self._labs.append(lab)
        return lab

    # -- results
    @property
    def requests(self) -> int:
        """How many requests have completed so far."""
        with self._lock:
            return len(self._rows)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per completed request (:data:`TRAFFIC_COLUMNS`), ordered by sending time."""
        with self._lock:
            rows = list(self._rows)
        if not rows:
            return empty_frame(TRAFFIC_COLUMNS)
        data = pd.DataFrame(rows, columns=list(TRAFFIC_COLUMNS))
        data["time"] = pd.to_datetime(data["time"], unit="ns", utc=True)
        data = data.astype(TRAFFIC_COLUMNS)
        return data.sort_values("time", kind="stable", ignore_index=True)

    @property
    def served(self) -> pd.DataFrame:
        """Which reviews version and pod served each request that showed the reviews (:data:`SERVED_COLUMNS`)."""
        with self._lock:
            rows = list(self._served)
        if not rows:
            return empty_frame(SERVED_COLUMNS)
        data = pd.DataFrame(rows, columns=list(SERVED_COLUMNS))
        data["time"] = pd.to_datetime(data["time"], unit="ns", utc=True)
        return data.astype(SERVED_COLUMNS).sort_values("time", kind="stable", ignore_index=True)

    def by_version(self, since: Moment = None, until: Moment = None) -> pd.DataFrame:
        """The traffic per reviews version: requests, share of the page loads that showed reviews, pods.

        How the lesson sees a new version take its share: one v2 pod beside three v1 pods behind the reviews
        Service serves about a quarter of the page loads.

        Returns:
            A DataFrame with :data:`VERSION_COLUMNS`, one row per version seen, sorted by version.

        Example:
            >>> lab.traffic(rate=10).run(10).by_version()
              version  requests  share  pods
            0      v1        74   0.74     3
            1      v2        26   0.26     1
        """
        data = self.served
        if since is not None:
            data = data[data["time"] >= _utc(since)]
        if until is not None:
            data = data[data["time"] < _utc(until)]
        return by_version(data)

    def shares(self, since: Moment = None, until: Moment = None) -> str:
        """The split by reviews version in words: ``"v1 48 % (48), v3 52 % (52) of 100 page loads"``."""
        table = self.by_version(since, until)
        if table.empty:
            return "no page load showed the reviews"
        parts = [f"{v} {s:.0%} ({n})" for v, s, n in zip(table["version"], table["share"], table["requests"],
                                                         strict=True)]
        return f"{', '.join(parts)} of {int(table['requests'].sum())} page loads"

    def within_noise(self, weights: Mapping[str, float], *, sigmas: float = 2.0) -> SplitCheck:
        """Whether the measured split by version is what ``weights`` (percent) give, within binomial noise
        (:func:`split_within_noise`)."""
        return split_within_noise(self.by_version(), weights, sigmas=sigmas)

    def version_split(self, freq: str = "1s") -> pd.DataFrame:
        """Per time bin, the share of page loads each reviews version served (:func:`version_split`)."""
        return version_split(self.served, freq)

    def latency(self, since: Moment = None, until: Moment = None) -> dict[str, float | None]:
        """Latency percentiles of the answered requests, in ms: ``{"p50": ..., "p90": ..., "p99": ..., "max": ...}``
        (:func:`latency_percentiles`)."""
        return latency_percentiles(self.window(since, until))

    def window(self, since: Moment = None, until: Moment = None) -> pd.DataFrame:
        """The requests sent in ``[since, until)`` (timestamps, e.g. a :class:`ChaosAction`'s ``time``)."""
        data = self.frame
        if since is not None:
            data = data[data["time"] >= _utc(since)]
        if until is not None:
            data = data[data["time"] < _utc(until)]
        return data.reset_index(drop=True)

    def availability(self, freq: str = "1s") -> pd.DataFrame:
        """Per time bucket: requests, ok (status 200), and page/details/reviews/ratings availability 0..1.

        Args:
            freq: the bucket width, a pandas frequency ("1s", "500ms", "5s").

        Returns:
            A DataFrame with :data:`AVAILABILITY_COLUMNS`, empty buckets included (NaN shares).

        Example:
            >>> traffic.availability("1s")[["time", "details", "reviews"]]
        """
        return availability(self.frame, freq)

    def summary(self, since: Moment = None, until: Moment = None) -> dict[str, Any]:
        """The numbers of the run: counts, achieved rate, availability per section, latency, the verdict.

        Latency percentiles are over requests that got an HTTP response. ``ratings`` is None when no response
        showed ratings (reviews v1).

        Example:
            >>> traffic.summary()
            {'requests': 50, 'achieved_rate': 10.0, 'ok': 50, 'details': 0.6, ...,
             'verdict': 'gradual degradation'}
        """
        return summarize(self.window(since, until), rate=self.rate, url=self.url, via=self.via)

    def verdict(self, since: Moment = None, until: Moment = None) -> Verdict:
        """"healthy", "gradual degradation" (the page answered 200 throughout while some section failed) or
        "cascading failure" (the page itself failed, or every section on it failed at once).

        Args:
            since: only requests sent at or after this time.
            until: only requests sent before this time.

        Raises:
            LabkitError: no request was recorded in that window.
        """
        return verdict(self.window(since, until))

    def explain(self, since: Moment = None, until: Moment = None) -> str:
        """The verdict as a sentence with the counts behind it."""
        return explain(self.window(since, until))

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        who = f" as {self.user}" if self.user else ""
        return f"<Traffic {state} {self.rate:g}/s via {self.via} {self.url}{who} requests={self.requests}>"

    def _repr_html_(self) -> str:
        s = self.summary()
        def pct(v: float | None) -> str:
            return "—" if v is None else f"{v * 100:.1f} %"
        def ms(v: float | None) -> str:
            return "—" if v is None else f"{v:.0f} ms"
        cells = [("requests", str(s["requests"])), ("achieved rate", f"{s['achieved_rate'] or 0:.1f}/s"),
                 ("HTTP 200", f"{s['ok']}"), ("page", pct(s["page"])), ("details", pct(s["details"])),
                 ("reviews", pct(s["reviews"])), ("ratings", pct(s["ratings"])),
                 ("latency p50 / p95", f"{ms(s['latency_p50_ms'])} / {ms(s['latency_p95_ms'])}")]
        th = "<th style='text-align:left;padding-right:1em'>"
        rows = "".join(f"<tr>{th}{k}</th><td>{html.escape(v)}</td></tr>" for k, v in cells)
        color = {"healthy": "#2e7d32", "gradual degradation": "#ef6c00"}.get(s["verdict"] or "", "#c62828")
        who = f" as {html.escape(self.user)}" if self.user else ""
        return (f"<div><b>Traffic</b> {html.escape(self.url)}{who} via {self.via} at {self.rate:g}/s "
                f"({'running' if self.running else 'stopped'})<br><b style='color:{color}'>"
                f"{html.escape(s['explanation'])}</b><table>{rows}</table></div>")


def _utc(value: pd.Timestamp | datetime | str) -> pd.Timestamp:
    return utc(value)


def _page_failed(frame: pd.DataFrame) -> pd.Series:
    """Requests whose page failed: not 200, a 200 that was not the product page, or every section failing."""
    not_page = frame["details"].isna() & frame["reviews"].isna()
    blackout = frame["details"].eq(False).fillna(False) & frame["reviews"].eq(False).fillna(False)
    return frame["status"].ne(200) | not_page | blackout


def _section_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Per request: 1.0/0.0 for details and reviews; ratings 1.0/0.0, or NaN where ratings could not show."""
    out = pd.DataFrame(index=frame.index)
    for s in ("details", "reviews"):
        out[s] = frame[s].fillna(False).astype("float64")
    ratings = frame["ratings"]
    if ratings.notna().any():
        # A request counts for ratings when ratings showed (stars or its error), or when the reader got no
        # reviews at all; a working reviews v1 answer without stars is no evidence either way.
        expected = ratings.notna() | frame["reviews"].ne(True).fillna(True)
        out["ratings"] = ratings.fillna(False).astype("float64").where(expected)
    else:
        out["ratings"] = float("nan")
    out["page"] = frame["status"].eq(200).astype("float64")
    return out


def by_version(served: pd.DataFrame) -> pd.DataFrame:
    """Requests per reviews version from a :attr:`Traffic.served` frame (:data:`VERSION_COLUMNS`)."""
    total = len(served)
    rows = []
    for version, group in served.groupby(served["version"].fillna("").astype(str), sort=True):
        pods = group["pod"].fillna("").astype(str)
        rows.append({"version": version or "unknown", "requests": len(group),
                     "share": round(len(group) / total, 4) if total else 0.0,
                     "pods": int(pods[pods != ""].nunique())})
    return pd.DataFrame(rows, columns=list(VERSION_COLUMNS)).astype(VERSION_COLUMNS)


@dataclass(frozen=True)
class SplitCheck:
    """A measured split against a rule's weights: per version, the count, the expected count and the allowed
    deviation (``sigmas`` binomial standard deviations, ``sqrt(n p (1 - p))``); ``ok`` when every version is in.

    Attributes:
        requests: the page loads that showed the reviews.
        rows: ``(version, count, expected, allowed)`` per version of the weights (and any other version seen).
        sigmas: how many standard deviations are allowed.
    """

    requests: int
    rows: tuple[tuple[str, int, float, float], ...]
    sigmas: float

    @property
    def ok(self) -> bool:
        return self.requests > 0 and all(abs(n - e) <= a for _, n, e, a in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if not self.requests:
            return "no page load showed the reviews: nothing to compare"
        parts = [f"{v} {n} (expected {e:.0f} ± {a:.0f})" for v, n, e, a in self.rows]
        verdict = (f"within {self.sigmas:g} standard deviations of the weights" if self.ok else
                   f"OUTSIDE {self.sigmas:g} standard deviations: the rule is not what was measured")
        return f"{'✓' if self.ok else '✗'} {self.requests} page loads: {', '.join(parts)}: {verdict}"

    __repr__ = __str__


def split_within_noise(table: pd.DataFrame, weights: Mapping[str, float], *, sigmas: float = 2.0) -> SplitCheck:
    """Compare a :func:`by_version` table with a rule's weights (percent, e.g. ``{"v1": 50, "v3": 50}``): each
    version's count must lie within ``sigmas`` binomial standard deviations of ``n * weight``.

    Raises:
        ValueError: weights that are negative or do not add up to 100.
    """
    total_weight = sum(float(w) for w in weights.values())
    if any(float(w) < 0 for w in weights.values()) or abs(total_weight - 100) > 1e-6:
        raise ValueError(f"weights are percentages adding up to 100, like {{'v1': 50, 'v3': 50}}; got {dict(weights)}")
    counts = {str(v): int(n) for v, n in zip(table["version"], table["requests"], strict=True)}
    n = sum(counts.values())
    rows = []
    for version in sorted(set(weights) | set(counts)):
        p = float(weights.get(version, 0)) / 100
        allowed = sigmas * math.sqrt(n * p * (1 - p))
        rows.append((version, counts.get(version, 0), n * p, allowed))
    return SplitCheck(n, tuple(rows), sigmas)


SPLIT_COLUMNS: dict[str, str] = {"time": "datetime64[ns, UTC]", "requests": "int64"}
"""The first columns of :func:`version_split`; one float column per reviews version seen follows (v1, v2, v3)."""


def version_split(served: pd.DataFrame, freq: str = "1s") -> pd.DataFrame:
    """Per time bin of ``freq``: the page loads that showed reviews, and the share (0..1) each version served.

    Args:
        served: a :attr:`Traffic.served` frame (:data:`SERVED_COLUMNS`).
        freq: the bin width, a pandas frequency ("1s", "500ms").

    Returns:
        Columns ``time``, ``requests``, then one per version (``v1``, ``v2``, ``v3``) in order; bins without
        requests have NaN shares.
    """
    if served.empty:
        return empty_frame(SPLIT_COLUMNS)
    data = served.assign(version=served["version"].fillna("").astype(str).replace("", "unknown"))
    # bins start at the first request, so the first one is as full as the others
    counts = data.groupby([pd.Grouper(key="time", freq=freq, origin="start"), "version"]).size().unstack(
        fill_value=0)
    counts = counts.asfreq(freq, fill_value=0) if len(counts) > 1 else counts
    total = counts.sum(axis=1)
    shares = counts.div(total.where(total > 0), axis=0)
    shares = shares[sorted(shares.columns)]
    out = shares.reset_index()
    out.insert(1, "requests", total.to_numpy().astype("int64"))
    out.columns.name = None
    return out


def latency_percentiles(frame: pd.DataFrame,
                        quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float | None]:
    """Latency percentiles (ms) of the requests of a traffic frame that got an HTTP answer: ``{"p50": 2013.0, ...,
    "max": ...}``; None when none answered."""
    answered = pd.Series(frame.loc[frame["status"] > 0, "latency_ms"] if len(frame) else [], dtype="float64")
    out: dict[str, float | None] = {f"p{q * 100:g}": (round(float(answered.quantile(q)), 1) if len(answered)
                                                      else None) for q in quantiles}
    out["max"] = round(float(answered.max()), 1) if len(answered) else None
    return out


def availability(frame: pd.DataFrame, freq: str = "1s") -> pd.DataFrame:
    """Per-bucket availability of a frame with :data:`TRAFFIC_COLUMNS`; see :meth:`Traffic.availability`."""
    if frame.empty:
        return empty_frame(AVAILABILITY_COLUMNS)
    shares = _section_shares(frame)
    shares["time"] = frame["time"]
    shares["requests"] = 1
    shares["ok"] = frame["status"].eq(200).astype("int64")
    grouped = shares.groupby(pd.Grouper(key="time", freq=freq))
    out = grouped[["requests", "ok"]].sum()
    out[["page", "details", "reviews", "ratings"]] = grouped[["page", "details", "reviews", "ratings"]].mean()
    out = out.reset_index()[list(AVAILABILITY_COLUMNS)]
    return out.astype(AVAILABILITY_COLUMNS)


def verdict(frame: pd.DataFrame) -> Verdict:
    """The verdict on a traffic frame; see :meth:`Traffic.verdict`."""
    if frame.empty:
        raise LabkitError("no requests were recorded in this window: start the traffic (Traffic(lab).start() "
                          "or .run(5)) and let it send for a few seconds before asking for a verdict")
    if _page_failed(frame).any():
        return "cascading failure"
    if any(frame[s].eq(False).fillna(False).any() for s in _SECTIONS):
        return "gradual degradation"
    return "healthy"


def explain(frame: pd.DataFrame) -> str:
    """The verdict and the counts behind it, in one sentence."""
    if frame.empty:
        return "no requests recorded yet"
    n = len(frame)
    ok = int(frame["status"].eq(200).sum())
    failed = {s: int(frame[s].eq(False).fillna(False).sum()) for s in _SECTIONS}
    what = verdict(frame)
    counts = ", ".join(f"{s} failed in {k}" for s, k in failed.items() if k) or "no section failed"
    head = f"{n} requests: {ok} answered 200; {counts}"
    if what == "healthy":
        return f"{head} → healthy."
    if what == "gradual degradation":
        worked = [s for s in _SECTIONS if not failed[s] and frame[s].eq(True).fillna(False).any()]
        also = f" and {', '.join(worked)} kept working" if worked else ""
        return f"{head} → gradual degradation: the page kept answering 200{also}."
    bad = int(_page_failed(frame).sum())
    return (f"{head} → cascading failure: {bad} of {n} requests got no working page "
            "(an error status, no answer, or every section failing).")


def summarize(frame: pd.DataFrame, *, rate: float | None = None, url: str = "",
              via: str = "") -> dict[str, Any]:
    """The summary numbers of a traffic frame; see :meth:`Traffic.summary`."""
    n = len(frame)
    out: dict[str, Any] = {"url": url, "via": via, "rate": rate, "requests": n, "duration_s": 0.0,
                           "achieved_rate": None, "ok": 0, "errors": 0, "page": None, "details": None,
                           "reviews": None, "ratings": None, "latency_p50_ms": None, "latency_p95_ms": None,
                           "latency_max_ms": None, "statuses": {}, "verdict": None,
                           "explanation": explain(frame)}
    if n == 0:
        return out
    span = (frame["time"].iloc[-1] - frame["time"].iloc[0]).total_seconds()
    shares = _section_shares(frame)
    answered = frame.loc[frame["status"] > 0, "latency_ms"]
    out.update({
        "duration_s": round(span, 3),
        # n requests span n-1 intervals between the first and the last sending time.
        "achieved_rate": round((n - 1) / span, 3) if n > 1 and span > 0 else None,
        "ok": int(frame["status"].eq(200).sum()),
        "errors": int(frame["status"].ne(200).sum()),
        "page": float(shares["page"].mean()),
        "details": float(shares["details"].mean()),
        "reviews": float(shares["reviews"].mean()),
        "ratings": None if shares["ratings"].isna().all() else float(shares["ratings"].mean()),
        "latency_p50_ms": float(answered.quantile(0.5)) if len(answered) else None,
        "latency_p95_ms": float(answered.quantile(0.95)) if len(answered) else None,
        "latency_max_ms": float(answered.max()) if len(answered) else None,
        "statuses": {int(k): int(v) for k, v in sorted(Counter(frame["status"].tolist()).items())},
        "verdict": verdict(frame),
    })
    return out
