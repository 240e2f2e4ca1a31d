"""The instructor's room: a small web page of attendees × checked steps, fed by the attendees' kits.

    labkit room --port 8765 --code JOIN42      # prints what attendees set: LABKIT_ROOM=http://HOST:8765/JOIN42

Each attendee's kit posts every check result (:mod:`labkit.checks`) to ``LABKIT_ROOM`` (``POST
/JOIN42/results``) and what its lessons measured (:class:`labkit.report.Outcome`, ``POST /JOIN42/outcomes``):
lesson 5's recovery times and traffic verdicts, lesson 6's experiment status. A wrong join code gets 403.

``GET /`` is the page (it reloads itself every few seconds, no script needed): a summary of the room (median
recovery, verdict counts, who is stuck where and for how long), then one row per attendee: first their stuck steps
(and for how long), recovery times, verdicts and experiment, then one column per step, green when passed, red with
the attempts when not, and "stuck" when an attendee's last result for a step is a failure and the step has been
failing for ``stuck_after`` seconds. ``GET /state.json`` is the same as data. The room keeps its state in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from aiohttp import web

from . import checks, report
from .report import Outcome

_KINDS: dict[str, report.Kind] = {kind: kind for kind in get_args(report.Kind)}
RECOVERY_LESSON, VERDICT_LESSON, EXPERIMENT_LESSON = "05", "05", "06"
"""The lessons whose figures the page shows: lesson 5's recoveries and traffic verdicts, lesson 6's experiment."""

__all__ = ["Room", "RunningRoom", "add_commands", "duration", "join", "serve"]


@dataclass
class Cell:
    ok: bool
    attempts: int
    solved: bool
    first_seen: float
    last_seen: float


@dataclass
class Room:
    """The room's state: per attendee, per (lesson, step), the latest result."""

    code: str
    stuck_after: float = 120.0
    attendees: dict[str, dict[tuple[str, str], Cell]] = field(default_factory=dict)
    outcomes: dict[str, dict[tuple[str, str, str], Outcome]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_outcome(self, doc: dict[str, Any]) -> Outcome:
        """Keep an attendee's measured outcome (the latest per lesson, kind and target); a bad one raises
        ValueError naming the field."""
        kind = _KINDS.get(str(doc.get("kind")))
        if kind is None:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {doc.get('kind')!r}")
        numbers: dict[str, float | None] = {}
        for name in ("recovery_s", "availability"):
            value = doc.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{name} must be a number or null, not {value!r}")
            numbers[name] = None if value is None else float(value)
        texts = {name: doc.get(name) or "" for name in ("lesson", "target", "verdict", "time", "learner")}
        bad = [name for name, value in texts.items() if not isinstance(value, str)]
        if bad:
            raise ValueError(f"{bad[0]} must be a string")
        got = Outcome(texts["lesson"], kind, texts["target"], texts["verdict"], numbers["recovery_s"],
                      numbers["availability"], texts["time"], texts["learner"] or "anonymous")
        with self._lock:
            self.attendees.setdefault(got.learner, {})
            self.outcomes.setdefault(got.learner, {})[(got.lesson, got.kind, got.target)] = got
        return got

    def _figures(self, learner: str) -> dict[str, Any]:
        """One attendee's figures: lesson 5's recovery per target and verdict per run, lesson 6's experiment."""
        mine = list(self.outcomes.get(learner, {}).values())
        recovery = {o.target: o.recovery_s for o in mine
                    if o.kind == "recovery" and o.lesson == RECOVERY_LESSON and o.recovery_s is not None}
        verdicts = {o.target or "none": o.verdict for o in mine
                    if o.kind == "traffic" and o.lesson == VERDICT_LESSON and o.verdict}
        experiment = next(({"title": o.target, "verdict": o.verdict, "recovery_s": o.recovery_s,
                            "availability": o.availability}
                           for o in sorted(mine, key=lambda o: o.time, reverse=True)
                           if o.kind == "experiment" and o.lesson == EXPERIMENT_LESSON), None)
        return {"recovery": dict(sorted(recovery.items())), "verdicts": dict(sorted(verdicts.items())),
                "experiment": experiment}

    def add(self, doc: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        learner = str(doc.get("learner") or "anonymous")
        key = (str(doc["lesson"]), str(doc["step"]))
        with self._lock:
            cells = self.attendees.setdefault(learner, {})
            old = cells.get(key)
            if old is not None and int(doc.get("attempt") or 1) < old.attempts:
                return  # an older result arriving late
            cells[key] = Cell(bool(doc["ok"]), max(int(doc.get("attempt") or 1), old.attempts if old else 0),
                              bool(doc.get("solved")), old.first_seen if old else now, now)

    def steps(self) -> list[tuple[str, str]]:
        """Every exercise, lesson by lesson in the order the lesson asks them, then steps only attendees know."""
        known = list(checks.EXERCISES)
        order = {key: i for i, key in enumerate(known)}
        seen = {k for cells in self.attendees.values() for k in cells}
        return sorted(set(known) | seen, key=lambda k: (k[0], order.get(k, len(order)), k[1]))

    def state(self, now: float | None = None) -> dict[str, Any]:
        """The room as data: per attendee their steps, the steps they are stuck at (longest first, with the
        seconds), their figures; and the room's summary."""
        now = time.time() if now is None else now
        with self._lock:
            rows = {}
            for learner, cells in sorted(self.attendees.items()):
                row = {f"{lesson}/{step}": {"ok": c.ok, "attempts": c.attempts, "solved": c.solved,
                                            "stuck_s": 0 if c.ok else round(now - c.first_seen)}
                       for (lesson, step), c in cells.items()}
                stuck = sorted((k for k, v in row.items() if not v["ok"] and v["stuck_s"] >= self.stuck_after),
                               key=lambda k: (-row[k]["stuck_s"], k))
                rows[learner] = {"steps": row, "stuck": stuck, "stuck_for": {k: row[k]["stuck_s"] for k in stuck},
                                 **self._figures(learner)}
            return {"code": self.code, "steps": [f"{a}/{b}" for a, b in self.steps()], "attendees": rows,
                    "summary": _summary(rows)}

    def page(self) -> str:
        st = self.state()
        head = "".join(f"<th>{html.escape(s)}</th>" for s in st["steps"])
        body = []
        for learner, row in st["attendees"].items():
            tds = _figure_cells(row)  # first: what the instructor looks for, before the steps scroll away
            for s in st["steps"]:
                c = row["steps"].get(s)
                if c is None:
                    tds.append("<td class='none'>·</td>")
                elif c["ok"]:
                    tds.append(f"<td class='pass' data-step='{html.escape(s)}'>✓"
                               f"{' (solution)' if c['solved'] else ''}</td>")
                else:
                    stuck = s in row["stuck"]
                    late = f" stuck {c['stuck_s']} s" if stuck else ""
                    tds.append(f"<td class='{'stuck' if stuck else 'fail'}' data-step='{html.escape(s)}'>✗ "
                               f"{c['attempts']}×{late}</td>")
            name = html.escape(learner)
            body.append(f"<tr data-learner='{name}'><th>{name}</th>{''.join(tds)}</tr>")
        passed = sum(1 for r in st["attendees"].values() for c in r["steps"].values() if c["ok"])
        figures = "".join(f"<th class='figure'>{title}</th>" for title in FIGURE_COLUMNS.values())
        return ("<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='3'>"
                "<title>labkit room</title><style>body{font-family:sans-serif}td,th{padding:.2em .6em;"
                "border:1px solid #ddd}.pass{background:#c8e6c9}.fail{background:#ffcdd2}"
                ".stuck{background:#e53935;color:white}.none{color:#aaa}th.figure{background:#e3f2fd}"
                "td.bad{color:#c62828;font-weight:bold}#summary li{margin:.2em 0}</style></head><body>"
                f"<h1>labkit room {html.escape(self.code)}</h1><p>{len(st['attendees'])} attendees, "
                f"{passed} steps passed</p>{_summary_html(st['summary'])}"
                f"<table id='grid'><tr><th>attendee</th>{figures}{head}</tr>{''.join(body)}"
                "</table></body></html>")

    def app(self) -> web.Application:
        async def results(request: web.Request) -> web.Response:
            if request.match_info["code"] != self.code:
                return web.json_response({"error": "wrong join code"}, status=403)
            try:
                doc = await request.json()
                self.add(doc)
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": f"not a check result: {exc}"}, status=400)
            return web.Response(status=204)

        async def outcomes(request: web.Request) -> web.Response:
            if request.match_info["code"] != self.code:
                return web.json_response({"error": "wrong join code"}, status=403)
            try:
                doc = await request.json()
                if not isinstance(doc, dict):
                    raise ValueError("an outcome is a JSON object")
                self.add_outcome(doc)
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": f"not an outcome: {exc}"}, status=400)
            return web.Response(status=204)

        async def page(_request: web.Request) -> web.Response:
            return web.Response(text=self.page(), content_type="text/html")

        async def state(_request: web.Request) -> web.Response:
            return web.json_response(self.state())

        app = web.Application()
        app.add_routes([web.post("/{code}/results", results), web.post("/{code}/outcomes", outcomes),
                        web.get("/", page), web.get("/state.json", state)])
        return app


FIGURE_COLUMNS = {"stuck": "stuck at", "recovery": "05 recovery", "verdicts": "05 verdicts",
                  "experiment": "06 experiment"}
"""The columns after the steps: where the attendee is stuck and for how long, then their figures."""


def duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``: how long, as an instructor reads it."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def _summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The room at a glance: the median recovery per target, the verdicts and experiments counted, who is stuck."""
    per_target: dict[str, list[float]] = {}
    verdicts: dict[str, int] = {}
    experiments: dict[str, int] = {}
    for row in rows.values():
        for target, seconds in row["recovery"].items():
            per_target.setdefault(target, []).append(float(seconds))
        for verdict in row["verdicts"].values():
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if row["experiment"] is not None:
            experiments[row["experiment"]["verdict"]] = experiments.get(row["experiment"]["verdict"], 0) + 1
    stuck = sorted(((learner, step, row["stuck_for"][step]) for learner, row in rows.items()
                    for step in row["stuck"][:1]), key=lambda t: (-t[2], t[0]))
    return {
        "median_recovery_s": {t: round(statistics.median(v), 3) for t, v in sorted(per_target.items())},
        "recoveries": {t: len(v) for t, v in sorted(per_target.items())},
        "verdicts": dict(sorted(verdicts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "experiments": dict(sorted(experiments.items(), key=lambda kv: (-kv[1], kv[0]))),
        "stuck": [{"learner": learner, "step": step, "for_s": secs} for learner, step, secs in stuck],
    }


def _summary_html(summary: dict[str, Any]) -> str:
    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{html.escape(k)} {v}" for k, v in values.items()) or "none yet"

    recovery = ", ".join(f"{html.escape(t)} {s:.1f} s ({summary['recoveries'][t]})"
                         for t, s in summary["median_recovery_s"].items()) or "none yet"
    stuck = ", ".join(f"{html.escape(s['learner'])} at {html.escape(s['step'])} for {duration(s['for_s'])}"
                      for s in summary["stuck"]) or "nobody"
    return (f"<ul id='summary'><li data-figure='recovery'><b>Median recovery</b> (lesson 5, attendees): {recovery}"
            f"</li><li data-figure='verdicts'><b>Verdicts</b> (lesson 5): {counts(summary['verdicts'])}</li>"
            f"<li data-figure='experiments'><b>Experiments</b> (lesson 6): {counts(summary['experiments'])}</li>"
            f"<li data-figure='stuck'><b>Stuck</b> ({len(summary['stuck'])}): {stuck}</li></ul>")


def _figure_cells(row: dict[str, Any]) -> list[str]:
    stuck = "<br>".join(f"{html.escape(step)} for {duration(row['stuck_for'][step])}" for step in row["stuck"])
    recovery = "<br>".join(f"{html.escape(t)} {s:.1f} s" for t, s in row["recovery"].items())
    verdicts = "<br>".join(f"{html.escape(t)}: {html.escape(v)}" for t, v in row["verdicts"].items())
    bad = " class='bad'"
    verdict_class = bad if "cascading failure" in row["verdicts"].values() else ""
    exp = row["experiment"]
    experiment_class = bad if exp is not None and exp["verdict"] != "completed" else ""
    experiment = ""
    if exp is not None:
        experiment = html.escape(exp["verdict"]) + (f", recovered in {exp['recovery_s']:.1f} s"
                                                    if exp["recovery_s"] is not None else "")
    empty = "<td data-figure='{}' class='none'>·</td>".format
    return [f"<td data-figure='stuck' class='stuck'>{stuck}</td>" if stuck else empty("stuck"),
            f"<td data-figure='recovery'>{recovery}</td>" if recovery else empty("recovery"),
            f"<td data-figure='verdicts'{verdict_class}>{verdicts}</td>" if verdicts else empty("verdicts"),
            f"<td data-figure='experiment'{experiment_class}>{experiment}</td>" if experiment else empty("experiment")]


@dataclass
class RunningRoom:
    """A room served in a background thread (for tests and notebooks); :meth:`stop` ends it."""

    room: Room
    url: str
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    _runner: web.AppRunner

    @property
    def join_url(self) -> str:
        """What attendees set as ``LABKIT_ROOM``."""
        return f"{self.url}/{self.room.code}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def serve(code: str, *, host: str = "127.0.0.1", port: int = 0, stuck_after: float = 120.0) -> RunningRoom:
    """Start a room on ``host:port`` (0: a free port) in a background thread with its own event loop."""
    import concurrent.futures

    room = Room(code, stuck_after=stuck_after)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(room.app())
    started: concurrent.futures.Future[int] = concurrent.futures.Future()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
            started.set_result(int(runner.addresses[0][1]))
        except Exception as exc:  # the caller gets it
            started.set_exception(exc)
            return
        loop.run_forever()

    thread = threading.Thread(target=run, name="labkit-room", daemon=True)
    thread.start()
    bound = started.result(30)
    return RunningRoom(room, f"http://{host}:{bound}", loop, thread, runner)


def cmd_room(args: argparse.Namespace) -> int:
    room = Room(args.code, stuck_after=args.stuck_after)
    print(f"labkit room {args.code}: open http://{args.host}:{args.port}/ ; attendees set "
          f"LABKIT_ROOM=http://<this host>:{args.port}/{args.code}", flush=True)
    web.run_app(room.app(), host=args.host, port=args.port, print=None)
    return 0


def join(url: str, name: str | None = None) -> Path:
    """Remember the room (and the attendee's name) in :func:`labkit.report.room_file`, for every kernel that
    follows: where ``LABKIT_ROOM`` cannot be set (Binder), ``labkit join URL`` in a Terminal does it. Checks the
    address's form only: an unreachable room changes nothing for the attendee."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") == "":
        raise ValueError(f"{url!r} is not a room: the instructor's page prints it, e.g. "
                         "http://HOST:8765/JOINCODE (http or https, then the join code)")
    if name is not None and (not name.strip() or "\n" in name):
        raise ValueError(f"{name!r} is not a name: one line, not empty")
    file = report.room_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(url.strip() + "\n" + (name.strip() + "\n" if name else ""), encoding="utf-8")
    return file


def cmd_join(args: argparse.Namespace) -> int:
    if args.leave:
        report.room_file().unlink(missing_ok=True)
        print("left the room: results stay in your progress file only")
        return 0
    if not args.url:
        print("labkit join: give the room's address (http://HOST:PORT/JOINCODE), or --leave", file=sys.stderr)
        return 2
    try:
        file = join(args.url, args.name)
    except ValueError as exc:
        print(f"labkit join: {exc}", file=sys.stderr)
        return 2
    print(f"joined {args.url} as {report.learner_name()} (kept in {file}); lessons you run from now on report "
          "their checks and figures there")
    return 0


def add_commands(subparsers: Any) -> None:
    r = subparsers.add_parser("room", help="the instructor's page: attendees × checked steps")
    r.add_argument("--port", type=int, default=8765, help="the port (default 8765)")
    r.add_argument("--host", default="0.0.0.0", help="the address to listen on (default all)")
    r.add_argument("--code", required=True, help="the join code attendees put in LABKIT_ROOM")
    r.add_argument("--stuck-after", type=float, default=120.0, help="seconds of failing before 'stuck'")
    r.set_defaults(func=cmd_room)
    j = subparsers.add_parser("join", help="report this kit's checks and figures to an instructor's room")
    j.add_argument("url", nargs="?", help="the room's address: http://HOST:PORT/JOINCODE")
    j.add_argument("--name", help="how the room shows you (default: $LABKIT_LEARNER, the hub user, or user@host)")
    j.add_argument("--leave", action="store_true", help="stop reporting to the room")
    j.set_defaults(func=cmd_join)
