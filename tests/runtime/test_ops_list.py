"""`oneiric list`: the running plan's or a plan file's components, rules, health, losers."""

from __future__ import annotations

import json
from pathlib import Path

from conftest_paths import ROOT
from ophttp import CACHE, store
from planbuild import plan
from rtprocess import oneiric, running, wait_for, write_plan

__all__ = ["running"]  # a fixture

GOLDEN = str(ROOT / "golden" / "prod.plan.json")


def test_a_plan_file_with_its_shadowed_candidates() -> None:
    result = oneiric("list", "--plan", GOLDEN, "--domain", "adapter", "--shadowed")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{GOLDEN}: prod sha256:")
    assert lines[1].split() == ["adapter:cache", "redis", "[selection]"]
    assert lines[2].strip() == (
        'shadowed memory (layer base, selection): not selected: select adapter cache = "redis"'
        " at stacks/prod.oneiric:31:3"
    )
    assert [line.split()[0] for line in lines if not line.startswith("      ")][1:] == [
        "adapter:cache",
        "adapter:database",
        "adapter:storage",
    ]
    data = json.loads(oneiric("list", "--plan", GOLDEN, "--format", "json").stdout)
    golden = json.loads(Path(GOLDEN).read_bytes())
    assert [c["id"] for c in data["components"]] == sorted(c["id"] for c in golden["components"])
    assert all("shadowed" not in c and c["health"] is None for c in data["components"])
    cache = next(c for c in data["components"] if c["id"] == CACHE)
    assert (cache["provider"], cache["rule"]) == ("redis", "selection")


def test_the_running_plan_with_health(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    run = running(plan_path)
    run.wait_running(v1.digest)
    state = str(run.state)
    listed = oneiric("list", "--state", state)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        f"running plan: test {v1.digest} unsigned",
        f"  {CACHE:<28} {'v1':<16} [only]  healthy",
    ]
    (tmp_path / "sick").touch()

    def unhealthy() -> bool:
        data = json.loads(oneiric("list", "--state", state, "--format", "json").stdout)
        return bool(data["components"][0]["health"] == "unhealthy: health check returned False")

    wait_for(unhealthy, what="list to show the failing check")
    assert run.stop() == 0
    after = json.loads(oneiric("list", "--state", state, "--format", "json").stdout)
    assert after["components"][0]["health"] is None  # stopped: no health to show
    assert after["components"][0]["provider"] == "v1"


def test_errors_exit_2_and_name_the_problem(tmp_path: Path) -> None:
    missing = oneiric("list", "--state", str(tmp_path / "none"))
    assert missing.returncode == 2
    assert "no runtime state in" in missing.stderr
    (tmp_path / "x.json").write_text('{"target": "t"}')
    bad = oneiric("list", "--plan", str(tmp_path / "x.json"))
    assert bad.returncode == 2
    assert bad.stderr == f"error: {tmp_path / 'x.json'}: not a plan (no components list)\n"
    domain = oneiric("list", "--plan", GOLDEN, "--domain", "adapters")
    assert domain.returncode == 2
    assert "'adapters' is not one of" in domain.stderr
