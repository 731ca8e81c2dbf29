"""A content-addressed cache of checked files: the parse cache, one step further.

An entry holds what the parser and `checker.check_file` made of one file (a
`CheckedFile`: its imports, stacks and targets with their diagnostics), so a
rebuild re-reads every file but parses and checks only the changed ones.

Key: sha256 of (compiler version, Python's cache tag, grammar text, the source
of every module that shapes an entry, file path, file bytes), so an entry can
only ever stand for exactly the result it replaces.  Deleting the directory is
always safe; every failure here is a cache miss, never an error.

An entry is a sha256 of its payload, then the payload: a pickle.  The checksum
turns accidental damage (a truncated or bit-flipped file) into a miss instead
of a silently different declaration.  The unpickler accepts nothing but the
record classes of the compiler (`_ALLOWED`), so an entry cannot run code.
Anyone who can write the cache can also write the sources it stands for: a
deliberately forged entry is out of scope, as a forged source file would be.

The build memo (`builds/<key>`, same format) is the whole-build early cutoff:
a successful build's outputs, kept with every file's entry checksum and every
pin it took, reused (see `build`) when the build would read the same checked
files in the same environment.

`CachedLoader` is the build's loader (`_build.loader.Loader`) through the
cache: a cached file is neither parsed nor checked again.

A long-running process (the build server) also keeps the checked files of its
latest build in memory (`KeptFiles`), by entry: what it holds is exactly what
the entry would, without reading or unpickling it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from oneiric._plan import canonical
from oneiric._plan import document as plandoc
from oneiric._plan.document import Pin

from oneiricc._build import checker, planner
from oneiricc._build.checker import CheckedFile
from oneiricc._build.loader import (
    Broken,
    CheckJob,
    Loader,
    Sources,
    check_forked,
    check_source,
    read_source,
    record_checked,
)
from oneiricc._build.planner import PlanParts
from oneiricc._build.project import Project
from oneiricc._language import diagnostics, nodes, parser
from oneiricc._language.diagnostics import Diagnostic
from oneiricc._language.parser import grammar_text
from oneiricc._version import installed_version

ENTRY_SUFFIX = ".entry"
MEMO_DIRECTORY = "builds"
FACTS_DIRECTORY = "facts"  # module facts (`facts.FactsReader`), by module file hash
# Entries and memos that no build has read or written for this long are deleted,
# by a build, at most once every PRUNE_EVERY_S (reads mark an entry used).
MAX_UNUSED_S = 30 * 24 * 3600
PRUNE_EVERY_S = 24 * 3600
PRUNE_STAMP = "pruned"
# What pruning may delete, and nothing else: the cache directory is configurable.
_PRUNABLE = re.compile(
    r"[0-9a-f]{2}/[0-9a-f]{64}\.entry|(?:builds|facts)/[0-9a-f]{64}"
    r"|(?:[0-9a-f]{2}|builds|facts)/\.[0-9a-f]{64}(?:\.entry)?\.\d+\.\d+\.tmp"
)
CHECKSUM_SIZE = hashlib.sha256().digest_size
_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")

# The modules whose code decides what an entry holds; any edit to one (even
# without a version bump, in a source checkout) starts a new cache.
_SHAPING_MODULES = (
    nodes,
    parser,
    checker,
    diagnostics,
    canonical,
    plandoc,
    sys.modules[__name__],
)
_ALLOWED = {
    (module.__name__, name)
    for module in (nodes, checker, diagnostics)
    for name in dir(module)
    if isinstance(getattr(module, name), type)
    and getattr(module, name).__module__ == module.__name__
} | {(planner.__name__, "PlanParts"), (__name__, "BuildMemo")}


@dataclass(frozen=True, slots=True)
class BuildMemo:
    """What a successful build produced, and everything it depended on beyond its key."""

    checksums: dict[str, bytes]  # every file read → its checked form's entry checksum
    plans: dict[str, PlanParts]  # target → its plan, in output order
    diagnostics: tuple[diagnostics.Diagnostic, ...]  # warnings only
    modules: dict[str, Pin]  # every module pinned → its pin
    entry_points: dict[tuple[str, str], tuple[str, str, Pin]]  # (group, name) → module, attr, pin
    groups: dict[str, list[tuple[str, str, str, str]]]  # `plugins` group → its entry points


class _RecordsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return getattr(sys.modules[module], name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a compiler record")


def allow_records(module: ModuleType) -> None:
    """Let entries hold the record classes of `module` too (imported only by builds that
    need them: `facts`)."""
    _ALLOWED.update(
        (module.__name__, name)
        for name in dir(module)
        if isinstance(getattr(module, name), type)
        and getattr(module, name).__module__ == module.__name__
    )


def load_entry(blob: bytes, kind: type[_T]) -> _T | None:
    """The `kind` record an entry holds, or None when it is damaged or holds anything else."""
    payload = blob[CHECKSUM_SIZE:]
    if len(blob) <= CHECKSUM_SIZE or hashlib.sha256(payload).digest() != blob[:CHECKSUM_SIZE]:
        return None
    try:
        value = _RecordsOnly(io.BytesIO(payload)).load()
    except Exception:  # any unreadable or foreign payload is simply a miss
        return None
    return value if isinstance(value, kind) else None


def dump_entry(record: object) -> bytes:
    """Raises RecursionError for a structure too deep to pickle (then: do not cache it)."""
    payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(payload).digest() + payload


class LatestBuild(Generic[_K, _V]):
    """A map a long-running process keeps from one build to the next, holding only
    what the latest build used (`get` or `put`), so memory follows the project, not its
    history.  A build that used nothing (e.g. `--no-cache`) forgets nothing."""

    def __init__(self) -> None:
        self._previous: dict[_K, _V] = {}
        self._current: dict[_K, _V] = {}

    def __len__(self) -> int:
        return len(self._current.keys() | self._previous.keys())

    def get(self, key: _K) -> _V | None:
        found = self._current.get(key)
        if found is None:
            found = self._previous.get(key)
            if found is not None:
                self._current[key] = found
        return found

    def put(self, key: _K, value: _V) -> None:
        self._current[key] = value

    def next_build(self) -> None:
        """Forget what the build just finished did not use."""
        if self._current:
            self._previous, self._current = self._current, {}


# Checked files by cache entry: an entry's name is the hash of the file's bytes (and
# of the code that checks it), so a kept file stands for exactly what its entry
# holds.  Every build that reads the same bytes shares the objects: later stages
# never mutate a `CheckedFile`.
KeptFiles = LatestBuild[Path, tuple[CheckedFile, bytes]]


class CheckCache:
    def __init__(self, directory: Path, kept: KeptFiles | None = None) -> None:
        self.directory = directory
        self.kept = kept
        compiler = installed_version() or "source"
        salt = hashlib.sha256(
            f"{compiler}\0{sys.implementation.cache_tag}\0{grammar_text()}\0".encode()
        )
        for module in _SHAPING_MODULES:
            salt.update(Path(module.__file__ or "").read_bytes())
        self._salt = salt.digest()

    def entry(self, path: str, data: bytes) -> Path:
        """Where the entry for `path` with content `data` lives."""
        key = hashlib.sha256(self._salt + path.encode() + b"\0" + data).hexdigest()
        return self.directory / key[:2] / f"{key}{ENTRY_SUFFIX}"

    def load(self, entry: Path) -> tuple[CheckedFile, bytes] | None:
        """The checked file an entry holds and the entry's checksum; None on a miss."""
        if self.kept is not None and (found := self.kept.get(entry)) is not None:
            return found
        blob = read_entry(entry)
        checked = None if blob is None else load_entry(blob, CheckedFile)
        if blob is None or checked is None:
            return None
        self.keep(entry, checked, blob[:CHECKSUM_SIZE])
        return checked, blob[:CHECKSUM_SIZE]

    def checksum(self, entry: Path) -> bytes | None:
        """An entry's checksum alone: what it holds, identified without loading it."""
        if self.kept is not None and (found := self.kept.get(entry)) is not None:
            return found[1]
        return read_checksum(entry)

    def keep(self, entry: Path, checked: CheckedFile, checksum: bytes) -> None:
        """Remember, in a long-running process, what `entry` holds (just read or written)."""
        if self.kept is not None:
            self.kept.put(entry, (checked, checksum))

    def facts_entry(self, reader: bytes, sha256: str) -> Path:
        """Where the facts of a module file whose sha256 is `sha256` live, as the code
        whose source is `reader` reads them."""
        key = hashlib.sha256(self._salt + reader + b"\0" + sha256.encode()).hexdigest()
        return self.directory / FACTS_DIRECTORY / key

    def memo(self, modules: Iterable[ModuleType | Path], request: str) -> Path:
        """Where the memo of the build asked `request` lives, under a salt that adds the
        source of `modules` (the code that turns checked files into plans; a path for a
        module the memo's path does not import) to the entries' own."""
        key = hashlib.sha256(self._salt)
        for module in modules:
            key.update(
                Path(module if isinstance(module, Path) else module.__file__ or "").read_bytes()
            )
        key.update(request.encode())
        return self.directory / MEMO_DIRECTORY / key.hexdigest()

    def prune(self, now: float | None = None) -> int:
        """Delete entries and memos unused for `MAX_UNUSED_S`, and temporary files a
        killed writer left behind; at most once every `PRUNE_EVERY_S`.  Returns how
        many files went.  Pruning is housekeeping: any failure just stops it."""
        now = time.time() if now is None else now
        stamp = self.directory / PRUNE_STAMP
        try:
            if now - stamp.stat().st_mtime < PRUNE_EVERY_S:
                return 0
        except FileNotFoundError:
            if not self.directory.is_dir():
                return 0
        except OSError:
            return 0
        removed = 0
        try:
            stamp.touch()
            for path in self.directory.glob("*/*"):
                name = path.relative_to(self.directory).as_posix()
                if _PRUNABLE.fullmatch(name) is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > MAX_UNUSED_S:
                        path.unlink()
                        removed += 1
        except OSError:
            pass
        return removed


def read_entry(entry: Path) -> bytes | None:
    """An entry's bytes (`load_entry` checks them), or None when there is none."""
    try:
        blob = entry.read_bytes()
    except OSError:
        return None
    _mark_used(entry)
    return blob


def read_checksum(entry: Path) -> bytes | None:
    """An entry's checksum, read from its file."""
    try:
        with entry.open("rb") as handle:
            checksum = handle.read(CHECKSUM_SIZE)
    except OSError:
        return None
    _mark_used(entry)
    return checksum if len(checksum) == CHECKSUM_SIZE else None


def _mark_used(entry: Path) -> None:
    """Its modification time is when a build last used it: what `prune` goes by."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def write_entry(entry: Path, blob: bytes) -> None:
    """Write atomically (rename), without fsync: a cache needs no durability, and the
    checksum makes a torn write a miss.  A cache that cannot be written is just a
    slower build."""
    temp = entry.parent / f".{entry.name}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(temp, entry)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError:
        return


def write_memo(memo: Path, record: BuildMemo) -> None:
    """Write a build memo (not at all when a diagnostic is too deep to pickle)."""
    try:
        blob = dump_entry(record)
    except RecursionError:
        return
    write_entry(memo, blob)


# A file to check through the cache: (path, text, where its entry goes)
_CacheJob = tuple[str, str, Path]
# Its outcome: (path, the checked file, or its entry's bytes, or what of it parses, or
#  its syntax errors,
#  the checksum of the entry written, if any)
_CacheOutcome = tuple[str, CheckedFile | bytes | Broken | list[Diagnostic], bytes | None]


@dataclass(frozen=True, slots=True)
class ReadFiles:
    """Files read (in `sources.files`), each with its entry and, if it has one, the
    checksum of that entry."""

    sources: Sources
    entries: dict[str, Path]
    checksums: dict[str, bytes]


class CachedLoader(Loader):
    """The loader through the cache: a file whose entry exists is served from it
    (or from the files a long-running process keeps), and every file checked is
    written to its entry (`_check_and_store`, in the forked children too).

    `read`: files read already (`read_checksums`), not read again.  After `load`,
    `entries` and `checksums` hold each file's entry and its checksum (the
    checksum only for a file that has an entry: what a build memo compares).
    """

    def __init__(
        self,
        project: Project,
        cache: CheckCache,
        overlay: Mapping[str, str] | None = None,
        read: ReadFiles | None = None,
    ) -> None:
        super().__init__(project, overlay)
        self.cache = cache
        self.already = read
        self.entries: dict[str, Path] = {}
        self.checksums: dict[str, bytes] = {}

    def read(self, path: str, sources: Sources) -> bool:
        if self.already is not None and path in self.already.entries:  # (no overlay then)
            sources.files[path] = self.already.sources.files[path]
            self.entries[path] = self.already.entries[path]
            return True
        data = read_source(self.project, path, self.overlay, sources)
        if data is None:
            return False
        self.entries[path] = self.cache.entry(path, data)
        return True

    def check_files(self, paths: list[str], sources: Sources) -> None:
        jobs: list[_CacheJob] = []
        for path in paths:
            entry = self.entries[path]
            found = self.cache.load(entry)
            if found is not None:
                sources.checked[path], self.checksums[path] = found
            else:
                jobs.append((path, sources.files[path].text, entry))
        outcomes = check_forked(_check_and_store, jobs, [len(job[1]) for job in jobs])
        for (path, _, entry), (_, outcome, checksum) in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, bytes):
                loaded = load_entry(outcome, CheckedFile)
                assert loaded is not None, path  # bytes this build's own child just pickled
                outcome = loaded
            if isinstance(outcome, CheckedFile):
                sources.checked[path] = outcome
                if checksum is not None:
                    self.checksums[path] = checksum
                    self.cache.keep(entry, outcome, checksum)
            else:  # a broken file is never cached: it is parsed again until fixed
                record_checked(sources, path, outcome, None)


def _check_and_store(job: _CacheJob, blob_back: bool = False) -> _CacheOutcome:
    """Parse and check one file, and write its cache entry.

    `blob_back` (in a forked child): return a cached file as its entry's bytes,
    pickled already for the cache, rather than pickle it again to send it back.
    """
    path, text, entry = job
    check: CheckJob = (path, text, False)
    _, checked, _ = check_source(check)
    if not isinstance(checked, CheckedFile):
        return path, checked, None
    try:
        blob = dump_entry(checked)
    except RecursionError:  # too deep to pickle: built but not cached
        if blob_back:
            raise  # nor can it be sent back: the parent parses it again
        return path, checked, None
    write_entry(entry, blob)
    return path, blob if blob_back else checked, blob[:CHECKSUM_SIZE]


def read_checksums(project: Project, paths: list[str], cache: CheckCache) -> ReadFiles | None:
    """Each file's text and its checked form's entry checksum, without loading any entry.

    Only a file without an entry (an edited one) is parsed and checked, its entry
    written on the way, so a build that goes on to load it finds it.  None when a
    file cannot be read, decoded, parsed or cached (the build that reports why is
    the loader's).
    """
    read = ReadFiles(Sources(), {}, {})
    jobs: list[_CacheJob] = []
    for path in paths:
        data = read_source(project, path, {}, read.sources)
        if data is None:
            return None
        entry = read.entries[path] = cache.entry(path, data)
        checksum = cache.checksum(entry)
        if checksum is None:
            jobs.append((path, read.sources.files[path].text, entry))
        else:
            read.checksums[path] = checksum
    outcomes = check_forked(_check_and_store, jobs, [len(job[1]) for job in jobs])
    for (path, _, entry), (_, outcome, checksum) in zip(jobs, outcomes, strict=True):
        if checksum is None:
            return None
        read.checksums[path] = checksum
        if isinstance(outcome, CheckedFile):
            cache.keep(entry, outcome, checksum)
    return read
