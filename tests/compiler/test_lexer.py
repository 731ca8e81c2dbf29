"""The compiler's lexer (`oneiricc.lexer`) against lark's own contextual lexer.

Both parse with the same grammar and build lark trees; every token (type,
text and position) must be the same, and on a syntax error the exception
must be the same (class, position, expected terminals, offending token).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from oneiricc._language.lexer import FastContextualLexer
from oneiricc._language.parser import grammar_text
from support import ROOT
from test_fuzz import TOKENS

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEMO_TEXTS = [path.read_text() for path in sorted((ROOT / "stacks").glob("*.oneiric"))]


@cache
def parsers() -> tuple[Lark, Lark]:
    options: dict[str, Any] = {"parser": "lalr", "lexer": "contextual", "strict": True}
    fast = Lark(grammar_text(), **options, _plugins={"ContextualLexer": FastContextualLexer})
    return Lark(grammar_text(), **options), fast


def _tokens(tree: Tree[Token]) -> list[tuple[object, ...]]:
    return [
        (t.type, str(t), t.start_pos, t.line, t.column, t.end_line, t.end_column, t.end_pos)
        for t in tree.scan_values(lambda v: isinstance(v, Token))
    ]


def _error(exc: UnexpectedInput) -> tuple[object, ...]:
    found: tuple[object, ...] = (type(exc).__name__, exc.line, exc.column, exc.pos_in_stream)
    if isinstance(exc, UnexpectedToken):
        found += (exc.token.type, str(exc.token), sorted(exc.expected))
    if isinstance(exc, UnexpectedCharacters):
        found += (sorted(exc.allowed), exc.char)
    return found


def _outcome(parser: Lark, text: str) -> tuple[str, object]:
    try:
        tree = parser.parse(text)
    except UnexpectedInput as exc:
        return "error", _error(exc)
    return "tree", (tree, _tokens(tree))


def assert_same(text: str) -> None:
    lark_own, fast = parsers()
    assert _outcome(fast, text) == _outcome(lark_own, text)


@pytest.mark.parametrize("index", range(len(DEMO_TEXTS)))
def test_the_demo_stacks_lex_alike(index: int) -> None:
    text = DEMO_TEXTS[index]
    assert _outcome(parsers()[1], text)[0] == "tree"
    assert_same(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "oneiric 1\n",
        "oneiric 1\n# a comment at the end",
        'oneiric 1\nstack s { adapter cache "redis" { activate timeout 5s } }\n',
        'oneiric 1\nstack s { adapter cache "redis" { activate timeouts 5s } }\n',
        'oneiric 1\nstack s { task t "p" { retry 3s } }',
        "oneiric 1\nstack select { }",
        'oneiric 1\nstack s { select adapter cache = "x" }',
        'oneiric 1\nstack s { event e "p" { on "t" where not payload.x in [1, 2] } }',
        "oneiric 1\nstack s { \x00 }",
        'oneiric 1\nstack s {\n  service x "y" { config { a = "unterminated\n} }',
        "oneiric1",
        "  \n\n oneiric 1 stack",
    ],
)
def test_edge_cases_lex_alike(text: str) -> None:
    assert_same(text)


@SETTINGS
@given(words=st.lists(st.sampled_from([*TOKENS, " ", "\n  ", "# note\n"]), max_size=60))
def test_token_soup_lexes_alike(words: list[str]) -> None:
    assert_same("oneiric 1\n" + " ".join(words))
    assert_same("".join(words))


@SETTINGS
@given(data=st.data())
def test_mutated_demo_lexes_alike(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(DEMO_TEXTS))
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        insert = data.draw(st.sampled_from(["", *TOKENS]))
        text = text[:start] + insert + text[end:]
    assert_same(text)
