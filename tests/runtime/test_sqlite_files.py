"""The SQLite files several processes open at once: flows.db, control.db, the SQLite adapter's.

Two consumers (or a runtime and a command) started together on one state
directory both create its flows.db; switching a new file to WAL answered
"database is locked" at once to one of them (the busy timeout does not apply
there), which exited 2.  Processes released together by a barrier open the same
new file, over and over: every open must succeed.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from oneiric._flows.store import FlowStore
from oneiric._lifecycle.control import ControlStore
from oneiric.adapters.sqlite import SQLiteDatabase

PROCESSES = 4
TRIALS = 25  # before the fix, about one trial in five saw a refused open

OPENERS: dict[str, Callable[[Path], Any]] = {
    "flows.db": lambda d: FlowStore(d),
    "control.db": lambda d: ControlStore(d),
    "SQLiteDatabase": lambda d: SQLiteDatabase(path=str(d / "app.db")),
}


def _open(kind: str, directory: str, barrier: Any, errors: Any) -> None:
    barrier.wait()
    try:
        opened = OPENERS[kind](Path(directory))
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
        return
    opened.close()


@pytest.mark.parametrize("kind", sorted(OPENERS))
def test_processes_creating_one_file_at_once_all_open_it(kind: str, tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    errors = fork.Queue()
    for trial in range(TRIALS):
        directory = str(tmp_path / str(trial))
        barrier = fork.Barrier(PROCESSES)
        processes = [
            fork.Process(target=_open, args=(kind, directory, barrier, errors))
            for _ in range(PROCESSES)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
