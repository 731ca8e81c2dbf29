"""Helpers for the workflow and event tests: compile real stacks, drive the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from oneiric._plan.model import Plan

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

from rtprocess import wait_for  # noqa: E402  (re-exported for the tests here)

__all__ = ["HERE", "build_plan", "oneiric", "wait_for"]


def build_plan(tmp_path: Path, stack: str, target: str = "t") -> tuple[Plan, Path]:
    """Compile `stack` (the body of `stack t { ... }`) with the real compiler; write the plan.

    Implementations are modules of this folder, pinned by their file hashes.
    """
    from oneiricc import compile_project, load_project

    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n', encoding="utf-8")
    (root / "stacks" / "t.oneiric").write_text(
        f"oneiric 1\n\nstack t {{\n{stack}\n}}\n\ntarget {target} {{ layers t }}\n",
        encoding="utf-8",
    )
    build = compile_project(load_project(root), None, [target], use_cache=False, module_path=[HERE])
    assert not build.failed, [d.message for d in build.diagnostics]
    plan = build.plans[target]
    path = tmp_path / "plan.json"
    path.write_bytes(plan.to_bytes())
    return plan, path


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "NO_COLOR": "1",
        "LOG_LEVEL": "warning",
        "PYTHONPATH": path,
        **(extra or {}),
    }


def oneiric(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `oneiric` CLI, with this folder importable."""
    return subprocess.run(
        [sys.executable, "-m", "oneiric", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(env),
        cwd=ROOT,
    )
