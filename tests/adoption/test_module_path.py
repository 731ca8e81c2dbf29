"""The runtime finds the project's code where the compiler did: the plan's module path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from minikit import cli, write_mini
from oneiric._plan.model import load_plan

NOT_IMPORTABLE = (
    "module myapp.tasks is not importable here (compiled from src/myapp/tasks.py): "
    "install the package, run from the project root or pass --module-path"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_mini(tmp_path / "project")
    built = cli("oneiricc", "build", cwd=root)
    assert built.returncode == 0, built.stderr
    return root


def test_the_plan_records_the_module_path_relative_to_the_root(project: Path) -> None:
    plan = load_plan((project / "golden" / "dev.plan.json").read_bytes())
    assert plan.module_path == ["src"]
    assert plan.component("task:greet").pin.file == "myapp/tasks.py"  # type: ignore[union-attr]


def test_every_command_imports_from_it_without_pythonpath(project: Path) -> None:
    plan = ["--unsigned-plan", "golden/dev.plan.json", "--state", "state"]
    for cwd in (project, project / "stacks"):
        args = [*plan] if cwd == project else ["--unsigned-plan", "../golden/dev.plan.json"]
        wf = cli("oneiric", "workflow", "run", "hello", *args, cwd=cwd)
        assert wf.returncode == 0, wf.stderr
        ev = cli("oneiric", "event", "emit", "order.created", *args, cwd=cwd)
        assert ev.returncode == 0, ev.stderr
        act = cli("oneiric", "action", "invoke", "shout", "--payload", '"x"', *args, cwd=cwd)
        assert act.returncode == 0, act.stderr
        assert json.loads(act.stdout) == "X"


def test_a_module_not_importable_at_all_says_so(project: Path, tmp_path: Path) -> None:
    away = tmp_path / "away"
    away.mkdir()
    shutil.copy(project / "golden" / "dev.plan.json", away / "plan.json")
    plan = ["--unsigned-plan", "plan.json", "--state", "state"]
    for args in (
        ("workflow", "run", "hello", *plan),
        ("action", "invoke", "shout", *plan),
        ("run", *plan),
    ):
        result = cli("oneiric", *args, cwd=away)
        assert result.returncode == 1, result.stderr
        assert NOT_IMPORTABLE in result.stderr, result.stderr
        assert "pin mismatch" not in result.stderr
        assert "Traceback" not in result.stderr
    src = str(project / "src")
    flag = cli("oneiric", "workflow", "run", "hello", "--module-path", src, *plan, cwd=away)
    assert flag.returncode == 0, flag.stderr
    env = cli(
        "oneiric", "workflow", "run", "hello", *plan, cwd=away, env={"ONEIRIC_MODULE_PATH": src}
    )
    assert env.returncode == 0, env.stderr


def test_a_changed_file_is_still_a_pin_mismatch(project: Path) -> None:
    tasks = project / "src" / "myapp" / "tasks.py"
    tasks.write_text(tasks.read_text() + "# changed\n")
    plan = ["--unsigned-plan", "golden/dev.plan.json", "--state", "state"]
    result = cli("oneiric", "workflow", "run", "hello", *plan, cwd=project)
    assert result.returncode == 1
    assert "pin mismatch for task:greet: sha256 of" in result.stderr
    assert os.path.realpath(tasks) in result.stderr
