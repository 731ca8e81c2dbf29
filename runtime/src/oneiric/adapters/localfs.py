"""Local filesystem storage: objects are files under `root`, written atomically."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from oneiric._delivery.store import atomic_write


class LocalStorage:
    def __init__(self, *, root: str = "var/files", max_object: int | None = None) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_object = max_object

    def _path(self, name: str) -> Path:
        relative = PurePosixPath(name)
        if not name or relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"object name {name!r} must be a relative path without '..'")
        return self.root.joinpath(*relative.parts)

    def put(self, name: str, data: bytes) -> None:
        if self.max_object is not None and len(data) > self.max_object:
            raise ValueError(
                f"object {name!r} is {len(data)} bytes; the limit is {self.max_object}"
            )
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o600)

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> bool:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        names = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix) and not n.endswith(".tmp"))

    def health(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)
