"""File hashes remembered across pin checks (`oneiric.attest.file_sha256`) are never stale.

A long-running process (the runtime swapping plans, the compiler's build server)
checks the same module files again and again, so their hashes are remembered
while size, mtime and inode stay the same; a rewrite of the same size within
one tick of the file system's clock would keep all three.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from oneiric._lifecycle.attest import RACY_S, file_sha256


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_same_size_rewrite_in_the_same_clock_tick_is_seen(tmp_path: Path) -> None:
    module = tmp_path / "impl.py"
    module.write_text("X = 1\n", encoding="utf-8")
    before = os.stat(module)
    assert file_sha256(str(module)) == sha256(module)
    module.write_text("X = 2\n", encoding="utf-8")
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same tick, exactly
    assert (os.stat(module).st_size, os.stat(module).st_ino) == (before.st_size, before.st_ino)
    assert file_sha256(str(module)) == sha256(module)


def test_a_remembered_file_that_changes_is_hashed_again(tmp_path: Path) -> None:
    module = tmp_path / "impl.py"
    module.write_text("X = 1\n", encoding="utf-8")
    old = time.time_ns() - (RACY_S + 10) * 1_000_000_000
    os.utime(module, ns=(old, old))
    assert file_sha256(str(module)) == sha256(module)
    module.write_text("X = 2\n", encoding="utf-8")  # a new mtime: hashed again
    assert file_sha256(str(module)) == sha256(module)
