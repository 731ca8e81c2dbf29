"""The build memo (whole-build early cutoff): reused only when nothing it stands for changed.

Every reuse is compared with a build of the same sources without any cache: the
memo may make a build cheaper, never different.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from oneiricc import Build, compile_project, load_project
from oneiricc._incremental.cache import MEMO_DIRECTORY
from support import SMALL_BASE, SMALL_PROJECT, SMALL_SETTINGS, compile_at, write_project


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "p", dict(SMALL_PROJECT), SMALL_SETTINGS)


def build(root: Path, **options: Any) -> Build:
    """What `oneiricc build` and `check` ask for."""
    return compile_at(root, use_cache=True, reuse_outputs=True, **options)


def outcome(build: Build) -> tuple[list[str], dict[str, bytes]]:
    diagnostics = [f"{d.location} {d.code} {d.message} {d.notes}" for d in build.diagnostics]
    return diagnostics, {name: plan.data for name, plan in build.outputs.items()}


def memos(root: Path) -> list[Path]:
    directory = root / ".oneiric-cache" / MEMO_DIRECTORY
    return sorted(directory.iterdir()) if directory.is_dir() else []


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_unchanged_rebuild_reuses_the_plans_byte_for_byte(root: Path) -> None:
    first = build(root)
    assert not first.reused
    assert not first.failed
    assert [d.code for d in first.diagnostics] == ["W0503"]  # warnings are remembered too
    assert len(memos(root)) == 1
    again = build(root)
    assert again.reused
    assert outcome(again) == outcome(first) == outcome(compile_at(root))
    assert sorted(again.sources.files) == ["stacks/app.oneiric", "stacks/base.oneiric"]
    assert again.sources.files["stacks/base.oneiric"].text == SMALL_BASE  # diagnostics render
    with pytest.raises(RuntimeError):
        again.program  # noqa: B018 - a reused build has none, and says so


def test_comment_edit_is_reused_with_the_new_source_digest(root: Path) -> None:
    before = outcome(build(root))[1]
    base = root / "stacks" / "base.oneiric"
    base.write_text(SMALL_BASE + "# a comment changes the bytes, not the checked form\n")
    edited = build(root)
    assert edited.reused
    assert outcome(edited) == outcome(compile_at(root))
    sha = hashlib.sha256(base.read_bytes()).hexdigest()
    for name, data in outcome(edited)[1].items():
        assert data != before[name]
        assert sha.encode() in data


def test_semantic_edit_is_a_miss_then_remembered(root: Path) -> None:
    build(root)
    edit(root / "stacks" / "app.oneiric", '"v1"', '"v2"')
    changed = build(root)
    assert not changed.reused
    assert outcome(changed) == outcome(compile_at(root))
    assert b'"v2"' in changed.outputs["prod"].data
    assert build(root).reused


def test_imported_file_outside_the_entries_is_compared_too(root: Path) -> None:
    def app_only() -> Build:
        project = load_project(root)
        return compile_project(
            project, [root / "stacks" / "app.oneiric"], reuse_outputs=True, use_cache=True
        )

    build(root)  # another request (all files): its memo is not this one's
    assert not app_only().reused
    assert app_only().reused
    edit(root / "stacks" / "base.oneiric", '"mem"', '"memory"')
    changed = app_only()
    assert not changed.reused
    assert b'"memory"' in changed.outputs["prod"].data


def test_edited_implementation_module_is_a_miss_with_the_new_pin(root: Path) -> None:
    build(root)
    module = root / "mods" / "memoimpl.py"
    # Another size: the pinner's in-process hash cache trusts size, mtime and inode.
    module.write_text("def make() -> int:\n    return 22\n", encoding="utf-8")
    repinned = build(root)
    assert not repinned.reused
    assert hashlib.sha256(module.read_bytes()).hexdigest().encode() in repinned.outputs["dev"].data
    assert outcome(repinned) == outcome(compile_at(root))


def test_upgraded_distribution_of_an_entry_point_is_a_miss(root: Path) -> None:
    info = root / "mods" / "memoplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memoplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[memo.plugins]\nfast = memoimpl:make\n")
    edit(root / "stacks" / "base.oneiric", '"memoimpl:make"', 'entrypoint "memo.plugins" "fast"')
    first = build(root)
    assert not first.failed, first.diagnostics
    assert b'"version":"1.0"' in first.outputs["dev"].data
    assert build(root).reused
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memoplug\nVersion: 1.10\n")
    upgraded = build(root)
    assert not upgraded.reused
    assert b'"version":"1.10"' in upgraded.outputs["dev"].data


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_memo_is_a_miss(root: Path, damage: str) -> None:
    expected = outcome(build(root))
    (memo,) = memos(root)
    blob = memo.read_bytes()
    damaged = {
        "flip": blob.replace(b"argparse", b"argparsE"),
        "truncate": blob[: len(blob) // 2],
        "empty": b"",
    }[damage]
    assert damaged != blob
    memo.write_bytes(damaged)
    again = build(root)
    assert not again.reused
    assert outcome(again) == expected
    assert build(root).reused  # the miss wrote it again


def test_builds_with_errors_are_never_remembered(root: Path) -> None:
    broken = root / "stacks" / "broken.oneiric"
    broken.write_text('oneiric 1\nstack bad {\n  adapter db "x" { impl 5 }\n}\n')
    assert build(root).failed
    assert build(root).failed
    assert memos(root) == []
    broken.unlink()
    assert build(root, strict=True).failed  # the tie is an error when strict
    assert build(root, strict=True).failed
    assert memos(root) == []


@pytest.mark.parametrize(
    "request_options",
    [{"targets": ["prod"]}, {"targets": ["prod", "dev", "extra"]}, {"strict": True}],
)
def test_another_request_is_another_memo(root: Path, request_options: dict[str, Any]) -> None:
    build(root)
    if request_options.get("targets") == ["prod", "dev", "extra"]:
        with (root / "stacks" / "app.oneiric").open("a") as handle:
            handle.write("target extra { layers web }\n")
    other = build(root, **request_options)
    assert not other.reused
    assert outcome(other) == outcome(compile_at(root, **request_options))


def test_new_file_is_a_miss(root: Path) -> None:
    build(root)
    (root / "stacks" / "more.oneiric").write_text("oneiric 1\ntarget more { layers base }\n")
    grown = build(root)
    assert not grown.reused
    assert "more" not in grown.outputs  # not imported: `base` is unknown there
    assert outcome(grown) == outcome(compile_at(root))


def test_only_callers_that_need_nothing_more_are_served(root: Path) -> None:
    build(root)
    full = compile_at(root, use_cache=True)  # not asking for reuse: the whole build
    assert not full.reused
    assert full.resolutions
    assert full.program.targets
    overlay = {"stacks/base.oneiric": SMALL_BASE}
    assert not build(root, overlay=overlay).reused
    assert not compile_at(root, reuse_outputs=True).reused  # no cache, no memo


def test_syntax_error_or_missing_import_after_a_memo_is_reported(root: Path) -> None:
    build(root)
    base = root / "stacks" / "base.oneiric"
    base.write_text(SMALL_BASE + "stack {\n")
    broken = build(root)
    assert not broken.reused
    assert broken.failed
    assert [d.code for d in broken.diagnostics] == [d.code for d in compile_at(root).diagnostics]

    base.write_text(SMALL_BASE)
    project = load_project(root)
    app = [root / "stacks" / "app.oneiric"]
    assert not compile_project(project, app, reuse_outputs=True).failed
    assert compile_project(project, app, reuse_outputs=True).reused
    base.unlink()
    missing = compile_project(project, app, reuse_outputs=True)
    assert not missing.reused
    assert missing.failed
    assert "E0204" in [d.code for d in missing.diagnostics]  # the import, then what it hid
