"""The instructor's room: a small web page of attendees × checked steps, fed by the attendees' kits.

    labkit room --port 8765 --code JOIN42      # prints what attendees set: LABKIT_ROOM=http://HOST:8765/JOIN42

Each attendee's kit posts every check result (:mod:`labkit.checks`) to ``LABKIT_ROOM`` (``POST
/JOIN42/results``); a wrong join code gets 403. ``GET /`` is the page (it reloads itself every few seconds, no
script needed): one row per attendee, one column per step, green when passed, red with the attempts when not, and
"stuck" when an attendee's last result is a failure older than ``stuck_after`` seconds. ``GET /state.json`` is the
same as data. The room keeps its state in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import checks

__all__ = ["Room", "RunningRoom", "add_commands", "serve"]


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
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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
        seen = {k for cells in self.attendees.values() for k in cells}
        return sorted(set(checks.EXERCISES) | seen)

    def state(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self._lock:
            rows = {}
            for learner, cells in sorted(self.attendees.items()):
                row = {f"{lesson}/{step}": {"ok": c.ok, "attempts": c.attempts, "solved": c.solved,
                                            "stuck_s": 0 if c.ok else round(now - c.first_seen)}
                       for (lesson, step), c in cells.items()}
                stuck = [k for k, v in row.items() if not v["ok"] and v["stuck_s"] >= self.stuck_after]
                rows[learner] = {"steps": row, "stuck": stuck}
            return {"code": self.code, "steps": [f"{a}/{b}" for a, b in self.steps()], "attendees": rows}

    def page(self) -> str:
        st = self.state()
        head = "".join(f"<th>{html.escape(s)}</th>" for s in st["steps"])
        body = []
        for learner, row in st["attendees"].items():
            tds = []
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
        return ("<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='3'>"
                "<title>labkit room</title><style>body{font-family:sans-serif}td,th{padding:.2em .6em;"
                "border:1px solid #ddd}.pass{background:#c8e6c9}.fail{background:#ffcdd2}"
                ".stuck{background:#e53935;color:white}.none{color:#aaa}</style></head><body>"
                f"<h1>labkit room {html.escape(self.code)}</h1><p>{len(st['attendees'])} attendees, "
                f"{passed} steps passed</p><table id='grid'><tr><th>attendee</th>{head}</tr>{''.join(body)}"
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

        async def page(_request: web.Request) -> web.Response:
            return web.Response(text=self.page(), content_type="text/html")

        async def state(_request: web.Request) -> web.Response:
            return web.json_response(self.state())

        app = web.Application()
        app.add_routes([web.post("/{code}/results", results), web.get("/", page), web.get("/state.json", state)])
        return app


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


def add_commands(subparsers: Any) -> None:
    r = subparsers.add_parser("room", help="the instructor's page: attendees × checked steps")
    r.add_argument("--port", type=int, default=8765, help="the port (default 8765)")
    r.add_argument("--host", default="0.0.0.0", help="the address to listen on (default all)")
    r.add_argument("--code", required=True, help="the join code attendees put in LABKIT_ROOM")
    r.add_argument("--stuck-after", type=float, default=120.0, help="seconds of failing before 'stuck'")
    r.set_defaults(func=cmd_room)
