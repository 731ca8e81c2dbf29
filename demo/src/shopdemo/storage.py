"""Storage for the demo shop: SQLite and the local filesystem."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class SQLiteDatabase:
    """One SQLite connection shared by the app's threads, one statement at a time."""

    def __init__(self, path: str = ":memory:", **_: Any) -> None:
        if path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The runtime calls components from several threads (and activates them in a worker).
        self.connection = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()

    # The two methods `oneiric.protocols:Database` asks for (the stacks bind `sql` to it).
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in its own transaction; return the number of rows changed."""
        with self._lock, self.connection:
            return self.connection.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self.connection:
            return self.connection.execute(sql, params).fetchall()

    def health(self) -> bool:
        return self.query("select 1") == [(1,)]

    def close(self) -> None:
        with self._lock:
            self.connection.close()


class LocalStorage:
    """Files under `root`, one per object: what `oneiric.protocols:Storage` asks for."""

    def __init__(self, root: str = "var/files", **_: Any) -> None:
        self.root = Path(root)

    def put(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)

    def get(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def delete(self, name: str) -> bool:
        path = self.root / name
        if not path.is_file():
            return False
        path.unlink()
        return True

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.name.startswith(prefix))

    def health(self) -> bool:
        return True
