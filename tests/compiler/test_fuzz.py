"""Bad input of every kind gives diagnostics and exit 1: never a traceback, never a hang.

Most cases run in-process through `compile_project` (fast enough for hypothesis
to try thousands of inputs); a handful go through the real `oneiricc` process.
Every build's diagnostics are also rendered, human and JSON, as the CLI would.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oneiricc import Build
from oneiricc._language.diagnostics import Severity, render_human, render_json
from support import ROOT, compile_at, run_cli, write_project

MAIN = "stacks/main.oneiric"
DEEP = 10_000
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def compiled(root: Path, files: dict[str, str | bytes]) -> Build:
    """Compile a fresh project holding exactly `files`, then render its diagnostics."""
    shutil.rmtree(root, ignore_errors=True)
    result = compile_at(write_project(root, files))
    texts = result.sources.texts()
    render_human(result.diagnostics, texts, color=True)
    document = json.loads(render_json(result.diagnostics))
    assert len(document["diagnostics"]) == len(result.diagnostics)
    if result.failed:
        assert not result.plans
    else:
        assert sorted(result.plans) == sorted(result.program.targets)
    return result


def assert_rejected(result: Build, code: str | None = None) -> None:
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.failed
    assert errors
    assert all(d.file is not None for d in errors)
    if code is not None:
        assert code in {d.code for d in errors}, [(d.code, d.message) for d in errors]


def _nest(opening: str, inner: str, closing: str, depth: int = DEEP) -> str:
    return opening * depth + inner + closing * depth


def _component(body: str, domain: str = "adapter") -> str:
    return f'oneiric 1\nstack s {{ {domain} a "b" {{ impl "sys:exit" {body} }} }}\n'


BAD_SOURCES: dict[str, tuple[str | bytes, str]] = {
    "binary": (bytes(range(256)) * 64, "E0004"),
    "binary after header": (b"oneiric 1\n" + bytes(range(256)), "E0004"),
    "latin-1": ("oneiric 1\n# café\nstack s {}\n".encode("latin-1"), "E0004"),
    "utf-16 with BOM": ("oneiric 1\nstack s {}\n".encode("utf-16"), "E0004"),
    "utf-16-be no BOM": ("oneiric 1\n".encode("utf-16-be"), "E0005"),  # valid UTF-8: NULs
    "utf-32": ("oneiric 1\n".encode("utf-32"), "E0004"),
    "NUL between tokens": (b"oneiric 1\nstack s\x00 {}\n", "E0002"),
    "NUL in a string": (b'oneiric 1\nstack s { adapter a "b\x00" {} }\n', "E0003"),
    "NUL only": (b"\x00" * 1000, "E0005"),
    "empty": (b"", "E0005"),
    "BOM only": (b"\xef\xbb\xbf", "E0005"),
    "no header": ("stack s {}\n", "E0005"),
    "unknown version": ("oneiric 99\n", "E0005"),
    "unterminated string": ('oneiric 1\nstack s { adapter a "b { }\n', "E0002"),
    "unterminated at EOF": ('oneiric 1\nimport "base', "E0002"),
    "backslash at EOF": ('oneiric 1\nimport "base\\', "E0002"),
    "short unicode escape": ('oneiric 1\nimport "\\u12"\n', "E0003"),
    "lone high surrogate": ('oneiric 1\nstack s { adapter a "\\ud800" {} }\n', "E0003"),
    "lone low surrogate": (_component('config { x = "\\udfff" }'), "E0003"),
    "surrogate in import": ('oneiric 1\nimport "\\udbff.oneiric"\n', "E0003"),
    "nested lists": (_component(f"config {{ x = {_nest('[', '', ']')} }}"), "E0006"),
    "nested maps": (_component(f"config {{ x = {_nest('{a=', '1', '}')} }}"), "E0006"),
    "nested calls": (_component(f"config {{ x = {_nest('env(', '', ')')} }}"), "E0402"),
    "nested not": (_component(f'on "t" where {"not " * DEEP}payload.x', "event"), "E0006"),
    "long and-chain": (
        _component(f'on "t" where {" and ".join(["payload.x"] * DEEP)}', "event"),
        "E0006",
    ),
    "unclosed lists": ('oneiric 1\nstack s { adapter a "b" { config { x = ' + "[" * DEEP, "E0001"),
    "unclosed braces": ("oneiric 1\nstack s " + "{" * DEEP, "E0001"),
    "closing braces": ("oneiric 1\n" + "}" * DEEP, "E0001"),
    "huge integer": (_component("priority " + "9" * 5000), "E0403"),
    "huge integer in config": (_component("config { x = " + "9" * 5000 + " }"), "E0403"),
    "huge duration": (_component("config { x = " + "9" * 5000 + "ms }"), "E0403"),
    "huge retry": (_component("retry " + "9" * 5000, "task"), "E0403"),
    "huge version": ("oneiric " + "9" * 5000 + "\n", "E0403"),
    "import name too long": ('oneiric 1\nimport "' + "a" * 5000 + '.oneiric"\n', "E0204"),
    "import dir too long": ('oneiric 1\nimport "' + "d" * 300 + '/x.oneiric"\n', "E0204"),
    "import through a file": ('oneiric 1\nimport "main.oneiric/x.oneiric"\n', "E0204"),
    "import outside root": ('oneiric 1\nimport "../../etc/passwd"\n', "E0204"),
    "import itself": ('oneiric 1\nimport "main.oneiric"\n', "E0205"),
    "control character": ("oneiric 1\nstack \x1b[31m {}\n", "E0002"),
    "unicode space": ("oneiric 1\u00a0stack s {}\n", "E0002"),
    "many blank lines": ("oneiric 1\n" + "\n" * 200_000 + "}", "E0001"),
    "one long line": ("oneiric 1\nstack s { " + "x " * 500_000 + "}", "E0001"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(BAD_SOURCES))
def test_bad_source_is_diagnosed(tmp_path: Path, name: str) -> None:
    source, code = BAD_SOURCES[name]
    assert_rejected(compiled(tmp_path / "p", {MAIN: source}), code)


@pytest.mark.timeout(120)
def test_file_over_the_size_limit(tmp_path: Path) -> None:
    from oneiricc._language.parser import MAX_SOURCE_BYTES

    source = b"oneiric 1\n" + b"#" * MAX_SOURCE_BYTES
    assert_rejected(compiled(tmp_path / "p", {MAIN: source}), "E0006")


@pytest.mark.timeout(300)
def test_deep_trees_parsed_in_parallel(tmp_path: Path) -> None:
    """Enough text for the parallel parser, and trees too deep to pickle back from a child."""
    from oneiricc._build.forking import MIN_WEIGHT_TO_FORK

    depth = MIN_WEIGHT_TO_FORK // 4 + 1000
    lists = _component(f"config {{ x = {_nest('[', '', ']', depth)} }}")
    parens = _component(f'on "t" where {_nest("(", "payload.x", ")", depth)}', "event")
    files: dict[str, str | bytes] = {
        "stacks/a.oneiric": lists,
        "stacks/b.oneiric": parens.replace("stack s", "stack s2"),
    }
    assert len(lists) + len(parens) > MIN_WEIGHT_TO_FORK
    result = compiled(tmp_path / "p", files)
    assert_rejected(result, "E0006")
    assert {d.file for d in result.diagnostics} == {"stacks/a.oneiric"}
    # The parse cache cannot store such trees either; that only makes it a miss.
    cached = compile_at(tmp_path / "p", use_cache=True)
    assert cached.diagnostics == result.diagnostics


# ------------------------------------------------------------------ fuzzing --

TOKENS = [
    "oneiric", "1", "import", '"x.oneiric"', "stack", "target", "layers", "profile", "s", "t",
    "adapter", "service", "task", "event", "workflow", "action", "bogus", '"p"', "{", "}", "(",
    ")", "[", "]", ",", ";", "=", "->", ".", "impl", '"sys:exit"', '"bad impl"', "entrypoint",
    "priority", "-", "7", "99999999999999999999", "provides", "requires", "config", "health",
    "every", "timeout", "activate", "drain", "10s", "64MiB", "5parsecs", "0.5", "on", "where",
    "payload", "headers", "topic", "==", "in", "not", "and", "or", "fanout", "broadcast",
    "exclusive", "retry", "backoff", "concurrency", "node", "select", "true", "false", "env",
    "secret", '"\\ud800"', '"\\u00e9"', '"unterminated', "#", "\n", "\x00", "\t", "é", "\U0001f600",
]  # fmt: skip


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.binary(max_size=3000))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    assert_rejected(compiled(tmp_path / "p", {MAIN: data}))


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.binary(max_size=500), text=st.text(max_size=500))
def test_random_bytes_and_text_after_a_header(tmp_path: Path, data: bytes, text: str) -> None:
    compiled(tmp_path / "p", {MAIN: b"oneiric 1\n" + data, "stacks/other.oneiric": text})


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=300)
@given(words=st.lists(st.sampled_from(TOKENS), max_size=80))
def test_token_soup(tmp_path: Path, words: list[str]) -> None:
    compiled(tmp_path / "p", {MAIN: "oneiric 1\n" + " ".join(words)})


def _demo_sources() -> dict[str, str]:
    """The demo stacks with implementations that pin instantly (a built-in module)."""
    return {
        f"stacks/{path.name}": re.sub(r'impl "shopdemo[^"]*"', 'impl "sys:exit"', path.read_text())
        for path in sorted((ROOT / "stacks").glob("*.oneiric"))
    }


DEMO = _demo_sources()


@st.composite
def mutated_demo(draw: st.DrawFn) -> dict[str, str | bytes]:
    """The demo project with one file cut, spliced, duplicated or sprinkled with tokens."""
    files: dict[str, str | bytes] = dict(DEMO)
    name = draw(st.sampled_from(sorted(DEMO)))
    text = DEMO[name]
    for _ in range(draw(st.integers(1, 4))):
        size = len(text)
        start = draw(st.integers(0, size))
        end = draw(st.integers(start, min(size, start + 40)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "replace", "truncate"]))
        if kind == "delete":
            text = text[:start] + text[end:]
        elif kind == "insert":
            text = text[:start] + draw(st.sampled_from(TOKENS)) + text[start:]
        elif kind == "duplicate":
            text = text[:end] + text[start:end] + text[end:]
        elif kind == "replace":
            text = text[:start] + draw(st.text(min_size=1, max_size=3)) + text[end:]
        else:
            text = text[:start]
    files[name] = text
    return files


def test_demo_sources_compile_unmutated(tmp_path: Path) -> None:
    """The fuzz corpus is valid to begin with, so the mutations are what breaks it."""
    assert not compiled(tmp_path / "p", dict(DEMO)).failed


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=300)
@given(files=mutated_demo())
def test_mutated_demo(tmp_path: Path, files: dict[str, str | bytes]) -> None:
    compiled(tmp_path / "p", files)


# ---------------------------------------------------------- the real CLI --

CLI_CASES = (
    "binary",
    "utf-16 with BOM",
    "latin-1",
    "NUL between tokens",
    "lone high surrogate",
    "unterminated string",
    "nested lists",
    "huge integer",
    "import name too long",
)


@pytest.fixture(scope="module")
def bad_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project holding a bad file per CLI case: every file is diagnosed in one run.

    Each file's stack has a name of its own: what parses of a file with syntax errors
    takes part in the build, and a stack declared twice keeps only the first's errors.
    """
    files: dict[str, str | bytes] = {}
    for index, name in enumerate(CLI_CASES):
        source = BAD_SOURCES[name][0]
        if isinstance(source, str):
            source = source.replace("stack s ", f"stack s{index} ")
        files[f"stacks/case{index}.oneiric"] = source
    return write_project(tmp_path_factory.mktemp("bad"), files)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("command", [("check",), ("build", "--check"), ("build", "--no-cache")])
def test_cli_reports_every_bad_file_with_exit_1(
    bad_project: Path, command: tuple[str, ...]
) -> None:
    result = run_cli("oneiricc", "--root", str(bad_project), *command)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for index, name in enumerate(CLI_CASES):
        code = BAD_SOURCES[name][1]
        assert re.search(
            rf"stacks/case{index}\.oneiric:[0-9]+:[0-9]+: error\[{code}\]", result.stderr
        ), name
    assert not (bad_project / "golden").exists()


@pytest.mark.timeout(200)
def test_cli_json_diagnostics_for_bad_files(bad_project: Path) -> None:
    result = run_cli("oneiricc", "--root", str(bad_project), "check", "--format", "json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    document = json.loads(result.stdout)
    assert document["format"] == "oneiric-diagnostics"
    files = {d["file"] for d in document["diagnostics"] if d["severity"] == "error"}
    assert files == {f"stacks/case{index}.oneiric" for index in range(len(CLI_CASES))}


@pytest.mark.timeout(200)
def test_cli_file_over_the_size_limit(tmp_path: Path) -> None:
    from oneiricc._language.parser import MAX_SOURCE_BYTES

    project = write_project(tmp_path, {MAIN: b"oneiric 1\n" + b"\xff" * MAX_SOURCE_BYTES})
    result = run_cli("oneiricc", "--root", str(project), "check")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error[E0006]" in result.stderr
