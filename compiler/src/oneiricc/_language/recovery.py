"""Every syntax error of a file, and what of it still parses.

Runs only after the LALR parse of a whole file failed, so a file without
errors never pays for it.  A tolerant scanner (strings left open end at the
line's end, any character is a token) finds the file's structure from braces
alone: its top-level declarations (`import`, `stack`, `target`) and, inside a
stack, its items (a component or a selection, each starting a line or right
after the previous one).  A `stack`, `target` or `import` that starts a line
at column 1 inside an open brace starts a new declaration: the brace is
reported as never closed, at the brace, with the place parsing gave up as a
note.

Each declaration is then parsed alone, by the same parser, in a text made of
the header and that declaration at their own lines and columns (blank lines
and spaces stand for the rest), so positions are those of the file.  A stack
that fails is parsed item by item the same way, and a component that fails
field by field.  The first error of each piece is reported, and only that: an
error never cascades into the next piece.  Finally the pieces that parsed are
parsed together into the file's partial syntax tree, and what was skipped is
named (`Skipped`), so that the build can go on without it and stay quiet about
what it cannot know.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from oneiricc._language import nodes as n
from oneiricc._language.diagnostics import Diagnostic, Note

# At most this many syntax errors of one file are reported (a binary file, say).
MAX_ERRORS = 50

_TOKEN = re.compile(
    r"""(?P<skip>[ \t\r\f\v]+|\#[^\n]*)
      | (?P<nl>\n)
      | (?P<string>"(?:[^"\\\n]|\\[^\n])*"?)
      | (?P<word>[A-Za-z0-9_]+(?:[.\-][A-Za-z0-9_]+)*)
      | (?P<punct>->|[^\n])""",
    re.VERBOSE,
)
_TOP = frozenset({"import", "stack", "target"})
# Every component field keyword (checker.ALLOWED_FIELDS holds which domain takes which).
FIELD_NAMES = (
    "impl",
    "priority",
    "provides",
    "requires",
    "config",
    "health",
    "activate",
    "drain",
    "on",
    "where",
    "fanout",
    "retry",
    "concurrency",
    "node",
)


class _Tok(NamedTuple):
    kind: str  # "string", "word" or "punct"
    text: str
    start: int
    end: int
    line: int
    col: int
    first_on_line: bool


def _scan(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    line, line_start, first = 1, 0, True
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind == "skip":
            continue
        start = match.start()
        if kind == "nl":
            line, line_start, first = line + 1, start + 1, True
            continue
        assert kind is not None
        tokens.append(
            _Tok(kind, match.group(), start, match.end(), line, start - line_start + 1, first)
        )
        first = False
    return tokens


@dataclass(slots=True)
class _Piece:
    """A run of tokens parsed on its own: a declaration, a stack item or stray text."""

    kind: str  # "import", "stack", "target", "item" or "stray"
    tokens: list[_Tok]
    closers: int = 0  # braces left open at its end, closed for the parse
    gave_up: _Tok | None = None  # where a brace left open was noticed (None: the end)
    unclosed: _Tok | None = None  # the outermost brace left open

    def describe(self) -> str:
        words = [t.text for t in self.tokens[:3]]
        if self.kind in ("stack", "target") and len(words) > 1:
            return f"{words[0]} {words[1]}"
        if self.kind == "item" and len(words) == 3:
            return " ".join(words)
        if self.kind == "import" and len(words) > 1:
            return f"import {words[1]}"
        return f"the text at line {self.tokens[0].line}"


def _split(
    tokens: list[_Tok],
    starts: Callable[[int, _Tok | None], bool],
    resumes: Callable[[list[_Tok], int], bool],
) -> list[_Piece]:
    """Pieces at brace depth 0 of `tokens`; `starts(index, previous)` says where one begins.

    A brace left open ends its piece at a line that starts, no further right than
    the piece itself, with what `resumes` recognises as the start of the next one.
    """
    pieces: list[_Piece] = []
    current: _Piece | None = None
    opened: list[_Tok] = []
    previous: _Tok | None = None
    for index, tok in enumerate(tokens):
        if (
            opened
            and current is not None
            and tok.first_on_line
            and tok.col <= current.tokens[0].col
            and resumes(tokens, index)
        ):
            current.closers, current.unclosed, current.gave_up = len(opened), opened[0], tok
            opened = []
            current = None
        if current is None or (not opened and starts(index, previous)):
            kind = tok.text if tok.kind == "word" and tok.text in _TOP else "stray"
            current = _Piece(kind, [])
            pieces.append(current)
        current.tokens.append(tok)
        if tok.text == "{" and tok.kind == "punct":
            opened.append(tok)
        elif tok.text == "}" and tok.kind == "punct" and opened:
            opened.pop()
        elif tok.kind == "string" and (len(tok.text) == 1 or not tok.text.endswith('"')):
            # Left open: the braces it swallowed were most likely meant as braces.
            del opened[max(0, len(opened) - tok.text.count("}")) :]
        previous = tok
    if current is not None and opened:
        current.closers, current.unclosed = len(opened), opened[0]
    return pieces


def _starts_declaration(tokens: list[_Tok], index: int) -> bool:
    """`stack NAME {`, `target NAME {` or `import "..."` from `index` on."""
    tok = tokens[index]
    if tok.kind != "word" or tok.text not in _TOP:
        return False
    after = tokens[index + 1 : index + 3]
    if tok.text == "import":
        return bool(after) and after[0].kind == "string"
    return len(after) == 2 and after[0].kind == "word" and after[1].text == "{"


def _starts_item(tokens: list[_Tok], index: int) -> bool:
    """`DOMAIN KEY "provider"`, `select DOMAIN KEY =`, `capability DOMAIN KEY NAME =` or
    `plugins "group"` from `index` on."""
    kinds = [t.kind for t in tokens[index : index + 5]]
    if tokens[index].text == "select":
        return kinds[:4] == ["word", "word", "word", "punct"] and tokens[index + 3].text == "="
    if tokens[index].text == "capability":
        return kinds == ["word", "word", "word", "word", "punct"] and tokens[index + 4].text == "="
    if tokens[index].text == "notify":
        return kinds[:3] == ["word", "word", "punct"] and tokens[index + 2].text == "{"
    if tokens[index].text == "plugins" and kinds[:2] == ["word", "string"]:
        return True
    return kinds[:3] == ["word", "word", "string"]


def _top_level_start(tokens: list[_Tok]) -> Callable[[int, _Tok | None], bool]:
    def starts(index: int, previous: _Tok | None) -> bool:
        tok = tokens[index]
        if tok.kind == "word" and tok.text in _TOP:
            return True
        # After a complete declaration (a closing brace, an import's path) comes stray text.
        return previous is not None and (previous.text == "}" or previous.kind == "string")

    return starts


def _item_start(tokens: list[_Tok]) -> Callable[[int, _Tok | None], bool]:
    def starts(index: int, previous: _Tok | None) -> bool:
        tok = tokens[index]
        return tok.first_on_line or (previous is not None and previous.text in ("}", ";"))

    return starts


@dataclass(slots=True)
class Skipped:
    """What the build cannot know of a file whose syntax errors were skipped.

    `keys`: (domain, key) of each skipped component or selection; `providers`:
    (domain, key, provider) of each skipped component; `layers`: the stacks
    skipped whole; `opaque`: something skipped could have declared anything (an
    import, stray text, a stack whose name is lost), so targets that see the
    file are not resolved at all.
    """

    keys: set[tuple[str, str]] = field(default_factory=set)
    providers: set[tuple[str, str, str]] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)
    opaque: bool = False
    names: list[str] = field(default_factory=list)  # what was skipped, as a message names it

    @classmethod
    def union(cls, each: list[Skipped]) -> Skipped:
        return cls(
            {k for s in each for k in s.keys},
            {p for s in each for p in s.providers},
            {layer for s in each for layer in s.layers},
            any(s.opaque for s in each),
            [name for s in each for name in s.names],
        )


class _Text:
    """A text made of pieces of the source at their own lines and columns."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.line, self.col = 1, 1

    def add(self, start: int, end: int, line: int, col: int) -> None:
        if line > self.line:
            self.parts.append("\n" * (line - self.line) + " " * (col - 1))
        elif col > self.col:
            self.parts.append(" " * (col - self.col))
        else:  # (the closers of an earlier piece overran this line: columns shift)
            self.parts.append(" ")
        chunk = self.source[start:end]
        self.parts.append(chunk)
        newlines = chunk.count("\n")
        if newlines:
            self.line = line + newlines
            self.col = len(chunk) - chunk.rfind("\n")
        else:
            self.line, self.col = line, col + len(chunk)

    def add_tokens(self, tokens: list[_Tok]) -> None:
        if tokens:
            first, last = tokens[0], tokens[-1]
            self.add(first.start, last.end, first.line, first.col)

    def close(self, count: int) -> None:
        if count:
            self.parts.append(" " + "}" * count)
            self.col += count + 1

    def text(self) -> str:
        return "".join(self.parts) + "\n"


# What a parse of one text gives: its syntax tree's items, or the diagnostic of its
# first error.
Attempt = Callable[[str], "list[Any] | Diagnostic"]


def recover(
    path: str, source: str, attempt: Attempt
) -> tuple[list[Diagnostic], str | None, Skipped]:
    """The syntax errors of `source` (none found: []), the text of what parses in it
    (None: nothing) and what is skipped.  The file starts with its header
    (`header_version`); `attempt` parses one text."""
    tokens = _scan(source)
    header, body = tokens[:2], tokens[2:]
    skipped = Skipped()
    errors: list[Diagnostic] = []
    kept = _Text(source)
    kept.add_tokens(header)

    def text_of(*pieces: tuple[list[_Tok], int]) -> str:
        built = _Text(source)
        built.add_tokens(header)
        for toks, closers in pieces:
            built.add_tokens(toks)
            built.close(closers)
        return built.text()

    for piece in _split(body, _top_level_start(body), _starts_declaration):
        if len(errors) >= MAX_ERRORS:
            skipped.opaque = True
            break
        outcome = attempt(text_of((piece.tokens, piece.closers)))
        stack = piece.kind == "stack" and _stack_head(piece.tokens)
        # (A stack that leaves more than its own brace open: which items do, item by item.)
        if not isinstance(outcome, Diagnostic) and not (stack and piece.closers > 1):
            if piece.unclosed is not None:
                errors.append(_unclosed(path, piece))
            kept.add_tokens(piece.tokens)
            kept.close(piece.closers)
            continue
        if stack:
            failed = outcome if isinstance(outcome, Diagnostic) else None
            if _recover_stack(path, piece, failed, text_of, attempt, kept, errors, skipped):
                errors.append(_unclosed(path, piece))
            continue
        assert isinstance(outcome, Diagnostic)
        if piece.unclosed is not None and _named(piece):
            errors.append(_unclosed(path, piece))
        errors.append(outcome)
        skipped.names.append(piece.describe())
        # A target declares nothing that another declaration needs; nor does stray
        # punctuation.  Anything else could have declared anything.
        if piece.kind != "target" and any(t.kind != "punct" for t in piece.tokens):
            skipped.opaque = True
    if not errors:
        return [], None, skipped
    return errors, kept.text(), skipped


def _named(piece: _Piece) -> bool:
    """A declaration with its name: a brace it leaves open is a mistake of its own."""
    return len(piece.tokens) > 2 and piece.tokens[1].kind == "word" and piece.tokens[2].text == "{"


def _stack_head(tokens: list[_Tok]) -> bool:
    return len(tokens) >= 3 and tokens[1].kind == "word" and tokens[2].text == "{"


def _recover_stack(
    path: str,
    piece: _Piece,
    failed: Diagnostic | None,
    text_of: Callable[..., str],
    attempt: Attempt,
    kept: _Text,
    errors: list[Diagnostic],
    skipped: Skipped,
) -> bool:
    """Parse a stack that failed item by item; keep the items that parse.  True when
    the stack's own brace is left open."""
    head, rest = piece.tokens[:3], piece.tokens[3:]
    left_open = piece.unclosed is not None
    items = _split(rest, _item_start(rest), _starts_item)
    if not left_open and rest and rest[-1].text == "}":
        rest, items = rest[:-1], _split(rest[:-1], _item_start(rest), _starts_item)
    elif (
        left_open
        and any(item.gave_up is not None for item in items)
        and len(items[-1].tokens) == 1
        and items[-1].tokens[0].text == "}"
    ):
        # An item left its brace open and the stack's closing brace closed it: the
        # lone brace at the end is the stack's own after all.
        items.pop()
        left_open = piece.closers > 1
    good: list[_Piece] = []
    reported = False
    for item in items:
        item.kind = "item"
        if item.unclosed is not None and item.gave_up is None:
            item.gave_up = piece.gave_up  # (it ran to the end of the stack)
        outcome = attempt(text_of((head, 0), (item.tokens, item.closers + 1)))
        if not isinstance(outcome, Diagnostic):
            if item.unclosed is not None:
                errors.append(_unclosed(path, item))
                reported = True
            good.append(item)
            continue
        reported = True
        for error in _field_errors(item, head, outcome, text_of, attempt):
            if len(errors) < MAX_ERRORS:
                errors.append(error)
        skipped.names.append(item.describe())
        first = item.tokens[:4]
        kinds = [t.kind for t in first]
        if kinds[:3] == ["word", "word", "word"] and first[0].text == "select":
            skipped.keys.add((first[1].text, first[2].text))
        elif first[0].text in ("capability", "notify"):
            pass  # a binding or a route skipped: nothing else depends on it
        elif kinds[:3] == ["word", "word", "string"]:
            skipped.keys.add((first[0].text, first[1].text))
            skipped.providers.add((first[0].text, first[1].text, _unquoted(first[2].text)))
        else:
            skipped.opaque = True
    if not reported and not left_open and failed is not None:
        # It fails as a whole only (a stray brace, say).
        errors.append(failed)
        skipped.layers.add(head[1].text)
        skipped.names.append(piece.describe())
        return False
    kept.add_tokens(head)
    for item in good:
        kept.add_tokens(item.tokens)
        kept.close(item.closers)
    kept.close(1)
    return left_open


def _field_errors(
    item: _Piece,
    head: list[_Tok],
    failed: Diagnostic,
    text_of: Callable[..., str],
    attempt: Attempt,
) -> list[Diagnostic]:
    """The errors of a component that failed, field by field (a field starts a line with
    its keyword, or follows a `;` or a `}`): each field parsed alone in the component."""
    tokens = item.tokens
    if len(tokens) < 4 or [t.kind for t in tokens[:3]] != ["word", "word", "string"]:
        return [failed]
    if tokens[3].text != "{":
        return [failed]
    body = tokens[4:]
    if item.closers == 0 and body and body[-1].text == "}":
        body = body[:-1]

    def starts(index: int, previous: _Tok | None) -> bool:
        return (body[index].first_on_line and _starts_field(body, index)) or (
            previous is not None and previous.text in (";", "}")
        )

    found: dict[tuple[int, int], Diagnostic] = {}
    pieces = _split(body, starts, _starts_field)
    for index, piece in enumerate(pieces):
        outcome = attempt(text_of((head, 0), (tokens[:4], 0), (piece.tokens, piece.closers + 2)))
        if not isinstance(outcome, Diagnostic):
            continue
        if _place(outcome) > _end(piece.tokens[-1]):
            # It ran into the braces added to close it: the field ends too early.  Say so
            # where the source goes on (the next field, or the component's brace).
            if index + 1 < len(pieces):
                after, closers = pieces[index + 1].tokens, pieces[index + 1].closers + 2
            elif len(body) < len(tokens) - 4:
                after, closers = tokens[-1:], 1  # the component's closing brace
            else:
                continue
            outcome = attempt(
                text_of((head, 0), (tokens[:4], 0), (piece.tokens, 0), (after, closers))
            )
            if not isinstance(outcome, Diagnostic) or _place(outcome) != _place_of(after[0]):
                continue
        found.setdefault(_place(outcome), outcome)
    return list(found.values()) or [failed]


def _place(diagnostic: Diagnostic) -> tuple[int, int]:
    return (diagnostic.pos.line, diagnostic.pos.col) if diagnostic.pos else (0, 0)


def _place_of(tok: _Tok) -> tuple[int, int]:
    return (tok.line, tok.col)


def _end(tok: _Tok) -> tuple[int, int]:
    lines = tok.text.count("\n")
    return (tok.line + lines, tok.col + len(tok.text) if not lines else len(tok.text))


def _starts_field(tokens: list[_Tok], index: int) -> bool:
    """A field keyword, or the first name of a workflow edge `a -> b`."""
    tok = tokens[index]
    if tok.kind != "word":
        return False
    if tok.text in FIELD_NAMES:
        return True
    after = tokens[index + 1 : index + 2]
    return bool(after) and after[0].text == "->"


def _unquoted(string: str) -> str:
    return string[1:-1] if len(string) > 1 and string.endswith('"') else string[1:]


def _unclosed(path: str, piece: _Piece) -> Diagnostic:
    brace = piece.unclosed
    assert brace is not None
    where = f"{piece.describe()}, opened here,"
    if piece.gave_up is not None:
        gave_up = piece.gave_up
        note = Note(
            path,
            n.Pos(gave_up.line, gave_up.col, len(gave_up.text)),
            f"parsing gave up at `{gave_up.text}`",
        )
    else:
        last = piece.tokens[-1]
        note = Note(
            path,
            n.Pos(last.line, last.col + len(last.text)),
            "parsing gave up at the end of the file",
        )
    return Diagnostic(
        "E0007",
        f"{where} is never closed",
        path,
        n.Pos(brace.line, brace.col),
        help='add the missing "}"',
        notes=(note,),
    )


def header_version(source: str) -> int | None:
    """The version the file's header (`oneiric 1`, its first tokens) names, if it has one."""
    found: list[str] = []
    for match in _TOKEN.finditer(source):
        if match.lastgroup not in ("skip", "nl"):
            found.append(match.group())
            if len(found) == 2:
                break
    if len(found) < 2 or found[0] != "oneiric" or not found[1].isdigit() or len(found[1]) > 9:
        return None  # (a version too long to be one is the parser's to report)
    return int(found[1])
