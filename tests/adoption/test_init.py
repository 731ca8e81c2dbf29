"""`oneiricc init`: a working project, written all or nothing, never over a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from minikit import cli
from oneiricc._authoring.scaffold import package_name
from oneiricc._authoring.staging import Refused, write_new


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_init_writes_a_project_that_builds_tests_and_runs(tmp_path: Path) -> None:
    result = cli("oneiricc", "init", "my-app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "my-app"
    assert "package my_app" in result.stdout
    for name in (
        "oneiric.toml",
        "stacks/base.oneiric",
        "stacks/prod.oneiric",
        "src/my_app/components.py",
        "golden/dev.plan.json",
        "golden/prod.plan.json",
        "tests/test_project.py",
        ".gitignore",
        ".pre-commit-config.yaml",
    ):
        assert (root / name).is_file(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".oneiric-staging")]
    assert cli("oneiricc", "build", "--check", cwd=root).returncode == 0
    assert cli("oneiricc", "fmt", "--check", cwd=root).returncode == 0
    own = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert own.returncode == 0, own.stdout + own.stderr
    assert "2 passed" in own.stdout
    plan = ["--unsigned-plan", "golden/dev.plan.json"]
    run = cli("oneiric", "workflow", "run", "onboarding", *plan, cwd=root)
    assert run.returncode == 0, run.stderr
    emitted = cli("oneiric", "event", "emit", "user.signed_up", "--payload", "{}", *plan, cwd=root)
    assert emitted.returncode == 0, emitted.stderr
    prod = json.loads((root / "golden" / "prod.plan.json").read_bytes())
    greeter = next(c for c in prod["components"] if c["id"] == "service:greeter")
    assert greeter["config"] == {"greeting": "good day"}


def test_init_in_an_existing_directory_keeps_its_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("mine\n")
    (tmp_path / "src" / "other").mkdir(parents=True)
    result = cli("oneiricc", "init", "--package", "shop", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "README.md").read_text() == "mine\n"
    assert (tmp_path / "src" / "other").is_dir()
    assert (tmp_path / "src" / "shop" / "components.py").is_file()


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "base.oneiric").write_text("oneiric 1\n")
    before = _tree(tmp_path)
    result = cli("oneiricc", "init", cwd=tmp_path)
    assert result.returncode == 1
    assert "refusing to overwrite stacks/base.oneiric; nothing was written" in result.stderr
    assert _tree(tmp_path) == before
    assert (tmp_path / "stacks" / "base.oneiric").read_text() == "oneiric 1\n"


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    bad = cli("oneiricc", "init", "x", "--package", "not-a-name", cwd=tmp_path)
    assert bad.returncode == 2
    assert '"not-a-name" is not a valid Python package name' in bad.stderr
    (tmp_path / "file").write_text("")
    not_dir = cli("oneiricc", "init", "file", cwd=tmp_path)
    assert not_dir.returncode == 2
    missing = cli("oneiricc", "init", "no/such/place", cwd=tmp_path)
    assert missing.returncode == 2
    assert "Traceback" not in bad.stderr + not_dir.stderr + missing.stderr
    assert _tree(tmp_path) == ["file"]


def test_a_failure_while_completing_leaves_nothing(tmp_path: Path) -> None:
    def explode(staging: Path) -> None:
        (staging / "golden").mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_new(tmp_path / "new", {"a.txt": "a", "b/c.txt": "c"}, explode)
    with pytest.raises(OSError, match="disk full"):
        write_new(tmp_path, {"a.txt": "a"}, explode)
    assert _tree(tmp_path) == []
    (tmp_path / "b").write_text("a file where a directory goes")
    with pytest.raises(Refused) as refused:
        write_new(tmp_path, {"a.txt": "a", "b/c.txt": "c"})
    assert refused.value.existing == ["b"]
    assert _tree(tmp_path) == ["b"]


@pytest.mark.parametrize(
    ("directory", "package"), [("my-app", "my_app"), ("2fast", "_2fast"), ("Shop", "shop")]
)
def test_package_names(directory: str, package: str) -> None:
    assert package_name(directory) == package


@pytest.mark.slow
def test_the_new_project_is_typed(tmp_path: Path) -> None:
    assert cli("oneiricc", "init", "typed", cwd=tmp_path).returncode == 0
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "src", "tests"],
        cwd=tmp_path / "typed",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout


def test_the_pre_commit_configuration_formats_before_building(tmp_path: Path) -> None:
    import yaml

    assert cli("oneiricc", "init", "hooks", cwd=tmp_path).returncode == 0
    config = yaml.safe_load((tmp_path / "hooks" / ".pre-commit-config.yaml").read_text())
    hooks = config["repos"][0]["hooks"]
    assert [h["entry"] for h in hooks] == ["oneiricc fmt", "oneiricc build", "oneiricc check"]
    assert hooks[0]["files"] == r"\.oneiric$"
