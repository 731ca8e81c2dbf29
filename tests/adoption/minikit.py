"""A minimal user project outside this repository: `src/` layout, its own package.

What a new user writes (or `oneiricc init` writes): `module-path = ["src"]`,
a package `myapp` with a task, an event handler and an action, two targets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STACK = """oneiric 1

stack app {
  task greet "default" { impl "myapp.tasks:greet" }
  workflow hello "default" {
    node greet
  }
  event audit "default" {
    on "order.created"
    impl "myapp.events:audit"
  }
  action shout "default" { impl "myapp.tasks:shout" }
}

target dev { layers app }
"""

FILES = {
    "oneiric.toml": 'sources = ["stacks"]\nmodule-path = ["src"]\n',
    "stacks/app.oneiric": STACK,
    "src/myapp/__init__.py": "",
    "src/myapp/tasks.py": (
        "from typing import Any\n\n\n"
        "async def greet(order: Any, upstream: Any) -> str:\n    return 'hello'\n\n\n"
        "async def shout(payload: Any) -> str:\n    return str(payload).upper()\n"
    ),
    "src/myapp/events.py": (
        "from typing import Any\n\n\nasync def audit(event: Any) -> str:\n    return 'seen'\n"
    ),
}


def write_mini(root: Path, files: dict[str, str] | None = None) -> Path:
    for name, text in (files or FILES).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def cli(
    program: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`program` as a user runs it: no PYTHONPATH, no LOG_LEVEL, in `cwd`."""
    base = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "LOG_LEVEL"}}
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        cwd=cwd,
        env={**base, "NO_COLOR": "1", "ONEIRICC_NO_SERVER": "1", **(env or {})},
        text=True,
        capture_output=True,
        timeout=120,
    )
