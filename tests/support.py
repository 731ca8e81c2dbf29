"""Helpers shared by the test suites: the repository root, real CLI runs, small projects.

A plain module, not a conftest: several test folders have their own conftest.py,
and only one module can be importable as `conftest`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneiricc import Build

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    program: str, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m <program> args` as a real process (exit codes, streams, no shared state)."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        cwd=cwd or ROOT,
        env=full_env,
        text=True,
        capture_output=True,
        timeout=120,
    )


# A small project of two files and two targets, with an implementation module of its own
# (module-path = ["mods"]): what the cache and build server tests edit.
SMALL_BASE = (
    "oneiric 1\n"
    "stack base {\n"
    '  adapter db "disk" { impl "argparse:Namespace" priority 1 }\n'
    '  adapter db "mem" { impl "memoimpl:make" priority 1 }\n'
    "}\n"
)
SMALL_APP = (
    "oneiric 1\n"
    'import "base.oneiric"\n'
    "stack web {\n"
    '  service api "v1" { impl "argparse:Namespace" requires adapter db }\n'
    "}\n"
    "target prod { layers base, web }\n"
    "target dev { layers base }\n"
)
SMALL_PROJECT = {
    "mods/memoimpl.py": "def make() -> int:\n    return 1\n",
    "stacks/base.oneiric": SMALL_BASE,
    "stacks/app.oneiric": SMALL_APP,
}
SMALL_SETTINGS = 'module-path = ["mods"]\n'


def write_project(root: Path, files: dict[str, str | bytes], settings: str = "") -> Path:
    """A project in `root`: `oneiric.toml` (sources = stacks/) plus `files`, paths relative."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n' + settings, encoding="utf-8")
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def compile_at(root: Path, targets: list[str] | None = None, **options: Any) -> Build:
    """Compile the project in `root` in-process, without the parse cache unless asked."""
    from oneiricc import compile_project, load_project  # lazily: runtime-only tests skip it

    options.setdefault("use_cache", False)
    return compile_project(load_project(root), None, targets, **options)
