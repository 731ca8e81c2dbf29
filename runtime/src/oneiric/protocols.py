"""Protocols of the built-in kinds: what a cache, a database and a storage provide.

A stack binds a capability to one of these (or to a protocol of its own):

    capability adapter cache write = "oneiric.protocols:CacheWriter"

and `oneiricc` then checks, by reading the implementation's source, that every
component providing `write` defines `set` and `delete` with a fitting arity,
sync as here.  In Python they are ordinary `typing.Protocol` classes, usable to
type the instance a handle returns; `runtime_checkable`, so `isinstance` tests
that the methods exist.  The built-in adapters (`oneiric.adapters.*`) satisfy
them.  This module imports nothing but `typing` (the runtime stays lean).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = [
    "Cache",
    "CacheReader",
    "CacheWriter",
    "Closable",
    "Database",
    "Healthy",
    "Storage",
]


@runtime_checkable
class Healthy(Protocol):
    """A component the runtime can probe: `health()` is true while it works."""

    def health(self) -> bool: ...


@runtime_checkable
class Closable(Protocol):
    """A component holding resources, released by `close()` when it is drained."""

    def close(self) -> None: ...


@runtime_checkable
class CacheReader(Protocol):
    """Reads from a cache: the value stored under `key`, or None."""

    def get(self, key: str) -> bytes | None: ...


@runtime_checkable
class CacheWriter(Protocol):
    """Writes to a cache: `ttl` (None: the cache's default) bounds the entry's life."""

    def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None: ...

    def delete(self, key: str) -> bool: ...


@runtime_checkable
class Cache(CacheReader, CacheWriter, Healthy, Closable, Protocol):
    """A whole cache: memory, Redis and Memcached (`oneiric.adapters.*`) are ones."""


@runtime_checkable
class Database(Healthy, Closable, Protocol):
    """A SQL database: `execute` changes (the count of rows changed), `query` reads rows."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


@runtime_checkable
class Storage(Healthy, Protocol):
    """Named objects (relative paths) of bytes: `oneiric.adapters.localfs:LocalStorage`."""

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def delete(self, name: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...
