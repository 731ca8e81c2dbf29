"""The cache of checked files: never changes the output, and a damaged entry is only a miss.

(The demo project's cold/warm/no-cache equality and garbage entries are in
test_determinism.py; here: forged and bit-flipped entries, diagnostics that
depend on other files, and what a one-file edit re-reads.)
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from pathlib import Path
from typing import Any

from oneiricc._incremental.cache import ENTRY_SUFFIX, MAX_UNUSED_S, MEMO_DIRECTORY, PRUNE_STAMP
from support import compile_at, write_project

CLEAN = {
    "stacks/a.oneiric": (
        'oneiric 1\nstack base {\n  adapter db "mem" { impl "argparse:Namespace" }\n}\n'
    ),
    "stacks/b.oneiric": (
        "oneiric 1\n"
        'import "a.oneiric"\n'
        'stack web {\n  service api "v1" { impl "argparse:Namespace" requires adapter db }\n}\n'
        "target prod { layers base, web }\n"
    ),
    "stacks/c.oneiric": 'oneiric 1\nimport "b.oneiric"\ntarget dev { layers base }\n',
}
# A second `stack base` and `target prod` in another file: E0103, and the errors inside
# the dropped duplicates must not be reported, however the files were checked.
BROKEN = {
    **CLEAN,
    "stacks/d.oneiric": (
        "oneiric 1\n"
        'stack base {\n  adapter db "x" { impl "argparse:Namespace" priority 99999999999 }\n}\n'
        'stack app {\n  adapter db "file" { impl "argparse:Namespace" config { t = 5q } }\n}\n'
        "target prod { layers app, app }\n"
    ),
}


def outcome(root: Path, **options: Any) -> tuple[list[str], dict[str, bytes]]:
    build = compile_at(root, **options)
    diagnostics = [f"{d.location} {d.code} {d.message} {d.notes}" for d in build.diagnostics]
    return diagnostics, {name: plan.data for name, plan in build.outputs.items()}


def entries(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((root / ".oneiric-cache").rglob(f"*{ENTRY_SUFFIX}"))}


def test_cross_file_diagnostics_are_the_same_cold_warm_and_uncached(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", BROKEN)
    uncached = outcome(root)
    codes = [d.split()[1] for d in uncached[0]]
    assert codes.count("E0103") == 2
    assert "E0401" in codes  # in stack app, which is not a duplicate
    assert not any("99999999999" in d or "listed twice" in d for d in uncached[0])
    assert outcome(root, use_cache=True) == uncached  # cold: fills the cache
    assert len(entries(root)) == 4
    assert outcome(root, use_cache=True) == uncached  # warm: every file from the cache


def test_forged_entry_runs_no_code_and_is_a_miss(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", CLEAN)
    expected = outcome(root)
    outcome(root, use_cache=True)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps(Exploit())
    for entry in entries(root):
        # A correct checksum: only the unpickler's allow-list stands in the way.
        entry.write_bytes(hashlib.sha256(payload).digest() + payload)
    assert outcome(root, use_cache=True) == expected
    assert not marker.exists()


def test_bit_flipped_entry_is_a_miss_not_a_different_declaration(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", CLEAN)
    expected = outcome(root)
    outcome(root, use_cache=True)
    flipped = 0
    for entry, blob in entries(root).items():
        # Change a name inside the payload: still a loadable pickle, but the checksum differs.
        if b"argparse" in blob:
            entry.write_bytes(blob.replace(b"argparse", b"argparsE"))
            flipped += 1
    assert flipped == 2
    assert outcome(root, use_cache=True) == expected


def test_an_edit_reparses_only_the_edited_file(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", CLEAN)
    outcome(root, use_cache=True)
    before = entries(root)
    edited = root / "stacks" / "a.oneiric"
    edited.write_text(edited.read_text().replace('"mem"', '"memory"'), encoding="utf-8")
    warm = outcome(root, use_cache=True)
    after = entries(root)
    assert set(before) < set(after)
    assert len(after) == len(before) + 1  # one new entry: the other two files were hits
    assert all(after[path] == blob for path, blob in before.items())
    assert warm == outcome(root)
    assert any('"memory"' in line for line in warm[1]["prod"].decode().splitlines())


def test_deleted_cache_rebuilds_the_same(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", CLEAN)
    expected = outcome(root)
    outcome(root, use_cache=True)
    for entry in entries(root):
        entry.unlink()
    assert outcome(root, use_cache=True) == expected
    assert len(entries(root)) == 3


def test_entries_and_memos_no_build_used_for_a_month_are_pruned_once_a_day(
    tmp_path: Path,
) -> None:
    root = write_project(tmp_path / "p", CLEAN)
    cache = root / ".oneiric-cache"
    compile_at(root, use_cache=True)
    a = root / "stacks" / "a.oneiric"
    a.write_text(a.read_text().replace('"mem"', '"memory"'), encoding="utf-8")
    compile_at(root, use_cache=True)
    assert len(entries(root)) == 4  # a.oneiric's old entry is no longer used by any build
    memos = sorted((cache / MEMO_DIRECTORY).iterdir())
    assert memos
    # A month and a day pass; the users' own files in the directory are never touched.
    foreign = [cache / "notes.txt", cache / MEMO_DIRECTORY / "README", cache / "ab" / "x.entry"]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine", encoding="utf-8")
    old = time.time() - MAX_UNUSED_S - 86400
    for path in [*entries(root), *memos, *foreign, cache / PRUNE_STAMP]:
        os.utime(path, (old, old))

    assert outcome(root, use_cache=True) == outcome(root)
    kept = [path for path in entries(root) if path not in foreign]
    assert len(kept) == 3  # the three this build read; the stale one is gone
    assert all(path.exists() for path in foreign)
    assert all(path.stat().st_mtime > old for path in kept)

    # Pruned less than a day ago: the next build does not walk the cache again.
    unused = cache / "cd" / f"{'cd' * 32}{ENTRY_SUFFIX}"
    unused.parent.mkdir(exist_ok=True)
    unused.write_bytes(b"an entry no build reads")
    os.utime(unused, (old, old))
    compile_at(root, use_cache=True)
    assert unused.exists()
