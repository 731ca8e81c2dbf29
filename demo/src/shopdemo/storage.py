"""Storage for the demo shop: SQLite and the local filesystem."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class SQLiteDatabase:
    def __init__(self, path: str = ":memory:", **_: Any) -> None:
        self.connection = sqlite3.connect(path)

    def health(self) -> bool:
        return self.connection.execute("select 1").fetchone() == (1,)

    def close(self) -> None:
        self.connection.close()


class LocalStorage:
    def __init__(self, root: str = "var/files", **_: Any) -> None:
        self.root = Path(root)

    def put(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
