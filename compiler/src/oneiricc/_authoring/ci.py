"""Diagnostics for CI systems: SARIF 2.1.0 and GitHub Actions workflow commands.

`oneiricc check --format sarif` writes one SARIF log (code-scanning upload);
`--format github` writes `::error file=...,line=...,col=...::message` lines
that GitHub Actions turns into annotations on the pull request.  Both carry
the same codes, places and help as the human output.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from oneiricc._authoring.errordocs import error_doc
from oneiricc._build.projectroot import CONFIG_FILE
from oneiricc._language.diagnostics import CODES, Diagnostic, Severity
from oneiricc._version import installed_version

CI_FORMATS = ("sarif", "github")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

check_format_option = click.option(
    "--format",
    "output",
    type=click.Choice(["human", "json", *CI_FORMATS]),
    default=None,
    help="Output format: json (one document), sarif (SARIF 2.1.0), github (annotations).",
)


def _region(diag: Diagnostic) -> dict[str, int]:
    assert diag.pos is not None
    return {
        "startLine": diag.pos.line,
        "startColumn": diag.pos.col,
        "endLine": diag.pos.line,
        "endColumn": diag.pos.col + max(1, diag.pos.width),
    }


def _location(file: str, diag: Diagnostic) -> dict[str, Any]:
    physical: dict[str, Any] = {"artifactLocation": {"uri": file, "uriBaseId": "%SRCROOT%"}}
    if diag.pos is not None:
        physical["region"] = _region(diag)
    return {"physicalLocation": physical}


def _rule(code: str) -> dict[str, Any]:
    doc = error_doc(code)
    title = CODES.get(code, code)
    rule: dict[str, Any] = {
        "id": code,
        "name": "".join(word.capitalize() for word in title.split()),
        "shortDescription": {"text": title},
        "defaultConfiguration": {"level": "warning" if code.startswith("W") else "error"},
    }
    if doc is not None and doc.text:
        rule["help"] = {"text": f"oneiricc explain {code}", "markdown": doc.text}
    return rule


def render_sarif(diagnostics: Iterable[Diagnostic], root: Path) -> str:
    """One SARIF log: a rule (with its documentation) per code met, a result per diagnostic."""
    diagnostics = list(diagnostics)
    codes = sorted({d.code for d in diagnostics})
    results = []
    for diag in diagnostics:
        text = diag.message + (f"\nhelp: {diag.help}" if diag.help else "")
        result: dict[str, Any] = {
            "ruleId": diag.code,
            "ruleIndex": codes.index(diag.code),
            "level": "error" if diag.severity is Severity.ERROR else "warning",
            "message": {"text": text},
        }
        if diag.file is not None:
            result["locations"] = [_location(diag.file, diag)]
        else:
            # Not about a source (an unknown --target, say): code-scanning tools need a
            # location, and the project file is what the command line was checked against.
            result["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": CONFIG_FILE, "uriBaseId": "%SRCROOT%"}
                    }
                }
            ]
        if diag.notes:
            result["relatedLocations"] = [
                {
                    "id": index,
                    "message": {"text": note.message},
                    "physicalLocation": {
                        "artifactLocation": {"uri": note.file, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": note.pos.line, "startColumn": note.pos.col},
                    },
                }
                for index, note in enumerate(diag.notes)
            ]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "oneiricc",
                        "version": installed_version() or "0",
                        "rules": [_rule(code) for code in codes],
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.resolve().as_uri() + "/"}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diagnostics: Iterable[Diagnostic]) -> str:
    """GitHub Actions workflow commands, one per diagnostic."""
    lines = []
    for diag in diagnostics:
        command = "error" if diag.severity is Severity.ERROR else "warning"
        props = []
        if diag.file is not None:
            props.append(f"file={_escape_property(diag.file)}")
            if diag.pos is not None:
                props += [
                    f"line={diag.pos.line}",
                    f"endLine={diag.pos.line}",
                    f"col={diag.pos.col}",
                    f"endColumn={diag.pos.col + max(1, diag.pos.width)}",
                ]
        title = f"{diag.code} {CODES.get(diag.code, '')}".strip()
        props.append(f"title={_escape_property(title)}")
        message = diag.message + (f"\nhelp: {diag.help}" if diag.help else "")
        message += "".join(
            f"\nnote: {n.message} at {n.file}:{n.pos.line}:{n.pos.col}" for n in diag.notes
        )
        lines.append(f"::{command} {','.join(props)}::{_escape_data(message)}")
    return "".join(line + "\n" for line in lines)


def render_ci(output: str, diagnostics: list[Diagnostic], root: Path) -> str:
    return render_sarif(diagnostics, root) if output == "sarif" else render_github(diagnostics)
