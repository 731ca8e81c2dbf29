"""JSON Schema validation (the `jsonschema` extra: `oneiric-runtime[jsonschema]`).

Payload {"value": any, "schema": object (optional when config has one)}.  The schema's own
`$schema` picks the draft (2020-12 by default) and is itself checked first: a broken schema
is an error, not a failed validation.  Answers {"valid", "errors": [{"path", "message"}]}
(JSON Pointer paths, sorted), or, with config `strict = true`, fails the action listing them.
Formats (`"format": "email"`, …) are checked as far as jsonschema can without extra packages.
"""

from __future__ import annotations

from typing import Any

from oneiric.actions import ActionError, require

MAX_ERRORS = 50


def validate(
    payload: Any, *, schema: dict[str, Any] | None = None, strict: bool = False
) -> dict[str, Any]:
    chosen = require(payload, "schema", dict, schema)
    if chosen is None:
        raise ActionError('no schema: give payload "schema" or config schema')
    if "value" not in payload:
        raise ActionError('the payload needs "value"')
    try:
        import jsonschema
        from jsonschema.validators import validator_for
    except ImportError:
        raise ActionError(
            "JSON Schema validation needs the jsonschema extra: "
            "pip install 'oneiric-runtime[jsonschema]'"
        ) from None
    cls = validator_for(chosen, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(chosen)
    except jsonschema.SchemaError as exc:
        where = "/" + "/".join(str(p) for p in exc.path)
        raise ActionError(f"the schema is invalid at {where}: {exc.message}") from None
    validator = cls(chosen, format_checker=cls.FORMAT_CHECKER)
    errors = sorted(
        (
            {"path": "/" + "/".join(str(p) for p in error.absolute_path), "message": error.message}
            for error in validator.iter_errors(payload["value"])
        ),
        key=lambda e: (e["path"], e["message"]),
    )[:MAX_ERRORS]
    if strict and errors:
        listed = "; ".join(f"{e['path']}: {e['message']}" for e in errors)
        raise ActionError(f"the value does not match the schema: {listed}")
    return {"valid": not errors, "errors": errors}
