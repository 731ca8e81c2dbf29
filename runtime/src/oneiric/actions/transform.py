"""Data transform and redaction by path, on a copy (the input is never changed).

A path is dot-separated keys; an integer segment indexes a list and `*` matches every key
of an object or item of a list: `user.password`, `items.*.card`, `rows.0`.  `transform`
applies, in this order: `pick` (keep only these paths), `rename` ({"from.path": "new_key"},
renaming the last segment in place), `drop` (remove) and `mask` (replace the value with
`mask_with`).  `redact` is `drop` and `mask` alone, with config defaults meant for secrets.
Payload lists add to the config's.  A path that matches nothing is fine (the field is
absent); a malformed path fails the action before anything is done.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from typing import Any

from oneiric.actions import ActionError, require

Path = list[str]


def transform(
    payload: Any,
    *,
    pick: Sequence[str] = (),
    rename: dict[str, str] | None = None,
    drop: Sequence[str] = (),
    mask: Sequence[str] = (),
    mask_with: str = "***",
) -> dict[str, Any]:
    picks = _paths(pick, require(payload, "pick", list, []), "pick")
    renames = {**(rename or {}), **require(payload, "rename", dict, {})}
    for source, target in renames.items():
        if not isinstance(target, str) or not target or "." in target:
            raise ActionError(f'rename "{source}": the new name must be one key, not {target!r}')
    renamed = [(_parse(source, "rename"), target) for source, target in renames.items()]
    drops = _paths(drop, require(payload, "drop", list, []), "drop")
    masks = _paths(mask, require(payload, "mask", list, []), "mask")
    if "value" not in payload:
        raise ActionError('the payload needs "value"')
    value = copy.deepcopy(payload["value"])
    if picks:
        value = _pick(value, picks)
    for path, target in renamed:
        _at(value, path, functools.partial(_rename, new=target))
    _drop(value, drops)
    for path in masks:
        _at(value, path, functools.partial(_replace, new=mask_with))
    return {"value": value}


def redact(
    payload: Any,
    *,
    drop: Sequence[str] = (),
    mask: Sequence[str] = (),
    mask_with: str = "***",
) -> dict[str, Any]:
    if isinstance(payload, dict) and ({"pick", "rename"} & payload.keys()):
        raise ActionError("redact only drops and masks; use transform to pick or rename")
    return transform(payload, drop=drop, mask=mask, mask_with=mask_with)


def _paths(configured: Sequence[str], given: list[Any], what: str) -> list[Path]:
    return [_parse(p, what) for p in [*configured, *given]]


def _parse(path: Any, what: str) -> Path:
    if not isinstance(path, str) or not path:
        raise ActionError(f"{what}: a path is a non-empty string, not {path!r}")
    parts = path.split(".")
    if any(not part for part in parts):
        raise ActionError(f'{what}: path "{path}" has an empty segment')
    return parts


def _children(node: Any, part: str) -> list[tuple[Any, Any]]:
    """(container, key) pairs that `part` names inside `node`."""
    if isinstance(node, dict):
        keys = list(node) if part == "*" else [part] if part in node else []
        return [(node, k) for k in keys]
    if isinstance(node, list):
        if part == "*":
            return [(node, i) for i in range(len(node))]
        if part.isdigit() and int(part) < len(node):
            return [(node, int(part))]
    return []


def _at(value: Any, path: Path, act: Callable[[Any, Any], None]) -> None:
    targets = _children(value, path[0])
    for part in path[1:]:
        targets = [pair for parent, key in targets for pair in _children(parent[key], part)]
    # Deepest and last first, so deleting list items does not shift the ones still to go.
    for parent, key in reversed(targets):
        act(parent, key)


def _drop(value: Any, paths: list[Path]) -> None:
    """Remove every match of every path, all found first: indexes mean the input's items."""
    found: dict[int, tuple[Any, set[Any]]] = {}
    for path in paths:
        _at(
            value,
            path,
            lambda parent, key: found.setdefault(id(parent), (parent, set()))[1].add(key),
        )
    for parent, keys in found.values():
        for key in sorted(keys, reverse=True):
            del parent[key]


def _replace(parent: Any, key: Any, new: Any) -> None:
    parent[key] = new


def _rename(parent: Any, key: Any, new: str) -> None:
    if isinstance(parent, dict):
        parent[new] = parent.pop(key)


def _pick(value: Any, paths: list[Path]) -> Any:
    kept: Any = {} if isinstance(value, dict) else [] if isinstance(value, list) else value
    for path in paths:
        _copy_path(value, kept, path)
    return kept


def _copy_path(source: Any, target: Any, path: Path) -> None:
    for parent, key in _children(source, path[0]):
        child = parent[key]
        if len(path) == 1:
            _put(target, key, copy.deepcopy(child))
            continue
        if not isinstance(child, dict | list):
            continue
        existing = _get(target, key)
        if existing is None:
            existing = {} if isinstance(child, dict) else []
            _put(target, key, existing)
        _copy_path(child, existing, path[1:])


def _get(target: Any, key: Any) -> Any:
    if isinstance(target, dict):
        return target.get(key)
    return target[key] if isinstance(key, int) and key < len(target) else None


def _put(target: Any, key: Any, value: Any) -> None:
    if isinstance(target, dict):
        target[key] = value
        return
    while len(target) <= key:
        target.append(None)
    target[key] = value
