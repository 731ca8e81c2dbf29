"""Source text → `nodes.Module`, with syntax errors as diagnostics.

The grammar lives in `grammar/oneiric.lark` (shipped inside this package).
Lark's LALR parser calls `_Builder` on every reduction, so the syntax tree is
built in one pass without an intermediate lark tree.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Any

from oneiricc._language import nodes as n
from oneiricc._language.diagnostics import (
    CompileError,
    Diagnostic,
    Note,
    did_you_mean,
    sorted_diagnostics,
)
from oneiricc._language.recovery import FIELD_NAMES, Skipped, header_version, recover

if TYPE_CHECKING:  # lark is imported on first parse: a build served from the cache never needs it
    from lark import Lark, Token
    from lark.exceptions import UnexpectedInput

LANGUAGE_VERSIONS = (1,)
MAX_SOURCE_BYTES = 32 * 1024 * 1024
# Beside this module in every install (a wheel's files are plain files); reading it
# by path spares every build importlib.resources (~3 ms).
GRAMMAR_FILE = os.path.join(os.path.dirname(__file__), "oneiric.lark")


@cache
def grammar_text() -> str:
    with open(GRAMMAR_FILE, encoding="utf-8") as file:
        return file.read()


@cache
def keywords() -> tuple[str, ...]:
    """Every keyword of the grammar (its word-like string literals)."""
    code = "\n".join(line.split("//")[0] for line in grammar_text().splitlines())
    return tuple(sorted(set(re.findall(r'"([a-z]+)"', code))))


_new_tuple = tuple.__new__


def _pos(tok: Token) -> n.Pos:
    # Called for nearly every token: tuple.__new__ skips NamedTuple's Python-level __new__.
    return _new_tuple(n.Pos, (tok.line or 1, tok.column or 1, len(tok) or 1))


class _SoftError(Exception):
    """A problem inside one token (a bad escape); reported without a lark position."""

    def __init__(self, code: str, message: str, pos: n.Pos, help: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.pos = pos
        self.help = help


# Longer digit strings are out of every range anyway, and int() refuses them past 4300.
_MAX_INT_DIGITS = 30


def _int(tok: Token) -> int:
    if len(tok) > _MAX_INT_DIGITS:
        raise _SoftError(
            "E0403", f"integer {tok[:20]}… ({len(tok)} digits) is out of range", _pos(tok)
        )
    return int(tok)


_ESCAPES_HELP = 'escapes are \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX; write a backslash as \\\\'


def _string(tok: Token) -> str:
    if "\\" not in tok:  # no escapes (most strings): the text between the quotes
        body = str(tok)[1:-1]
        if body.isprintable() or not any(ord(ch) < 0x20 for ch in body):
            return body
    try:
        value = json.loads(tok)
    except json.JSONDecodeError as exc:
        # The STRING terminal admits only two things json rejects: a bad escape, a control char.
        line, col = tok.line or 1, tok.column or 1
        if exc.msg.startswith("Invalid control character"):
            raise _SoftError(
                "E0003",
                f"control character U+{ord(tok[exc.pos]):04X} in string",
                n.Pos(line, col + exc.pos),
                "write it as an escape, for example \\t",
            ) from None
        start = tok.rindex("\\", 0, exc.pos + 1)  # json points at the backslash or the "u"
        escape = tok[start : start + (6 if tok[start + 1 : start + 2] == "u" else 2)]
        raise _SoftError(
            "E0003",
            f'invalid escape "{escape}" in string',
            n.Pos(line, col + start, len(escape)),
            _ESCAPES_HELP,
        ) from None
    if not isinstance(value, str):  # pragma: no cover - the STRING terminal guarantees a string
        raise _SoftError("E0003", "invalid string", _pos(tok))
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _SoftError("E0003", "string contains a lone surrogate escape", _pos(tok)) from None
    return value


def _tokens(children: list[Any], kind: str) -> list[Token]:
    return [c for c in children if isinstance(c, Token) and c.type == kind]


class _Builder:
    """One callback per grammar rule; each returns the matching `nodes` object.

    Lark looks callbacks up by rule name, so this needs no lark base class.
    """

    # -- values --------------------------------------------------------------
    def string(self, c: list[Token]) -> n.Str:
        return n.Str(_pos(c[0]), _string(c[0]))

    def signed_int(self, c: list[Token]) -> n.Int:
        digits = c[-1]
        value = _int(digits)
        if len(c) == 2:
            return n.Int(n.Pos(c[0].line or 1, c[0].column or 1, len(digits) + 1), -value)
        return n.Int(_pos(digits), value)

    def float_lit(self, c: list[Token]) -> n.Float:
        return n.Float(_pos(c[0]), str(c[0]))

    def quantity(self, c: list[Token]) -> n.Quantity:
        return n.Quantity(_pos(c[0]), str(c[0]))

    def true(self, c: list[Token]) -> n.Bool:
        return n.Bool(_pos(c[0]), True)

    def false(self, c: list[Token]) -> n.Bool:
        return n.Bool(_pos(c[0]), False)

    def list_lit(self, c: list[Any]) -> n.List:
        return n.List(_pos(c[0]), tuple(c[1:]))

    def map_lit(self, c: list[Any]) -> n.Map:
        return n.Map(_pos(c[0]), tuple(c[1:]))

    def entry(self, c: list[Any]) -> n.Entry:
        key = c[0]
        name = _string(key) if key.type == "STRING" else str(key)
        return n.Entry(_pos(key), name, c[1])

    def call(self, c: list[Any]) -> n.Call:
        return n.Call(_pos(c[0]), str(c[0]), tuple(c[1:]))

    # -- filters -------------------------------------------------------------
    def path(self, c: list[Token]) -> n.Path:
        parts = tuple(_string(t) if t.type == "STRING" else str(t) for t in c)
        return n.Path(_pos(c[0]), parts)

    def compare(self, c: list[Any]) -> n.Compare:
        path: n.Path = c[0]
        if len(c) == 1:
            return n.Compare(path.pos, path, None, None)
        op = "not in" if len(c) == 4 else str(c[1])
        return n.Compare(path.pos, path, op, c[-1])

    def not_expr(self, c: list[Any]) -> n.Not:
        return n.Not(_pos(c[0]), c[1])

    def and_expr(self, c: list[Any]) -> n.BoolOp:
        return n.BoolOp(c[0].pos, "and", c[0], c[1])

    def or_expr(self, c: list[Any]) -> n.BoolOp:
        return n.BoolOp(c[0].pos, "or", c[0], c[1])

    # -- component fields ----------------------------------------------------
    def impl_ref(self, c: list[Token]) -> n.ImplRef:
        return n.ImplRef(_pos(c[0]), _string(c[1]), _pos(c[1]))

    def impl_entrypoint(self, c: list[Token]) -> n.ImplEntryPoint:
        return n.ImplEntryPoint(_pos(c[0]), _string(c[2]), _string(c[3]))

    def priority(self, c: list[Any]) -> n.Priority:
        return n.Priority(_pos(c[0]), c[1].value)

    def provides(self, c: list[Token]) -> n.Provides:
        return n.Provides(_pos(c[0]), tuple(str(t) for t in c[1:]))

    def requires(self, c: list[Token]) -> n.Requires:
        return n.Requires(
            _pos(c[0]), str(c[1]), _pos(c[1]), str(c[2]), _pos(c[2]), tuple(str(t) for t in c[3:])
        )

    def config(self, c: list[Any]) -> n.Config:
        return n.Config(_pos(c[0]), c[1])

    def health(self, c: list[Token]) -> n.Health:
        every = timeout = None
        for keyword, value in zip(c[1::2], c[2::2], strict=True):
            quantity = n.Quantity(_pos(value), str(value))
            if keyword.type == "EVERY":
                every = quantity
            else:
                timeout = quantity
        return n.Health(_pos(c[0]), every, timeout)

    def timeout(self, c: list[Token]) -> n.Timeout:
        return n.Timeout(_pos(c[0]), str(c[0]), n.Quantity(_pos(c[2]), str(c[2])))

    def on_topic(self, c: list[Token]) -> n.OnTopic:
        return n.OnTopic(_pos(c[0]), _string(c[1]))

    def where(self, c: list[Any]) -> n.Where:
        return n.Where(_pos(c[0]), c[1])

    def fanout(self, c: list[Token]) -> n.Fanout:
        return n.Fanout(_pos(c[0]), str(c[1]), _pos(c[1]))

    def retry(self, c: list[Token]) -> n.Retry:
        backoff = n.Quantity(_pos(c[3]), str(c[3])) if len(c) == 4 else None
        return n.Retry(_pos(c[0]), _int(c[1]), backoff)

    def concurrency(self, c: list[Token]) -> n.Concurrency:
        return n.Concurrency(_pos(c[0]), _int(c[1]))

    def node_task(self, c: list[Token]) -> n.NodeTask:
        return n.NodeTask(_pos(c[0]), str(c[1]))

    def node_timeout(self, c: list[Token]) -> n.NodeTimeout:
        return n.NodeTimeout(_pos(c[0]), n.Quantity(_pos(c[1]), str(c[1])))

    def node(self, c: list[Any]) -> n.Node:
        return n.Node(_pos(c[0]), str(c[1]), tuple(c[2:]))

    def edges(self, c: list[Token]) -> n.Edges:
        return n.Edges(_pos(c[0]), tuple((str(t), _pos(t)) for t in c))

    # -- declarations --------------------------------------------------------
    def component(self, c: list[Any]) -> n.Component:
        domain, key, provider = c[0], c[1], c[2]
        return n.Component(
            n.Pos(domain.line, domain.column, len(domain)),
            str(domain),
            _pos(domain),
            str(key),
            _string(provider),
            tuple(c[3:]),
        )

    def selection(self, c: list[Token]) -> n.Selection:
        return n.Selection(
            _pos(c[0]), str(c[1]), _pos(c[1]), str(c[2]), _pos(c[2]), _string(c[3]), _pos(c[3])
        )

    def capability(self, c: list[Token]) -> n.Capability:
        return n.Capability(
            _pos(c[0]),
            str(c[1]),
            _pos(c[1]),
            str(c[2]),
            _pos(c[2]),
            str(c[3]),
            _pos(c[3]),
            _string(c[4]),
            _pos(c[4]),
        )

    def plugins(self, c: list[Token]) -> n.Plugins:
        return n.Plugins(_pos(c[0]), _string(c[1]), _pos(c[1]))

    def condition(self, c: list[Token]) -> n.NotifyCondition:
        arg: n.Int | n.Quantity | None = None
        if len(c) > 1:
            arg = (
                n.Int(_pos(c[1]), _int(c[1]))
                if c[1].type == "INT"
                else n.Quantity(_pos(c[1]), str(c[1]))
            )
        return n.NotifyCondition(_pos(c[0]), str(c[0]), arg)

    def notify_when(self, c: list[Any]) -> n.NotifyWhen:
        return n.NotifyWhen(_pos(c[0]), tuple(c[1:]))

    def notify_send(self, c: list[Any]) -> n.NotifySend:
        return n.NotifySend(_pos(c[0]), str(c[1]), _pos(c[1]), c[2])

    def notify_rate(self, c: list[Token]) -> n.NotifyRate:
        return n.NotifyRate(
            _pos(c[0]), n.Int(_pos(c[1]), _int(c[1])), n.Quantity(_pos(c[3]), str(c[3]))
        )

    def notify(self, c: list[Any]) -> n.Notify:
        return n.Notify(_pos(c[0]), str(c[1]), tuple(c[2:]))

    def stack_decl(self, c: list[Any]) -> n.Stack:
        name: Token = c[0]
        items = c[1:]
        return n.Stack(
            _pos(name),
            str(name),
            tuple(i for i in items if isinstance(i, n.Component)),
            tuple(i for i in items if isinstance(i, n.Selection)),
            tuple(i for i in items if isinstance(i, n.Capability)),
            tuple(i for i in items if isinstance(i, n.Plugins)),
            tuple(i for i in items if isinstance(i, n.Notify)),
        )

    def layers(self, c: list[Token]) -> tuple[str, tuple[tuple[str, n.Pos], ...]]:
        return ("layers", tuple((str(t), _pos(t)) for t in c[1:]))

    def profile(self, c: list[Token]) -> tuple[str, tuple[str, n.Pos]]:
        return ("profile", (str(c[1]), _pos(c[1])))

    def target_decl(self, c: list[Any]) -> n.Target:
        layers: tuple[tuple[str, n.Pos], ...] = ()
        profile = None
        for kind, value in c[2:]:
            if kind == "layers":
                layers += value
            else:
                profile = value
        return n.Target(_pos(c[1]), str(c[1]), layers, profile)

    def import_decl(self, c: list[Token]) -> n.Import:
        return n.Import(_pos(c[0]), _string(c[0]))

    def header(self, c: list[Token]) -> tuple[int, n.Pos]:
        return _int(c[0]), _pos(c[0])

    def start(self, c: list[Any]) -> tuple[int, n.Pos, list[Any]]:
        (version, pos), items = c[0], c[1:]
        return version, pos, items


def _grammar_cache_file() -> str | bool:
    """Where lark may keep its analysed grammar (LALR tables), or False for nowhere.

    Building the tables with `strict=True` costs ~0.3 s; lark keys the file by a
    hash of the grammar and options and rebuilds it when either changes.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "oneiricc")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return False
    from lark import __version__

    return os.path.join(directory, f"grammar-lark{__version__}.cache")


@cache
def parser() -> Lark:
    """The LALR parser, built once per process (call before forking parse children)."""
    from lark import Lark

    from oneiricc._language.lexer import FastContextualLexer

    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        strict=True,
        transformer=_Builder(),
        maybe_placeholders=False,
        cache=_grammar_cache_file(),
        _plugins={"ContextualLexer": FastContextualLexer},
    )


_EXPECTED_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "an integer",
    "QUANTITY": "a duration or size",
    "LBRACE": '"{"',
    "RBRACE": '"}"',
    "LBRACKET": '"["',
    "RSQB": '"]"',
    "LPAR": '"("',
    "RPAR": '")"',
    "EQUAL": '"="',
    "COMMA": '","',
    "SEMICOLON": '";"',
    "_ARROW": '"->"',
    "DOT": '"."',
    "CMP": "a comparison",
    "MINUS": '"-"',
}


def _describe_expected(expected: set[str]) -> str:
    names = []
    for term in sorted(expected):
        if term in _EXPECTED_NAMES:
            names.append(_EXPECTED_NAMES[term])
        elif term.isupper() and not term.startswith("__"):
            names.append(f'"{term.lower()}"')
    # Punctuation first, then descriptions ("a name"), then keywords: the likely fix leads.
    names = sorted(set(names), key=lambda s: (s[:1] == '"' and s[1:2].isalpha(), s))
    if not names:
        return ""
    if len(names) > 6:
        return f"expected one of {', '.join(names[:6])}, …"
    return f"expected {' or '.join(names)}"


def _syntax_error(path: str, text: str, exc: UnexpectedInput) -> Diagnostic:
    from lark import Token
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    line = exc.line if isinstance(exc.line, int) and exc.line > 0 else 1
    col = exc.column if isinstance(exc.column, int) and exc.column > 0 else 1
    if isinstance(exc, UnexpectedCharacters):
        offset = exc.pos_in_stream or 0
        char = text[offset] if offset < len(text) else ""
        if char == '"':
            return Diagnostic(
                "E0002",
                "unterminated string",
                path,
                n.Pos(line, col),
                help='close the string with " on the same line',
            )
        shown = repr(char) if char.isprintable() and char else f"U+{ord(char or ' '):04X}"
        return Diagnostic("E0002", f"unexpected character {shown}", path, n.Pos(line, col))
    if isinstance(exc, UnexpectedEOF) or (
        isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
    ):
        expected = _describe_expected(set(exc.expected))
        body = text.rstrip()  # point just after the last token, on a line the snippet shows
        end_line = body.count("\n") + 1
        end_col = len(body) - (body.rfind("\n") + 1) + 1
        message = "unexpected end of file" + (f", {expected}" if expected else "")
        return Diagnostic("E0001", message, path, n.Pos(end_line, end_col))
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    previous = exc.state.value_stack[-1] if exc.state and exc.state.value_stack else None
    if isinstance(previous, Token) and previous.type == "NAME" and set(exc.expected) == {"_ARROW"}:
        # A name where a field starts parses as the first node of a workflow edge `a -> b`.
        return Diagnostic(
            "E0001",
            f'unknown field "{previous}"',
            path,
            _pos(previous),
            help=did_you_mean(str(previous), FIELD_NAMES)
            or f"fields are {', '.join(FIELD_NAMES)}; a workflow edge is `a -> b`",
        )
    expected = _describe_expected(set(exc.accepts or exc.expected))
    shown = f"string {tok}" if tok.type == "STRING" else f'"{tok}"'
    message = f"unexpected {shown}" + (f", {expected}" if expected else "")
    return Diagnostic("E0001", message, path, n.Pos(line, col, max(1, len(tok))))


def decode_source(path: str, data: bytes) -> str:
    """Bytes → text, or a diagnostic naming the first undecodable byte."""
    if len(data) > MAX_SOURCE_BYTES:
        raise CompileError(
            [
                Diagnostic(
                    "E0006",
                    f"file is {len(data)} bytes; the limit is {MAX_SOURCE_BYTES}",
                    path,
                )
            ]
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise CompileError(
            [
                Diagnostic(
                    "E0004",
                    f"source is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                    path,
                    n.Pos(line, col),
                    help="save the file as UTF-8",
                )
            ]
        ) from None


class SyntaxErrors(CompileError):
    """A file's syntax errors, with the syntax tree of what parses in it (`partial`,
    None when nothing does or the header is wrong) and what the build cannot know
    of it (`skipped`)."""

    def __init__(
        self, diagnostics: list[Diagnostic], partial: n.Module | None, skipped: Skipped
    ) -> None:
        super().__init__(diagnostics)
        self.partial = partial
        self.skipped = skipped


def parse(path: str, text: str) -> n.Module:
    """Parse one file.  Raises `SyntaxErrors` with every syntax error it finds."""
    outcome = _attempt(path, text)
    if isinstance(outcome, Diagnostic):
        raise _recovered(path, text, outcome)
    version, version_pos, items = outcome
    if version not in LANGUAGE_VERSIONS:
        raise SyntaxErrors([_unsupported(path, version, version_pos)], None, Skipped(opaque=True))
    return _module(path, version, version_pos, items)


def _module(path: str, version: int, version_pos: n.Pos, items: list[Any]) -> n.Module:
    return n.Module(
        path=path,
        version=version,
        version_pos=version_pos,
        imports=tuple(i for i in items if isinstance(i, n.Import)),
        stacks=tuple(i for i in items if isinstance(i, n.Stack)),
        targets=tuple(i for i in items if isinstance(i, n.Target)),
    )


def _unsupported(path: str, version: int, pos: n.Pos) -> Diagnostic:
    known = ", ".join(str(v) for v in LANGUAGE_VERSIONS)
    return Diagnostic(
        "E0005", f"unsupported language version {version}; this compiler knows {known}", path, pos
    )


def _attempt(path: str, text: str) -> tuple[int, n.Pos, list[Any]] | Diagnostic:
    """The parse of `text` (version, its place, the items), or its first syntax error."""
    from lark.exceptions import UnexpectedInput, UnexpectedToken

    try:
        result: tuple[int, n.Pos, list[Any]] = parser().parse(text)  # type: ignore[assignment]
    except _SoftError as exc:
        return Diagnostic(exc.code, str(exc), path, exc.pos, exc.help)
    except UnexpectedInput as exc:
        if isinstance(exc, UnexpectedToken) and isinstance(exc.__context__, _SoftError):
            soft = exc.__context__
            return Diagnostic(soft.code, str(soft), path, soft.pos, soft.help)
        return _syntax_error(path, text, exc)
    except RecursionError:
        return Diagnostic("E0006", "source is too deeply nested", path, n.Pos(1, 1))
    return result


def _recovered(path: str, text: str, first: Diagnostic) -> SyntaxErrors:
    """Every syntax error of a file whose parse failed at `first`, and what parses of it."""
    version = header_version(text)
    if version is None:
        if _lacks_header(text):
            first = Diagnostic(
                "E0005",
                "missing language version header",
                path,
                n.Pos(1, 1),
                help='start the file with "oneiric 1"',
            )
        return SyntaxErrors([first], None, Skipped(opaque=True))
    if version not in LANGUAGE_VERSIONS:
        return SyntaxErrors([_unsupported(path, version, n.Pos(1, 1))], None, Skipped(opaque=True))

    def attempt(masked: str) -> list[Any] | Diagnostic:
        outcome = _attempt(path, masked)
        return outcome if isinstance(outcome, Diagnostic) else outcome[2]

    errors, kept, skipped = recover(path, text, attempt)
    partial = None
    if kept is not None:
        outcome = _attempt(path, kept)
        if not isinstance(outcome, Diagnostic):
            partial = _module(path, *outcome)
    if not errors or partial is None:
        errors, skipped = errors or [first], Skipped(opaque=True)
    errors = sorted_diagnostics(errors)
    if partial is None or skipped.names:
        head = errors[0]
        note = Note(path, head.pos or n.Pos(1, 1), _skipped_note(skipped, partial is not None))
        errors[0] = replace(head, notes=(*head.notes, note))
    return SyntaxErrors(errors, partial, skipped)


def _skipped_note(skipped: Skipped, partial: bool) -> str:
    """What the build does without what does not parse: said once, on a file's first error."""
    if not partial:
        return "nothing of this file takes part in the build"
    names = ", ".join(skipped.names[:3]) + (", …" if len(skipped.names) > 3 else "")
    if skipped.opaque:
        return f"skipped for syntax errors: {names}; targets that see this file are not resolved"
    them = "it" if len(skipped.names) == 1 else "them"
    return f"skipped for syntax errors: {names}; the build goes on without {them}"


def _lacks_header(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return not stripped.startswith("oneiric")
    return True
