"""The state directory's manifest store: the last accepted manifest and plan per target.

    STATE/manifests/
      .lock                          flock(2) held by whoever verifies and commits
      <target>/manifest.dsse.json    the exact envelope bytes last accepted (commit point)
      <target>/plans/<hex>.json      exact plan bytes, named by their sha256

(STATE is `--state DIR`, else $ONEIRIC_STATE, else ./.oneiric; other runtime
files live beside `manifests/`.)  Standard library only.

Every file is written to a temporary file in the same directory, fsynced,
renamed over the old one, and the directory fsynced: a crash at any instant
leaves the old or the new file, never a torn one.  The plan is written before
the manifest that references it, so the commit point is the single rename of
the manifest; plans no longer referenced are removed after it, and temporary
files left by a killed writer are removed on the next commit.

Test hook: when the environment variable ONEIRIC_TEST_PAUSE_BEFORE_REPLACE is
set to "SECONDS:SUBSTRING" (read once at import), `atomic_write` of a path
containing SUBSTRING prints "oneiric-test: paused before replace <path>" to
stderr and sleeps between the fsync and the rename, so a test can SIGKILL a
real process inside that window.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_PAUSE_SECONDS, _, _PAUSE_MATCH = (
    os.environ.get("ONEIRIC_TEST_PAUSE_BEFORE_REPLACE") or "0:"
).partition(":")
_PAUSE_BEFORE_REPLACE = float(_PAUSE_SECONDS)
TEMP_SUFFIX = ".tmp"
MANIFEST_FILE = "manifest.dsse.json"
# Target names become directory names: keep them boring.
TARGET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TARGET = re.compile(TARGET_PATTERN)
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class StateError(OSError):
    pass


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync the directory."""
    # Not tempfile.mkstemp: importing tempfile costs `oneiric status` ~10 ms of start-up.
    temp = path.parent / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if _PAUSE_BEFORE_REPLACE and _PAUSE_MATCH in str(path):
            print(f"oneiric-test: paused before replace {path}", file=sys.stderr, flush=True)
            time.sleep(_PAUSE_BEFORE_REPLACE)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_dir(path.parent)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class State:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "manifests"

    def _target_dir(self, target: str) -> Path:
        if _TARGET.match(target) is None:
            raise StateError(f"target name {target!r} is not allowed in a state directory")
        return self.root / target

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock over the whole directory (one verifier-committer at a time)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = (self.root / ".lock").open("a+b")
        except OSError as exc:
            raise StateError(f"cannot use state directory {self.root}: {exc.strerror}") from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def targets(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_FILE).is_file())

    def manifest(self, target: str) -> bytes | None:
        """The exact bytes of the last accepted envelope for `target`, if any."""
        return _read(self._target_dir(target) / MANIFEST_FILE)

    def plan(self, target: str, hexdigest: str) -> bytes | None:
        if _HEX_DIGEST.match(hexdigest) is None:
            raise StateError(f"not a sha256 hex digest: {hexdigest!r}")
        return _read(self.plan_path(target, hexdigest))

    def plan_path(self, target: str, hexdigest: str) -> Path:
        return self._target_dir(target) / "plans" / f"{hexdigest}.json"

    def commit(self, target: str, envelope: bytes, hexdigest: str, plan: bytes) -> None:
        """Persist an accepted manifest and its plan (call with the lock held).

        On any failure the previous manifest stays in place, and neither the new
        plan nor a temporary file is left behind; the error propagates.
        """
        directory = self._target_dir(target)
        plans = directory / "plans"
        plans.mkdir(parents=True, exist_ok=True)
        for stale in (*directory.glob(f"*{TEMP_SUFFIX}"), *plans.glob(f"*{TEMP_SUFFIX}")):
            stale.unlink(missing_ok=True)
        plan_path = self.plan_path(target, hexdigest)
        new_plan = _read(plan_path) != plan
        if new_plan:
            atomic_write(plan_path, plan)
        try:
            atomic_write(directory / MANIFEST_FILE, envelope)
        except BaseException:
            if new_plan:
                plan_path.unlink(missing_ok=True)
            raise
        for old in plans.glob("*.json"):
            if old != plan_path:
                old.unlink(missing_ok=True)
