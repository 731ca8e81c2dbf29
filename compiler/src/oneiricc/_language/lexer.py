"""Lark's contextual lexer, with the work of each token done in one regex match.

Lark's `ContextualLexer` keeps one lexer for each set of terminals the parser
may accept next, and matches one terminal at a time: every run of blanks and
every comment is a token of its own, matched, counted and thrown away in
Python, and each state's lexer compiles its own regexes on first use (~40 of
them, a few ms of every process's first parse).

This subclass gives the same tokens (positions included) a third faster.  One
pattern, compiled once, skips the ignored terminals and matches the next token
among all terminals in lark's order; lines are counted with `str.count`.  The
token it finds is the one the state's own lexer would find whenever the state
accepts it: no terminal ahead of it in lark's order matched.  Then, as lark
does, a NAME-like token that spells a keyword this state accepts becomes that
keyword.  Where the state does not accept the token (the first `oneiric` of a
file; `timeout` after `activate`), the state's own pattern is used, compiled
on first need.  Where neither finds a token (the end of the text, or a syntax
error) lark's own loop takes over, and raises the very exception it always does.
`tests/compiler/test_lexer.py` compares the two on generated and mutated sources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lark.lexer import (
    AbstractBasicLexer,
    BasicLexer,
    ContextualLexer,
    LexerState,
    PatternRE,
    PatternStr,
    TerminalDef,
    Token,
)

if TYPE_CHECKING:
    from lark.parsers.lalr_parser_state import ParserState

_new_str = str.__new__
_Matcher = Callable[[str, int], "re.Match[str] | None"]  # a compiled pattern's match


def _regex(
    terminals: Sequence[TerminalDef], ignored: Sequence[TerminalDef], flags: int
) -> _Matcher:
    # The skip is atomic: blanks are never given back, so a failed match costs one pass.
    skip = "|".join(t.pattern.to_regexp() for t in ignored)
    alternatives = "|".join(f"(?P<{t.name}>{t.pattern.to_regexp()})" for t in terminals)
    return re.compile(f"(?>(?:{skip})*)(?:{alternatives})", flags).match


@dataclass(slots=True)
class _State:
    """What one state's lexer would do: lark's `_create_unless`, without its regexes."""

    terminals: list[TerminalDef]  # in lark's order, keywords a NAME-like terminal spells removed
    accepted: frozenset[str]
    keywords: dict[str, dict[str, str]]  # by terminal: the keywords it may spell, by text
    ignored: list[TerminalDef]
    flags: int
    _own: _Matcher | None = field(default=None)

    def own(self) -> _Matcher:
        """The state's own pattern (compiled on first need)."""
        if self._own is None:
            self._own = _regex(self.terminals, self.ignored, self.flags)
        return self._own


class FastContextualLexer(ContextualLexer):
    """Plug in with `Lark(..., _plugins={"ContextualLexer": FastContextualLexer})`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        root = self.root_lexer
        assert isinstance(root, BasicLexer)
        self._root = root
        self._states: dict[int, _State | None] = {}
        # Which regex terminals spell each keyword in full (lark's condition for the rule).
        self._spelled_by: dict[str, set[str]] = {}
        fast = not root.user_callbacks and not root.use_bytes
        for keyword in root.terminals:
            if not isinstance(keyword.pattern, PatternStr):
                continue
            if keyword.pattern.flags:  # (a case-insensitive keyword: not looked up by text)
                fast = False
            self._spelled_by[keyword.name] = {
                t.name
                for t in root.terminals
                if isinstance(t.pattern, PatternRE)
                and t.priority == keyword.priority
                and _spells(t, keyword.pattern.value, root.g_regex_flags)
            }
        every = self._state(root)
        # One pattern for every state; None where only lark's loop may lex.
        self._match = every.own() if every is not None and fast else None

    def _state(self, lexer: AbstractBasicLexer) -> _State | None:
        if not isinstance(lexer, BasicLexer):
            return None
        names = {t.name for t in lexer.terminals}
        keywords: dict[str, dict[str, str]] = {}
        spelled: set[str] = set()
        for t in lexer.terminals:
            spellers = self._spelled_by.get(t.name, set()) & names
            for speller in spellers:
                keywords.setdefault(speller, {})[t.pattern.value] = t.name
            if spellers:  # (no flags anywhere, else the fast path is off)
                spelled.add(t.name)
        terminals = [
            t for t in lexer.terminals if t.name not in spelled and t.name not in lexer.ignore_types
        ]
        ignored = [t for t in lexer.terminals if t.name in lexer.ignore_types]
        if not terminals:
            return None
        accepted = frozenset(t.name for t in terminals)
        return _State(terminals, accepted, keywords, ignored, lexer.g_regex_flags)

    def lex(self, lexer_state: LexerState, parser_state: ParserState[int]) -> Iterator[Token]:
        source = lexer_state.text
        line_counter = lexer_state.line_ctr
        text = source.text
        if (
            self._match is not None
            and isinstance(text, str)
            and (source.start, source.end) == (0, len(text))  # the whole text, not a slice
        ):
            count, rindex = text.count, text.rindex
            pos, line, line_start = (
                line_counter.char_pos,
                line_counter.line,
                line_counter.line_start_pos,
            )
            match, states, lexers = self._match, self._states, self.lexers
            newline_types, last = self._root.newline_types, None
            while True:
                number = parser_state.position
                try:
                    state = states[number]
                except KeyError:
                    state = states[number] = self._state(lexers[number])
                if state is None:
                    break
                found = match(text, pos)
                if found is None:
                    break
                if found.lastgroup not in state.accepted:
                    found = state.own()(text, pos)  # what this state alone accepts
                    if found is None:
                        break
                type_ = found.lastgroup
                if type_ is None:  # (every alternative is a named group)
                    break
                start, end = found.span(type_)
                if start > pos:  # skipped blanks and comments
                    newlines = count("\n", pos, start)
                    if newlines:
                        line += newlines
                        line_start = rindex("\n", pos, start) + 1
                value = found.group(type_)
                spelled = state.keywords.get(type_)
                if spelled is not None:
                    type_ = spelled.get(value, type_)
                token = _new_str(Token, value)  # Token's own __new__ is two Python calls
                token.type, token.value, token.start_pos = type_, value, start
                token.line, token.column = line, start - line_start + 1
                if type_ in newline_types:
                    newlines = count("\n", start, end)
                    if newlines:
                        line += newlines
                        line_start = rindex("\n", start, end) + 1
                token.end_line, token.end_column, token.end_pos = line, end - line_start + 1, end
                pos, last = end, token
                yield token
            # Where lark takes over, its counter and last token are where this loop stopped.
            line_counter.char_pos, line_counter.line = pos, line
            line_counter.line_start_pos, line_counter.column = line_start, pos - line_start + 1
            if last is not None:
                lexer_state.last_token = last
        yield from super().lex(lexer_state, parser_state)


def _spells(terminal: TerminalDef, text: str, flags: int) -> bool:
    found = re.match(terminal.pattern.to_regexp(), text, flags)
    return found is not None and found.group(0) == text
