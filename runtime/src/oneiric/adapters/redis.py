"""Redis cache (redis-py): values are bytes, optional default TTL."""

from __future__ import annotations

from datetime import timedelta

import redis


class RedisCache:
    def __init__(
        self,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        ttl: timedelta | None = None,
        timeout: timedelta = timedelta(seconds=2),
    ) -> None:
        seconds = timeout.total_seconds()
        self.ttl = ttl
        self._client = redis.Redis.from_url(
            url, socket_timeout=seconds, socket_connect_timeout=seconds
        )

    def get(self, key: str) -> bytes | None:
        value = self._client.get(key)
        assert value is None or isinstance(value, bytes)
        return value

    def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        self._client.set(key, value, px=ttl or self.ttl)

    def delete(self, key: str) -> bool:
        return bool(self._client.delete(key))

    def health(self) -> bool:
        return bool(self._client.ping())

    def close(self) -> None:
        self._client.close()
