"""Every ```oneiric example in docs/language.md compiles, or fails exactly as documented.

An HTML comment right before a fenced block carries directives, `key: value`
separated by `;`:

    example: NAME      blocks with the same name are the files of one project
    file: PATH         where the block goes (default stacks/main.oneiric)
    error: CODE, ...   the build must fail with exactly these codes
    warning: CODE      the build succeeds with exactly these warnings
    target: NAME       build only this target (as `--target NAME`)
    strict: true       build with --strict
    encoding: NAME     write the file in this encoding instead of UTF-8
    output: NAME       (before a ```text block) the exact human output of NAME
    plan: NAME; at: [COMPONENT] FIELD.PATH
                       (before a ```json block) that part of NAME's plan (or of
                       one of its components), exactly

A block without directives is a project of its own that must compile cleanly.
docs/errors.md uses the same conventions (see test_errors_doc.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from oneiricc import Build
from oneiricc._language.diagnostics import Severity, render_human, summary_line
from support import ROOT, compile_at, write_project

LANGUAGE_DOC = ROOT / "docs" / "language.md"
DEFAULT_FILE = "stacks/main.oneiric"
_BLOCK = re.compile(
    r"(?:<!--(?P<directives>[^>]*)-->[ \t]*\n)?```(?P<lang>[a-z]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)


@dataclass
class Example:
    name: str
    line: int  # of its first block in the document
    files: dict[str, str] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    warnings: set[str] = field(default_factory=set)
    targets: list[str] | None = None
    strict: bool = False
    encoding: str = "utf-8"


@dataclass
class Document:
    examples: dict[str, Example]
    outputs: dict[str, str]  # example name -> documented human output
    excerpts: list[tuple[str, str, Any]]  # (example name, "component field.path", JSON value)


def _directives(text: str | None) -> dict[str, str]:
    found = {}
    for item in (text or "").split(";"):
        key, sep, value = item.partition(":")
        if sep:
            found[key.strip()] = value.strip()
    return found


def _codes(value: str | None) -> set[str]:
    return {code.strip() for code in (value or "").split(",") if code.strip()}


def read_document(path: Path) -> Document:
    """The examples and documented outputs of a markdown file, by name."""
    text = path.read_text(encoding="utf-8")
    examples: dict[str, Example] = {}
    outputs: dict[str, str] = {}
    excerpts: list[tuple[str, str, Any]] = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("body"))
        directives = _directives(match["directives"])
        if match["lang"] == "text" and "output" in directives:
            outputs[directives["output"]] = match["body"]
            continue
        if match["lang"] == "json" and "plan" in directives:
            excerpts.append((directives["plan"], directives["at"], json.loads(match["body"])))
            continue
        if match["lang"] != "oneiric":
            # Another file of a named example (a distribution's metadata, a module).
            if "example" in directives and "file" in directives:
                named = directives["example"]
                examples.setdefault(named, Example(named, line)).files[directives["file"]] = match[
                    "body"
                ]
            continue
        name = directives.get("example", f"line {line}")
        example = examples.setdefault(name, Example(name, line))
        example.files[directives.get("file", DEFAULT_FILE)] = match["body"]
        example.errors |= _codes(directives.get("error"))
        example.warnings |= _codes(directives.get("warning"))
        if "target" in directives:
            example.targets = [directives["target"]]
        example.strict = example.strict or directives.get("strict") == "true"
        example.encoding = directives.get("encoding", example.encoding)
    return Document(examples, outputs, excerpts)


def build_example(example: Example, root: Path) -> tuple[Build, str]:
    """Compile an example as a project in `root`; the build and its human output (stderr)."""
    write_project(
        root, {path: body.encode(example.encoding) for path, body in example.files.items()}
    )
    build = compile_at(root, example.targets, strict=example.strict)
    output = render_human(build.diagnostics, build.sources.texts())
    if build.diagnostics:
        output += summary_line(build.diagnostics) + "\n"
    return build, output


def assert_as_documented(example: Example, build: Build) -> None:
    errors = {d.code for d in build.diagnostics if d.severity is Severity.ERROR}
    warnings = {d.code for d in build.diagnostics if d.severity is Severity.WARNING}
    where = f"example at line {example.line}"
    assert errors == example.errors, (where, [d.message for d in build.diagnostics])
    assert warnings == example.warnings, (where, [d.message for d in build.diagnostics])
    if not example.errors and any("stack " in body for body in example.files.values()):
        assert build.plans, f"{where} declares stacks but no target: nothing was resolved"


LANGUAGE = read_document(LANGUAGE_DOC) if LANGUAGE_DOC.exists() else Document({}, {}, [])


@pytest.mark.parametrize("name", sorted(LANGUAGE.examples))
def test_language_example(name: str, tmp_path: Path) -> None:
    example = LANGUAGE.examples[name]
    build, output = build_example(example, tmp_path)
    assert_as_documented(example, build)
    if name in LANGUAGE.outputs:
        assert output == LANGUAGE.outputs[name]
    for _, at, expected in (e for e in LANGUAGE.excerpts if e[0] == name):
        [plan] = build.plans.values()
        value: Any = plan.model_dump(mode="json")
        component_id, _, path = at.rpartition(" ")
        if component_id:
            found = plan.component(component_id)
            assert found is not None, at
            value = found.model_dump(mode="json")
        for part in path.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert value == expected, at


def test_language_reference_has_examples() -> None:
    assert len(LANGUAGE.examples) >= 25
    assert set(LANGUAGE.outputs) <= set(LANGUAGE.examples)
    assert {name for name, _, _ in LANGUAGE.excerpts} <= set(LANGUAGE.examples)


COMPONENTS = read_document(ROOT / "docs" / "components.md")


@pytest.mark.parametrize("name", sorted(COMPONENTS.examples))
def test_components_example(name: str, tmp_path: Path) -> None:
    """Every stack snippet of the component catalogue builds as documented."""
    example = COMPONENTS.examples[name]
    build, _ = build_example(example, tmp_path)
    assert_as_documented(example, build)
    assert example.errors or build.plans
