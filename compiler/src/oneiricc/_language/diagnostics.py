"""Diagnostics: what went wrong, where, and how to fix it.

Every problem the compiler finds is a `Diagnostic` with a stable code
(documented in docs/errors.md), a span and an optional help line.  The
rendering follows ruff and rustc: `path:line:col: error[CODE]: message`, the
source line, a caret under the span, then `help:`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from oneiric._text import plural

from oneiricc._language.nodes import Pos

DIAGNOSTICS_FORMAT = 1

CODES: dict[str, str] = {
    # reading and parsing
    "E0001": "syntax error",
    "E0002": "invalid character or unterminated string",
    "E0003": "invalid string escape",
    "E0004": "unreadable source file",
    "E0005": "missing or unsupported language version",
    "E0006": "source too large or too deeply nested",
    "E0007": "brace never closed",
    # declarations
    "E0101": "unknown domain",
    "E0102": "duplicate component in a layer",
    "E0103": "duplicate stack or target",
    "E0104": "field not allowed here",
    "E0105": "missing implementation",
    "E0106": "duplicate node in a workflow",
    "E0107": "invalid setting",
    # references
    "E0201": "unknown layer",
    "E0202": "unknown target",
    "E0203": "unknown provider",
    "E0204": "unknown import",
    "E0205": "import cycle",
    "E0206": "requirement on an unknown component",
    "E0207": "selection of an unknown component",
    "E0208": "layer not imported",
    # graphs
    "E0301": "dependency cycle between components",
    "E0302": "workflow cycle",
    "E0303": "workflow node names an unknown task",
    # values
    "E0401": "malformed duration or size",
    "E0402": "config type error",
    "E0403": "integer out of range",
    "E0404": "invalid event filter",
    # resolution
    "E0501": "required capability not provided",
    "E0502": "selected provider lacks a required capability",
    "W0503": "decided by declaration order",
    # implementations
    "E0601": "malformed implementation",
    "E0602": "implementation module not found",
    "E0603": "entry point not found",
    # the code contract: implementations against their Python source
    "E0701": "implementation attribute not found",
    "E0702": "unknown config key",
    "E0703": "required config not set",
    "E0704": "config value does not fit its parameter",
    # capabilities
    "E0801": "provider lacks its capability's protocol",
    "E0802": "capability protocol not found",
    "E0803": "capability bound twice",
    # notification routes
    "E0901": "unknown notification condition",
    "E0902": "unknown notification channel",
    "E0903": "notification channel lacks a field",
    "E0904": "malformed notification route",
    # plugins
    "E1001": "two plugins claim one component",
    "E1002": "malformed plugin entry point name",
    "E1003": "plugin group not found",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Note:
    """A secondary place that explains the primary one (the other half of a duplicate)."""

    file: str
    pos: Pos
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    file: str | None = None
    pos: Pos | None = None
    help: str | None = None
    severity: Severity = Severity.ERROR
    notes: tuple[Note, ...] = field(default=())

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Source order: file, line, column; diagnostics without a place come first."""
        if self.file is None or self.pos is None:
            return ("", 0, 0, self.code, self.message)
        return (self.file, self.pos.line, self.pos.col, self.code, self.message)

    @property
    def location(self) -> str:
        if self.file is None:
            return "oneiricc"
        if self.pos is None:
            return self.file
        return f"{self.file}:{self.pos.line}:{self.pos.col}"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "file": self.file,
            "line": self.pos.line if self.pos else None,
            "col": self.pos.col if self.pos else None,
            "width": self.pos.width if self.pos else None,
            "help": self.help,
            "notes": [
                {"file": n.file, "line": n.pos.line, "col": n.pos.col, "message": n.message}
                for n in self.notes
            ],
        }
        return out


class CompileError(Exception):
    """Raised when a build cannot produce a plan; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__(plural(len(diagnostics), "diagnostic"))
        self.diagnostics = diagnostics


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `help:` line naming the closest known name, if one is close enough."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else None


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Source order, with exact repeats (one mistake seen twice) removed."""
    return sorted(set(diagnostics), key=Diagnostic.sort_key)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


# ---------------------------------------------------------------- render --


class Style:
    """ANSI styling that is a no-op unless enabled (terminal and no NO_COLOR)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text


def render_human(
    diagnostics: Iterable[Diagnostic], sources: Mapping[str, str], *, color: bool = False
) -> str:
    style = Style(color)
    blocks = []
    lines_of: dict[str, list[str]] = {}  # split once per file, not once per diagnostic
    for diag in diagnostics:
        severity_color = "1;31" if diag.severity is Severity.ERROR else "1;33"
        head = (
            f"{diag.location}: {style(f'{diag.severity.value}[{diag.code}]', severity_color)}: "
            f"{style(diag.message, '1')}"
        )
        lines = [head]
        if diag.file is not None and diag.pos is not None and diag.file in sources:
            if diag.file not in lines_of:
                lines_of[diag.file] = sources[diag.file].splitlines()
            lines.extend(_snippet(lines_of[diag.file], diag.pos, style, severity_color))
        for note in diag.notes:
            lines.append(f"  note: {note.message} at {note.file}:{note.pos.line}:{note.pos.col}")
        if diag.help:
            lines.append(f"  {style('help', '1;36')}: {diag.help}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + ("\n" if blocks else "")


def _snippet(source_lines: list[str], pos: Pos, style: Style, caret_color: str) -> list[str]:
    if not 1 <= pos.line <= len(source_lines):
        return []
    line = source_lines[pos.line - 1].expandtabs(1)
    if len(line) > 200:  # keep a minified or generated line readable
        start = max(0, pos.col - 80)
        line = line[start : start + 160]
        col = pos.col - start
    else:
        col = pos.col
    gutter = str(pos.line)
    width = max(1, min(pos.width, len(line) - col + 1))
    caret = " " * (col - 1) + "^" * width
    pad = " " * len(gutter)
    return [f"  {gutter} | {line}", f"  {pad} | {style(caret, caret_color)}"]


def render_json(diagnostics: list[Diagnostic]) -> str:
    errors = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    document = {
        "format": "oneiric-diagnostics",
        "version": DIAGNOSTICS_FORMAT,
        "diagnostics": [d.to_json() for d in diagnostics],
        "summary": {"errors": errors, "warnings": len(diagnostics) - errors},
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def summary_line(diagnostics: list[Diagnostic]) -> str:
    errors = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    warnings = len(diagnostics) - errors
    return f"{plural(errors, 'error')}, {plural(warnings, 'warning')}"
