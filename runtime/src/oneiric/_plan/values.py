"""Resolving a component's config: tagged plan values become Python values at activation.

    {"$duration_ms": n}  -> datetime.timedelta(milliseconds=n)
    {"$bytes": n}        -> int (a byte count)
    {"$float": "0.25"}   -> float
    {"$env": NAME, "default": d} -> os.environ[NAME], else d (resolved the same way)
    {"$secret": path}    -> Secret, the stripped text of $ONEIRIC_CONFIG/secrets/<path>

A `Secret` is a `str` whose repr is redacted.  The runtime only ever logs
the plan's config (where a secret is a reference), never a resolved one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

CONFIG_ENV = "ONEIRIC_CONFIG"


class ConfigError(Exception):
    """A config value cannot be resolved (missing secret, unknown tag)."""


class Secret(str):
    """A secret value: usable as a string, never shown by repr or in logs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


def config_dir() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or "config")


def resolve(component: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every tagged value resolved; errors name the component and key."""
    return {key: _value(component, key, value) for key, value in config.items()}


def _value(component: str, where: str, value: Any) -> Any:
    if isinstance(value, list):
        return [_value(component, f"{where}[{i}]", item) for i, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    tags = [k for k in value if k.startswith("$")]
    if not tags:
        return {k: _value(component, f"{where}.{k}", v) for k, v in value.items()}
    tag = tags[0]
    if tag == "$duration_ms":
        return timedelta(milliseconds=value[tag])
    if tag == "$bytes":
        return int(value[tag])
    if tag == "$float":
        return float(value[tag])
    if tag == "$env":
        found = os.environ.get(value[tag])
        if found is not None:
            return found
        return _value(component, where, value.get("default"))
    if tag == "$secret":
        return _secret(component, where, value[tag])
    raise ConfigError(f"{component}: config {where}: unknown tagged value {tag}")


def _secret(component: str, where: str, name: str) -> Secret:
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError(f"{component}: config {where}: secret path {name!r} must be relative")
    path = config_dir() / "secrets" / relative
    try:
        return Secret(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(
            f"{component}: config {where}: secret {name!r} not readable at {path} "
            f"({exc.strerror}); set {CONFIG_ENV} to the directory holding secrets/"
        ) from None
