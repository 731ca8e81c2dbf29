"""SQLite files that several processes open at once (runtime, CLI, consumers): WAL mode."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect(path: Path | str, *, timeout_s: float, threads: bool = False) -> sqlite3.Connection:
    """`path` opened in autocommit mode with the WAL journal (`threads`: usable from any thread).

    Switching a new file to WAL takes an exclusive lock, and there SQLite answers
    "database is locked" at once, without waiting the busy timeout, while another
    process makes the same switch (two consumers starting on one state directory):
    the switch is retried until `timeout_s` has passed.
    """
    db = sqlite3.connect(
        path, timeout=timeout_s, isolation_level=None, check_same_thread=not threads
    )
    deadline = time.monotonic() + timeout_s
    delay_s = 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                db.close()
                raise
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.1)
