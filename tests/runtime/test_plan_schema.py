"""docs/plan.schema.json is current, valid, and describes every committed plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from oneiric._plan.schema import render
from support import ROOT, run_cli

SCHEMA_FILE = ROOT / "docs" / "plan.schema.json"
GOLDEN = sorted((ROOT / "golden").glob("*.plan.json"))


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render(), (
        "docs/plan.schema.json is stale: run `make golden`"
    )


def test_generator_is_deterministic_across_processes(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = run_cli("oneiric._plan.schema", str(out), env={"PYTHONHASHSEED": "12345"})
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == render()
    usage = run_cli("oneiric._plan.schema", "--bogus")
    assert usage.returncode == 2
    assert "usage" in usage.stderr


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_plans_match_schema(validator: Draft202012Validator, path: Path) -> None:
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(json.loads(path.read_bytes()))
    ]
    assert errors == []


def _first(plan: dict[str, Any], predicate: Any) -> dict[str, Any]:
    return next(c for c in plan["components"] if predicate(c))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda p: p["components"][0].update(domain="plugin"), "domain"),
        (lambda p: p["components"][0].update(unexpected=1), "unexpected"),
        (lambda p: p.update(digest="md5:abc"), "digest"),
        (lambda p: p["components"][0].update(span="no position"), "span"),
        (lambda p: _first(p, lambda c: c["config"])["config"].update(x={"$duration_ms": -1}), "-1"),
        (lambda p: _first(p, lambda c: c["config"])["config"].update(x={"$env": "A"}), "default"),
        (lambda p: _first(p, lambda c: c["config"])["config"].update(x={"$nope": 1}), "$nope"),
        (lambda p: _first(p, lambda c: c["config"])["config"].update(x=0.5), "0.5"),
        (
            lambda p: _first(p, lambda c: c["subscription"] and c["subscription"]["filter"])[
                "subscription"
            ].update(filter={"op": "~", "path": ["payload"], "value": 1}),
            "filter",
        ),
    ],
)
def test_schema_rejects_malformed_plans(
    validator: Draft202012Validator, change: Any, where: str
) -> None:
    plan = json.loads((ROOT / "golden" / "prod.plan.json").read_bytes())
    assert validator.is_valid(plan)
    change(plan)
    assert not validator.is_valid(plan), where
