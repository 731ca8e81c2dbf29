"""In-process cache: bounded (least recently used goes first), optional TTL, thread-safe."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import timedelta


class MemoryCache:
    def __init__(self, *, max_entries: int = 10000, ttl: timedelta | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            value, expires = item
            if expires is not None and expires <= time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        lifetime = ttl or self.ttl
        expires = time.monotonic() + lifetime.total_seconds() if lifetime else None
        with self._lock:
            self._data[key] = (value, expires)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self._data)

    def health(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._data.clear()
