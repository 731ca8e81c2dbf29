"""Where a project's root is: the nearest directory, upwards, holding `oneiric.toml`.

Like ruff and mypy, the root comes from the files: each path a command is
given finds its own `oneiric.toml` upwards; the working directory is only the
default path.  A path with none above it belongs to the working directory's
project when it lies inside it, and is otherwise a project of its own (a lone
`.oneiric` file: its directory).

With `os.path` alone (and the runtime's own lookup, `oneiric._lifecycle.modulepath`,
which imports nothing heavier either): `launcher` runs this before every command.
"""

from __future__ import annotations

import os

from oneiric._lifecycle.modulepath import CONFIG_FILE as CONFIG_FILE
from oneiric._lifecycle.modulepath import nearest_project as _nearest


class MixedProjects(ValueError):
    """The paths of one command belong to different projects."""


def find_root(start: str) -> str:
    """The nearest directory from `start` upwards with `oneiric.toml`; else `start`."""
    start = os.path.realpath(start)
    return _nearest(start) or start


def root_of(paths: list[str], cwd: str) -> str:
    """The one project root of `paths` (relative to `cwd`); `cwd`'s root when none given.

    Raises `MixedProjects` when the paths belong to different projects.
    """
    default = find_root(cwd)
    roots: dict[str, str] = {}
    for path in paths:
        full = os.path.realpath(os.path.join(cwd, path))
        start = full if os.path.isdir(full) else os.path.dirname(full)
        found = _nearest(start)
        if found is None:
            inside = os.path.commonpath([default, full]) == default
            found = default if inside else start
        roots.setdefault(found, path)
    if len(roots) > 1:
        listed = ", ".join(f"{path} → {root}" for root, path in roots.items())
        raise MixedProjects(
            f"the paths belong to different projects ({listed}); "
            "run once per project or pass --root"
        )
    return next(iter(roots), default)
