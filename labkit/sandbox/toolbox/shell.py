"""``sh``: a small POSIX shell (busybox ash's behaviour) for the loops that tutorials type.

Enough of the language for ``kubectl exec POD -- sh -c '...'`` and an interactive ``kubectl exec -it POD -- sh``:
quotes and backslashes; ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${#VAR}``, ``$?``, ``$$``, ``$#``, ``$1``...,
``$@``; ``$(...)`` and backquotes; ``$((...))`` arithmetic (64-bit, as ash computes it); assignments; pipelines
(``|``, ``!``); ``;``, ``&&``, ``||`` and newlines; ``if``/``elif``/``else``, ``for``, ``while``, ``until``,
``{ ...; }`` and ``( ... )``; redirections ``>``, ``>>``, ``<``, ``2>``, ``2>&1``, ``>&2``, ``&>``; builtins
``:``, ``cd``, ``pwd``, ``exit``, ``export``, ``unset``, ``set``, ``test``/``[``, ``break``, ``continue``, ``read``.
Commands are the toolbox's (``curl``, ``echo``, ``sleep``, ``grep``, ...). There is no globbing, no functions and
no background jobs (``&`` runs in the foreground).

Everything runs as coroutines on the event loop: pipeline stages run concurrently with bounded pipes between
them, a stage whose reader has gone ends with status 141 (SIGPIPE), every loop iteration lets other tasks run,
and a loop that never waits on anything is slowed down so it cannot take the event loop's CPU. Variables and
command substitutions are capped at :data:`~.context.INPUT_LIMIT`.

With a terminal (``kubectl exec -it``) the shell also plays the pty's line discipline: it prints a prompt,
echoes what is typed, handles backspace, Ctrl-U, Ctrl-C (drops the line, or interrupts the running command,
status 130) and Ctrl-D (end of input), and merges stderr into stdout as a terminal does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from collections.abc import Awaitable, Callable

from .context import INPUT_LIMIT, ExecContext
from .fs import STDIN_NAMES, abspath, files_room, is_dir, read_error
from .registry import lookup, tool
from .shell_syntax import (
    NAME,
    AndOr,
    CommandList,
    For,
    Group,
    If,
    Node,
    Pipeline,
    Redirect,
    ShellSyntaxError,
    Simple,
    While,
    parse,
    scan_double_quotes,
    scan_to_close,
)

_PIPE_BYTES = 64 << 10
_BUSY_ITERATIONS = 500  # loop iterations between forced pauses when a loop never waits on anything
_BUSY_PAUSE = 0.02
_MAX_DEPTH = 20  # nesting of $(...) and sh inside sh


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _LoopControl(Exception):
    def __init__(self, kind: str, levels: int) -> None:
        self.kind = kind
        self.levels = levels


class _BrokenPipe(Exception):
    """Written to a pipe nobody reads any more (a real process would get SIGPIPE)."""


class _Fatal(Exception):
    """An error that stops the shell, e.g. a variable past the memory limit."""


# -- arithmetic ----------------------------------------------------------------------------------------------

_ARITH_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(<=|>=|==|!=|&&|\|\||[-+*/%()<>!]))")


def _wrap(value: int) -> int:
    return (value + (1 << 63)) % (1 << 64) - (1 << 63)


class _Arithmetic:
    """``$((...))``: integers, variables, ``+ - * / %``, comparisons, ``! && ||`` and parentheses."""

    def __init__(self, text: str, lookup_var: Callable[[str], str]) -> None:
        self.tokens: list[str] = []
        i = 0
        text = text.strip()
        while i < len(text):
            match = _ARITH_TOKEN.match(text, i)
            if match is None or match.end() == i:
                raise _Fatal(f"arithmetic syntax error: {text}")
            self.tokens.append(match.group(match.lastindex or 0))
            i = match.end()
        self.i = 0
        self.lookup_var = lookup_var

    def value(self) -> int:
        result = self.binary(0)
        if self.i != len(self.tokens):
            raise _Fatal("arithmetic syntax error")
        return result

    _LEVELS: tuple[tuple[str, ...], ...] = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"),
                                            ("*", "/", "%"))

    def binary(self, level: int) -> int:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.i < len(self.tokens) and self.tokens[self.i] in self._LEVELS[level]:
            op = self.tokens[self.i]
            self.i += 1
            right = self.binary(level + 1)
            left = _wrap(self.apply(op, left, right))
        return left

    @staticmethod
    def apply(op: str, a: int, b: int) -> int:
        if op in ("/", "%"):
            if b == 0:
                raise _Fatal("divide by zero")
            quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # C division truncates to zero
            return quotient if op == "/" else a - quotient * b
        results = {"+": a + b, "-": a - b, "*": a * b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
                   "==": a == b, "!=": a != b, "&&": bool(a and b), "||": bool(a or b)}
        return int(results[op])

    def unary(self) -> int:
        if self.i >= len(self.tokens):
            raise _Fatal("arithmetic syntax error")
        token = self.tokens[self.i]
        self.i += 1
        if token in ("-", "+", "!"):
            operand = self.unary()
            return _wrap(-operand) if token == "-" else operand if token == "+" else int(not operand)
        if token == "(":
            inner = self.binary(0)
            if self.i >= len(self.tokens) or self.tokens[self.i] != ")":
                raise _Fatal("arithmetic syntax error: missing ')'")
            self.i += 1
            return inner
        if token.isdigit():
            return _wrap(int(token[:20]))
        if NAME.fullmatch(token):
            text = self.lookup_var(token).strip() or "0"
            if not re.fullmatch(r"-?[0-9]{1,19}", text):
                raise _Fatal(f"arithmetic syntax error: {token}={text}")
            return _wrap(int(text))
        raise _Fatal(f"arithmetic syntax error near '{token}'")


# -- pipes ---------------------------------------------------------------------------------------------------


class _Pipe:
    """A bounded byte pipe between two pipeline stages."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.write_closed = False
        self.read_closed = False
        self.changed = asyncio.Condition()

    async def write(self, chunk: bytes) -> None:
        async with self.changed:
            while len(self.data) >= _PIPE_BYTES and not self.read_closed:
                await self.changed.wait()
            if self.read_closed:
                raise _BrokenPipe
            self.data += chunk
            self.changed.notify_all()

    async def read(self, n: int) -> bytes:
        async with self.changed:
            while not self.data and not self.write_closed:
                await self.changed.wait()
            chunk = bytes(self.data[:n])
            del self.data[:n]
            self.changed.notify_all()
            return chunk

    async def close_write(self) -> None:
        async with self.changed:
            self.write_closed = True
            self.changed.notify_all()

    async def close_read(self) -> None:
        async with self.changed:
            self.read_closed = True
            self.data.clear()
            self.changed.notify_all()


async def _no_input(n: int) -> bytes:
    return b""


# -- the interpreter -----------------------------------------------------------------------------------------


class Shell:
    """One shell: its variables, positional parameters and last status; runs syntax trees in an ExecContext."""

    def __init__(self, ctx: ExecContext, name: str = "sh", args: list[str] | None = None, depth: int = 0) -> None:
        self.ctx = ctx
        self.name = name
        self.args = list(args or [])
        self.vars: dict[str, str] = dict(ctx.env)
        self.exported: set[str] = set(ctx.env)
        self.status = 0
        self.depth = depth
        self.iterations = 0
        self.substitutions = 0

    def child(self) -> Shell:
        """A subshell: a copy of the variables; nothing it sets comes back."""
        sub = copy.copy(self)
        sub.vars = dict(self.vars)
        sub.exported = set(self.exported)
        sub.args = list(self.args)
        return sub

    def env(self) -> dict[str, str]:
        return {k: v for k, v in self.vars.items() if k in self.exported}

    async def error(self, ctx: ExecContext, text: str) -> None:
        await ctx.write_stderr(f"{self.name}: {text}\n".encode("utf-8", "surrogateescape"))

    # -- running trees

    async def run_list(self, node: CommandList, ctx: ExecContext) -> int:
        for item in node.items:
            self.status = await self.run_and_or(item, ctx)
        return self.status

    async def run_and_or(self, node: AndOr, ctx: ExecContext) -> int:
        status = await self.run_pipeline(node.first, ctx)
        for op, pipeline in node.rest:
            if (op == "&&") == (status == 0):
                status = await self.run_pipeline(pipeline, ctx)
        return status

    async def run_pipeline(self, node: Pipeline, ctx: ExecContext) -> int:
        if len(node.commands) == 1:
            status = await self.run_command(node.commands[0], ctx)
        else:
            status = await self._run_stages(node.commands, ctx)
        self.status = int(not status) if node.negate else status
        return self.status

    async def _run_stages(self, commands: list[Node], ctx: ExecContext) -> int:
        pipes = [_Pipe() for _ in commands[1:]]

        async def stage(index: int) -> int:
            stage_ctx = copy.copy(ctx)
            if index > 0:
                stage_ctx.stdin_reader = pipes[index - 1].read
            if index < len(pipes):
                stage_ctx.stdout_writer = pipes[index].write
            try:  # every stage runs in a subshell, as in ash
                return await self.child().run_command(commands[index], stage_ctx)
            except _BrokenPipe:
                return 141
            except _Exit as done:
                return done.code
            except _LoopControl:
                return 0
            finally:
                if index < len(pipes):
                    await pipes[index].close_write()
                if index > 0:
                    await pipes[index - 1].close_read()

        tasks = [asyncio.ensure_future(stage(i)) for i in range(len(commands))]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return results[-1]

    async def run_command(self, node: Node, ctx: ExecContext) -> int:
        await self._pace()
        if isinstance(node, Simple):
            return await self.run_simple(node, ctx)
        if isinstance(node, Group):
            return await self._with_redirects(node.redirects, ctx, lambda c: self._run_group(node, c))
        if isinstance(node, If):
            for condition, body in node.branches:
                if await self.run_list(condition, ctx) == 0:
                    return await self.run_list(body, ctx)
            return await self.run_list(node.otherwise, ctx) if node.otherwise else 0
        if isinstance(node, For):
            words = self.args if node.words is None else [f for w in node.words for f in await self.expand(w, ctx)]
            status = 0
            for word in words:
                self.vars[node.name] = word
                passed = await self._loop_body(node.body, ctx)
                if passed == "break":
                    break
                if isinstance(passed, int):
                    status = passed
                await self._pace()
            return status
        return await self._run_while(node, ctx)

    async def _run_group(self, node: Group, ctx: ExecContext) -> int:
        if not node.subshell:
            return await self.run_list(node.body, ctx)
        sub = self.child()
        try:
            return await sub.run_list(node.body, ctx)
        except _Exit as done:
            return done.code

    async def _loop_body(self, body: CommandList, ctx: ExecContext) -> int | str:
        """One pass of a loop's body: its status, or "break" / "continue" when one of those ended it (``break N``
        and ``continue N`` go on to the enclosing loops)."""
        try:
            return await self.run_list(body, ctx)
        except _LoopControl as control:
            if control.levels > 1:
                control.levels -= 1
                raise
            return control.kind

    async def _run_while(self, node: While, ctx: ExecContext) -> int:
        status = 0
        while True:
            ok = await self.run_list(node.condition, ctx) == 0
            if ok == node.until:
                return status
            passed = await self._loop_body(node.body, ctx)
            if passed == "break":
                return 0
            if isinstance(passed, int):
                status = passed
            await self._pace()

    async def _pace(self) -> None:
        """Let other tasks run; a loop that never waits is slowed down so it cannot hog the event loop."""
        self.iterations += 1
        if self.iterations % _BUSY_ITERATIONS == 0:
            await asyncio.sleep(_BUSY_PAUSE)
        else:
            await asyncio.sleep(0)

    async def run_simple(self, node: Simple, ctx: ExecContext) -> int:
        words: list[str] = []
        for word in node.words:
            words += await self.expand(word, ctx)
        assigned: dict[str, str] = {}
        self.substitutions = 0
        for assign in node.assigns:
            name, _, value = assign.partition("=")
            assigned[name] = "".join(await self.expand(value, ctx, split=False))
        if not words:
            self.vars.update(assigned)
            self._check_size()
            if node.redirects:
                return await self._with_redirects(node.redirects, ctx, lambda c: self._noop())
            return self.status if self.substitutions else 0

        async def invoke(c: ExecContext) -> int:
            return await self.invoke(words, assigned, c)

        return await self._with_redirects(node.redirects, ctx, invoke)

    async def _noop(self) -> int:
        return 0

    async def invoke(self, words: list[str], assigned: dict[str, str], ctx: ExecContext) -> int:
        name = words[0]
        builtin = _BUILTINS.get(name)
        if builtin is not None:
            saved = {k: self.vars.get(k) for k in assigned}
            self.vars.update(assigned)
            try:
                return await builtin(self, words, ctx)
            finally:
                if name not in ("export", "read"):
                    for key, value in saved.items():
                        if value is None:
                            self.vars.pop(key, None)
                        else:
                            self.vars[key] = value
        if name in ("sh", "/bin/sh") and self.depth >= _MAX_DEPTH:
            await self.error(ctx, "too many nested shells")
            return 2
        found = lookup(name)
        if found is None:
            await self.error(ctx, f"{name}: not found")
            return 127
        child = copy.copy(ctx)
        child.env = {**self.env(), **assigned}
        child.shell_depth = self.depth + 1
        return await found(list(words), child)

    # -- redirections

    async def _with_redirects(self, redirects: list[Redirect], ctx: ExecContext,
                              body: Callable[[ExecContext], Awaitable[int]]) -> int:
        if not redirects:
            return await body(ctx)
        target_ctx = copy.copy(ctx)
        files: list[tuple[str, bytearray, bool]] = []
        for redirect in redirects:
            failure = await self._apply(redirect, target_ctx, files)
            if failure:
                await self.error(ctx, failure)
                return 1
        try:
            return await body(target_ctx)
        finally:
            for path, buffer, append in files:
                old = ctx.files.get(path, b"") if append else b""
                room = files_room(ctx, path)
                content = (old + bytes(buffer))[: max(room, 0)]
                ctx.files[path] = content

    async def _apply(self, redirect: Redirect, ctx: ExecContext, files: list[tuple[str, bytearray, bool]]) -> str:
        fields = await self.expand(redirect.target, ctx)
        if len(fields) != 1:
            return f"{redirect.target}: bad redirect"
        target = fields[0]
        if redirect.op == ">&":
            if target not in ("1", "2"):
                return f"{target}: bad file descriptor"
            writer = ctx.stdout_writer if target == "1" else ctx.stderr_writer
            fallback = ctx.write_stdout if target == "1" else ctx.write_stderr
            chosen = writer or fallback
            if redirect.fd == 1:
                ctx.stdout_writer = chosen
            elif redirect.fd == 2:
                ctx.stderr_writer = chosen
            return ""
        if redirect.op == "<":
            if target in STDIN_NAMES:
                return ""
            reason = read_error(ctx, target)
            if reason:
                return f"can't open '{target}': {reason}"
            data = ctx.files.get(abspath(target), b"")
            ctx.stdin_reader = _reader_of(data)
            return ""
        file_writer = await self._file_writer(target, redirect.op == ">>", ctx, files)
        if isinstance(file_writer, str):
            return file_writer
        if redirect.op == "&>":
            ctx.stdout_writer = ctx.stderr_writer = file_writer
        elif redirect.fd == 1:
            ctx.stdout_writer = file_writer
        elif redirect.fd == 2:
            ctx.stderr_writer = file_writer
        return ""

    async def _file_writer(self, target: str, append: bool, ctx: ExecContext,
                           files: list[tuple[str, bytearray, bool]]) -> Callable[[bytes], Awaitable[None]] | str:
        if target == "/dev/null":
            return _discard
        if target in ("/dev/stdout", "/dev/stderr"):
            return ctx.stdout_writer or ctx.write_stdout if target == "/dev/stdout" else (
                ctx.stderr_writer or ctx.write_stderr)
        path = abspath(target)
        folder = path.rpartition("/")[0] or "/"
        if is_dir(ctx, path):
            return f"can't create {target}: Is a directory"
        if not is_dir(ctx, folder):
            return f"can't create {target}: nonexistent directory"
        buffer = bytearray()
        files.append((path, buffer, append))
        room = files_room(ctx, path) - (len(ctx.files.get(path, b"")) if append else 0)

        async def write(data: bytes) -> None:
            if len(buffer) + len(data) > room:
                buffer.extend(data[: max(room - len(buffer), 0)])
                raise _Fatal(f"write error: {target}: File too large")
            buffer.extend(data)

        return write

    # -- expansion

    def lookup_var(self, name: str) -> str:
        if name == "?":
            return str(self.status)
        if name == "$":
            return "1"
        if name == "#":
            return str(len(self.args))
        if name in ("@", "*"):
            return " ".join(self.args)
        if name == "0":
            return self.name
        if name.isdigit():
            index = int(name)
            return self.args[index - 1] if index <= len(self.args) else ""
        return self.vars.get(name, "")

    def _check_size(self) -> None:
        if sum(len(k) + len(v) for k, v in self.vars.items()) > INPUT_LIMIT:
            raise _Fatal("out of memory (variables past the sandbox's limit)")

    async def expand(self, word: str, ctx: ExecContext, split: bool = True) -> list[str]:
        """The fields a word expands to: quotes removed, parameters and substitutions replaced, unquoted
        expansion results split on whitespace."""
        fields: list[str] = []
        current: list[str] = []
        has_field = False  # a quoted empty string still makes a field

        def add(text: str, splittable: bool) -> None:
            nonlocal has_field
            if not (split and splittable):
                current.append(text)
                has_field = True
                return
            parts = re.split(r"[ \t\n]+", text)
            for index, part in enumerate(parts):
                if index > 0 and (current or has_field):
                    fields.append("".join(current))
                    current.clear()
                    has_field = False
                if part:
                    current.append(part)
                    has_field = True

        i = 0
        while i < len(word):
            char = word[i]
            if char == "\\":
                if i + 1 < len(word):
                    add(word[i + 1], False)
                i += 2
            elif char == "'":
                end = word.index("'", i + 1)
                add(word[i + 1 : end], False)
                has_field = True
                i = end + 1
            elif char == '"':
                end = scan_double_quotes(word, i + 1)
                add(await self._expand_quoted(word[i + 1 : end - 1], ctx), False)
                has_field = True
                i = end
            elif char == "$" or char == "`":
                text, i = await self._substitute(word, i, ctx)
                add(text, True)
            else:
                add(char, False)
                i += 1
        if current or has_field:
            fields.append("".join(current))
        total = sum(len(f) for f in fields)
        if total > INPUT_LIMIT:
            raise _Fatal("out of memory (a word past the sandbox's limit)")
        return fields

    async def _expand_quoted(self, text: str, ctx: ExecContext) -> str:
        parts: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char == "\\" and i + 1 < len(text) and text[i + 1] in '$`"\\\n':
                parts.append(text[i + 1] if text[i + 1] != "\n" else "")
                i += 2
            elif char in "$`":
                value, i = await self._substitute(text, i, ctx)
                parts.append(value)
            else:
                parts.append(char)
                i += 1
        return "".join(parts)

    async def _substitute(self, text: str, i: int, ctx: ExecContext) -> tuple[str, int]:
        """The value of the ``$...`` or backquote at ``text[i]`` and the index after it."""
        if text[i] == "`":
            end = text.index("`", i + 1)
            return await self.capture(text[i + 1 : end], ctx), end + 1
        if text.startswith("$((", i):
            end = scan_to_close(text, i + 3, "(", ")")
            inner = text[i + 3 : end - 1]
            expanded = await self._expand_quoted(inner, ctx)
            return str(_Arithmetic(expanded, self.lookup_var).value()), end + 1
        if text.startswith("$(", i):
            end = scan_to_close(text, i + 2, "(", ")")
            return await self.capture(text[i + 2 : end - 1], ctx), end
        if text.startswith("${", i):
            end = text.index("}", i)
            return await self._parameter(text[i + 2 : end], ctx), end + 1
        match = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9?$#@*!-]").match(text, i + 1)
        if match is None:
            return "$", i + 1
        return self.lookup_var(match.group()), match.end()

    async def _parameter(self, inside: str, ctx: ExecContext) -> str:
        if inside.startswith("#") and len(inside) > 1:
            return str(len(self.lookup_var(inside[1:])))
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*|[0-9?$#@*])(:?[-=+?])?(.*)", inside, re.S)
        if match is None:
            raise _Fatal(f"syntax error: bad substitution: ${{{inside}}}")
        name, op, word = match.groups()
        value = self.lookup_var(name)
        is_set = name in self.vars or not NAME.fullmatch(name)
        missing = (not value) if op and op.startswith(":") else not is_set
        if not op:
            return value
        kind = op[-1]
        if kind == "-":
            return await self._expand_quoted(word, ctx) if missing else value
        if kind == "=":
            if missing:
                self.vars[name] = await self._expand_quoted(word, ctx)
            return self.vars.get(name, "")
        if kind == "+":
            return "" if missing else await self._expand_quoted(word, ctx)
        if missing:
            raise _Fatal(f"{name}: {await self._expand_quoted(word, ctx) or 'parameter not set'}")
        return value

    async def capture(self, script: str, ctx: ExecContext) -> str:
        """``$(script)``: its stdout without trailing newlines; it runs in a subshell."""
        if self.depth >= _MAX_DEPTH:
            raise _Fatal("command substitution nested too deeply")
        try:
            tree = parse(script)
        except ShellSyntaxError as exc:
            raise _Fatal(f"syntax error: {exc}") from None
        output = bytearray()

        async def collect(data: bytes) -> None:
            output.extend(data)
            if len(output) > INPUT_LIMIT:
                raise _Fatal("out of memory (command output past the sandbox's limit)")

        self.substitutions += 1
        sub = self.child()
        sub.depth = self.depth + 1
        sub_ctx = copy.copy(ctx)
        sub_ctx.stdout_writer = collect
        try:
            self.status = await sub.run_list(tree, sub_ctx)
        except _Exit as done:
            self.status = done.code
        return output.decode("utf-8", "surrogateescape").rstrip("\n")


def _shared_reader(ctx: ExecContext) -> Callable[[int], Awaitable[bytes]]:
    original = copy.copy(ctx)  # keeps the in-memory stdin and its offset; copies of ctx share this reader
    return original.read_stdin


def _reader_of(data: bytes) -> Callable[[int], Awaitable[bytes]]:
    offset = 0

    async def read(n: int) -> bytes:
        nonlocal offset
        chunk = data[offset : offset + n]
        offset += len(chunk)
        return chunk

    return read


async def _discard(data: bytes) -> None:
    return None


# -- builtins ------------------------------------------------------------------------------------------------

Builtin = Callable[[Shell, list[str], ExecContext], Awaitable[int]]


async def _colon(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    return 0


async def _exit(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    if len(argv) > 1:
        if not re.fullmatch(r"-?[0-9]{1,9}", argv[1]):
            await shell.error(ctx, f"exit: Illegal number: {argv[1]}")
            raise _Exit(2)
        raise _Exit(int(argv[1]) & 0xFF)
    raise _Exit(shell.status)


async def _export(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    for arg in argv[1:]:
        if arg == "-p":
            continue
        name, eq, value = arg.partition("=")
        if not NAME.fullmatch(name):
            await shell.error(ctx, f"export: {arg}: bad variable name")
            return 1
        if eq:
            shell.vars[name] = value
        shell.vars.setdefault(name, "")
        shell.exported.add(name)
    if len(argv) == 1 or argv[1:] == ["-p"]:
        text = "".join(f"export {k}='{v}'\n" for k, v in sorted(shell.env().items()))
        await ctx.write_stdout(text.encode("utf-8", "surrogateescape"))
    shell._check_size()
    return 0


async def _unset(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    for name in argv[1:]:
        if name not in ("-v", "-f"):
            shell.vars.pop(name, None)
            shell.exported.discard(name)
    return 0


async def _set(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    if len(argv) == 1:
        text = "".join(f"{k}='{v}'\n" for k, v in sorted(shell.vars.items()))
        await ctx.write_stdout(text.encode("utf-8", "surrogateescape"))
        return 0
    if "--" in argv:
        shell.args = argv[argv.index("--") + 1 :]
    return 0  # options such as -e and -x are accepted and change nothing


async def _cd(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    target = argv[1] if len(argv) > 1 else "/"
    if not is_dir(ctx, abspath(target)):
        await shell.error(ctx, f"cd: can't cd to {target}: No such file or directory")
        return 2
    return 0


async def _pwd(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    await ctx.write_stdout(b"/\n")
    return 0


async def _loop_control(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    levels = 1
    if len(argv) > 1:
        if not re.fullmatch(r"[1-9][0-9]{0,5}", argv[1]):
            await shell.error(ctx, f"{argv[0]}: Illegal number: {argv[1]}")
            return 2
        levels = int(argv[1])
    raise _LoopControl(argv[0], levels)


async def _read(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    names = [a for a in argv[1:] if not a.startswith("-")] or ["REPLY"]
    line = bytearray()
    while True:
        byte = await ctx.read_stdin(1)
        if not byte:
            if not line:
                return 1
            break
        if byte == b"\n":
            break
        line += byte
        if len(line) > INPUT_LIMIT:
            raise _Fatal("read: line past the sandbox's limit")
    text = line.decode("utf-8", "surrogateescape")
    parts = text.split(None, len(names) - 1) if text.strip() else []
    for index, name in enumerate(names):
        shell.vars[name] = parts[index] if index < len(parts) else ""
    return 0


async def _test(shell: Shell, argv: list[str], ctx: ExecContext) -> int:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            await shell.error(ctx, "[: missing ]")
            return 2
        args = args[:-1]
    try:
        return 0 if _evaluate_test(args, ctx) else 1
    except ValueError as exc:
        await shell.error(ctx, f"{argv[0]}: {exc}")
        return 2


def _evaluate_test(args: list[str], ctx: ExecContext) -> bool:
    if not args:
        return False
    if args[0] == "!":
        return not _evaluate_test(args[1:], ctx)
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2:
        op, operand = args
        path = abspath(operand)
        checks = {
            "-z": lambda: operand == "", "-n": lambda: operand != "",
            "-e": lambda: not read_error(ctx, operand) or is_dir(ctx, path),
            "-f": lambda: not read_error(ctx, operand) and not is_dir(ctx, path),
            "-d": lambda: is_dir(ctx, path), "-s": lambda: bool(ctx.files.get(path)),
            "-r": lambda: not read_error(ctx, operand), "-x": lambda: lookup(operand) is not None,
        }
        if op not in checks:
            raise ValueError(f"{op}: unary operator expected")
        return checks[op]()
    if len(args) == 3:
        left, op, right = args
        if op in ("=", "=="):
            return left == right
        if op == "!=":
            return left != right
        numeric = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__, "-le": int.__le__,
                   "-gt": int.__gt__, "-ge": int.__ge__}
        if op in numeric:
            for value in (left, right):
                if not re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value):
                    raise ValueError(f"{value}: bad number")
            return bool(numeric[op](int(left), int(right)))
        raise ValueError(f"{op}: binary operator expected")
    raise ValueError("too many arguments")


_BUILTINS: dict[str, Builtin] = {
    ":": _colon, "exit": _exit, "export": _export, "unset": _unset, "set": _set, "cd": _cd, "pwd": _pwd,
    "break": _loop_control, "continue": _loop_control, "read": _read, "test": _test, "[": _test,
}


# -- the sh command ------------------------------------------------------------------------------------------


async def _run_script(shell: Shell, script: str, ctx: ExecContext) -> int:
    try:
        tree = parse(script)
    except ShellSyntaxError as exc:
        await shell.error(ctx, f"syntax error: {exc}")
        return 2
    return await _run_tree(shell, tree, ctx)


async def _run_tree(shell: Shell, tree: CommandList, ctx: ExecContext) -> int:
    try:
        return await shell.run_list(tree, ctx)
    except _LoopControl:
        return shell.status
    except _Fatal as exc:
        await shell.error(ctx, str(exc))
        return 2
    except RecursionError:
        await shell.error(ctx, "nesting too deep")
        return 2


async def _script_from_stdin(shell: Shell, ctx: ExecContext) -> int:
    """``sh`` without a terminal: run stdin's commands as each one is complete."""
    pending = ""
    status = 0
    while True:
        chunk = await ctx.read_stdin(65536)
        if chunk:
            pending += chunk.decode("utf-8", "surrogateescape")
            if len(pending) > INPUT_LIMIT:
                await shell.error(ctx, "script past the sandbox's limit")
                return 2
            if "\n" not in pending:
                continue
            ready, _, rest = pending.rpartition("\n")
            ready += "\n"
        else:
            ready, rest = pending, ""
        if ready.strip():
            try:
                tree = parse(ready)
            except ShellSyntaxError as exc:
                if exc.incomplete and chunk:
                    continue  # a loop or a quote still open: wait for more lines
                await shell.error(ctx, f"syntax error: {exc}")
                return 2
            # Commands of a script read from stdin get no stdin of their own: the script is using it.
            quiet = copy.copy(ctx)
            quiet.stdin_reader = _no_input
            status = await _run_tree(shell, tree, quiet)
        pending = rest
        if not chunk:
            return status


class _Terminal:
    """What a pty's line discipline does for an interactive shell: echo, erase, Ctrl-C, Ctrl-D."""

    def __init__(self, ctx: ExecContext) -> None:
        self.ctx = ctx
        self.raw = bytearray()

    async def key(self) -> bytes:
        if not self.raw:
            chunk = await self.ctx.read_stdin(4096)
            if not chunk:
                return b""
            self.raw += chunk
        byte = bytes(self.raw[:1])
        del self.raw[:1]
        return byte

    async def readline(self) -> bytes | None:
        """One line as typed (with its newline); ``b""`` when Ctrl-C dropped it; None at end of input."""
        line = bytearray()
        while True:
            byte = await self.key()
            if not byte:
                return None if not line else bytes(line)
            if byte in (b"\r", b"\n"):
                await self.ctx.write_stdout(b"\n")
                return bytes(line) + b"\n"
            if byte == b"\x03":
                await self.ctx.write_stdout(b"^C\n")
                return b""
            if byte == b"\x04":
                if not line:
                    return None
                continue
            if byte in (b"\x7f", b"\x08"):
                if line:
                    del line[-1]
                    await self.ctx.write_stdout(b"\x08 \x08")
                continue
            if byte == b"\x15":
                await self.ctx.write_stdout(b"\x08 \x08" * len(line))
                line.clear()
                continue
            if byte == b"\x1b" or (byte < b" " and byte != b"\t"):
                continue  # escape sequences (arrow keys) and other controls: no line editing here
            line += byte
            await self.ctx.write_stdout(byte)


async def _interactive(shell: Shell, ctx: ExecContext) -> int:
    """``kubectl exec -it POD -- sh``: a prompt, a line editor and Ctrl-C for the running command."""
    terminal = _Terminal(ctx)
    tty_ctx = copy.copy(ctx)
    tty_ctx.stderr_writer = ctx.stdout_writer or ctx.write_stdout  # a terminal shows both streams
    pending = ""
    while True:
        await ctx.write_stdout(b"> " if pending else b"/ # ")
        line = await terminal.readline()
        if line is None:
            await ctx.write_stdout(b"\n")
            return shell.status
        if not line:
            pending = ""
            continue
        pending += line.decode("utf-8", "surrogateescape")
        try:
            tree = parse(pending)
        except ShellSyntaxError as exc:
            if exc.incomplete:
                continue
            await shell.error(tty_ctx, f"syntax error: {exc}")
            shell.status, pending = 2, ""
            continue
        pending = ""
        shell.status = await _foreground(shell, tree, tty_ctx, terminal)


async def _foreground(shell: Shell, tree: CommandList, ctx: ExecContext, terminal: _Terminal) -> int:
    """Run a command line; keys typed meanwhile become its stdin, Ctrl-C interrupts it (status 130)."""
    stdin = _Pipe()
    command_ctx = copy.copy(ctx)
    command_ctx.stdin_reader = stdin.read
    task = asyncio.ensure_future(_run_tree(shell, tree, command_ctx))

    async def pump() -> None:
        line = bytearray()
        while True:
            byte = await terminal.key()
            if byte in (b"", b"\x04"):
                if line:
                    await stdin.write(bytes(line))
                    line.clear()
                    continue
                await stdin.close_write()
                if not byte:
                    return
                continue
            if byte == b"\x03":
                await ctx.write_stdout(b"^C\n")
                task.cancel()
                return
            if byte in (b"\r", b"\n"):
                await ctx.write_stdout(b"\n")
                with contextlib.suppress(_BrokenPipe):
                    await stdin.write(bytes(line) + b"\n")
                line.clear()
            elif byte in (b"\x7f", b"\x08"):
                if line:
                    del line[-1]
                    await ctx.write_stdout(b"\x08 \x08")
            elif byte >= b" " or byte == b"\t":
                line += byte
                await ctx.write_stdout(byte)

    keys = asyncio.ensure_future(pump())
    try:
        await asyncio.wait({task})
        return 130 if task.cancelled() else task.result()
    finally:
        task.cancel()
        keys.cancel()
        await asyncio.gather(keys, return_exceptions=True)


@tool("sh")
async def sh(argv: list[str], ctx: ExecContext) -> int:
    """``sh -c SCRIPT [NAME [ARGS...]]``, ``sh`` (commands from stdin) or ``sh`` with a terminal."""
    prog = argv[0].rpartition("/")[2] or "sh"
    depth = ctx.shell_depth
    if ctx.stdin_reader is None:  # one stdin cursor for every command of this shell
        ctx = copy.copy(ctx)
        ctx.stdin_reader = _shared_reader(ctx)
    args = argv[1:]
    while args and args[0] in ("-e", "-x", "-u", "-i", "-l", "-s", "-ex", "-eu", "-eux"):
        args = args[1:]
    shell = Shell(ctx, prog, depth=depth)
    try:
        if args and args[0] == "-c":
            if len(args) < 2:
                await shell.error(ctx, "-c requires an argument")
                return 2
            shell.name = args[2] if len(args) > 2 else prog
            shell.args = args[3:]
            return await _run_script(shell, args[1], ctx)
        if args and args[0].startswith("-"):
            await shell.error(ctx, f"{args[0]}: invalid option")
            return 2
        if args:
            reason = read_error(ctx, args[0])
            if reason:
                await shell.error(ctx, f"can't open '{args[0]}': {reason}")
                return 2
            shell.args = args[1:]
            script = ctx.files.get(abspath(args[0]), b"").decode("utf-8", "surrogateescape")
            return await _run_script(shell, script, ctx)
        if ctx.tty:
            return await _interactive(shell, ctx)
        return await _script_from_stdin(shell, ctx)
    except _Exit as done:
        return done.code
