"""Actions: invocable units, `action(payload, **config)` returning JSON data.

An action component of the plan is invoked by its key; the built-in actions
below can be invoked by name without being declared (`oneiric action invoke
http.request --payload '{"url": ...}'`) or declared in a stack like any
implementation (`impl "oneiric.actions.http:request"`), which pins them and
lets config set their defaults.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

BUILTINS: dict[str, str] = {
    "http.request": "oneiric.actions.http:request",
    "webhook.notify": "oneiric.actions.webhook:notify",
    "compress": "oneiric.actions.compress:compress",
    "decompress": "oneiric.actions.compress:decompress",
    "hash": "oneiric.actions.crypto:digest",
    "sign": "oneiric.actions.crypto:sign",
    "verify": "oneiric.actions.crypto:verify",
    "encode": "oneiric.actions.serialize:encode",
    "decode": "oneiric.actions.serialize:decode",
    "validate": "oneiric.actions.validate:validate",
    "transform": "oneiric.actions.transform:transform",
    "redact": "oneiric.actions.transform:redact",
    "event.dispatch": "oneiric.actions.flow:dispatch",
    "workflow.start": "oneiric.actions.flow:start",
    "task.schedule": "oneiric.actions.flow:schedule",
}


class ActionError(Exception):
    """The action refused its payload or failed; the message says why (exit 1 at the CLI)."""


def builtin(name: str) -> Any:
    """The built-in action called `name` (a key of `BUILTINS`)."""
    import importlib

    module, _, attr = BUILTINS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def require(payload: Any, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """`payload[key]` checked against `kind`; a clear `ActionError` otherwise."""
    if not isinstance(payload, dict):
        raise ActionError(f"the payload must be a JSON object, not {type(payload).__name__}")
    if key not in payload:
        if default is ...:
            raise ActionError(f'the payload needs "{key}"')
        return default
    value = payload[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        names = " or ".join(k.__name__ for k in _kinds(kind))
        raise ActionError(f'payload "{key}" must be {names}, not {type(value).__name__}')
    return value


def seconds(value: timedelta | float) -> float:
    """A config duration (timedelta from the plan, or a number of seconds)."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
