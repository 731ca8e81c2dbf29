"""The plan's JSON Schema (draft 2020-12), generated from `oneiric._plan.model.Plan`.

`python -m oneiric._plan.schema [FILE]` writes it to FILE (stdout without one);
`make golden` regenerates docs/plan.schema.json and a test keeps it current.
The output is deterministic: sorted keys, two-space indent, one final newline.

The plan model types config values and event filters as plain JSON.  Their
finer shapes (the one-key tagged values, the filter operators) are a contract
too (see docs/plan.md), so the generated schema spells them out in its
`ConfigValue` and `Filter` definitions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from oneiric._plan.canonical import MAX_SAFE_INTEGER
from oneiric._plan.model import FORMAT_VERSION, Plan

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SAFE_INT = {"type": "integer", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER}
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER}
_CONFIG_REF = {"$ref": "#/$defs/ConfigValue"}
_FILTER_REF = {"$ref": "#/$defs/Filter"}
_PATH = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_DECIMAL = {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$"}


def _tagged(tag: str, value: dict[str, Any], **extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {tag: value, **extra},
        "required": [tag, *extra],
        "additionalProperties": False,
    }


CONFIG_VALUE: dict[str, Any] = {
    "description": "A config value: plain JSON for strings, integers, booleans, lists and maps; "
    "a one-tag object for everything else.  References stay unresolved.",
    "anyOf": [
        {"type": "string"},
        {"type": "boolean"},
        _SAFE_INT,
        {"type": "array", "items": _CONFIG_REF},
        {
            "type": "object",
            "propertyNames": {"not": {"pattern": "^\\$"}},
            "additionalProperties": _CONFIG_REF,
        },
        _tagged("$duration_ms", _COUNT),
        _tagged("$bytes", _COUNT),
        _tagged("$float", _DECIMAL),
        _tagged("$env", {"type": "string"}, default={"anyOf": [_CONFIG_REF, {"type": "null"}]}),
        _tagged("$secret", {"type": "string", "minLength": 1}),
    ],
}

FILTER: dict[str, Any] = {
    "description": "An event filter over topic, payload and headers.",
    "anyOf": [
        _tagged("and", {"type": "array", "items": _FILTER_REF, "minItems": 2}),
        _tagged("or", {"type": "array", "items": _FILTER_REF, "minItems": 2}),
        _tagged("not", _FILTER_REF),
        _tagged("exists", _PATH),
        {
            "type": "object",
            "properties": {
                "op": {"enum": ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]},
                "path": _PATH,
                "value": _CONFIG_REF,
            },
            "required": ["op", "path", "value"],
            "additionalProperties": False,
        },
    ],
}


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of a valid plan."""
    schema = Plan.model_json_schema(mode="validation")
    defs = schema["$defs"]
    subscription = defs["Subscription"]["properties"]
    # Fail loudly, rather than publish a wrong schema, if the model stops looking as expected.
    if "ConfigValue" not in defs or '"type": "object"' not in json.dumps(subscription["filter"]):
        raise RuntimeError("the plan model changed shape; update oneiric._plan.schema")
    defs["ConfigValue"] = CONFIG_VALUE
    defs["Filter"] = FILTER
    subscription["filter"] = {
        "anyOf": [_FILTER_REF, {"type": "null"}],
        "default": None,
        "title": "Filter",
    }
    major = FORMAT_VERSION.split(".", 1)[0]
    return {
        "$schema": DIALECT,
        "title": f"Oneiric plan, format {major}.x",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def render() -> str:
    return json.dumps(plan_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m oneiric._plan.schema [FILE]", file=sys.stderr)
        return 2
    text = render()
    if not args:
        sys.stdout.write(text)
        return 0
    path = Path(args[0])
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
