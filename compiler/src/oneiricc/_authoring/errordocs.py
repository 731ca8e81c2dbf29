"""The documentation of each diagnostic code, read from docs/errors.md.

The file ships inside the package (`oneiricc/errors.md`, a link to
docs/errors.md in the source tree, like the grammar), so `oneiricc explain
E0203` works from an installed wheel.  Each code has a `## CODE` section:
what it means, a complete example with its output, and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache

from oneiricc._language.diagnostics import CODES

CODE = re.compile(r"[EW][0-9]{4}")
_COMMENT = re.compile(r"<!--.*?-->\n?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ErrorDoc:
    code: str
    title: str
    text: str  # the section's Markdown, without its heading and HTML comments


@cache
def _document() -> str:
    try:  # beside this module, as the grammar is (parser.grammar_text)
        with open(os.path.join(os.path.dirname(__file__), "errors.md"), encoding="utf-8") as file:
            return file.read()
    except OSError:
        return ""


def error_doc(code: str) -> ErrorDoc | None:
    """The documented explanation of `code`, or None when the code is unknown."""
    code = code.upper()
    if code not in CODES:
        return None
    sections = re.split(r"^## ", _document(), flags=re.MULTILINE)
    for section in sections[1:]:
        heading, _, body = section.partition("\n")
        if heading.split()[:1] == [code]:
            text = _COMMENT.sub("", body).strip()
            return ErrorDoc(code, CODES[code], re.sub(r"\n{3,}", "\n\n", text))
    return ErrorDoc(code, CODES[code], "")
