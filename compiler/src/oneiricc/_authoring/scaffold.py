"""`oneiricc init`: the files of a new, working project.

A `src/` layout package with typed components (a service using a cache, a
task, an event handler, an action), stacks with two targets, the project's
own test, `.gitignore` and a pre-commit configuration.  `golden/` is compiled
by `oneiricc init` itself, so the project builds, checks and runs at once.
"""

from __future__ import annotations

import keyword
import re

CONFIG = """\
# Oneiric project settings; paths are relative to this file.
sources = ["stacks"]
golden = "golden"
module-path = ["src"]
"""

PYPROJECT = """\
# Tool settings only; add a [project] table to make {package} installable.
[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]
"""

BASE = """\
oneiric 1

# What every target starts from.
stack base {{
  adapter cache "memory" {{
    impl "oneiric.adapters.memory:MemoryCache"
    config {{ max_entries = 1000 }}
  }}

  service greeter "default" {{
    impl "{package}.components:Greeter"
    requires adapter cache
    config {{ greeting = "hello" }}
  }}

  task welcome "default" {{ impl "{package}.components:welcome" }}

  workflow onboarding "default" {{
    node welcome
  }}

  event audit "default" {{
    on "user.signed_up"
    impl "{package}.components:audit"
  }}

  action shout "default" {{ impl "{package}.components:shout" }}
}}

target dev {{ layers base }}
"""

PROD = """\
oneiric 1
import "base.oneiric"

# Production: a larger cache and a more formal greeting.
stack prod {{
  adapter cache "memory" {{ config {{ max_entries = 100000 }} }}

  service greeter "default" {{ config {{ greeting = "good day" }} }}
}}

target prod {{ layers base, prod }}
"""

COMPONENTS = '''\
"""{package}'s components: ordinary, typed Python; the stacks decide which ones run."""

from __future__ import annotations

from typing import Any

from oneiric import Deps, Event
from oneiric.protocols import Cache


class Greeter:
    """A service: its config keys are keyword arguments, its requirements arrive in `deps`."""

    def __init__(self, deps: Deps, greeting: str = "hello") -> None:
        self.cache = deps.handle("adapter:cache", Cache)
        self.greeting = greeting

    def greet(self, name: str) -> str:
        again = self.cache.api.get(name) is not None
        self.cache.api.set(name, b"seen")
        return f"{{self.greeting}} again, {{name}}" if again else f"{{self.greeting}}, {{name}}"


def welcome(user: dict[str, Any] | None, upstream: dict[str, Any]) -> dict[str, Any]:
    """A workflow task: the run's input (`--input`, else None) and the earlier nodes' results."""
    return {{"welcomed": (user or {{}}).get("name", "someone")}}


def audit(event: Event) -> dict[str, Any]:
    """An event handler for "user.signed_up"."""
    return {{"audited": event.topic, "user": event.payload.get("name")}}


def shout(payload: Any) -> str:
    """An action: `oneiric action invoke shout --payload '"hi"'`."""
    return str(payload).upper()
'''

TEST = '''\
"""The project's own checks: the committed plans are current and the dev plan runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from oneiric import Runtime

from {package}.components import Greeter

ROOT = Path(__file__).resolve().parent.parent


def test_the_golden_plans_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oneiricc", "build", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dev_plan_greets() -> None:
    with Runtime(ROOT / "golden" / "dev.plan.json") as runtime:
        greeter = runtime.handle("service:greeter", Greeter)
        assert greeter.api.greet("ada") == "hello, ada"
        assert greeter.api.greet("ada") == "hello again, ada"
'''

GITIGNORE = """\
__pycache__/
*.pyc
.venv/
.oneiric-cache/
.oneiric/
"""

PRE_COMMIT = """\
# pre-commit (https://pre-commit.com): format first, then rebuild the golden plans from
# the formatted sources, then check.  A hook that changes a file stops the commit: add it.
repos:
  - repo: local
    hooks:
      - id: oneiric-fmt
        name: oneiricc fmt
        entry: oneiricc fmt
        language: system
        files: \\.oneiric$
      - id: oneiric-build
        name: oneiricc build
        entry: oneiricc build
        language: system
        pass_filenames: false
        files: (\\.oneiric|\\.py|oneiric\\.toml)$
      - id: oneiric-check
        name: oneiricc check
        entry: oneiricc check
        language: system
        pass_filenames: false
        files: \\.oneiric$
"""


def package_name(directory_name: str) -> str:
    """A Python package name made from a directory name: `my-app` → `my_app`."""
    name = re.sub(r"\W", "_", directory_name.strip().lower()).strip("_") or "app"
    return f"_{name}" if name[0].isdigit() else name


def valid_package(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name.isascii()


def project_files(package: str) -> dict[str, str]:
    """Every file of the new project but its golden plans, by relative path."""
    return {
        "oneiric.toml": CONFIG,
        "pyproject.toml": PYPROJECT.format(package=package),
        "stacks/base.oneiric": BASE.format(package=package),
        "stacks/prod.oneiric": PROD.format(package=package),
        f"src/{package}/__init__.py": f'"""{package}: an Oneiric project."""\n',
        f"src/{package}/components.py": COMPONENTS.format(package=package),
        "tests/test_project.py": TEST.format(package=package),
        ".gitignore": GITIGNORE,
        ".pre-commit-config.yaml": PRE_COMMIT,
    }
