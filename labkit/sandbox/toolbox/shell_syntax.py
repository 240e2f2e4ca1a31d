"""The shell's syntax: words and operators (:func:`tokenize`), and the tree :func:`parse` builds from them.

The grammar is POSIX's, cut to what :mod:`.shell` runs: lists (``;``, ``&``, newlines), ``&&``/``||``, pipelines
with ``!``, simple commands with assignments and redirections, ``if``, ``for``, ``while``/``until``, ``{ }`` and
``( )``. Quotes, ``$(...)``, ``$((...))``, ``${...}`` and backquotes stay inside their word; the interpreter
expands them. A script that only lacks its ending (an open quote or loop) raises a :class:`ShellSyntaxError`
marked ``incomplete``, so an interactive shell can ask for the next line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class ShellSyntaxError(Exception):
    """The script does not parse; ``incomplete`` when more input could complete it."""

    def __init__(self, message: str, incomplete: bool = False) -> None:
        super().__init__(message)
        self.incomplete = incomplete


# -- syntax tree ---------------------------------------------------------------------------------------------


@dataclass
class Redirect:
    fd: int
    op: str  # ">", ">>", "<", ">&", "&>"
    target: str  # a word, or a file descriptor for ">&"


@dataclass
class Simple:
    assigns: list[str]
    words: list[str]
    redirects: list[Redirect]


@dataclass
class Pipeline:
    commands: list[Node]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


@dataclass
class CommandList:
    items: list[AndOr]


@dataclass
class If:
    branches: list[tuple[CommandList, CommandList]]
    otherwise: CommandList | None


@dataclass
class For:
    name: str
    words: list[str] | None
    body: CommandList


@dataclass
class While:
    condition: CommandList
    body: CommandList
    until: bool


@dataclass
class Group:
    body: CommandList
    subshell: bool
    redirects: list[Redirect] = field(default_factory=list)


Node = Simple | If | For | While | Group


# -- lexer ---------------------------------------------------------------------------------------------------

_OPERATORS = ("&&", "||", ";;", ">>", ">&", "&>", "<&", "|", ";", "&", "(", ")", "<", ">", "\n")
_RESERVED = frozenset({"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "while", "until", "{", "}",
                       "!"})
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class _Token:
    kind: str  # "word", "op", "io" (a file descriptor number before a redirection)
    text: str


def scan_to_close(text: str, i: int, opener: str, closer: str) -> int:
    """Index just past the ``closer`` matching the ``opener`` before ``i`` (quotes and nesting respected)."""
    depth = 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string", incomplete=True)
            i = end + 1
            continue
        if char == '"':
            i = scan_double_quotes(text, i + 1)
            continue
        if char == opener:
            depth += 1
        elif char == closer:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ShellSyntaxError(f"missing '{closer}'", incomplete=True)


def scan_double_quotes(text: str, i: int) -> int:
    """Index just past the ``"`` closing a double-quoted string that starts at ``i``."""
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
        elif char == '"':
            return i + 1
        elif text.startswith("$(", i):
            i = scan_to_close(text, i + 2, "(", ")")
        elif char == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated backquote", incomplete=True)
            i = end + 1
        else:
            i += 1
    raise ShellSyntaxError("unterminated quoted string", incomplete=True)


def tokenize(text: str) -> list[_Token]:
    """Split a script into words and operators; quotes and substitutions stay inside their word."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in " \t":
            i += 1
            continue
        if char == "\\" and text.startswith("\\\n", i):
            i += 2
            continue
        if char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        op = next((o for o in _OPERATORS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(_Token("op", op))
            i += len(op)
            continue
        start = i
        while i < len(text):
            char = text[i]
            if char in " \t\n" or any(text.startswith(o, i) for o in _OPERATORS if o != "\n"):
                break
            if char == "\\":
                i += 2
            elif char == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated quoted string", incomplete=True)
                i = end + 1
            elif char == '"':
                i = scan_double_quotes(text, i + 1)
            elif text.startswith("$((", i):
                i = scan_to_close(text, i + 3, "(", ")")
                if not text.startswith(")", i):
                    raise ShellSyntaxError("missing '))'", incomplete=True)
                i += 1
            elif text.startswith("$(", i):
                i = scan_to_close(text, i + 2, "(", ")")
            elif text.startswith("${", i):
                end = text.find("}", i)
                if end < 0:
                    raise ShellSyntaxError("missing '}'", incomplete=True)
                i = end + 1
            elif char == "`":
                end = text.find("`", i + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated backquote", incomplete=True)
                i = end + 1
            else:
                i += 1
        word = text[start:i]
        if word.isdigit() and i < len(text) and text[i] in "<>":
            tokens.append(_Token("io", word))
        else:
            tokens.append(_Token("word", word))
    return tokens


# -- parser --------------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def at(self, kind: str, *texts: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == kind and (not texts or token.text in texts)

    def at_word(self, *texts: str) -> bool:
        return self.at("word", *texts)

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise ShellSyntaxError("unexpected end of file", incomplete=True)
        self.i += 1
        return token

    def expect_word(self, text: str) -> None:
        token = self.peek()
        if token is None:
            raise ShellSyntaxError(f"unexpected end of file (expecting \"{text}\")", incomplete=True)
        if token.kind != "word" or token.text != text:
            raise ShellSyntaxError(f"unexpected {_shown(token)} (expecting \"{text}\")")
        self.i += 1

    def skip_newlines(self) -> None:
        while self.at("op", "\n"):
            self.i += 1

    def script(self) -> CommandList:
        body = self.compound_list(terminators=())
        token = self.peek()
        if token is not None:
            raise ShellSyntaxError(f"unexpected {_shown(token)}")
        return body

    def compound_list(self, terminators: tuple[str, ...]) -> CommandList:
        items: list[AndOr] = []
        self.skip_newlines()
        while True:
            token = self.peek()
            if token is None or (token.kind == "word" and token.text in terminators) or self.at("op", ")"):
                break
            items.append(self.and_or())
            if self.at("op", ";", "&", "\n"):
                self.take()
                self.skip_newlines()
                continue
            break
        return CommandList(items)

    def and_or(self) -> AndOr:
        first = self.pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while self.at("op", "&&", "||"):
            op = self.take().text
            self.skip_newlines()
            rest.append((op, self.pipeline()))
        return AndOr(first, rest)

    def pipeline(self) -> Pipeline:
        negate = False
        if self.at_word("!"):
            self.take()
            negate = True
        commands = [self.command()]
        while self.at("op", "|"):
            self.take()
            self.skip_newlines()
            commands.append(self.command())
        return Pipeline(commands, negate)

    def command(self) -> Node:
        token = self.peek()
        if token is None:
            raise ShellSyntaxError("unexpected end of file", incomplete=True)
        if token.kind == "op" and token.text == "(":
            self.take()
            body = self.compound_list(terminators=())
            if not self.at("op", ")"):
                if self.peek() is None:
                    raise ShellSyntaxError("unexpected end of file (expecting \")\")", incomplete=True)
                raise ShellSyntaxError(f"unexpected {_shown(self.take())} (expecting \")\")")
            self.take()
            return Group(body, subshell=True, redirects=self.redirects())
        if token.kind == "word":
            if token.text == "{":
                self.take()
                body = self.compound_list(terminators=("}",))
                self.expect_word("}")
                return Group(body, subshell=False, redirects=self.redirects())
            if token.text == "if":
                return self.if_clause()
            if token.text == "for":
                return self.for_clause()
            if token.text in ("while", "until"):
                self.take()
                condition = self.compound_list(terminators=("do",))
                self.expect_word("do")
                body = self.compound_list(terminators=("done",))
                self.expect_word("done")
                return While(condition, body, until=token.text == "until")
            if token.text in _RESERVED - {"!", "{"}:
                raise ShellSyntaxError(f"unexpected {_shown(token)}")
        return self.simple()

    def if_clause(self) -> If:
        self.expect_word("if")
        branches: list[tuple[CommandList, CommandList]] = []
        otherwise = None
        while True:
            condition = self.compound_list(terminators=("then",))
            self.expect_word("then")
            body = self.compound_list(terminators=("elif", "else", "fi"))
            branches.append((condition, body))
            token = self.take()
            if token.text == "elif":
                continue
            if token.text == "else":
                otherwise = self.compound_list(terminators=("fi",))
                self.expect_word("fi")
            break
        return If(branches, otherwise)

    def for_clause(self) -> For:
        self.expect_word("for")
        name = self.take()
        if name.kind != "word" or not NAME.fullmatch(name.text):
            raise ShellSyntaxError(f"bad for loop variable: {name.text}")
        words: list[str] | None = None
        self.skip_newlines()
        if self.at_word("in"):
            self.take()
            words = []
            while self.at("word"):
                words.append(self.take().text)
        if self.at("op", ";", "\n"):
            self.take()
        self.skip_newlines()
        self.expect_word("do")
        body = self.compound_list(terminators=("done",))
        self.expect_word("done")
        return For(name.text, words, body)

    def redirects(self) -> list[Redirect]:
        found: list[Redirect] = []
        while self.at("io") or self.at("op", ">", ">>", "<", ">&", "&>", "<&"):
            found.append(self.redirect())
        return found

    def redirect(self) -> Redirect:
        fd_text = self.take().text if self.at("io") else ""
        op = self.take().text
        target = self.take()
        if target.kind != "word":
            raise ShellSyntaxError(f"unexpected {_shown(target)}")
        fd = int(fd_text) if fd_text and len(fd_text) < 3 else (0 if op in ("<", "<&") else 1)
        return Redirect(fd, ">&" if op == "<&" else op, target.text)

    def simple(self) -> Simple:
        assigns: list[str] = []
        words: list[str] = []
        redirects: list[Redirect] = []
        while True:
            if self.at("io") or self.at("op", ">", ">>", "<", ">&", "&>", "<&"):
                redirects.append(self.redirect())
            elif self.at("word"):
                text = self.take().text
                if not words and _ASSIGNMENT.match(text):
                    assigns.append(text)
                else:
                    words.append(text)
            else:
                break
        if not (assigns or words or redirects):
            token = self.peek()
            raise ShellSyntaxError(f"unexpected {_shown(token)}" if token else "unexpected end of file",
                                   incomplete=token is None)
        return Simple(assigns, words, redirects)


def _shown(token: _Token | None) -> str:
    if token is None:
        return "end of file"
    return "newline" if token.text == "\n" else f'"{token.text}"'


def parse(script: str) -> CommandList:
    """The syntax tree of ``script``.

    Raises:
        ShellSyntaxError: It does not parse (``incomplete`` when it only lacks an ending).
    """
    try:
        return _Parser(tokenize(script)).script()
    except RecursionError:
        raise ShellSyntaxError("nesting too deep") from None
