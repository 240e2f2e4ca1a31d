"""The process tools (procps-ng 4 and util-linux): kill, pkill, pgrep, ps.

They see only the pod's own processes (:meth:`ExecContext.processes`, numbered 1, 2, ... as in a pod's pid
namespace) and signal through :meth:`ExecContext.send_signal`, so no command can reach a process outside the
pod. A pattern given to ``pkill``/``pgrep`` runs through :mod:`.regex`, under the same limits as ``grep``.
"""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from .context import ExecContext
from .fs import UsageError, err, out, parse_uint
from .regex import Matcher, RegexError, RegexLimitError
from .registry import tool

# ------------------------------------------------------------------------------------------------------------
# Signals: kill, pkill, pgrep

# Linux's numbering, which is also what procps prints for `kill -l`.
_SIGNALS = (
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
    "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF",
    "WINCH", "POLL", "PWR", "SYS",
)
_SIGNAL_ALIASES = {"IOT": 6, "CLD": 17, "IO": 29}
_SIGTERM = 15


def _signal_number(text: str) -> int | None:
    """The signal a name (``TERM``, ``SIGTERM``, ``term``) or number (``9``) means, or None."""
    if text.isdigit():
        number = parse_uint(text)
        return number if number is not None and number <= 64 else None
    name = text.upper()
    name = name.removeprefix("SIG")
    if name in _SIGNALS:
        return _SIGNALS.index(name) + 1
    return _SIGNAL_ALIASES.get(name)


def _signal_name(number: int) -> str:
    return _SIGNALS[number - 1] if 1 <= number <= len(_SIGNALS) else str(number)


_KILL_USAGE = """
Usage:
 kill [options] <pid> [...]

Options:
 <pid> [...]            send signal to every <pid> listed
 -<signal>, -s, --signal <signal>
                        specify the <signal> to be sent
 -l, --list=[<signal>]  list all signal names, or convert one to a name
 -L, --table            list all signal names in a nice table

 -h, --help     display this help and exit

For more details see kill(1).
"""


def _signal_list() -> str:
    lines, line = [], ""
    for name in _SIGNALS:
        if line and len(line) + 1 + len(name) >= 80:
            lines.append(line)
            line = ""
        line = f"{line} {name}" if line else name
    return "\n".join([*lines, line]) + "\n"


def _signal_table() -> str:
    cells = [f"{n:>2} {name:<7}" for n, name in enumerate(_SIGNALS, 1)]
    rows = [" ".join(cells[i : i + 7]).rstrip() for i in range(0, len(cells), 7)]
    return "\n".join(rows) + "\n"


@tool("kill")
async def _kill(argv: list[str], ctx: ExecContext) -> int:
    prog = argv[0]
    args = argv[1:]
    sig = _SIGTERM
    if not args:
        await err(ctx, _KILL_USAGE)
        return 1
    first = args[0]
    if first in ("-l", "--list") or first.startswith("--list="):
        value = first.partition("=")[2] or (args[1] if len(args) > 1 else "")
        if not value:
            await out(ctx, _signal_list())
            return 0
        number = _signal_number(value)
        if value.isdigit() and number is not None and 1 <= number <= len(_SIGNALS):
            await out(ctx, _signal_name(number) + "\n")
        elif not value.isdigit() and number is not None:
            await out(ctx, f"{number}\n")
        else:
            await err(ctx, f"{prog}: unknown signal name {value}\n")
        return 0
    if first in ("-L", "--table"):
        await out(ctx, _signal_table())
        return 0
    bad_signal = False
    if first in ("-s", "--signal"):
        if len(args) < 2:
            await err(ctx, _KILL_USAGE)
            return 1
        number = _signal_number(args[1])
        bad_signal = number is None
        sig = number if number is not None else -1
        args = args[2:]
    elif first.startswith("-") and first != "--":
        number = _signal_number(first[1:])
        if number is None:
            await err(ctx, f"{prog}: invalid argument {first[1:2]}\n{_KILL_USAGE}")
            return 1
        sig = number
        args = args[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        await err(ctx, _KILL_USAGE)
        return 1
    code = 0
    procs = ctx.processes()
    for arg in args:
        number = parse_uint(arg.removeprefix("-"))
        if number is None:
            await err(ctx, f"{prog}: failed to parse argument: '{arg}'\n")
            code = 1
            continue
        if bad_signal:
            await err(ctx, f"{prog}: ({arg}): Invalid argument\n")
            code = 1
            continue
        pid = -number if arg.startswith("-") else number
        if pid == 0:
            continue  # our own process group: nothing else in the pod is in it
        # -1 means every process but the pid namespace's init, as kill(2) does inside a container.
        targets = [p for p in procs if p.pid != 1] if pid == -1 else [p for p in procs if p.pid == abs(pid)]
        failure = "No such process" if not targets else ""
        delivered = False
        for proc in targets:
            try:
                ctx.send_signal(proc, sig)
                delivered = True
            except ProcessLookupError:
                failure = failure or "No such process"
            except PermissionError:
                failure = "Operation not permitted"
        if failure and not delivered:
            await err(ctx, f"{prog}: ({arg}): {failure}\n")
            code = 1
    return code


_PGREP_USAGE = """
Usage:
 {prog} [options] <pattern>

Options:
 -<sig>, --signal <sig>    signal to send (either number or name)
 -e, --echo                display what is killed
 -c, --count               count of matching processes
 -f, --full                use full process name to match
 -i, --ignore-case         match case insensitively
 -n, --newest              select most recently started
 -o, --oldest              select least recently started
 -x, --exact               match exactly with the command name
 -l, --list-name           list PID and process name (pgrep)
 -a, --list-full           list PID and full command line (pgrep)

For more details see pgrep(1).
"""


async def _process_match(argv: list[str], ctx: ExecContext, kill: bool) -> int:
    """pkill and pgrep (procps-ng): select the pod's processes by name and signal or list them."""
    prog = posixpath.basename(argv[0])
    args = argv[1:]
    sig = _SIGTERM
    if kill:
        # procps looks for -SIGNAL anywhere before parsing the other options.
        for index, arg in enumerate(args):
            if arg.startswith("-") and len(arg) > 1 and not arg.startswith("--"):
                number = _signal_number(arg[1:])
                if number is not None:
                    sig = number
                    del args[index]
                    break
    long = {"--full": "f", "--exact": "x", "--ignore-case": "i", "--newest": "n", "--oldest": "o",
            "--count": "c", "--echo": "e", "--list-name": "l", "--list-full": "a", "--inverse": "v"}
    allowed = "fxinoce" + ("" if kill else "lav")
    flags: set[str] = set()
    patterns: list[str] = []
    delimiter = "\n"
    i = 0

    async def usage_error(text: str) -> int:
        await err(ctx, f"{prog}: {text}\nTry `{prog} --help' for more information.\n")
        return 2

    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("--signal",) or arg.startswith("--signal="):
            value = arg.partition("=")[2]
            if not value:
                if i >= len(args):
                    return await usage_error("option '--signal' requires an argument")
                value = args[i]
                i += 1
            number = _signal_number(value)
            if number is None:
                return await usage_error(f'Unknown signal "{value}".')
            sig = number
        elif arg in ("-d", "--delimiter") and not kill:
            if i >= len(args):
                return await usage_error("option requires an argument -- 'd'")
            delimiter = args[i]
            i += 1
        elif arg in long and long[arg] in allowed:
            flags.add(long[arg])
        elif arg.startswith("--"):
            await err(ctx, f"{prog}: unrecognized option '{arg}'\n{_PGREP_USAGE.format(prog=prog)}")
            return 2
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter not in allowed:
                    await err(ctx, f"{prog}: invalid option -- '{letter}'\n{_PGREP_USAGE.format(prog=prog)}")
                    return 2
                flags.add(letter)
        else:
            patterns.append(arg)
    if not patterns:
        return await usage_error("no matching criteria specified")
    if len(patterns) > 1:
        return await usage_error("only one pattern can be provided")
    if {"n", "o"} <= flags:
        return await usage_error("-n and -o are mutually exclusive")
    procs = ctx.processes()
    targets = [(" ".join(p.args) if "f" in flags and p.args else p.comm[:15]).encode("utf-8", "surrogateescape")
               for p in procs]
    try:
        matcher = Matcher.compile(patterns[0].encode("utf-8", "surrogateescape"),
                                  re.IGNORECASE if "i" in flags else 0)
        hits = await (matcher.fullmatch(targets) if "x" in flags else matcher.search(targets))
    except RegexError as exc:
        await err(ctx, f"{prog}: regex error: {exc}\n")
        return 2
    except RegexLimitError as exc:
        await err(ctx, f"{prog}: {exc.describe()}\n")
        return 3
    except OSError as exc:
        await err(ctx, f"{prog}: cannot run the regular expression: {exc.strerror or exc}\n")
        return 3
    chosen = [p for p, hit in zip(procs, hits, strict=True) if hit != ("v" in flags)]
    if chosen and ("n" in flags or "o" in flags):
        pick = max if "n" in flags else min
        chosen = [pick(chosen, key=lambda p: (p.started, p.pid))]
    if not kill:
        if "c" in flags:
            await out(ctx, f"{len(chosen)}\n")
        elif chosen:
            if "a" in flags:
                lines = [f"{p.pid} {' '.join(p.args) or p.comm}" for p in chosen]
            elif "l" in flags:
                lines = [f"{p.pid} {p.comm}" for p in chosen]
            else:
                lines = [str(p.pid) for p in chosen]
            await out(ctx, delimiter.join(lines) + "\n")
        return 0 if chosen else 1
    signalled = 0
    for proc in chosen:
        try:
            ctx.send_signal(proc, sig)
        except ProcessLookupError:
            continue  # it exited between listing and signalling; procps stays quiet about that too
        except PermissionError:
            await err(ctx, f"{prog}: killing pid {proc.pid} failed: Operation not permitted\n")
            continue
        signalled += 1
        if "e" in flags:
            await out(ctx, f"{proc.comm} killed (pid {proc.pid})\n")
    if "c" in flags:
        await out(ctx, f"{signalled}\n")
    return 0 if signalled else 1


@tool("pkill")
async def _pkill(argv: list[str], ctx: ExecContext) -> int:
    return await _process_match(argv, ctx, kill=True)


@tool("pgrep")
async def _pgrep(argv: list[str], ctx: ExecContext) -> int:
    return await _process_match(argv, ctx, kill=False)


# ------------------------------------------------------------------------------------------------------------
# ps


@dataclass
class _ProcStat:
    """What /proc says about a process; zeros when the host has no /proc (or the process just exited)."""

    state: str = "S"
    session_leader: bool = False
    threads: int = 1
    nice: int = 0
    cpu_seconds: float = 0.0
    vsz_kib: int = 0
    rss_kib: int = 0


def _proc_stat(host_pid: int) -> _ProcStat:
    try:
        with open(f"/proc/{host_pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        fields = text[text.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
        return _ProcStat(
            state=fields[0], session_leader=int(fields[3]) == host_pid, threads=int(fields[17]),
            nice=int(fields[16]), cpu_seconds=(int(fields[11]) + int(fields[12])) / ticks,
            vsz_kib=int(fields[20]) // 1024, rss_kib=int(fields[21]) * page_kib,
        )
    except (OSError, ValueError, IndexError):
        return _ProcStat()


def _mem_total_kib() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class _PsRow:
    pid: int
    comm: str
    args: list[str]
    started: float
    tty: str
    stat: _ProcStat

    def elapsed(self, now: float) -> float:
        return max(now - self.started, 0.0)


def _hms(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _bsdtime(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _etime(seconds: float) -> str:
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    if days:
        return f"{days}-{hours:02d}:{text}"
    return f"{hours:02d}:{text}" if hours else text


def _start(started: float, now: float) -> str:
    stamp = time.localtime(started)
    if now - started < 86400:
        return time.strftime("%H:%M", stamp)
    if stamp.tm_year == time.localtime(now).tm_year:
        return time.strftime("%b%d", stamp)
    return time.strftime("%Y", stamp)


def _stat_text(row: _PsRow) -> str:
    s = row.stat
    text = s.state + ("<" if s.nice < 0 else "N" if s.nice > 0 else "")
    text += ("s" if s.session_leader else "") + ("l" if s.threads > 1 else "")
    return text + ("+" if row.tty != "?" else "")


def _pcpu(row: _PsRow, now: float) -> float:
    elapsed = row.elapsed(now)
    return min(row.stat.cpu_seconds * 100.0 / elapsed, 999.9) if elapsed > 0 else 0.0


# spec -> (header, width, right-aligned, value)
_PsField = tuple[str, int, bool, Callable[[_PsRow, float, int], str]]
_PS_FIELDS: dict[str, _PsField] = {
    "pid": ("PID", 7, True, lambda r, now, mem: str(r.pid)),
    "ppid": ("PPID", 7, True, lambda r, now, mem: "0"),
    "user": ("USER", 8, False, lambda r, now, mem: "root"),
    "uid": ("UID", 5, True, lambda r, now, mem: "0"),
    "comm": ("COMMAND", 15, False, lambda r, now, mem: r.comm[:15]),
    "args": ("COMMAND", 27, False, lambda r, now, mem: " ".join(r.args) or f"[{r.comm}]"),
    "cmd": ("CMD", 27, False, lambda r, now, mem: " ".join(r.args) or f"[{r.comm}]"),
    "stat": ("STAT", 4, False, lambda r, now, mem: _stat_text(r)),
    "s": ("S", 1, False, lambda r, now, mem: r.stat.state),
    "etime": ("ELAPSED", 11, True, lambda r, now, mem: _etime(r.elapsed(now))),
    "etimes": ("ELAPSED", 7, True, lambda r, now, mem: str(int(r.elapsed(now)))),
    "time": ("TIME", 8, True, lambda r, now, mem: _hms(r.stat.cpu_seconds)),
    "vsz": ("VSZ", 6, True, lambda r, now, mem: str(r.stat.vsz_kib)),
    "rss": ("RSS", 5, True, lambda r, now, mem: str(r.stat.rss_kib)),
    "tty": ("TT", 8, False, lambda r, now, mem: r.tty),
    "%cpu": ("%CPU", 4, True, lambda r, now, mem: f"{_pcpu(r, now):.1f}"),
    "%mem": ("%MEM", 4, True, lambda r, now, mem: f"{100.0 * r.stat.rss_kib / mem:.1f}" if mem else "0.0"),
    "lstart": ("STARTED", 24, True, lambda r, now, mem: time.strftime("%a %b %e %H:%M:%S %Y",
                                                                       time.localtime(r.started))),
    "start": ("STARTED", 8, True, lambda r, now, mem: _start(r.started, now)),
    "start_time": ("START", 5, True, lambda r, now, mem: _start(r.started, now)),
    "stime": ("STIME", 5, False, lambda r, now, mem: _start(r.started, now)),
    "bsdtime": ("TIME", 6, True, lambda r, now, mem: _bsdtime(r.stat.cpu_seconds)),
    "c": ("C", 2, True, lambda r, now, mem: str(min(int(_pcpu(r, now)), 99))),
    "nlwp": ("NLWP", 4, True, lambda r, now, mem: str(r.stat.threads)),
}
_PS_ALIASES = {
    "command": "args", "ucmd": "comm", "ucomm": "comm", "cputime": "time", "vsize": "vsz", "rssize": "rss",
    "tt": "tty", "tname": "tty", "pcpu": "%cpu", "pmem": "%mem", "state": "s",
    "euser": "user", "uname": "user", "thcount": "nlwp", "bsdstart": "start",
}
_PS_FORMATS = {
    "simple": "pid,tty=TTY,time,comm=CMD",
    "full": "user=UID,pid,ppid,c,stime,tty=TTY,time,cmd",
    "user": "user,pid,%cpu,%mem,vsz,rss,tty=TTY,stat,start_time,bsdtime,args",
}
_PS_USAGE = """
Usage:
 ps [options]

 Try 'ps --help <simple|list|output|threads|misc|all>'
  or 'ps --help <s|l|o|t|m|a>'
 for additional help text.

For more details see ps(1).
"""


def _ps_columns(spec: str) -> list[tuple[str, int, bool, Callable[[_PsRow, float, int], str]]]:
    """Columns for a ``-o`` list like ``pid,comm`` or ``pid=ID,args``.

    Raises:
        UsageError: A field ps does not know.
    """
    columns = []
    for item in re.split(r"[,\s]+", spec.strip()):
        if not item:
            continue
        name, has_label, label = item.partition("=")
        key = _PS_ALIASES.get(name.lower(), name.lower())
        if key not in _PS_FIELDS:
            raise UsageError(f'unknown user-defined format specifier "{name}"')
        header, width, right, value = _PS_FIELDS[key]
        columns.append((label if has_label else header, width, right, value))
    return columns


def _parse_ps_args(args: list[str]) -> tuple[str, bool, set[int] | None]:
    """``(format spec, show header, pid filter)`` from ps options, SysV (``-ef``) or BSD (``aux``).

    Raises:
        UsageError: An option ps refuses; the message is ps's ``error:`` line.
    """
    fmt = ""
    style = "simple"
    header = True
    pids: set[int] | None = None
    i = 0

    def take(rest: str) -> str:
        nonlocal i
        if rest:
            return rest
        if i >= len(args):
            raise UsageError("list of format specifiers must follow -o")
        i += 1
        return args[i - 1]

    def pid_list(text: str) -> set[int]:
        try:
            return {int(p) for p in re.split(r"[,\s]+", text.strip()) if p}
        except ValueError:
            raise UsageError("process ID list syntax error") from None

    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if name in ("no-headers", "no-heading"):
                header = False
            elif name in ("format", "pid"):
                text = value or take("")
                if name == "format":
                    fmt = f"{fmt},{text}" if fmt else text
                else:
                    pids = (pids or set()) | pid_list(text)
            elif name not in ("cols", "columns", "width", "sort"):
                raise UsageError("unknown gnu long option")
            continue
        if parse_uint(arg) is not None:  # `ps 1`: a bare pid, BSD style
            pids = (pids or set()) | {int(arg)}
            continue
        sysv = arg.startswith("-")
        letters = arg[1:] if sysv else arg
        if arg in ("-aux", "-axu"):
            sysv, letters = False, "aux"
        for j, letter in enumerate(letters):
            if letter == "o":
                text = take(letters[j + 1 :])
                fmt = f"{fmt},{text}" if fmt else text
                break
            if letter == "p":
                pids = (pids or set()) | pid_list(take(letters[j + 1 :]))
                break
            if sysv:
                if letter in "fFl":
                    style = "full"
                elif letter not in "eAadNwHjy":
                    raise UsageError("unsupported SysV option")
            elif letter == "u":
                style = "user"
            elif letter == "h":
                header = False
            elif letter not in "axwfeTrgc":
                raise UsageError("unsupported option (BSD syntax)")
    return fmt or _PS_FORMATS[style], header, pids


@tool("ps")
async def _ps(argv: list[str], ctx: ExecContext) -> int:
    try:
        spec, header, pids = _parse_ps_args(argv[1:])
        columns = _ps_columns(spec)
    except UsageError as exc:
        await err(ctx, f"error: {exc}\n{_PS_USAGE}")
        return 1
    now = time.time()
    procs = ctx.processes()
    rows = [_PsRow(p.pid, p.comm, p.args, p.started, "?", _proc_stat(p.host_pid))
            for p in sorted(procs, key=lambda p: p.pid)]
    # Real ps lists itself too; here it is the newest process in the pod.
    me = _PsRow(max((p.pid for p in procs), default=0) + 1, "ps", list(argv), now,
                "pts/0" if ctx.tty else "?", _ProcStat(state="R", session_leader=True))
    rows.append(me)
    if pids is not None:
        rows = [r for r in rows if r.pid in pids]
    mem = _mem_total_kib()
    lines = []
    table = [[h for h, _, _, _ in columns]] if header and any(h for h, _, _, _ in columns) else []
    table += [[value(r, now, mem) for _, _, _, value in columns] for r in rows]
    for cells in table:
        parts = []
        for index, (cell, (head, width, right, _)) in enumerate(zip(cells, columns, strict=True)):
            width = max(width, len(head))
            last = index == len(columns) - 1
            if right:
                parts.append(cell.rjust(width))
            else:
                parts.append(cell if last else cell.ljust(width))
        lines.append(" ".join(parts).rstrip())
    await out(ctx, "".join(f"{line}\n" for line in lines))
    return 0 if rows else 1
