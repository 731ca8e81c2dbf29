"""Resolving a component's config: tagged plan values become Python values at activation.

    {"$duration_ms": n}  -> datetime.timedelta(milliseconds=n)
    {"$bytes": n}        -> int (a byte count)
    {"$float": "0.25"}   -> float
    {"$env": NAME, "default": d} -> os.environ[NAME], else d (resolved the same way)
    {"$secret": ref}     -> Secret, read by the provider `ref`'s scheme names
                            (oneiric._plan.secrets: file (default), env, aws-sm, aws-ssm, cmd)

A `Secret` is a `str` whose repr is redacted.  The runtime only ever logs
the plan's config (where a secret is a reference), never a resolved one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from oneiric._plan.secrets import CONFIG_ENV, SECRETS, SecretError, config_dir

__all__ = [
    "CONFIG_ENV",
    "SECRETS",
    "ConfigError",
    "Secret",
    "config_dir",
    "resolve",
    "secret_digest",
    "secret_references",
]


class ConfigError(Exception):
    """A config value cannot be resolved (missing secret, unknown tag)."""


class Secret(str):
    """A secret value: usable as a string, never shown by repr or in logs."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


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


def _secret(component: str, where: str, reference: str) -> Secret:
    try:
        return Secret(SECRETS.read(reference))
    except SecretError as exc:
        raise ConfigError(f"{component}: config {where}: {exc}") from None


def secret_references(config: Any) -> list[str]:
    """Every secret reference in a plan config (unresolved), sorted, without repeats."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            if isinstance(value.get("$secret"), str):
                found.add(value["$secret"])
            for item in value.values():
                walk(item)

    walk(config)
    return sorted(found)


def secret_digest(resolved: Any) -> str:
    """A digest of the secret values in a resolved config ("" without any): compared to
    find the components a rotation changed; the values themselves are never kept."""
    digest = hashlib.sha256()
    count = 0

    def walk(where: str, value: Any) -> None:
        nonlocal count
        if isinstance(value, Secret):
            count += 1
            digest.update(f"{where}\0{value}\0".encode())
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(f"{where}[{i}]", item)
        elif isinstance(value, dict):
            for key in sorted(value):
                walk(f"{where}.{key}", value[key])

    walk("", resolved)
    return digest.hexdigest() if count else ""
