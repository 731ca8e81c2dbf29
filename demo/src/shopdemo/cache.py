"""Cache implementations for the demo shop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


class MemoryCache:
    """A bounded in-process cache (read and write)."""

    def __init__(self, max_entries: int = 1000, **_: Any) -> None:
        self.max_entries = max_entries
        self._data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def set(self, key: str, value: Any, ttl: timedelta | None = None) -> None:
        """Store `value` (the demo keeps entries until evicted: `ttl` is accepted, unused)."""
        if len(self._data) >= self.max_entries and key not in self._data:
            self._data.pop(next(iter(self._data)))
        self._data[key] = value

    def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    def health(self) -> bool:
        return True


class ReadThroughCache(MemoryCache):
    """A cache warmed from a snapshot; it refuses writes."""

    def set(self, key: str, value: Any, ttl: timedelta | None = None) -> None:
        raise PermissionError("read-through cache is read-only")
