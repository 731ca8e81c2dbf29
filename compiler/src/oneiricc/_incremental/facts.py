"""Python modules' facts (`modules.ModuleFacts`) kept by file hash.

What a module's source says depends only on its bytes (and the code that reads
it), so like a checked stack file it is kept in the cache directory (`facts/`,
keyed by the module file's sha256 and the reader's source) and, in a long-running
process, in memory.  Imported only by builds that read modules (`Pipeline.reader`):
a build the memo answers reads no module and imports none of this.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from oneiricc._build import modules
from oneiricc._build.modules import ModuleFacts
from oneiricc._incremental.cache import (
    CheckCache,
    LatestBuild,
    allow_records,
    dump_entry,
    load_entry,
    read_entry,
    write_entry,
)

allow_records(modules)
# What reads the facts: part of each entry's key.
_READER = b"".join(
    Path(module.__file__ or "").read_bytes() for module in (modules, sys.modules[__name__])
)

# Module facts by file sha256, kept by a long-running process.
KeptFacts = LatestBuild[str, ModuleFacts]


class FactsReader(modules.Reader):
    """Module facts kept by the module file's hash, in the cache directory and, with
    `kept`, in memory: a module is read and parsed once per content."""

    def __init__(self, cache: CheckCache, kept: KeptFacts | None = None) -> None:
        super().__init__()
        self.cache = cache
        self.kept = kept

    def read(self, path: str, sha256: str) -> ModuleFacts:
        if self.kept is not None and (found := self.kept.get(sha256)) is not None:
            return found
        entry = self.cache.facts_entry(_READER, sha256)
        blob = read_entry(entry)
        facts = None if blob is None else load_entry(blob, ModuleFacts)
        if facts is None:
            facts = super().read(path, sha256)
            with contextlib.suppress(RecursionError):  # too deep to pickle: not kept on disk
                write_entry(entry, dump_entry(facts))
        if self.kept is not None:
            self.kept.put(sha256, facts)
        return facts
