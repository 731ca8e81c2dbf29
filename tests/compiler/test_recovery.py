"""Every error at once: the parser recovers, and a syntax error hides nothing else.

The recovering parser (`oneiricc._language.recovery`) runs only after a file's
parse failed.  Hypothesis checks that it never crashes, always reports at
least one error for a broken file and never one for a valid file, and that a
mistake in one component costs that component alone.  The corpus tests seed
several independent mistakes across files and require one build to report
each of them, and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oneiricc._language import nodes as n
from oneiricc._language.parser import SyntaxErrors, parse
from support import compile_at, write_project
from test_fuzz import DEMO, TOKENS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _components(module: n.Module) -> list[tuple[str, str, str, int]]:
    return [(c.domain, c.key, c.provider, c.pos.line) for s in module.stacks for c in s.components]


def _outcome(text: str) -> n.Module | SyntaxErrors:
    try:
        return parse("stacks/main.oneiric", text)
    except SyntaxErrors as err:
        return err


# ------------------------------------------------------------ the parser --


@SETTINGS
@given(
    name=st.sampled_from(sorted(DEMO)),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.integers(0, 30), st.sampled_from([*TOKENS, ""])),
        min_size=1,
        max_size=4,
    ),
)
def test_recovery_never_crashes_and_reports_a_broken_file(
    name: str, edits: list[tuple[float, int, str]]
) -> None:
    text = DEMO[name]
    for where, length, token in edits:
        start = int(where * len(text))
        text = text[:start] + token + text[start + length :]
    outcome = _outcome(text)
    if isinstance(outcome, n.Module):
        return  # the edits left a valid file
    assert outcome.diagnostics, "a broken file has at least one error"
    lines = text.count("\n") + 1
    for diag in outcome.diagnostics:
        assert diag.file == "stacks/main.oneiric"
        assert diag.pos is not None
        assert 1 <= diag.pos.line <= lines, diag
    if outcome.partial is not None:
        # What parses keeps its own places: every kept component is in the text there.
        source_lines = text.splitlines()
        for _, key, provider, line in _components(outcome.partial):
            assert f'"{provider}"' in source_lines[line - 1] or key in source_lines[line - 1]


@SETTINGS
@given(name=st.sampled_from(sorted(DEMO)))
def test_valid_files_have_no_error(name: str) -> None:
    assert isinstance(_outcome(DEMO[name]), n.Module)


# (the line, broken, the code, how many lines further down the error is reported)
MISTAKES = [
    ("    provides read", "    provide read", "E0001", 0),  # an unknown field
    ('    impl "sys:exit"', '    impl "sys:exit', "E0002", 0),  # an unterminated string
    ("    priority 3", "    priority @3", "E0002", 0),  # a stray character
    ("    priority 3", "    priority", "E0001", 1),  # a missing value: at the next token
    ("    config { level = 6 }", '    config { level = "\\q" }', "E0003", 0),  # a bad escape
]


def _stack(count: int) -> str:
    parts = ["oneiric 1", "", "stack s {"]
    for index in range(count):
        parts += [
            f'  adapter k{index} "p" {{',
            '    impl "sys:exit"',
            "    priority 3",
            "    provides read",
            "    config { level = 6 }",
            "  }",
        ]
    return "\n".join([*parts, "}", "", "target t { layers s }", ""])


@SETTINGS
@given(
    count=st.integers(2, 12),
    broken=st.sets(st.integers(0, 11), min_size=1, max_size=4),
    mistake=st.sampled_from(MISTAKES),
)
def test_a_mistake_costs_its_component_alone(
    count: int, broken: set[int], mistake: tuple[str, str, str, int]
) -> None:
    """One error per broken component, at its line; every other component is kept."""
    good, bad, code, below = mistake
    broken = {i for i in broken if i < count}
    lines = _stack(count).split("\n")
    expected_lines = []
    for index in sorted(broken):
        first = 3 + index * 6
        for offset in range(6):
            if lines[first + offset] == good:
                lines[first + offset] = bad
                expected_lines.append(first + offset + 1 + below)
                break
    outcome = _outcome("\n".join(lines))
    if not broken:
        assert isinstance(outcome, n.Module)
        return
    assert isinstance(outcome, SyntaxErrors)
    assert [(d.code, d.pos.line if d.pos else 0) for d in outcome.diagnostics] == [
        (code, line) for line in expected_lines
    ]
    assert outcome.partial is not None
    kept = {key for _, key, _, _ in _components(outcome.partial)}
    assert kept == {f"k{i}" for i in range(count)} - {f"k{i}" for i in broken}
    assert [t.name for t in outcome.partial.targets] == ["t"]
    assert outcome.skipped.keys == {("adapter", f"k{i}") for i in broken}
    assert not outcome.skipped.opaque


def test_unclosed_stack_is_reported_at_its_brace() -> None:
    lines = _stack(8).split("\n")
    lines.remove("}")  # the stack's own closing brace, opened at line 3
    outcome = _outcome("\n".join(lines))
    assert isinstance(outcome, SyntaxErrors)
    [diag] = outcome.diagnostics
    assert (diag.code, diag.message) == ("E0007", "stack s, opened here, is never closed")
    assert diag.pos == n.Pos(3, 9)
    [note] = diag.notes
    assert (note.pos.line, note.message) == (lines.index("target t { layers s }") + 1,
                                             "parsing gave up at `target`")  # fmt: skip
    assert outcome.partial is not None
    assert len(_components(outcome.partial)) == 8  # nothing else is lost


def test_unclosed_component_is_reported_at_its_brace() -> None:
    lines = _stack(4).split("\n")
    del lines[3 + 6 + 5]  # the closing brace of k1, opened at line 10
    outcome = _outcome("\n".join(lines))
    assert isinstance(outcome, SyntaxErrors)
    [diag] = outcome.diagnostics
    assert (diag.code, diag.pos) == ("E0007", n.Pos(10, 18))
    assert diag.message == 'adapter k1 "p", opened here, is never closed'
    assert outcome.partial is not None
    assert {key for _, key, _, _ in _components(outcome.partial)} == {"k0", "k1", "k2", "k3"}


def test_errors_in_several_declarations_of_one_file() -> None:
    text = "\n".join(
        [
            "oneiric 1",
            "import base.oneiric",  # not a string
            'stack a { adapter x "p" { impl "sys:exit" priority } }',
            'stack b { adapter y "p" { impl "sys:exit" } }',
            "target t { layers a, b; profle x }",
            "stak c { }",
            "",
        ]
    )
    outcome = _outcome(text)
    assert isinstance(outcome, SyntaxErrors)
    assert [(d.code, d.pos.line if d.pos else 0) for d in outcome.diagnostics] == [
        ("E0001", 2),
        ("E0001", 3),
        ("E0001", 5),
        ("E0001", 6),
    ]
    assert outcome.skipped.opaque  # an import is lost: nothing is known of what it brought
    assert "skipped for syntax errors" in outcome.diagnostics[0].notes[-1].message


# ------------------------------------------------------ whole builds ----


def _codes_at(root: Path) -> list[tuple[str, str, int]]:
    build = compile_at(root)
    return [(d.code, d.file or "", d.pos.line if d.pos else 0) for d in build.diagnostics]


def test_three_mistakes_of_different_stages_in_one_build(tmp_path: Path) -> None:
    """A selection typo, an unknown workflow task and a missing module: all three."""
    app = """oneiric 1

stack app {
  adapter cache "memory" { impl "argparse:Namespace" provides read, write }
  adapter cache "redis" { impl "collections:Counter" priority 5 }
  service orders "default" { impl "nosuchmodule.orders:Orders" requires adapter cache (write) }
  task validate "default" { impl "json:loads" }
  workflow flow "default" {
    node a { task validat }
    node b { task validate }
    a -> b
  }
  select adapter cache = "memroy"
}

target dev { layers app }
"""
    root = write_project(tmp_path, {"stacks/app.oneiric": app})
    assert _codes_at(root) == [
        ("E0602", "stacks/app.oneiric", 6),
        ("E0303", "stacks/app.oneiric", 9),
        ("E0203", "stacks/app.oneiric", 13),
    ]


def test_what_the_planner_checks_is_reported_beside_resolution_errors(tmp_path: Path) -> None:
    """A component without implementation, an event without topic and subscriptions that
    disagree on fan-out (the planner's checks) are reported with a selection typo of the
    same target, which makes no plan."""
    app = """oneiric 1

stack app {
  adapter cache "memory" { impl "argparse:Namespace" }
  task job "default" { priority 3 }
  event audit "default" { impl "json:loads" }
  event first "default" { impl "json:loads" on "orders" fanout exclusive }
  event second "default" { impl "json:loads" on "orders" }
  select adapter cache = "memroy"
}

target dev { layers app }
"""
    root = write_project(tmp_path, {"stacks/app.oneiric": app})
    assert _codes_at(root) == [
        ("E0105", "stacks/app.oneiric", 5),
        ("E0107", "stacks/app.oneiric", 6),
        ("E0107", "stacks/app.oneiric", 7),
        ("E0203", "stacks/app.oneiric", 9),
    ]
    served = compile_at(root, use_cache=True)  # the incremental build reports the same
    assert [(d.code, d.pos.line if d.pos else 0) for d in served.diagnostics] == [
        (code, line) for code, _, line in _codes_at(root)
    ]


def test_what_a_missing_layer_or_skipped_refinement_could_give_is_not_asked_for(
    tmp_path: Path,
) -> None:
    """A task whose implementation, an event whose topic, a factory whose required config a
    later layer gives: when that layer is unknown, or its refinement did not parse, no
    E0105, E0107 or E0703 restates that error."""
    base = """oneiric 1

stack base {
  task job "default" { priority 3 }
  event audit "default" { impl "json:loads" }
  adapter point "tuple" { impl "collections:namedtuple"; config { typename = "Point" } }
}
"""
    app = """oneiric 1
import "base.oneiric"

stack app {
  task job "default" { impl "json:loads" retry }
  event audit "default" { on "orders" }
  adapter point "tuple" { config { field_names = "x y" } }
}

target dev { layers base, app }
target prod { layers base, apps }
"""
    root = write_project(tmp_path, {"stacks/base.oneiric": base, "stacks/app.oneiric": app})
    assert _codes_at(root) == [
        ("E0001", "stacks/app.oneiric", 5),
        ("E0201", "stacks/app.oneiric", 11),
    ]


def test_a_value_a_missing_layer_could_replace_is_not_reported(tmp_path: Path) -> None:
    """A config value that does not fit (E0704), which a later layer replaces (an `env()`
    reference may replace a value of any kind): when that layer is unknown (prod) or its
    refinement did not parse (dev), it is not reported.  An unknown key (E0702) is, in
    both: no layer can take a key away."""
    base = """oneiric 1

stack base {
  adapter cache "memory" {
    impl "oneiric.adapters.memory:MemoryCache"
    config { ttl = "5m", max_entrys = 5 }
  }
}
"""
    app = """oneiric 1
import "base.oneiric"

stack app {
  adapter cache "memory" { config { ttl = env("CACHE_TTL", 5m) } priority }
}

target dev { layers base, app }
target prod { layers base, apps }
"""
    root = write_project(tmp_path, {"stacks/base.oneiric": base, "stacks/app.oneiric": app})
    expected = [
        ("E0001", "stacks/app.oneiric", 5),
        ("E0201", "stacks/app.oneiric", 9),
        ("E0702", "stacks/base.oneiric", 6),  # (once for both targets)
    ]
    assert _codes_at(root) == expected
    served = compile_at(root, use_cache=True)  # the incremental build reports the same
    assert [(d.code, d.file, d.pos.line if d.pos else 0) for d in served.diagnostics] == expected
    # With the refinement parsing and its layer named, the value is replaced: no E0704.
    (root / "stacks/app.oneiric").write_text(
        app.replace(" priority }", " }").replace("base, apps", "base, app"), encoding="utf-8"
    )
    assert _codes_at(root) == [("E0702", "stacks/base.oneiric", 6)]
    # Without the refinement, the value is the one dev checks: E0704 (prod still lacks apps).
    (root / "stacks/app.oneiric").write_text(
        app.replace('config { ttl = env("CACHE_TTL", 5m) } priority', "priority 1"),
        encoding="utf-8",
    )
    assert _codes_at(root) == [
        ("E0201", "stacks/app.oneiric", 9),
        ("E0704", "stacks/base.oneiric", 6),
        ("E0702", "stacks/base.oneiric", 6),
    ]


def test_four_mistakes_across_two_files(tmp_path: Path) -> None:
    """An unknown field, an unterminated string, a missing module, a selection typo."""
    base = """oneiric 1

stack base {
  adapter cache "memory" {
    impl "argparse:Namespace"
    provides read, write
    priorty 10
  }
  adapter cache "redis" { impl "collections:Counter" provides read, write }
  service orders "default" {
    impl "json:loads
    requires adapter cache (write)
  }
  adapter database "sqlite" { impl "nosuch.db:SQLite" }
}
"""
    app = """oneiric 1
import "base.oneiric"

stack app {
  service billing "default" { impl "argparse:Namespace"; requires adapter cache (write) }
  select adapter cache = "rediss"
}

target dev { layers base, app }
"""
    root = write_project(tmp_path, {"stacks/base.oneiric": base, "stacks/app.oneiric": app})
    assert _codes_at(root) == [
        ("E0203", "stacks/app.oneiric", 6),
        ("E0001", "stacks/base.oneiric", 7),
        ("E0002", "stacks/base.oneiric", 11),
        ("E0602", "stacks/base.oneiric", 14),
    ]


def test_what_a_skipped_declaration_could_cause_is_not_reported(tmp_path: Path) -> None:
    """A selection of, and a requirement on, a component that did not parse: silent."""
    base = """oneiric 1

stack base {
  adapter cache "memory" { impl "json:loads" provides read, write priority }
}
"""
    app = """oneiric 1
import "base.oneiric"

stack app {
  service orders "default" { impl "argparse:Namespace"; requires adapter cache (write) }
  select adapter cache = "memory"
}

target dev { layers base, app }
"""
    root = write_project(tmp_path, {"stacks/base.oneiric": base, "stacks/app.oneiric": app})
    assert _codes_at(root) == [("E0001", "stacks/base.oneiric", 4)]


@dataclass(frozen=True)
class Seeded:
    """One mistake: in which file of the corpus, the text it replaces, its code."""

    file: str
    good: str
    bad: str
    code: str


def _corpus(files: int) -> dict[str, str]:
    """`files` files, each a stack of three components, the last file's target layering all."""
    corpus: dict[str, str] = {}
    for index in range(files):
        imports = f'import "f{index - 1}.oneiric"\n' if index else ""
        corpus[f"stacks/f{index}.oneiric"] = f"""oneiric 1
{imports}
stack s{index} {{
  adapter cache{index} "memory" {{
    impl "argparse:Namespace"
    provides read, write
    config {{ ttl = 5m }}
  }}
  service svc{index} "default" {{
    impl "collections:Counter"
    requires adapter cache{index} (write)
  }}
  task job{index} "default" {{ impl "json:loads" }}
  event seen{index} "default" {{ impl "json:loads" on "orders.created" }}
  select adapter cache{index} = "memory"
}}
"""
    last = files - 1
    corpus[f"stacks/f{last}.oneiric"] += (
        f"\ntarget all {{ layers {', '.join(f's{i}' for i in range(files))} }}\n"
    )
    return corpus


# Independent mistakes, one per file at most: each must be reported, whatever else is.
KINDS = [
    ("    provides read, write", "    provide read, write", "E0001"),
    ('    impl "collections:Counter"', '    impl "collections:Counter', "E0002"),
    ('    impl "collections:Counter"', '    impl "nosuchmodule:make"', "E0602"),
    ("    config { ttl = 5m }", "    config { ttl = 5parsecs }", "E0401"),
    ('= "memory"', '= "memroy"', "E0203"),
    ('"json:loads" }', '"json:loads" priority }', "E0001"),
    # found by the planner: reported beside resolution errors of other files
    ('{ impl "json:loads" }', "{ priority 1 }", "E0105"),
    ('on "orders.created"', "priority 1", "E0107"),
]


@settings(max_examples=25, deadline=None)
@given(
    files=st.integers(2, 5),
    seeds=st.lists(st.sampled_from(range(len(KINDS))), min_size=2, max_size=5),
)
def test_corpus_of_independent_mistakes(tmp_path_factory: pytest.TempPathFactory,
                                        files: int, seeds: list[int]) -> None:  # fmt: skip
    corpus = _corpus(files)
    expected = []
    for file_index, kind in enumerate(seeds[:files]):
        good, bad, code = KINDS[kind]
        name = f"stacks/f{file_index}.oneiric"
        text = corpus[name]
        line = text[: text.index(good)].count("\n") + 1
        corpus[name] = text.replace(good, bad, 1)
        expected.append((code, name, line))
    root = write_project(tmp_path_factory.mktemp("corpus"), corpus)
    assert sorted(_codes_at(root)) == sorted(expected)


def test_the_build_says_once_what_it_skipped(tmp_path: Path) -> None:
    corpus = _corpus(2)
    corpus["stacks/f0.oneiric"] = re.sub(
        r"provides read, write", "provide read", corpus["stacks/f0.oneiric"]
    )
    corpus["stacks/f0.oneiric"] = corpus["stacks/f0.oneiric"].replace(
        '"collections:Counter"', '"collections:Counter'
    )
    build = compile_at(write_project(tmp_path, corpus))
    notes = [note.message for d in build.diagnostics for note in d.notes]
    assert notes == [
        'skipped for syntax errors: adapter cache0 "memory", service svc0 "default"; '
        "the build goes on without them"
    ]


def test_every_field_error_of_a_component() -> None:
    """A component with several broken fields: each is reported where the parser stops."""
    text = "\n".join(
        [
            "oneiric 1",
            "stack s {",
            '  adapter cache "memory" {',
            '    impl "json:loads"',
            "    provide read, write",
            "    priority",
            "    config { ttl = 5m }",
            "    health every 10s timout 1s",
            "  }",
            '  adapter cache "x" { impl "a:b"; priorty 3; retry }',
            "}",
            "",
        ]
    )
    outcome = _outcome(text)
    assert isinstance(outcome, SyntaxErrors)
    assert [(d.pos.line, d.pos.col, d.message) for d in outcome.diagnostics if d.pos] == [
        (5, 5, 'unknown field "provide"'),
        (7, 5, 'unexpected "config", expected "-" or an integer'),
        (8, 22, 'unknown field "timout"'),
        (10, 35, 'unknown field "priorty"'),
        (10, 52, 'unexpected "}", expected an integer'),
    ]


def test_a_broken_binding_or_route_skips_nothing_else() -> None:
    text = "\n".join(
        [
            "oneiric 1",
            "stack s {",
            '  capability adapter cache write = "oneiric.protocols:CacheWriter',
            "  notify ops { when failed, rate 3 per 1h }",
            '  adapter cache "x" { impl "json:loads" }',
            "}",
            "",
        ]
    )
    outcome = _outcome(text)
    assert isinstance(outcome, SyntaxErrors)
    assert [d.pos.line for d in outcome.diagnostics if d.pos] == [3, 4]
    assert not outcome.skipped.opaque
    assert outcome.skipped.keys == set()
    assert outcome.partial is not None
    assert [c.provider for c in outcome.partial.stacks[0].components] == ["x"]
