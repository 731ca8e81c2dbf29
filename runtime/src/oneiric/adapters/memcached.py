"""Memcached cache (pymemcache): consistent hashing over `servers`, optional default TTL."""

from __future__ import annotations

from datetime import timedelta

from pymemcache.client.hash import HashClient


def _server(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"memcached server {address!r} is not HOST:PORT")
    return host, int(port)


class MemcachedCache:
    def __init__(
        self,
        *,
        servers: list[str] | None = None,
        ttl: timedelta | None = None,
        timeout: timedelta = timedelta(seconds=2),
    ) -> None:
        seconds = timeout.total_seconds()
        self.ttl = ttl
        self._client = HashClient(
            [_server(s) for s in servers or ["127.0.0.1:11211"]],
            connect_timeout=seconds,
            timeout=seconds,
            ignore_exc=False,
            use_pooling=True,  # a connection per concurrent caller: safe across threads
        )

    def _expire(self, ttl: timedelta | None) -> int:
        lifetime = ttl or self.ttl
        return max(1, int(lifetime.total_seconds())) if lifetime else 0

    def get(self, key: str) -> bytes | None:
        value = self._client.get(key)
        assert value is None or isinstance(value, bytes)
        return value

    def set(self, key: str, value: bytes, ttl: timedelta | None = None) -> None:
        if not self._client.set(key, value, expire=self._expire(ttl), noreply=False):
            raise RuntimeError(f"memcached refused to store {key!r}")

    def delete(self, key: str) -> bool:
        return bool(self._client.delete(key, noreply=False))

    def health(self) -> bool:
        return all(client.version() for client in self._client.clients.values())

    def close(self) -> None:
        self._client.close()
