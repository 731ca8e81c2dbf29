"""`oneiricc fmt`: one canonical layout for `.oneiric` sources, comments kept.

The style, in the manner of gofmt and ruff format:

* two-space indentation, one statement (declaration, field, map entry) per line;
* one space between tokens, none inside `(...)` / `[...]`, before `,`, or
  inside a path (`headers["x"]`); `;` separators are dropped;
* a block (`{ ... }`, `[ ... ]`) that the author wrote on one line stays on one
  line while it fits in 100 columns (fields then read `{ impl "m:a"; retry 3 }`);
  a block written over several lines is laid out one item per line, with a
  trailing comma in maps and lists;
* stacks are always expanded; top-level declarations are separated by one
  blank line; elsewhere up to one blank line written by the author is kept;
* comments stay where they were: a comment on its own line stays before the
  token it preceded, a comment after code stays at the end of that line.

The formatter works on lark's concrete syntax tree (every token kept), so its
output never depends on what the compiler's syntax tree drops.  As a safety
net (like black's) it re-parses its output and refuses to return text whose
syntax tree or comments differ from the input's.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lark import Lark, Token, Tree

from oneiricc._language import nodes as n
from oneiricc._language.parser import _grammar_cache_file, grammar_text, parse

WIDTH = 100
INDENT = "  "
_TIGHT_AFTER = frozenset({"(", "["})
_TIGHT_BEFORE = frozenset({",", ")", "]"})
_TIGHT_RULES = frozenset({"path", "signed_int"})
_BLOCK_STATEMENTS = frozenset({"component", "target_decl", "notify"})


class FormatterBug(RuntimeError):
    """The formatted text would not mean what the source meant (a bug: report it)."""


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    line: int
    blank_before: bool


@dataclass(slots=True)
class ConcreteTree:
    """A source's concrete syntax tree and its comments, attached to tokens."""

    tree: Tree[Token]
    comments: list[Comment]
    leading: dict[int, list[Comment]] = field(default_factory=dict)  # id(token) -> comments
    trailing: dict[int, list[Comment]] = field(default_factory=dict)
    blank_before: set[int] = field(default_factory=set)  # id(token) after a blank line
    eof: list[Comment] = field(default_factory=list)


# ------------------------------------------------------------------ parsing --

_collect_lock = threading.Lock()
_collected: list[Token] = []


@cache
def _cst_parser() -> Lark:
    cache_file = _grammar_cache_file()
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        strict=True,
        keep_all_tokens=True,
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _collected.append},
        cache=cache_file.replace(".cache", "-cst.cache") if isinstance(cache_file, str) else False,
    )


def concrete_tree(text: str) -> ConcreteTree:
    """Parse `text` keeping every token and comment (raises lark errors on bad syntax)."""
    with _collect_lock:
        _collected.clear()
        try:
            tree = _cst_parser().parse(text)
            raw = list(_collected)
        finally:
            _collected.clear()
    cst = ConcreteTree(tree, [])
    _attach_comments(cst, raw)
    return cst


def _attach_comments(cst: ConcreteTree, raw: list[Token]) -> None:
    """Give each comment a home: the token before it on its line, else the next real token."""
    tokens = list(cst.tree.scan_values(lambda v: isinstance(v, Token)))
    events: list[tuple[int, int, Token, bool]] = [
        (t.line or 1, t.column or 1, t, False) for t in tokens
    ]
    events += [(c.line or 1, c.column or 1, c, True) for c in raw]
    events.sort(key=lambda e: (e[0], e[1]))
    last_end = 0  # end line of the previous token or comment
    last_token: Token | None = None
    waiting: list[Comment] = []
    for line, _col, tok, is_comment in events:
        blank = last_end > 0 and line - last_end >= 2
        if is_comment:
            comment = Comment(str(tok).rstrip(), line, blank)
            cst.comments.append(comment)
            if last_token is not None and (last_token.end_line or 0) == line:
                if waiting and last_token.type in ("COMMA", "SEMICOLON"):
                    # Comments before a `,`/`;` that has its own: keep them in order.
                    cst.leading[id(last_token)] = waiting
                    waiting = []
                cst.trailing.setdefault(id(last_token), []).append(comment)
            else:
                waiting.append(comment)
        else:
            if blank:
                cst.blank_before.add(id(tok))
            if waiting and tok.type not in ("COMMA", "SEMICOLON"):
                cst.leading[id(tok)] = waiting
                waiting = []
            last_token = tok
        last_end = tok.end_line or line
    cst.eof = waiting


# ----------------------------------------------------------------- printing --


def _first_token(item: Tree[Token] | Token) -> Token:
    while isinstance(item, Tree):
        item = item.children[0]
    return item


def _last_token(item: Tree[Token] | Token) -> Token:
    while isinstance(item, Tree):
        item = item.children[-1]
    return item


def _one_line(open_tok: Token, close_tok: Token) -> bool:
    return open_tok.line == close_tok.line


class _Out:
    """Lines being written: indentation, pending end-of-line comments, blank lines."""

    def __init__(self, cst: ConcreteTree | None) -> None:
        self.cst = cst
        self.lines: list[str] = []
        self.line = ""
        self.level = 0
        self.pending: list[str] = []
        self.last = ""  # text of the last token written
        self.at_block_start = True

    def column(self) -> int:
        return len(self.line)

    def end_line(self) -> None:
        if not self.line.strip() and not self.pending:
            self.line = ""
            return
        text = self.line.rstrip()
        if self.pending:
            text = f"{text}  {'  '.join(self.pending)}" if text.strip() else text
            self.pending = []
        self.lines.append(text)
        self.line = ""

    def blank(self) -> None:
        self.end_line()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    def has_leading(self, tok: Token) -> bool:
        return self.cst is not None and id(tok) in self.cst.leading

    def _leading(self, tok: Token) -> list[Comment]:
        return self.cst.leading.pop(id(tok), []) if self.cst else []

    def _trailing(self, tok: Token) -> None:
        if self.cst:
            self.pending.extend(c.text for c in self.cst.trailing.pop(id(tok), []))

    def statement(self, first: Token, *, force_blank: bool = False) -> None:
        """Start a line at the block's indentation for a statement beginning with `first`."""
        self.end_line()
        comments = self._leading(first)
        blank_first = comments[0].blank_before if comments else self._blank(first)
        if not self.at_block_start and (force_blank or blank_first):
            self.blank()
        for index, comment in enumerate(comments):
            if index and comment.blank_before:
                self.blank()
            self.lines.append(INDENT * self.level + comment.text)
        if comments and self._blank(first):
            self.blank()
        self.at_block_start = False
        self.line = INDENT * self.level

    def _blank(self, tok: Token) -> bool:
        return self.cst is not None and id(tok) in self.cst.blank_before

    def _break(self) -> None:
        """Continue the current statement on a new line (a comment forced it)."""
        self.end_line()
        self.line = INDENT * (self.level + 2)

    def token(self, tok: Token, space: bool) -> None:
        comments = self._leading(tok)
        if comments:
            if self.line.strip():
                self._break()
            indent = self.line
            for comment in comments:
                self.lines.append(indent + comment.text)
        elif self.pending and self.line.strip() and str(tok) not in _TIGHT_BEFORE:
            self._break()
        self.text(str(tok), space)
        self._trailing(tok)

    def text(self, text: str, space: bool) -> None:
        if space and self.line.strip():
            self.line += " "
        self.line += text
        self.last = text

    def skip(self, tok: Token) -> None:
        """Drop a token (`;`, a redundant comma) but keep its comments."""
        for comment in self._leading(tok):
            self.pending.append(comment.text)
        self._trailing(tok)

    def close(self, tok: Token) -> None:
        """End an expanded block: comments before `}` stay inside it, then `}` on its own line."""
        self.end_line()
        for comment in self._leading(tok):
            if comment.blank_before and not self.at_block_start:
                self.blank()
            self.lines.append(INDENT * self.level + comment.text)
        self.level -= 1
        self.line = INDENT * self.level
        self.text(str(tok), False)
        self._trailing(tok)
        self.at_block_start = False

    def eof(self, comments: list[Comment]) -> None:
        self.end_line()
        for comment in comments:
            if comment.blank_before:
                self.blank()
            self.lines.append(comment.text)

    def result(self) -> str:
        self.end_line()
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n"


class _Printer:
    def __init__(self, cst: ConcreteTree | None, *, inline: bool = False) -> None:
        self.out = _Out(cst)
        self.inline = inline

    # -- measuring -----------------------------------------------------------
    def _width(self, item: Tree[Token]) -> int:
        """Columns `item` takes when printed on one line."""
        scratch = _Printer(None, inline=True)
        scratch.node(item, False)
        return len(scratch.out.line)

    def _keeps_one_line(
        self, item: Tree[Token], open_tok: Token, close_tok: Token, start: int, suffix: int
    ) -> bool:
        if self.inline:
            return True
        return _one_line(open_tok, close_tok) and start + self._width(item) + suffix <= WIDTH

    # -- generic sequences ---------------------------------------------------
    def _space(self, rule: str, tok: Token) -> bool:
        text = str(tok)
        if rule in _TIGHT_RULES or text in _TIGHT_BEFORE or self.out.last in _TIGHT_AFTER:
            return False
        return not (rule == "call" and text == "(")

    def seq(self, tree: Tree[Token], space: bool) -> None:
        for index, child in enumerate(tree.children):
            first = space if index == 0 else self._space(tree.data, _first_token(child))
            if isinstance(child, Token):
                if child.type == "SEMICOLON":
                    self.out.skip(child)
                else:
                    self.out.token(child, first)
            else:
                self.node(child, first)

    def node(self, tree: Tree[Token], space: bool, suffix: int = 0) -> None:
        if tree.data in ("map_lit", "list_lit"):
            self.collection(tree, space, suffix)
        elif tree.data == "node":
            self.workflow_node(tree, space)
        elif tree.data in _BLOCK_STATEMENTS:
            self.block_statement(tree, space)
        else:
            self.seq(tree, space)

    # -- blocks --------------------------------------------------------------
    def _open_index(self, tree: Tree[Token]) -> int:
        return next(
            i for i, c in enumerate(tree.children) if isinstance(c, Token) and c.type == "LBRACE"
        )

    def _fields(
        self, tree: Tree[Token], open_index: int, space: bool, start: int, suffix: int
    ) -> None:
        """`head { field; field }`: the head tokens, then the fields inline or one per line."""
        children = tree.children
        open_tok, close_tok = children[open_index], children[-1]
        assert isinstance(open_tok, Token)
        assert isinstance(close_tok, Token)
        body = children[open_index + 1 : -1]
        fields = [c for c in body if isinstance(c, Tree)]
        one_line = self._keeps_one_line(tree, open_tok, close_tok, start, suffix) or (
            not fields and not self.out.has_leading(close_tok)
        )
        self.seq(Tree(tree.data, children[: open_index + 1]), space)
        if one_line:
            for child in body:
                if isinstance(child, Token):
                    self.out.skip(child)
                    continue
                if child is not fields[0]:
                    self.out.text(";", False)
                self.node(child, True)
            self.out.token(close_tok, bool(fields))
            return
        self.out.level += 1
        self.out.at_block_start = True
        for child in body:
            if isinstance(child, Token):
                self.out.skip(child)
            else:
                self.out.statement(_first_token(child))
                self.node(child, False)
        self.out.close(close_tok)

    def block_statement(self, tree: Tree[Token], space: bool) -> None:
        self._fields(tree, self._open_index(tree), space, self.out.column(), 0)

    def workflow_node(self, tree: Tree[Token], space: bool) -> None:
        if len(tree.children) == 2:  # `node NAME` without a body
            self.seq(tree, space)
        else:
            self._fields(tree, 2, space, self.out.column(), 0)

    def collection(self, tree: Tree[Token], space: bool, suffix: int) -> None:
        """A map `{ k = v, ... }` or a list `[v, ...]`, inline or one item per line."""
        children = tree.children
        open_tok, close_tok = children[0], children[-1]
        assert isinstance(open_tok, Token)
        assert isinstance(close_tok, Token)
        start = self.out.column() + (1 if space and self.out.line.strip() else 0)
        is_map = tree.data == "map_lit"
        items: list[tuple[Tree[Token], Token | None]] = []
        for index, child in enumerate(children[1:-1], start=1):
            if isinstance(child, Tree):
                after = children[index + 1]
                comma = after if isinstance(after, Token) and after.type == "COMMA" else None
                items.append((child, comma))
        one_line = self._keeps_one_line(tree, open_tok, close_tok, start, suffix) or (
            not items and not self.out.has_leading(close_tok)
        )
        self.out.token(open_tok, space)
        if one_line:
            for index, (item, comma) in enumerate(items):
                self.node(item, is_map or index > 0)
                if comma is not None and index == len(items) - 1:
                    self.out.skip(comma)
                elif comma is not None:
                    self.out.token(comma, False)
                elif index < len(items) - 1:
                    self.out.text(",", False)
            self.out.token(close_tok, is_map and bool(items))
            return
        self.out.level += 1
        self.out.at_block_start = True
        for item, comma in items:
            self.out.statement(_first_token(item))
            if item.data == "entry":
                self.seq(Tree("entry", item.children[:-1]), False)
                value = item.children[-1]
                assert isinstance(value, Tree)
                self.node(value, True, suffix=1)
            else:
                self.node(item, False, suffix=1)
            if comma is not None:
                self.out.token(comma, False)
            else:
                self.out.text(",", False)
        self.out.close(close_tok)

    # -- the file ------------------------------------------------------------
    def stack(self, tree: Tree[Token]) -> None:
        children = tree.children
        self.seq(Tree("stack_decl", children[:3]), False)
        close_tok = children[-1]
        assert isinstance(close_tok, Token)
        items = [c for c in children[3:-1] if isinstance(c, Tree)]
        if not items and not self.out.has_leading(close_tok):
            self.out.token(close_tok, False)
            return
        self.out.level += 1
        self.out.at_block_start = True
        for item in items:
            self.out.statement(_first_token(item))
            self.node(item, False)
        self.out.close(close_tok)

    def file(self, tree: Tree[Token], eof: list[Comment]) -> str:
        header, *items = tree.children
        assert isinstance(header, Tree)
        self.out.statement(_first_token(header))
        self.seq(header, False)
        for item in items:
            assert isinstance(item, Tree)
            self.out.statement(_first_token(item), force_blank=item.data != "import_decl")
            if item.data == "stack_decl":
                self.stack(item)
            else:
                self.node(item, False)
        self.out.eof(eof)
        return self.out.result()


# ------------------------------------------------------------------- public --


def shape(value: Any) -> Any:
    """A syntax tree with every position removed: what the source means, not where."""
    if isinstance(value, n.Pos):
        return None
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (type(value).__name__, *(shape(v) for v in value if not isinstance(v, n.Pos)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            *(
                shape(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), n.Pos)
            ),
        )
    if isinstance(value, tuple | list):
        return tuple(shape(v) for v in value if not isinstance(v, n.Pos))
    return value


# What the lexer sees as a string or a comment: nothing else can hold `"` or `#`.
_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*')


def _comment_words(texts: list[str]) -> list[str]:
    """Every word of every comment, in order (two comments may end up joined on one line)."""
    return " ".join(texts).split()


def format_source(path: str, text: str) -> str:
    """`text` in canonical style.

    Raises `CompileError` when the source does not parse (the same diagnostic
    `check` gives) and `FormatterBug` if the result would mean something else.
    """
    module = parse(path, text)
    cst = concrete_tree(text)
    comments = _comment_words([c.text for c in cst.comments])
    result = _Printer(cst).file(cst.tree, cst.eof)
    again = parse(path, result)
    if shape(again) != shape(module):
        raise FormatterBug(f"{path}: formatting would change the meaning of the file")
    found = [m.group(0) for m in _STRING_OR_COMMENT.finditer(result) if m.group(0)[0] == "#"]
    if _comment_words(found) != comments:
        raise FormatterBug(f"{path}: formatting would lose or reorder comments")
    return result
