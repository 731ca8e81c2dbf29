"""The compiler's pydantic-free plan (`oneiric.plandoc`) is exactly the contract (`oneiric.plan`).

The compiler builds plans as plain dicts and encodes them itself; the models
stay the contract.  So: the two descriptions have the same JSON Schema (up to
what only validation needs), every plan the compiler emits validates with
`load_plan` and re-encodes to the very same bytes, and `oneiricc build`
itself never imports pydantic.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from oneiric._plan import document as plandoc
from oneiric._plan.model import Plan, load_plan
from pydantic import TypeAdapter
from support import ROOT, compile_at

# Keywords only validation uses (ranges, patterns, closedness) or that only document.
_VALIDATION_ONLY = {"title", "description", "default", "pattern", "minimum", "maximum"}


def _shape(schema: Any) -> Any:
    """The schema without validation-only keywords; `required` kept apart (see below)."""
    if isinstance(schema, dict):
        return {
            key: _shape(value)
            for key, value in schema.items()
            if key not in _VALIDATION_ONLY
            and key != "required"
            and not (key == "additionalProperties" and value is False)
        }
    if isinstance(schema, list):
        return [_shape(item) for item in schema]
    return schema


def test_typeddicts_describe_the_same_document_as_the_models() -> None:
    documents = TypeAdapter(plandoc.Plan).json_schema()
    models = Plan.model_json_schema()
    # The one intended difference: the model also describes an unsealed plan (no digest
    # yet); the compiler only ever emits sealed ones.
    digest = models["properties"]["digest"]
    assert digest["anyOf"] == [
        {"pattern": "^sha256:[0-9a-f]{64}$", "type": "string"},
        {"type": "null"},
    ]
    models["properties"]["digest"] = digest["anyOf"][0]
    assert _shape(documents) == _shape(models)
    # A model field with a default may be left out when validating, but model_dump
    # writes every field: the plain document always has every key, but `notifications`,
    # absent when empty (so plans without routes keep their bytes).
    model_schemas = {"Plan": models, **models["$defs"]}
    for name, schema in {"Plan": documents, **documents["$defs"]}.items():
        if "properties" in schema:
            optional = {"notifications"} if name == "Plan" else set()
            assert sorted(schema["required"]) == sorted(set(schema["properties"]) - optional), name
            assert set(model_schemas[name].get("required", ())) <= set(schema["required"])


def _generated_project(tmp_path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("gen_project", ROOT / "bench" / "gen_project.py")
    assert spec is not None
    assert spec.loader is not None
    gen_project = importlib.util.module_from_spec(spec)
    sys.modules["gen_project"] = gen_project
    spec.loader.exec_module(gen_project)
    root = tmp_path / "generated"
    gen_project.generate(root, 400)
    return root


@pytest.mark.parametrize("project", ["demo", "generated"])
def test_every_emitted_plan_validates_and_round_trips(project: str, tmp_path: Path) -> None:
    if project == "demo":
        root = tmp_path / "demo"
        shutil.copytree(ROOT / "stacks", root / "stacks")
        shutil.copy(ROOT / "oneiric.toml", root / "oneiric.toml")
    else:
        root = _generated_project(tmp_path)
    build = compile_at(root)
    assert not build.failed, build.diagnostics[:3]
    assert build.outputs
    for name, output in build.outputs.items():
        model = load_plan(output.data)  # structure, types, ranges, patterns and the digest
        assert model.to_bytes() == output.data, name
        assert model.digest == output.digest
        parts = output.parts  # the counts `oneiricc build` prints, without decoding the plan
        assert (parts.components, parts.workflows, parts.routes) == (
            len(model.components),
            len(model.workflows),
            len(model.routes),
        )
        assert parts.files == tuple(source.path for source in model.sources)
        assert build.plans[name] is build.plans[name]  # validated once, then kept


PROBE = """
import json, sys
from oneiricc._cli.main import main
try:
    main(["build", "--no-cache", "-t", "prod", "--out", sys.argv[1]])
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(sys.modules)))
"""


def test_build_never_imports_pydantic(tmp_path: Path) -> None:
    out = tmp_path / "prod.plan.json"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    modules = set(json.loads(probe.stdout.splitlines()[-1]))
    assert out.read_bytes() == (ROOT / "golden" / "prod.plan.json").read_bytes()
    assert not {"pydantic", "oneiric._plan.model"} & {*modules, *(m.split(".")[0] for m in modules)}
