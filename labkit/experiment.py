"""Chaos experiments: a steady-state hypothesis, a method that breaks something, and a verdict with a journal.

The lesson says "the application did not crash": an :class:`Experiment` writes that down as a
:class:`Hypothesis` (the page answers 200, reviews keep working) and checks it **before** the method (if it does
not hold, nothing is broken and the run is ``"aborted"``), **during** the method and the recovery that follows
(sampled several times a second, while a :class:`~labkit.traffic.Traffic` and a
:class:`~labkit.observe.Recorder` run), and **after** every pod is Ready again. The outcome is a
:class:`Journal`: ``"completed"`` when the hypothesis held throughout, ``"deviated"`` when it did not, with the
probe results, the chaos actions, the pods' timeline and the traffic's numbers; ``journal.save(path)`` writes it
as JSON shaped like a Chaos Toolkit journal.

A probe failing is a finding, not an error: nothing raises unless ``run(raise_on_deviation=True)`` asks for
:class:`~labkit.errors.HypothesisFailed`.

Example:
    >>> from labkit import chaos, experiment as ex
    >>> hypothesis = ex.Hypothesis("the page survives losing details",
    ...                            [ex.http_ok(), ex.section_healthy("reviews")])
    >>> exp = ex.Experiment(lab, "kill details everywhere", hypothesis,
    ...                     [ex.Step("pkill ruby in every details pod",
    ...                              lambda: chaos.kill(lab, "app=details", mode="all"))])
    >>> journal = exp.run()
    >>> journal.status, journal.verdict
    ('completed', 'The hypothesis held before, during and after ...')
    >>> journal.save("journal.json")
"""

from __future__ import annotations

import html
import inspect
import json
import os
import platform
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from . import observe, report
from .bookinfo import SECTIONS
from .client import Client
from .errors import HypothesisFailed, LabkitError
from .page import ProductPage, fetch_page, host_url
from .progress import Progress
from .records import ChaosAction, json_safe
from .traffic import Traffic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DuringCheck",
    "Experiment",
    "Hypothesis",
    "Journal",
    "Probe",
    "ProbeResult",
    "SteadyState",
    "Step",
    "custom",
    "http_ok",
    "pods_ready",
    "section_healthy",
]

Phase = Literal["before", "during", "after"]
Status = Literal["completed", "deviated", "aborted"]
Via = Literal["host", "tester"]
_OK, _BAD = "#2e7d32", "#c62828"


def _now() -> pd.Timestamp:
    return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")


# ------------------------------------------------------------------------------------------------ probes


@dataclass
class ProbeResult:
    """One check of one probe.

    Attributes:
        name: the probe's name.
        ok: whether it met what was expected.
        value: what it saw (a status code, "ok" / "error notice shown", "2/3 Ready", ...).
        expected: what it expected.
        time: when it was checked (UTC).
        error: why it could not look ("" when it could), e.g. a connection refused.
        duration: seconds the check took.
    """

    name: str
    ok: bool
    value: Any
    expected: Any
    time: pd.Timestamp
    error: str = ""
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {"name": self.name, "ok": self.ok, "value": _clean(self.value), "expected": _clean(self.expected),
                "time": self.time.isoformat(), "error": self.error, "duration": round(self.duration, 4)}

    def __str__(self) -> str:
        mark = "✓" if self.ok else "✗"
        err = f" ({self.error})" if self.error else ""
        return f"{mark} {self.name}: {self.value} (expected {self.expected}){err}"


class _Round:
    """One evaluation of a hypothesis: the product page is fetched at most once however many probes read it."""

    def __init__(self, lab: Client) -> None:
        self.lab = lab
        self._pages: dict[tuple[str, str | None, float], ProductPage] = {}

    def page(self, via: Via, url: str | None, timeout: float) -> ProductPage:
        key = (via, url, timeout)
        if key not in self._pages:
            self._pages[key] = fetch_page(self.lab, via=via, url=url, timeout=timeout)
        return self._pages[key]


Check = Callable[[_Round], tuple[bool, Any, str]]


class Probe:
    """A named check of the steady state; build one with :func:`http_ok`, :func:`section_healthy`,
    :func:`pods_ready` or :func:`custom`.

    Calling it with a lab checks it once: ``http_ok()(lab)`` returns a :class:`ProbeResult`.

    Attributes:
        name: what it claims, e.g. "reviews healthy".
        expected: what it expects to see.
        during: whether the claim must also hold during the method (False: only before and after).
        tolerance: the share of the samples taken during the method that must pass (None: the hypothesis's).
    """

    def __init__(self, name: str, check: Check, expected: Any, *, during: bool = True,
                 tolerance: float | None = None, section: str | None = None, host_page: bool = False) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a probe needs a name that says what it claims, like 'reviews healthy'; got {name!r}")
        _check_tolerance(tolerance, allow_none=True)
        self.name = name
        self.expected = expected
        self.during = during
        self.tolerance = tolerance
        self.section = section  # the page section it is about, if any (the verdict names the others)
        self.host_page = host_page  # it requests the product page from this machine (needs lab.productpage_url)
        self._check = check

    def run(self, ctx: _Round) -> ProbeResult:
        """Check once, in an evaluation round; a failure to look is a failed result, never an exception."""
        started = time.perf_counter()
        when = _now()
        try:
            ok, value, error = self._check(ctx)
        except Exception as exc:  # a probe that cannot look has failed; the experiment goes on
            ok, value, error = False, None, f"{type(exc).__name__}: {exc}"
        return ProbeResult(self.name, bool(ok), value, self.expected, when, error, time.perf_counter() - started)

    def __call__(self, lab: Client) -> ProbeResult:
        return self.run(_Round(lab))

    def to_dict(self) -> dict[str, Any]:
        """The probe as a Chaos Toolkit activity: type, name, tolerance (the expected value), plus labkit's keys."""
        return {"type": "probe", "name": self.name, "tolerance": _clean(self.expected), "during": self.during,
                "during_tolerance": self.tolerance, "section": self.section}

    def __repr__(self) -> str:
        return f"<Probe {self.name!r} expects {self.expected!r}{'' if self.during else ' (not during)'}>"


def _check_tolerance(value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"tolerance is the share of samples during the method that must pass, from 0 (excluded) "
                         f"to 1 (all of them), e.g. 0.95; got {value!r}")


def http_ok(url: str | None = None, *, expect: int | Iterable[int] = 200, via: Via = "host", timeout: float = 5.0,
            during: bool = True, tolerance: float | None = None, name: str | None = None) -> Probe:
    """A probe: ``url`` (default: the product page) answers with the status ``expect``.

    Args:
        url: what to request; by default the product page (``lab.productpage_url`` from the host, or
            ``http://productpage:9080/productpage`` from the tester pod).
        expect: the status, or several accepted ones.
        via: "host" (this machine, ``requests``) or "tester" (``curl`` in the tester pod, like the lesson).
        timeout: seconds before the request counts as failed (status 0).
        during: whether it must hold during the method too.
        tolerance: share of the samples during the method that must pass (default: the hypothesis's).
        name: replaces "page answers 200".

    Example:
        >>> experiment.http_ok()(lab)
        ProbeResult(name='page answers 200', ok=True, value=200, ...)
    """
    accepted = (expect,) if isinstance(expect, int) else tuple(expect)
    if not accepted or not all(isinstance(c, int) and 100 <= c <= 599 for c in accepted):
        raise ValueError(f"expect must be an HTTP status like 200, or several; got {expect!r}")
    if via not in ("host", "tester"):
        raise ValueError(f"via must be 'host' or 'tester', not {via!r}")
    shown = accepted[0] if len(accepted) == 1 else list(accepted)
    label = name or f"{'page' if url is None else url} answers {' or '.join(map(str, accepted))}"

    def check(ctx: _Round) -> tuple[bool, Any, str]:
        if url is None:
            page = ctx.page(via, None, timeout)
            status, error = page.status, page.error
        elif via == "host":
            status, error = _host_status(url, timeout)
        else:
            status = ctx.lab.status_code(url, timeout=timeout)
            error = "" if status else "no response"
        return status in accepted, status, ("" if status in accepted else error)

    return Probe(label, check, shown, during=during, tolerance=tolerance, host_page=url is None and via == "host")


def _host_status(url: str, timeout: float) -> tuple[int, str]:
    import requests

    try:
        resp = requests.get(url, timeout=timeout, headers={"Connection": "close"})
    except requests.RequestException as exc:
        return 0, f"{type(exc).__name__}: {exc}"[:300]
    return resp.status_code, "" if resp.status_code < 400 else f"HTTP {resp.status_code}"


def section_healthy(section: str, *, via: Via = "host", timeout: float = 5.0, during: bool = True,
                    tolerance: float | None = None) -> Probe:
    """A probe: the product page shows ``section`` ("details", "reviews" or "ratings") working.

    A section fails when the page shows its error notice ("Sorry, product details are currently unavailable"),
    when the page itself fails, or when the section is not on the page at all (ratings with reviews v1).

    Example:
        >>> experiment.section_healthy("details")(lab).value
        'ok'
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; the product page has {', '.join(SECTIONS)}")
    if via not in ("host", "tester"):
        raise ValueError(f"via must be 'host' or 'tester', not {via!r}")

    def check(ctx: _Round) -> tuple[bool, Any, str]:
        page = ctx.page(via, None, timeout)
        if page.status != 200:
            return False, f"page failed ({page.error or f'HTTP {page.status}'})", page.error
        state = page.sections.get(section)
        if state is True:
            return True, "ok", ""
        if state is False:
            return False, "error notice shown", ""
        return False, "not shown on the page", page.error
    return Probe(f"{section} healthy", check, "ok", during=during, tolerance=tolerance, section=section,
                 host_page=via == "host")


def pods_ready(selector: str, *, min_ready: int | None = None, during: bool = True,
               tolerance: float | None = None) -> Probe:
    """A probe: the pods matching ``selector`` are Ready (all of them, or at least ``min_ready``).

    Example:
        >>> experiment.pods_ready("app=details", min_ready=2)(lab).value
        '3/3 Ready'
    """
    if min_ready is not None and (isinstance(min_ready, bool) or not isinstance(min_ready, int) or min_ready < 1):
        raise ValueError(f"min_ready must be a whole number of pods, 1 or more (or None for all); got {min_ready!r}")
    expected = f"at least {min_ready} Ready" if min_ready is not None else "all Ready"

    def check(ctx: _Round) -> tuple[bool, Any, str]:
        pods = ctx.lab.pods(selector)
        if pods.empty:
            return False, "no pods", str(ctx.lab.no_match(selector))
        ready = int(((pods["status"] == "Running") & (pods["ready_containers"] == pods["containers"])).sum())
        need = min_ready if min_ready is not None else len(pods)
        return ready >= need, f"{ready}/{len(pods)} Ready", ""

    name = f"{selector} pods {'Ready' if min_ready is None else f'Ready (at least {min_ready})'}"
    return Probe(name, check, expected, during=during, tolerance=tolerance)


def custom(name: str, fn: Callable[..., Any], *, expected: Any = None, during: bool = True,
           tolerance: float | None = None) -> Probe:
    """A probe from your own function: ``fn(lab)`` (or ``fn()``) returns a value.

    The probe passes when the value equals ``expected``, or, with ``expected=None``, when it is truthy. A
    :class:`ProbeResult` returned by ``fn`` is used as it is.

    Example:
        >>> ratings = experiment.custom("ratings answers",
        ...                             lambda lab: lab.status_code("http://ratings:9080/ratings/7"),
        ...                             expected=200)
    """
    if not callable(fn):
        raise ValueError(f"custom probe {name!r} needs a function, got {type(fn).__name__}")
    try:
        takes_lab = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                        for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        takes_lab = True

    def check(ctx: _Round) -> tuple[bool, Any, str]:
        value = fn(ctx.lab) if takes_lab else fn()
        if isinstance(value, ProbeResult):
            return value.ok, value.value, value.error
        ok = bool(value) if expected is None else value == expected
        return ok, value, ""

    return Probe(name, check, "truthy" if expected is None else expected, during=during, tolerance=tolerance)


# ------------------------------------------------------------------------------------------------ hypothesis


@dataclass
class SteadyState:
    """The hypothesis checked once (before or after the method)."""

    phase: Phase
    met: bool
    results: list[ProbeResult]
    time: pd.Timestamp
    attempts: int = 1

    @property
    def failing(self) -> list[ProbeResult]:
        return [r for r in self.results if not r.ok]

    def __str__(self) -> str:
        head = f"steady state {'met' if self.met else 'NOT met'} ({self.phase})"
        return "\n".join([head, *(f"  {r}" for r in self.results)])

    def _repr_html_(self) -> str:
        color = _OK if self.met else _BAD
        rows = "".join(f"<tr><td style='color:{_OK if r.ok else _BAD}'>{'✓' if r.ok else '✗'}</td>"
                       f"<td>{html.escape(r.name)}</td><td>{html.escape(str(r.value))}</td>"
                       f"<td style='color:#777'>expected {html.escape(str(r.expected))}"
                       f"{(' · ' + html.escape(r.error)) if r.error else ''}</td></tr>" for r in self.results)
        return (f"<div><b style='color:{color}'>Steady state {'met' if self.met else 'NOT met'}</b> "
                f"<small>({self.phase}, {self.time:%H:%M:%S} UTC)</small><table>{rows}</table></div>")

    def to_dict(self) -> dict[str, Any]:
        """Chaos Toolkit's shape: ``steady_state_met`` and one entry per probe with ``tolerance_met``."""
        return {
            "steady_state_met": self.met,
            "phase": self.phase,
            "time": self.time.isoformat(),
            "attempts": self.attempts,
            "probes": [{
                "activity": {"type": "probe", "name": r.name, "tolerance": _clean(r.expected)},
                "output": _clean(r.value),
                "status": "succeeded" if not r.error else "failed",
                "start": r.time.isoformat(),
                "end": (r.time + pd.Timedelta(seconds=r.duration)).isoformat(),
                "duration": round(r.duration, 4),
                "tolerance_met": r.ok,
                "error": r.error,
            } for r in self.results],
        }


@dataclass
class DuringCheck:
    """How one probe fared in the samples taken during the method and the recovery.

    Attributes:
        name: the probe.
        samples: how many times it was checked.
        passed: how many of those met the expectation.
        required: the share that had to pass (the tolerance).
        first_failure: the first failed result, if any.
        values: how often each value was seen.
    """

    name: str
    samples: int
    passed: int
    required: float
    first_failure: ProbeResult | None = None
    values: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.passed / self.samples if self.samples else float("nan")

    @property
    def met(self) -> bool:
        # no sample at all proves nothing either way: it cannot have deviated
        return not self.samples or self.passed / self.samples >= self.required - 1e-9

    def describe(self) -> str:
        if not self.samples:
            return f"{self.name}: not sampled"
        return (f"{self.name}: held in {self.passed}/{self.samples} samples ({self.share:.0%}; "
                f"{self.required:.0%} needed)")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "samples": self.samples, "passed": self.passed,
                "share": None if not self.samples else round(self.share, 4), "required": self.required,
                "tolerance_met": self.met, "values": dict(self.values),
                "first_failure": self.first_failure.to_dict() if self.first_failure else None}


class Hypothesis:
    """What should stay true while the method breaks something: a title and probes.

    Args:
        title: the claim in words, e.g. "the page survives losing details".
        probes: the checks (:func:`http_ok`, :func:`section_healthy`, :func:`pods_ready`, :func:`custom`).
        tolerance: during the method, the share of samples of each probe that must pass (1 = every one;
            0.95 allows a blip). Before and after, every probe must pass. A probe's own ``tolerance`` wins.

    Example:
        >>> Hypothesis("gradual degradation, not a cascade",
        ...            [http_ok(), section_healthy("reviews"), pods_ready("app=details", during=False)])
    """

    def __init__(self, title: str, probes: Sequence[Probe], *, tolerance: float = 1.0) -> None:
        probes = list(probes)
        if not probes:
            raise ValueError("a hypothesis needs at least one probe, e.g. [experiment.http_ok()]")
        bad = [p for p in probes if not isinstance(p, Probe)]
        if bad:
            raise ValueError(f"probes must be built with http_ok(), section_healthy(), pods_ready() or custom(); "
                             f"got {bad[0]!r}")
        names = [p.name for p in probes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two probes are named {twice[0]!r}; give one a name (name=... or custom(name, ...))")
        _check_tolerance(tolerance)
        self.title = title
        self.probes = probes
        self.tolerance = float(tolerance)

    def required(self, probe: Probe) -> float:
        return probe.tolerance if probe.tolerance is not None else self.tolerance

    def check(self, lab: Client, phase: Phase = "before") -> SteadyState:
        """Check every probe once (one page fetch shared by the probes that read the page)."""
        ctx = _Round(lab)
        when = _now()
        results = [p.run(ctx) for p in self.probes]
        return SteadyState(phase, all(r.ok for r in results), results, when)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "tolerance": self.tolerance, "probes": [p.to_dict() for p in self.probes]}

    def __repr__(self) -> str:
        return f"<Hypothesis {self.title!r}: {', '.join(p.name for p in self.probes)}>"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<li><b>{html.escape(p.name)}</b>: expects {html.escape(str(p.expected))}; "
            + (f"during the method in at least {self.required(p):.0%} of samples" if p.during
               else "before and after only") + "</li>" for p in self.probes)
        return f"<div><b>Hypothesis:</b> {html.escape(self.title)}<ul>{rows}</ul></div>"


class _Sampler:
    """Checks the probes that must hold during the method, several times a second, in a background thread."""

    def __init__(self, lab: Client, probes: list[Probe], every: float) -> None:
        self.lab = lab
        self.probes = probes
        self.every = every
        self.rounds: list[tuple[pd.Timestamp, list[ProbeResult]]] = []
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="labkit-experiment-sampler", daemon=True)

    def start(self) -> _Sampler:
        if self.probes:
            self._thread.start()
        return self

    def poke(self) -> None:
        """Sample now (right after a chaos step, when a short outage is most likely to be seen)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            ctx = _Round(self.lab)
            when = _now()
            results = [p.run(ctx) for p in self.probes]
            with self._lock:
                self.rounds.append((when, results))
            self._wake.wait(self.every)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def summary(self, hypothesis: Hypothesis) -> list[DuringCheck]:
        with self._lock:
            rounds = list(self.rounds)
        out = []
        for probe in self.probes:
            results = [r for _, rs in rounds for r in rs if r.name == probe.name]
            values: dict[str, int] = {}
            for r in results:
                key = str(r.value)
                values[key] = values.get(key, 0) + 1
            out.append(DuringCheck(probe.name, len(results), sum(r.ok for r in results), hypothesis.required(probe),
                                   next((r for r in results if not r.ok), None), values))
        return out


# ------------------------------------------------------------------------------------------------ method


@dataclass
class Step:
    """One step of the method: a name and a function (usually a chaos action).

    Attributes:
        name: what it does, in words ("pkill ruby in every details pod").
        fn: called with no arguments; a :class:`~labkit.chaos.ChaosAction` (or a list of them) it returns goes
            into the journal.
        pause_before: seconds to wait before it.
        pause_after: seconds to wait after it (e.g. to let traffic see the outage).
    """

    name: str
    fn: Callable[[], Any]
    pause_before: float = 0.0
    pause_after: float = 0.0

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ValueError(f"step {self.name!r} needs a function to call, got {type(self.fn).__name__}")
        for what in ("pause_before", "pause_after"):
            value = getattr(self, what)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{what} of step {self.name!r} must be 0 or more seconds, not {value!r}")


def _as_step(item: Step | Callable[[], Any], index: int) -> Step:
    if isinstance(item, Step):
        return item
    if not callable(item):
        raise ValueError(f"method step {index + 1} must be a function or a Step, not {type(item).__name__}")
    name = getattr(item, "__name__", "")
    return Step(name if name and name != "<lambda>" else f"step {index + 1}", item)


def _actions_in(output: object) -> list[ChaosAction]:
    if isinstance(output, ChaosAction):
        return [output]
    if isinstance(output, (list, tuple)):
        return [a for a in output if isinstance(a, ChaosAction)]
    return []


# ------------------------------------------------------------------------------------------------ journal


_clean = json_safe


@dataclass
class Journal:
    """What an experiment did and found. The last expression of a cell shows the verdict.

    Attributes:
        title, description: the experiment's.
        status: "completed" (the hypothesis held before, during and after), "deviated" (it did not, during or
            after) or "aborted" (it did not hold before, so nothing was done; or a step of the method failed).
        deviated: True when the hypothesis did not hold during or after the method.
        verdict: the outcome in sentences.
        hypothesis: the hypothesis (as a dict).
        before, after: the steady state checked before and after (None if not reached).
        during: per probe, how it fared in the samples during the method (empty when not sampled).
        run: one record per method step (Chaos Toolkit's ``run``): name, output, start, end, status, exception.
        actions: the chaos actions of the method.
        start, end: UTC.
        notes: what else happened (a recovery that timed out, traffic that could not start...).
        timeline: the pods' timeline (:data:`labkit.observe.TIMELINE_COLUMNS`) over the run.
        traffic: the traffic frame (:data:`labkit.traffic.TRAFFIC_COLUMNS`) over the run.
        traffic_summary: ``Traffic.summary()`` of the window from the method's start to the recovery.
        recovery: ``Recorder.recovery()``: seconds from each kill to Ready again.
    """

    title: str
    description: str
    status: Status
    deviated: bool
    verdict: str
    hypothesis: dict[str, Any]
    before: SteadyState | None
    after: SteadyState | None
    during: list[DuringCheck]
    during_rounds: list[tuple[pd.Timestamp, list[ProbeResult]]]
    run: list[dict[str, Any]]
    actions: list[ChaosAction]
    start: pd.Timestamp
    end: pd.Timestamp
    method: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timeline: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    traffic: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    traffic_summary: dict[str, Any] | None = None
    recovery: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """The journal as JSON-ready data, shaped like Chaos Toolkit's where it fits (``experiment``,
        ``status``, ``deviated``, ``steady_states`` with ``before``/``after``/``during``, ``run``,
        ``rollbacks``); labkit's extras (actions, timeline, traffic, recovery) are under ``labkit``."""
        from . import __version__

        timeline = self.timeline
        restarts: dict[str, int] = {}
        statuses: list[str] = []
        if len(timeline):
            restarts = {str(k): int(v) for k, v in timeline.groupby("pod")["restarts"].max().items()}
            statuses = sorted({str(s) for s in timeline["status"]})
        out = _clean({
            "labkit-version": __version__,
            "platform": platform.platform(),
            "node": platform.node(),
            "experiment": {
                "title": self.title,
                "description": self.description,
                "steady-state-hypothesis": self.hypothesis,
                "method": self.method,
                "rollbacks": [],
            },
            "start": self.start,
            "end": self.end,
            "duration": round(self.duration, 3),
            "status": self.status,
            "deviated": self.deviated,
            "verdict": self.verdict,
            "steady_states": {
                "before": self.before.to_dict() if self.before else None,
                "after": self.after.to_dict() if self.after else None,
                "during": [SteadyState("during", all(r.ok for r in rs), rs, t).to_dict()
                           for t, rs in self.during_rounds],
            },
            "run": self.run,
            "rollbacks": [],
            "labkit": {
                "cluster": self.cluster,
                "notes": self.notes,
                "during": [d.to_dict() for d in self.during],
                "actions": [a.to_dict() for a in self.actions],
                "timeline": {"restarts": restarts, "statuses_seen": statuses,
                             "rows": timeline.to_dict(orient="records") if len(timeline) else []},
                "recovery": self.recovery.to_dict(orient="records") if len(self.recovery) else [],
                "traffic": self.traffic_summary,
            },
        })
        assert isinstance(out, dict)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the journal as JSON, atomically: a reader sees the old file or the whole new one, never half.

        The JSON is built first (a failure leaves the disk untouched), written to a temporary file beside
        ``path``, flushed to disk, then renamed over ``path`` (``os.replace``).

        Returns:
            The path written.

        Example:
            >>> journal.save("journals/kill-details.json")
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would make the journal private to this user
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return target

    # -- figures of the run
    def plot_timeline(self) -> Figure:
        """The pods' status over the run with the chaos actions (:func:`labkit.plots.status_timeline`)."""
        from . import plots

        return plots.status_timeline(self.timeline, self.actions, title=f"Pod status · {self.title}")

    def plot_availability(self, freq: str = "1s") -> Figure:
        """The page's availability over the run (:func:`labkit.plots.availability`)."""
        from . import plots

        return plots.availability(self.traffic, freq, actions=self.actions,
                                  title=f"Availability · {self.title}")

    def plot_recovery(self) -> Figure:
        """Seconds from each kill to Ready again (:func:`labkit.plots.recovery`)."""
        from . import plots

        return plots.recovery(self.recovery, title=f"Recovery · {self.title}")

    # -- display
    def __repr__(self) -> str:
        return f"<Journal {self.title!r}: {self.status} in {self.duration:.1f} s — {self.verdict}>"

    def _repr_html_(self) -> str:
        color = {"completed": "#2e7d32", "deviated": "#c62828"}.get(self.status, "#6d4c41")
        esc = html.escape

        def cell(result: ProbeResult | None) -> str:
            if result is None:
                return "<td style='color:#999'>—</td>"
            mark, c = ("✓", "#2e7d32") if result.ok else ("✗", "#c62828")
            err = f"<br><small>{esc(result.error)}</small>" if result.error and not result.ok else ""
            return f"<td style='color:{c}'>{mark} {esc(str(result.value))}{err}</td>"

        def during_cell(name: str) -> str:
            check = next((d for d in self.during if d.name == name), None)
            if check is None:
                return "<td style='color:#999'>not checked</td>"
            if not check.samples:
                return "<td style='color:#999'>not sampled</td>"
            mark, c = ("✓", "#2e7d32") if check.met else ("✗", "#c62828")
            return (f"<td style='color:{c}'>{mark} {check.share:.0%} of {check.samples} "
                    f"<small>(needs {check.required:.0%})</small></td>")

        before = {r.name: r for r in (self.before.results if self.before else [])}
        after = {r.name: r for r in (self.after.results if self.after else [])}
        names = [p["name"] for p in self.hypothesis.get("probes", [])]
        rows = "".join(f"<tr><td><b>{esc(n)}</b></td>{cell(before.get(n))}{during_cell(n)}{cell(after.get(n))}</tr>"
                       for n in names)
        probes = (f"<table><tr><th style='text-align:left'>probe</th><th style='text-align:left'>before</th>"
                  f"<th style='text-align:left'>during</th><th style='text-align:left'>after</th></tr>{rows}</table>")
        steps = "".join(f"<li>{esc(r['name'])}: <span style='color:{_OK if r['status'] == 'succeeded' else _BAD}'>"
                        f"{esc(r['status'])}</span> {esc(r.get('summary') or '')}</li>" for r in self.run)
        notes = "".join(f"<li>{esc(n)}</li>" for n in self.notes)
        traffic = ""
        if self.traffic_summary and self.traffic_summary.get("requests"):
            explanation = esc(str(self.traffic_summary.get("explanation")))
            traffic = f"<div><b>Traffic during the method:</b> {explanation}</div>"
        return (f"<div class='labkit-journal'><div style='font-size:110%'><b>{esc(self.title)}</b> · "
                f"<b style='color:{color}'>{esc(self.status.upper())}</b> "
                f"<small>({self.duration:.1f} s, {self.start:%H:%M:%S} UTC)</small></div>"
                f"<div style='color:{color};margin:4px 0'>{esc(self.verdict)}</div>"
                f"<div><i>Hypothesis:</i> {esc(str(self.hypothesis.get('title', '')))}</div>{probes}"
                f"<div><i>Method:</i><ol>{steps or '<li>nothing run</li>'}</ol></div>{traffic}"
                f"{f'<div><i>Notes:</i><ul>{notes}</ul></div>' if notes else ''}</div>")


# ------------------------------------------------------------------------------------------------ experiment


class Experiment:
    """A hypothesis, a method that breaks something, and the checks around it.

    Args:
        lab: the connection.
        title: what the experiment is about.
        hypothesis: the :class:`Hypothesis`.
        method: the steps, in order: :class:`Step` objects or plain functions (named by their ``__name__``).
        description: a longer why, for the journal and its readers.
        pause_between: seconds between steps (on top of each step's own pauses).
        sample_every: seconds between samples of the hypothesis during the method.
        traffic_rate: requests per second of the background traffic during the method (0: none).
        recovery_timeout: seconds to wait for every pod to be Ready again after the method.
        settle: seconds the hypothesis gets after recovery to hold again (the check is repeated until it does);
            0 checks once.
        tail: seconds the traffic and the recorder keep running after the last check, so the figures show the
            recovery levelling off.
        progress: show a progress line.

    Example:
        >>> exp = Experiment(lab, "lose details", hypothesis,
        ...                  [Step("kill details", lambda: chaos.kill(lab, "app=details", mode="all"))])
        >>> journal = exp.run()
        >>> journal
    """

    def __init__(self, lab: Client, title: str, hypothesis: Hypothesis, method: Sequence[Step | Callable[[], Any]],
                 *, description: str = "", pause_between: float = 0.0, sample_every: float = 0.1,
                 traffic_rate: float = 5.0, recovery_timeout: float = 120.0, settle: float = 10.0,
                 tail: float = 1.0, progress: bool = True) -> None:
        if not isinstance(hypothesis, Hypothesis):
            raise ValueError(f"hypothesis must be a Hypothesis(title, probes), not {type(hypothesis).__name__}")
        steps = [_as_step(item, i) for i, item in enumerate(method)]
        if not steps:
            raise ValueError("the method needs at least one step, e.g. [lambda: chaos.kill(lab, 'app=details')]")
        for what, value in (("pause_between", pause_between), ("traffic_rate", traffic_rate),
                            ("settle", settle), ("tail", tail)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{what} must be 0 or more, not {value!r}")
        for what, value in (("sample_every", sample_every), ("recovery_timeout", recovery_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
        self.lab = lab
        self.title = title
        self.hypothesis = hypothesis
        self.method = steps
        self.description = description
        self.pause_between = float(pause_between)
        self.sample_every = float(sample_every)
        self.traffic_rate = float(traffic_rate)
        self.recovery_timeout = float(recovery_timeout)
        self.settle = float(settle)
        self.tail = float(tail)
        self.progress = progress

    def __repr__(self) -> str:
        return (f"<Experiment {self.title!r}: hypothesis {self.hypothesis.title!r}, "
                f"{len(self.method)} step{'s' if len(self.method) != 1 else ''}>")

    def run(self, during: bool = True, *, raise_on_deviation: bool = False,
            journal_path: str | os.PathLike[str] | None = None) -> Journal:
        """Check the hypothesis before, run the method (sampling the hypothesis during it and the recovery),
        wait for every pod to be Ready, check the hypothesis after; return the :class:`Journal`.

        Args:
            during: also check the hypothesis while the method runs, with background traffic and a pod recorder.
            raise_on_deviation: raise :class:`~labkit.errors.HypothesisFailed` (carrying ``.journal``) unless the
                status is "completed".
            journal_path: also save the journal there (atomically), before raising if asked to.

        Returns:
            The journal; nothing raises for a probe that fails.
        """
        if any(p.host_page for p in self.hypothesis.probes):
            # Without the page's URL every probe fails before anything is broken: say so instead of a journal
            # that reports an "aborted" experiment as if it had run.
            try:
                host_url(self.lab)
            except LabkitError as exc:
                raise LabkitError(f"experiment {self.title!r} cannot run: its probes request the product page from "
                                  f"this machine, but {exc}. In the lesson, set PRODUCTPAGE_URL in the parameters "
                                  "cell (labkit.connect(productpage_url=...)).") from exc
        bar = Progress(self.progress)
        start = _now()
        notes: list[str] = []
        recorder: observe.Recorder | None = None
        traffic: Traffic | None = None
        sampler: _Sampler | None = None
        before = after = None
        run: list[dict[str, Any]] = []
        actions: list[ChaosAction] = []
        aborted_reason = ""
        method_start = method_end = recovered_at = None
        bar.update(f"experiment {self.title!r}: checking the steady state before the method", force=True)
        try:
            try:
                recorder = observe.Recorder(self.lab).start()
            except LabkitError as exc:
                notes.append(f"the pods could not be recorded ({exc}); the journal has no timeline")
            if during and self.traffic_rate > 0:
                traffic = self._start_traffic(notes)
            before = self.hypothesis.check(self.lab, "before")
            if not before.met:
                aborted_reason = ("the steady state did not hold before the method ("
                                  + "; ".join(str(r) for r in before.failing) + "), so nothing was broken")
            else:
                during_probes = [p for p in self.hypothesis.probes if p.during] if during else []
                sampler = _Sampler(self.lab, during_probes, self.sample_every).start()
                method_start = _now()
                for index, step in enumerate(self.method):
                    bar.update(f"experiment {self.title!r}: step {index + 1}/{len(self.method)}: {step.name}",
                               force=True)
                    record = self._run_step(step, index)
                    run.append(record)
                    actions.extend(record.pop("_actions"))
                    sampler.poke()
                    if record["status"] != "succeeded":
                        aborted_reason = f"step {step.name!r} failed: {record['exception'][-1].strip()}"
                        break
                    if self.pause_between and index + 1 < len(self.method):
                        time.sleep(self.pause_between)
                method_end = _now()
                bar.update(f"experiment {self.title!r}: waiting for the pods to recover", force=True)
                self._await_effects(recorder, actions, notes)
                try:
                    observe.wait_ready(self.lab, timeout=self.recovery_timeout, progress=False)
                except LabkitError as exc:
                    notes.append(f"the pods did not all recover: {exc}")
                recovered_at = _now()
                sampler.stop()
                bar.update(f"experiment {self.title!r}: checking the steady state after recovery", force=True)
                after = self._check_after()
                if during and self.tail:
                    time.sleep(self.tail)
        finally:
            if sampler is not None:
                sampler.stop()
            if traffic is not None:
                traffic.stop()
            if recorder is not None:
                recorder.stop()
        end = _now()

        during_checks = sampler.summary(self.hypothesis) if sampler is not None and during else []
        during_rounds = list(sampler.rounds) if sampler is not None and during else []
        deviated = bool(before is not None and before.met and not aborted_reason
                        and (any(not d.met for d in during_checks) or (after is not None and not after.met)))
        status: Status = "aborted" if aborted_reason else ("deviated" if deviated else "completed")
        traffic_frame = traffic.frame if traffic is not None else pd.DataFrame()
        traffic_summary = None
        if traffic is not None and method_start is not None:
            traffic_summary = traffic.summary(since=method_start, until=recovered_at)
        journal = Journal(
            title=self.title, description=self.description, status=status, deviated=deviated, verdict="",
            hypothesis=self.hypothesis.to_dict(), before=before, after=after, during=during_checks,
            during_rounds=during_rounds, run=run, actions=actions, start=start, end=end,
            method=[{"type": "action", "name": s.name, "pauses": {"before": s.pause_before, "after": s.pause_after}}
                    for s in self.method],
            notes=notes,
            timeline=recorder.timeline if recorder is not None else pd.DataFrame(),
            traffic=traffic_frame, traffic_summary=traffic_summary,
            recovery=recorder.recovery() if recorder is not None else pd.DataFrame(),
            cluster=self.lab.describe())
        journal.verdict = self._verdict(journal, aborted_reason, method_start, method_end)
        bar.close(f"experiment {self.title!r}: {status}")
        _report(journal)
        if journal_path is not None:
            journal.save(journal_path)
        if raise_on_deviation and status != "completed":
            raise HypothesisFailed(f"experiment {self.title!r} {status}: {journal.verdict}", journal=journal)
        return journal

    # -- pieces of run()
    def _start_traffic(self, notes: list[str]) -> Traffic | None:
        try:
            return Traffic(self.lab, rate=self.traffic_rate).start()
        except (LabkitError, ValueError) as exc:
            notes.append(f"no background traffic ({exc})")
            return None

    def _run_step(self, step: Step, index: int) -> dict[str, Any]:
        if step.pause_before:
            time.sleep(step.pause_before)
        started = _now()
        t0 = time.perf_counter()
        record: dict[str, Any] = {"activity": {"type": "action", "name": step.name}, "name": step.name}
        try:
            output = step.fn()
        except Exception as exc:  # recorded in the journal; the run stops and recovery is still awaited
            record.update(status="failed", output=None, summary=f"{type(exc).__name__}: {exc}",
                          exception=traceback.format_exception_only(type(exc), exc), _actions=[])
        else:
            found = _actions_in(output)
            summary = "; ".join(a.summary() for a in found) if found else ""
            record.update(status="succeeded", output=[a.to_dict() for a in found] if found else _clean(output),
                          summary=summary, _actions=found)
        record.update(start=started, end=_now(), duration=round(time.perf_counter() - t0, 4))
        if step.pause_after:
            time.sleep(step.pause_after)
        return record

    def _await_effects(self, recorder: observe.Recorder | None, actions: list[ChaosAction],
                       notes: list[str]) -> None:
        """Wait until each pod a chaos action hit was seen going down, so that the wait for Ready that follows
        cannot return on the pods' state from before the kill took effect."""
        if recorder is None:
            return
        timeout = min(self.recovery_timeout, 15.0)
        for action in actions:
            for hit in action.landed:
                try:
                    recorder.wait_down(hit, timeout)
                except LabkitError:
                    notes.append(f"pod {hit.pod} was not seen going down within {timeout:g} s of the "
                                 f"{action.action}; the action may have had no visible effect")

    def _check_after(self) -> SteadyState:
        deadline = time.monotonic() + self.settle
        attempts = 0
        while True:
            attempts += 1
            after = self.hypothesis.check(self.lab, "after")
            after.attempts = attempts
            if after.met or time.monotonic() >= deadline:
                return after
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _verdict(self, journal: Journal, aborted_reason: str, method_start: pd.Timestamp | None,
                 method_end: pd.Timestamp | None) -> str:
        title = self.hypothesis.title
        if aborted_reason:
            return f"Aborted: {aborted_reason}."
        parts: list[str] = []
        failed_during = [d for d in journal.during if not d.met]
        failed_after = journal.after.failing if journal.after else []
        if not failed_during and not failed_after:
            when = "before, during and after" if journal.during else "before and after"
            parts.append(f"The hypothesis “{title}” held {when} the method.")
            if journal.during:
                parts.append("During: " + "; ".join(d.describe() for d in journal.during) + ".")
        else:
            parts.append(f"Deviated: the hypothesis “{title}” did not hold.")
            for d in failed_during:
                first = d.first_failure
                seen = f", first failure: {first.value}" if first is not None else ""
                offset = ""
                if first is not None and method_start is not None:
                    offset = f" at +{(first.time - method_start).total_seconds():.1f} s"
                parts.append(f"During: {d.describe()}{seen}{offset}.")
            for r in failed_after:
                attempts = journal.after.attempts if journal.after else 1
                parts.append(f"After recovery ({attempts} check{'s' if attempts != 1 else ''} over "
                             f"{self.settle:g} s): {r}.")
        summary = journal.traffic_summary
        if summary and summary.get("requests"):
            claimed = {p.get("section") for p in journal.hypothesis["probes"]}
            tolerated = [f"{s} worked in {summary[s]:.0%} of requests" for s in ("details", "reviews", "ratings")
                         if summary.get(s) is not None and summary[s] < 1 and s not in claimed]
            if tolerated:
                parts.append("Not claimed by the hypothesis, so tolerated: " + ", ".join(tolerated) + ".")
            parts.append(f"Traffic: {summary.get('explanation')}")
        return " ".join(parts)


def _report(journal: Journal) -> None:
    """Tell the instructor's room, if there is one, the experiment's status and its slowest recovery
    (:mod:`labkit.report`: in the background, never failing the run)."""
    if not report.room_url():
        return
    try:
        seconds = [float(s) for s in journal.recovery.get("recovery_s", pd.Series(dtype=float)).dropna()]
        page = (journal.traffic_summary or {}).get("page")
        report.outcome("experiment", journal.title, verdict=journal.status,
                       recovery_s=max(seconds) if seconds else None, availability=page)
    except Exception:
        pass
