"""demo/live.py end to end: sign, run, re-sign, live swap, clean shutdown."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path

from conftest_paths import ROOT


def test_live_demo_swaps_the_running_runtime_and_exits_cleanly() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "live.py")],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "adapter:cache → redis" in result.stdout
    assert "changed adapter:cache" in result.stdout
    assert "adapter:cache → memcached" in result.stdout
    # The shop's app called the cache through its handle on both sides of the swap.
    assert "app: adapter:cache answered by provider 'redis'" in result.stdout
    assert "app: adapter:cache answered by provider 'memcached'" in result.stdout
    assert "in-memory stand-ins" in result.stdout
    # The health probe right after the swap already names the new instance.
    assert re.search(r"adapter:cache +memcached +ok", result.stdout)
    assert re.search(r"app: stopped after [1-9][0-9]* cache calls, 0 failed", result.stdout)
    assert "exit 0" in result.stdout


def test_demo_sqlite_database_is_shared_by_threads_and_creates_its_directory(
    tmp_path: Path,
) -> None:
    from shopdemo.storage import SQLiteDatabase

    db = SQLiteDatabase(str(tmp_path / "var" / "data" / "shop.db"))
    db.execute("create table visits (n integer)")

    def insert() -> None:
        for n in range(50):
            db.execute("insert into visits values (?)", (n,))

    threads = [threading.Thread(target=insert) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.query("select count(*) from visits") == [(200,)]
    assert db.health() is True
    db.close()
