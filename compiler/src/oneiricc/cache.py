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
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from oneiric import canonical, plandoc

from . import checker, diagnostics, nodes, parser
from .checker import CheckedFile
from .parser import grammar_text

ENTRY_SUFFIX = ".entry"
_CHECKSUM = hashlib.sha256().digest_size

# The modules whose code decides what an entry holds; any edit to one (even
# without a version bump, in a source checkout) starts a new cache.
_SHAPING_MODULES = (nodes, parser, checker, diagnostics, canonical, plandoc, sys.modules[__name__])
_ALLOWED = {
    (module.__name__, name)
    for module in (nodes, checker, diagnostics)
    for name in dir(module)
    if isinstance(getattr(module, name), type)
    and getattr(module, name).__module__ == module.__name__
}


def _compiler_version() -> str:
    try:
        return version("oneiric-compiler")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "source"


class _RecordsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return getattr(sys.modules[module], name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a compiler record")


def load_entry(blob: bytes) -> CheckedFile | None:
    """The checked file an entry holds, or None when it is damaged or holds anything else."""
    payload = blob[_CHECKSUM:]
    if len(blob) <= _CHECKSUM or hashlib.sha256(payload).digest() != blob[:_CHECKSUM]:
        return None
    try:
        value = _RecordsOnly(io.BytesIO(payload)).load()
    except Exception:  # any unreadable or foreign payload is simply a miss
        return None
    return value if isinstance(value, CheckedFile) else None


def dump_entry(checked: CheckedFile) -> bytes:
    """Raises RecursionError for a structure too deep to pickle (then: do not cache it)."""
    payload = pickle.dumps(checked, protocol=pickle.HIGHEST_PROTOCOL)
    return hashlib.sha256(payload).digest() + payload


class CheckCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        salt = hashlib.sha256(
            f"{_compiler_version()}\0{sys.implementation.cache_tag}\0{grammar_text()}\0".encode()
        )
        for module in _SHAPING_MODULES:
            salt.update(Path(module.__file__ or "").read_bytes())
        self._salt = salt.digest()

    def entry(self, path: str, data: bytes) -> Path:
        """Where the entry for `path` with content `data` lives."""
        key = hashlib.sha256(self._salt + path.encode() + b"\0" + data).hexdigest()
        return self.directory / key[:2] / f"{key}{ENTRY_SUFFIX}"


def read_entry(entry: Path) -> CheckedFile | None:
    try:
        blob = entry.read_bytes()
    except OSError:
        return None
    return load_entry(blob)


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
