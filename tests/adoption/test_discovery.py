"""Project discovery like ruff's: from each path given, upwards; `--root` overrides."""

from __future__ import annotations

import json
from pathlib import Path

from minikit import cli, write_mini
from oneiricc._incremental.wire import path_arguments, served_root

LONE = (
    'oneiric 1\nstack s { adapter cache "m" { impl "argparse:Namespace" } }\n'
    "target t { layers s }\n"
)


def test_build_from_another_directory_finds_the_project_of_its_path(tmp_path: Path) -> None:
    project = write_mini(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = cli("oneiricc", "build", str(project / "stacks"), "--target", "dev", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (project / "golden" / "dev.plan.json").is_file()
    assert not (elsewhere / "golden").exists()
    check = cli("oneiricc", "check", "../project/stacks/app.oneiric", cwd=elsewhere)
    assert check.returncode == 0, check.stderr


def test_a_lone_file_outside_any_project_is_its_own_project(tmp_path: Path) -> None:
    project = write_mini(tmp_path / "project")
    lone = tmp_path / "scratch" / "lone.oneiric"
    lone.parent.mkdir()
    lone.write_text(LONE, encoding="utf-8")
    result = cli("oneiricc", "check", str(lone), "--format", "json", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["targets"] == ["t"]
    built = cli("oneiricc", "build", str(lone), cwd=project / "src")
    assert built.returncode == 0, built.stderr
    assert (lone.parent / "golden" / "t.plan.json").is_file()


def test_paths_of_two_projects_are_a_usage_error(tmp_path: Path) -> None:
    one = write_mini(tmp_path / "one")
    two = write_mini(tmp_path / "two")
    result = cli("oneiricc", "check", str(one / "stacks"), str(two / "stacks"), cwd=tmp_path)
    assert result.returncode == 2
    assert "different projects" in result.stderr
    assert "Traceback" not in result.stderr


def test_root_overrides_discovery(tmp_path: Path) -> None:
    project = write_mini(tmp_path / "project")
    other = tmp_path / "other"
    other.mkdir()
    result = cli("oneiricc", "--root", str(other), "check", str(project / "stacks"), cwd=tmp_path)
    assert result.returncode == 2
    assert "outside the project root" in result.stderr
    ok = cli("oneiricc", "--root", str(project), "check", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_the_build_server_is_asked_for_the_project_of_the_paths(tmp_path: Path) -> None:
    project = write_mini(tmp_path / "project")
    args = ["build", "-t", "dev", "--module-path", "src", str(project / "stacks")]
    assert path_arguments(args[1:]) == [str(project / "stacks")]
    assert served_root(args, str(tmp_path)) == str(project.resolve())
    assert served_root(["build"], str(project / "src")) == str(project.resolve())
    two = write_mini(tmp_path / "two")
    assert served_root(["check", str(project), str(two)], str(tmp_path)) is None
