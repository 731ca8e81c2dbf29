"""Snapshots of every diagnostic the compiler can emit, human and JSON.

Each directory under tests/cases/ is a small project (its own oneiric.toml, so
paths in the output are relative and stable) that triggers one code; `multi`
holds several errors in two files.  The human output goes through the real
`oneiricc` process; the JSON document through the same command line in-process
(click's runner), which is much cheaper and is checked once against a real
process below.  Update the snapshots with `pytest --snapshot-update`.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import pytest
from click.testing import CliRunner
from oneiricc._build.checker import ALLOWED_FIELDS
from oneiricc._cli.main import main
from oneiricc._language.diagnostics import CODES
from oneiricc._language.parser import FIELD_NAMES
from support import ROOT, run_cli
from syrupy.assertion import SnapshotAssertion

CASES_DIR = ROOT / "tests" / "cases"  # shared with tests/authoring
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "oneiric.toml").is_file())
# The command each case runs (after `--root DIR`); `check` unless named here.
COMMANDS: dict[str, tuple[str, ...]] = {
    "E0202": ("build", "--target", "prdo"),
    "W0503-strict": ("check", "--strict"),
}
EXIT_CODES = {"W0503": 0}  # a warning alone does not fail a build
# Cases whose mistake is a near miss of a known name: the help must say so.
NEAR_MISSES = {
    "E0001",
    "E0101",
    "E0107",
    "E0201",
    "E0202",
    "E0203",
    "E0204",
    "E0206",
    "E0207",
    "E0303",
    "E0401",
    "E0402",
    "E0603",
    "E0802",
    "E0701",
    "E0702",
    "multi",
}
_LOCATION = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (error|warning)\[")


def command(case: str) -> list[str]:
    return ["--root", str(CASES_DIR / case), *COMMANDS.get(case, ("check",)), "--no-cache"]


@cache
def json_document(case: str) -> dict[str, Any]:
    """The `--format json` document of a case, from the command line run in-process."""
    args = command(case)
    result = CliRunner().invoke(main, [*args[:2], "--format", "json", *args[2:]])
    assert result.exit_code == EXIT_CODES.get(case, 1), result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("case", CASES)
def test_human_diagnostics(case: str, snapshot: SnapshotAssertion) -> None:
    result = run_cli("oneiricc", *command(case))
    assert result.returncode == EXIT_CODES.get(case, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == snapshot
    _assert_readable(case, result.stderr)


@pytest.mark.parametrize("case", CASES)
def test_json_diagnostics(case: str, snapshot: SnapshotAssertion) -> None:
    document = json_document(case)
    assert document["format"] == "oneiric-diagnostics"
    assert document["version"] == 1
    assert document == snapshot


def _assert_readable(case: str, stderr: str) -> None:
    """Every located diagnostic names file:line:col, shows the line and a caret under it."""
    lines = stderr.splitlines()
    located = 0
    for index, line in enumerate(lines):
        match = _LOCATION.match(line)
        if match is None:
            continue
        located += 1
        assert match["file"].startswith("stacks/"), line
        if case == "E0004":  # undecodable bytes: the place is named, the line cannot be shown
            continue
        source, caret = lines[index + 1], lines[index + 2]
        assert source.strip().startswith(f"{match['line']} | "), (line, source)
        gutter = source.index("| ")
        assert caret[gutter : gutter + 2] == "| "
        assert caret[gutter + 2 :].lstrip(" ").startswith("^"), caret
        # The caret sits under column `col` of the shown line.
        assert (
            len(caret[gutter + 2 :]) - len(caret[gutter + 2 :].lstrip(" ")) == int(match["col"]) - 1
        )
    assert located or case == "E0202"  # an unknown --target has no place in a file
    if case in NEAR_MISSES:
        assert "help: did you mean" in stderr


def test_every_code_has_a_case() -> None:
    seen = {d["code"] for case in CASES for d in json_document(case)["diagnostics"]}
    assert seen == set(CODES)
    for case in CASES:
        codes = {d["code"] for d in json_document(case)["diagnostics"]}
        assert case == "multi" or case.split("-")[0] in codes, (case, codes)


def test_all_errors_of_a_build_are_reported_at_once_in_source_order() -> None:
    diagnostics = json_document("multi")["diagnostics"]
    places = [(d["file"], d["line"], d["col"]) for d in diagnostics]
    assert places == sorted(places)
    assert {d["file"] for d in diagnostics} == {"stacks/app.oneiric", "stacks/base.oneiric"}
    # Syntax-free mistakes of every stage: checker, resolver (two targets, reported once).
    assert [d["code"] for d in diagnostics] == [
        "E0601",
        "E0206",
        "E0203",
        "E0201",
        "E0101",
        "E0401",
    ]


def test_warning_is_an_error_under_strict() -> None:
    [warning] = json_document("W0503")["diagnostics"]
    [error] = json_document("W0503-strict")["diagnostics"]
    assert (warning["severity"], error["severity"]) == ("warning", "error")
    assert json_document("W0503")["summary"] == {"errors": 0, "warnings": 1}
    assert {**warning, "severity": "error"} == error


def test_json_from_a_real_process_matches() -> None:
    result = run_cli("oneiricc", "--format", "json", *command("multi"))
    assert result.returncode == 1
    assert result.stderr == ""
    assert json.loads(result.stdout) == json_document("multi")


def test_parser_knows_every_field_the_checker_allows() -> None:
    """The parser's "unknown field" help lists the same fields the checker accepts."""
    allowed = {name for names in ALLOWED_FIELDS.values() for name in names}
    assert set(FIELD_NAMES) == allowed - {"edges"}  # an edge is `a -> b`, not a keyword
