"""Formatting-only changes: `build --check` and `diff` tell provenance from semantics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from minikit import cli

PROVENANCE = (
    "golden/prod.plan.json: provenance only: the source hashes of stacks/prod.oneiric "
    "changed (a formatting-only edit?), every component and decision is identical; "
    "run `oneiricc build` and commit the result"
)


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    assert cli("oneiricc", "init", "app", cwd=tmp_path).returncode == 0
    root = tmp_path / "app"
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def test_a_formatting_only_change_is_named_with_its_fix(project: Path) -> None:
    prod = project / "stacks" / "prod.oneiric"
    prod.write_text(prod.read_text().replace("\n  ", "\n      "))  # valid, not canonical
    check = cli("oneiricc", "build", "--check", cwd=project)
    assert check.returncode == 1
    assert check.stdout == PROVENANCE + "\n"
    assert "1 golden plan out of date: prod" in check.stderr
    as_json = cli("oneiricc", "build", "--check", "--format", "json", cwd=project)
    assert json.loads(as_json.stdout)["provenance_only"] == {"prod": ["stacks/prod.oneiric"]}

    unbuilt = cli("oneiricc", "diff", "--against", "HEAD", cwd=project)
    assert unbuilt.returncode == 0
    assert unbuilt.stdout.splitlines() == [
        "No changes: 2 plans compared.",
        "note: golden/prod.plan.json was built from other sources than those in the working "
        "tree (stacks/prod.oneiric changed since): run `oneiricc build` and commit the result "
        "(`oneiricc build --check` fails until then)",
    ]

    assert cli("oneiricc", "build", cwd=project).returncode == 0
    rebuilt = cli("oneiricc", "diff", "--against", "HEAD", "--exit-code", cwd=project)
    assert rebuilt.returncode == 0  # nothing semantic
    assert rebuilt.stdout == (
        "No semantic changes: 2 plans compared; only provenance differs (source hashes of "
        "stacks/prod.oneiric, as after a formatting-only edit): every component and decision "
        "is identical.\n"
    )
    assert cli("oneiricc", "build", "--check", cwd=project).returncode == 0


def test_a_semantic_change_is_still_a_diff(project: Path) -> None:
    prod = project / "stacks" / "prod.oneiric"
    prod.write_text(prod.read_text().replace('"good day"', '"good evening"'))
    check = cli("oneiricc", "build", "--check", cwd=project)
    assert check.returncode == 1
    assert "provenance only" not in check.stdout
    assert '"greeting": "good evening"' in check.stdout
    assert cli("oneiricc", "build", cwd=project).returncode == 0
    diff = cli("oneiricc", "diff", "--against", "HEAD", cwd=project)
    assert "service greeter" in diff.stdout
    assert "No semantic changes" not in diff.stdout
