"""The public surfaces, `oneiric` and `oneiricc`: every exported name resolves, and
importing either package imports nothing but itself (names load on first use)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

# The packages' own modules and third-party libraries an import could drag in.
HEAVY = (
    "pydantic",
    "lark",
    "click",
    "anyio",
    "nacl",
    "jinja2",
    "networkx",
    "oneiric.",
    "oneiricc.",
)


@pytest.mark.parametrize("package", ["oneiric", "oneiricc"])
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = module.nothing_here


@pytest.mark.parametrize("package", ["oneiric", "oneiricc"])
def test_importing_the_package_imports_nothing_heavy(package: str) -> None:
    code = (
        "import json, sys; before = set(sys.modules); import " + package + "; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    imported = json.loads(done.stdout)
    assert package in imported
    assert [
        name for name in imported if name.startswith(HEAVY) or name.split(".")[0] in HEAVY
    ] == []


def test_the_compilers_public_api_builds_a_project(repo_root: Path) -> None:
    """What a user of `oneiricc` does: load the project, compile it, read the plans."""
    import oneiricc

    project = oneiricc.load_project(repo_root)
    build = oneiricc.compile_project(project, use_cache=False)
    assert isinstance(build, oneiricc.Build)
    assert not build.failed
    assert all(isinstance(d, oneiricc.Diagnostic) for d in build.diagnostics)
    assert sorted(build.outputs) == ["dev", "prod"]
    assert all(isinstance(plan, oneiricc.CompiledPlan) for plan in build.outputs.values())
    assert build.plans["prod"].target == "prod"
