"""How a command fails: one line (or a JSON object), then the exit code (DESIGN.md)."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click


def _fail(fmt: str, message: str, code: int = 2) -> NoReturn:
    if fmt == "json":
        click.echo(json.dumps({"ok": False, "error": message}, sort_keys=True))
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)
