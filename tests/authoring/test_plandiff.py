"""`oneiricc diff`: semantic plan changes with their causes, in three formats."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import ROOT, run_cli, write_project

BASE = """\
oneiric 1

stack base {
  adapter cache "memory" {
    impl "argparse:Namespace"
    priority 10
    provides read, write
    config { ttl = 5m, size = 64MiB }
  }
  adapter cache "redis" { impl "collections:Counter"; priority 5; provides read, write }
  service orders "default" {
    impl "argparse:Namespace"
    requires adapter cache (write)
    config { currency = "EUR", pool = { size = 4 } }
  }
  task a "default" { impl "json:loads" }
  task b "default" { impl "json:loads" }
  task gone "default" { impl "json:loads" }
  workflow flow "default" { a -> b }
  event audit "default" { on "order.created"; impl "json:loads" }
}
"""

PROD_OLD = """\
oneiric 1
import "base.oneiric"

stack prod {
  task extra "default" { impl "json:loads" }
}

target prod { layers base, prod; profile serverless }
"""

PROD_NEW = """\
oneiric 1
import "base.oneiric"

stack prod {
  task extra "default" { impl "json:loads" }
  service orders "default" { config { currency = "USD", pool = { size = 8 } } }
  event metrics "default" { on "order.created"; impl "json:dumps"; priority 3 }
  select adapter cache = "redis"
}

target prod { layers base, prod; profile serverless }
"""


def _new_base() -> str:
    return (
        BASE.replace('  task gone "default" { impl "json:loads" }\n', "")
        .replace(
            'task b "default" {', 'task c "default" { impl "json:loads" }\n  task b "default" {'
        )
        .replace("{ a -> b }", "{ a -> b -> c }")
        # Moving a declaration changes spans only: not a change.
        .replace("stack base {\n", "stack base {\n\n  # moved down\n")
    )


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A git repository whose golden plans change between two commits."""
    root = tmp_path_factory.mktemp("diffproject")
    write_project(root, {"stacks/base.oneiric": BASE, "stacks/prod.oneiric": PROD_OLD})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True, timeout=30)
    assert run_cli("oneiricc", "build", cwd=root).returncode == 0
    old = root / "old.plan.json"
    old.write_bytes((root / "golden/prod.plan.json").read_bytes())
    subprocess.run([*git, "add", "stacks", "golden", "oneiric.toml"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True, timeout=30)
    (root / "stacks/base.oneiric").write_text(_new_base())
    (root / "stacks/prod.oneiric").write_text(PROD_NEW)
    built = run_cli("oneiricc", "build", cwd=root)
    assert built.returncode == 0, built.stderr
    return root, old, root / "golden/prod.plan.json"


def _line_of(root: Path, file: str, needle: str) -> str:
    lines = (root / file).read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if needle in line)
    return f"{file}:{number}:{lines[number - 1].index(needle.strip()) + 1}"


def test_human_summary_names_changes_and_causes(plans: tuple[Path, Path, Path]) -> None:
    root, old, new = plans
    result = run_cli("oneiricc", "diff", str(old), str(new), cwd=root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    select_at = _line_of(root, "stacks/prod.oneiric", 'select adapter cache = "redis"')
    assert (
        "  ~ adapter cache: memory → redis\n"
        f'      because `select adapter cache = "redis"` was added at {select_at}\n'
    ) in out
    refined_at = _line_of(root, "stacks/prod.oneiric", 'service orders "default"')
    assert '  ~ service orders: "default": config changed\n' in out
    assert f"      because it is refined at {refined_at} (layer prod)\n" in out
    assert '  + task c: "default" (json:loads)\n' in out
    assert '  - task gone: "default" (json:loads)\n' in out
    assert "  + event metrics:" in out
    assert "  ~ workflow flow: node c added (task c, after b) at stacks/base.oneiric:" in out
    assert "  ~ route order.created: handlers: audit → metrics, audit\n" in out
    assert "task a" not in out
    assert "task b" not in out
    assert out.endswith(
        "Plan changes: 2 components added, 1 removed, 2 changed, "
        "1 workflow changed, 1 route changed.\n"
    )
    verbose = run_cli("oneiricc", "diff", "-v", str(old), str(new), cwd=root).stdout
    assert '      · config currency: "EUR" → "USD"\n' in verbose
    assert "      · config pool.size: 4 → 8\n" in verbose
    assert "      · decided by selection (was priority)" in verbose
    assert "  sources: M stacks/base.oneiric\n" in verbose


def test_json_and_exit_code(plans: tuple[Path, Path, Path]) -> None:
    _root, old, new = plans
    result = run_cli("oneiricc", "diff", "--format", "json", "--exit-code", str(old), str(new))
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["format"] == "oneiric-plan-diff"
    (target,) = document["targets"]
    cache = next(c for c in target["components"] if c["subject"] == "adapter cache")
    assert cache["aspects"] == ["provider", "implementation", "config", "settings", "explanation"]
    assert cache["cause"].startswith('because `select adapter cache = "redis"` was added at ')
    assert target["counts"] == {
        "added": 2,
        "removed": 1,
        "changed": 2,
        "workflows": 1,
        "routes": 1,
        "plan": 0,
    }
    same = run_cli("oneiricc", "diff", "--exit-code", str(new), str(new))
    assert (same.returncode, same.stdout) == (0, "No changes: 1 plan compared.\n")


def test_markdown_comment(plans: tuple[Path, Path, Path]) -> None:
    _root, old, new = plans
    result = run_cli("oneiricc", "diff", "--format", "markdown", str(old), str(new))
    assert result.returncode == 0
    md = result.stdout
    assert md.startswith("<!-- oneiric-plan-diff -->\n### Oneiric plan changes\n")
    assert "| ✏️ | `adapter cache` | memory → redis | because `select adapter cache = " in md
    assert "<details><summary>Details</summary>" in md
    assert '- config currency: "EUR" → "USD"' in md
    assert md.rstrip().endswith("1 route changed.**")


def test_against_a_git_revision(plans: tuple[Path, Path, Path]) -> None:
    root, _old, _new = plans
    result = run_cli("oneiricc", "diff", "--against", "HEAD", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "target prod: changed" in result.stdout
    assert "  ~ adapter cache: memory → redis\n" in result.stdout
    bad = run_cli("oneiricc", "diff", "--against", "no-such-ref", cwd=root)
    assert bad.returncode == 2
    assert "oneiricc: error: git rev-parse" in bad.stderr


def test_the_repository_golden_plans_against_head() -> None:
    result = run_cli("oneiricc", "diff", "--against", "HEAD", "--format", "json", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert {t["target"] for t in json.loads(result.stdout)["targets"]} >= {"dev", "prod"}


def test_usage_errors(tmp_path: Path) -> None:
    assert run_cli("oneiricc", "diff").returncode == 2
    broken = tmp_path / "broken.plan.json"
    broken.write_text("{}")
    result = run_cli("oneiricc", "diff", str(broken), str(broken))
    assert result.returncode == 2
    assert f"{broken} is not a valid plan" in result.stderr
