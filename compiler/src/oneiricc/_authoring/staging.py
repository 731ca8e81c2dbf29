"""All-or-nothing writes of several new files: `oneiricc init` and `oneiricc import`.

The files are written to a hidden staging directory on the same file system
first (and completed there, e.g. compiled), then renamed into place.  Nothing
existing is ever overwritten: any file already there refuses the whole write
before anything is moved, and a failure while moving takes back what was
moved.  A command interrupted mid-way leaves at most the hidden staging
directory, never a half-written project.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


class Refused(Exception):
    """Some of the files exist already (`existing`, relative paths): nothing was written."""

    def __init__(self, existing: list[str]) -> None:
        super().__init__(f"refusing to overwrite {', '.join(existing)}; nothing was written")
        self.existing = existing


def write_new(
    target: Path,
    files: Mapping[str, str],
    complete: Callable[[Path], None] | None = None,
) -> list[str]:
    """Write `files` (relative path → text) under `target`; return every path written.

    `complete(staging)` may add files (it runs on the staged copy; an exception
    it raises aborts the write).  Raises `Refused` when a path exists, OSError
    on I/O failures; either way nothing is left behind.
    """
    target = target.absolute()
    existing = _existing(target, list(files))
    if existing:
        raise Refused(existing)
    fresh = not target.exists()
    parent = target.parent if fresh else target
    staging = Path(tempfile.mkdtemp(prefix=".oneiric-staging-", dir=parent))
    try:
        for name, text in files.items():
            path = staging / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        if complete is not None:
            complete(staging)
        written = sorted(
            p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file()
        )
        existing = _existing(target, written)
        if existing:
            raise Refused(existing)
        if fresh:
            os.rename(staging, target)
            return written
        _move_in(staging, target, written)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _existing(target: Path, names: list[str]) -> list[str]:
    """The paths of `names` that exist under `target` (or have a file where a dir goes)."""
    found = []
    for name in names:
        parts = Path(name).parts
        for index in range(1, len(parts) + 1):
            prefix = target.joinpath(*parts[:index])
            if index == len(parts) and (prefix.exists() or prefix.is_symlink()):
                found.append(name)
            elif index < len(parts) and prefix.exists() and not prefix.is_dir():
                found.append(Path(*parts[:index]).as_posix())
                break
    return sorted(set(found))


def _move_in(staging: Path, target: Path, written: list[str]) -> None:
    """Rename the shallowest staged paths that do not exist in `target` into it."""
    moves: list[Path] = []
    for name in written:
        parts = Path(name).parts
        for index in range(1, len(parts) + 1):
            relative = Path(*parts[:index])
            if not (target / relative).exists():
                if relative not in moves:
                    moves.append(relative)
                break
    done: list[Path] = []
    try:
        for relative in moves:
            os.rename(staging / relative, target / relative)
            done.append(relative)
    except OSError:
        for relative in reversed(done):
            os.rename(target / relative, staging / relative)
        raise
