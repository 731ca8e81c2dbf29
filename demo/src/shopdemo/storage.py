"""Storage for the demo shop: SQLite and the local filesystem."""

from __future__ import annotations

import sqlite3
import threading
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

    def execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock, self.connection:
            return self.connection.execute(sql, parameters).fetchall()

    def health(self) -> bool:
        return self.execute("select 1") == [(1,)]

    def close(self) -> None:
        with self._lock:
            self.connection.close()


class LocalStorage:
    def __init__(self, root: str = "var/files", **_: Any) -> None:
        self.root = Path(root)

    def put(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
