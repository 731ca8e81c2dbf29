"""docs/errors.md documents exactly the codes in diagnostics.CODES, each with a
failing example that fails with that code, its exact output, and a fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from oneiricc._language.diagnostics import CODES
from support import ROOT
from test_docs_examples import assert_as_documented, build_example, read_document

ERRORS_DOC = ROOT / "docs" / "errors.md"
TEXT = ERRORS_DOC.read_text(encoding="utf-8")
SECTIONS = dict(re.findall(r"^## ([EW]\d{4})\n(.*?)(?=^## |\Z)", TEXT, re.DOTALL | re.MULTILINE))
DOCUMENT = read_document(ERRORS_DOC)


def test_every_code_is_documented_and_every_documented_code_exists() -> None:
    assert list(SECTIONS) == list(CODES)
    assert set(re.findall(r"\[([EW]\d{4})\]\(#", TEXT)) == set(CODES)  # the index table


@pytest.mark.parametrize("code", list(CODES))
def test_section_has_title_example_output_and_fix(code: str, tmp_path: Path) -> None:
    section = SECTIONS[code]
    assert section.lstrip().startswith(f"**{CODES[code]}.**"), "the title from CODES leads"
    assert "**Fix.**" in section
    example = DOCUMENT.examples[code]
    assert code in example.errors, "the example is a failing one"
    build, output = build_example(example, tmp_path)
    assert_as_documented(example, build)
    assert output == DOCUMENT.outputs[code]
