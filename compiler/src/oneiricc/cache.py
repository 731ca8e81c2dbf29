"""A content-addressed cache of parsed files.

Key: sha256 of (compiler version, grammar text, the source of the modules
that shape the tree, file path, file bytes), so an entry can only ever stand
for exactly the parse it replaces.  Entries are
pickled syntax trees written atomically; the unpickler accepts nothing but
the classes of `oneiricc.nodes`, so a tampered cache cannot run code.
Deleting the directory is always safe; every failure here is a cache miss.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from . import nodes as n
from . import parser as parser_module
from .parser import grammar_text

_ALLOWED = {name for name in dir(n) if isinstance(getattr(n, name), type)}


def _compiler_version() -> str:
    try:
        return version("oneiric-compiler")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "source"


class _NodesOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == n.__name__ and name in _ALLOWED:
            return getattr(n, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a syntax-tree node")


class ParseCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        salt = hashlib.sha256(f"{_compiler_version()}\0{grammar_text()}\0".encode())
        # The tree's shape is defined by these two modules: any edit to them
        # (even without a version bump, in a source checkout) is a new cache.
        for module in (n, parser_module):
            salt.update(Path(module.__file__ or "").read_bytes())
        self._salt = salt.digest()

    def _entry(self, path: str, data: bytes) -> Path:
        key = hashlib.sha256(self._salt + path.encode() + b"\0" + data).hexdigest()
        return self.directory / key[:2] / f"{key}.pickle"

    def get(self, path: str, data: bytes) -> n.Module | None:
        try:
            blob = self._entry(path, data).read_bytes()
            module = _NodesOnly(io.BytesIO(blob)).load()
        except Exception:  # any unreadable or foreign entry is simply a miss
            return None
        return module if isinstance(module, n.Module) else None

    def put(self, path: str, data: bytes, module: n.Module) -> None:
        entry = self._entry(path, data)
        try:
            blob = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(blob)
                os.replace(tmp, entry)
            except BaseException:
                os.unlink(tmp)
                raise
        except (OSError, RecursionError, pickle.PicklingError):
            return  # a cache that cannot be written is just a slower build
