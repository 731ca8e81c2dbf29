"""The TextMate grammar highlights every keyword of the lark grammar."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from oneiric._plan.model import DOMAINS
from support import ROOT

GRAMMAR = json.loads((ROOT / "editors" / "oneiric.tmLanguage.json").read_text())
HIGHLIGHT = ("keyword.", "storage.", "support.", "constant.language.")


def _lark_keywords() -> list[str]:
    """Every word-like string literal of grammar/oneiric.lark ("stack", SELECT: "select", ...)."""
    text = (ROOT / "grammar" / "oneiric.lark").read_text()
    code = "\n".join(line.split("//")[0] for line in text.splitlines())
    return sorted(set(re.findall(r'"([a-z]+)"', code)))


def _patterns(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "match" in node:
            yield node
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def _highlighted(word: str, sample: str) -> bool:
    for pattern in _patterns(GRAMMAR["repository"]):
        for match in re.finditer(pattern["match"], sample):
            if match.group(0) == word and pattern.get("name", "").startswith(HIGHLIGHT):
                return True
            for index, capture in pattern.get("captures", {}).items():
                if match.group(int(index)) == word and capture["name"].startswith(HIGHLIGHT):
                    return True
    return False


def test_the_lark_grammar_has_the_keywords_we_expect() -> None:
    keywords = _lark_keywords()
    assert {"oneiric", "stack", "target", "select", "impl", "and", "or", "not"} <= set(keywords)
    assert len(keywords) >= 28


@pytest.mark.parametrize("word", [*_lark_keywords(), *DOMAINS])
def test_every_keyword_is_highlighted(word: str) -> None:
    sample = "oneiric 1" if word == "oneiric" else f"  {word} name "
    assert _highlighted(word, sample), f"{word!r} has no keyword scope in the TextMate grammar"


def test_patterns_compile_and_scopes_are_namespaced() -> None:
    for pattern in _patterns(GRAMMAR):
        re.compile(pattern["match"])
        names = [pattern.get("name")] + [c["name"] for c in pattern.get("captures", {}).values()]
        assert all(n.endswith(".oneiric") for n in names if n), pattern
    assert GRAMMAR["scopeName"] == "source.oneiric"


def test_comments_strings_and_quantities() -> None:
    assert _scope("# note", "# note") == "comment.line.number-sign.oneiric"
    assert _scope("30s", "ttl = 30s") == "constant.numeric.quantity.oneiric"
    assert _scope("64MiB", "x = 64MiB") == "constant.numeric.quantity.oneiric"


def _scope(word: str, sample: str) -> str | None:
    for pattern in _patterns(GRAMMAR["repository"]):
        match = re.search(pattern["match"], sample)
        if match and match.group(0) == word and "name" in pattern:
            return str(pattern["name"])
    return None


def test_vscode_extension_points_at_the_grammar() -> None:
    manifest = json.loads((ROOT / "editors" / "vscode" / "package.json").read_text())
    (grammar,) = manifest["contributes"]["grammars"]
    path = ROOT / "editors" / "vscode" / grammar["path"]
    assert json.loads(path.read_text()) == GRAMMAR
    assert grammar["scopeName"] == GRAMMAR["scopeName"]
    assert manifest["contributes"]["languages"][0]["extensions"] == [".oneiric"]
