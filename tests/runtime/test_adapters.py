"""Built-in adapters, each against the real thing; Redis and Memcached on real local servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from oneiric._lifecycle.runtime import Runtime
from oneiric.adapters.localfs import LocalStorage
from oneiric.adapters.memory import MemoryCache
from oneiric.adapters.sqlite import SQLiteDatabase
from planbuild import component, plan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{argv[0]} did not start on port {port}") from None
            time.sleep(0.05)
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    for _ in serve(argv, port):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="module")
def memcached_server() -> Iterator[str]:
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("memcached is not installed (apt-get install memcached; .ci/run does)")
    port = free_port()
    for _ in serve([binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root"], port):
        yield f"127.0.0.1:{port}"


def check_cache(cache: Any) -> None:
    assert cache.health()
    assert cache.get("missing") is None
    cache.set("k", b"v1")
    assert cache.get("k") == b"v1"
    cache.set("k", b"v2")
    assert cache.get("k") == b"v2"
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    cache.set("short", b"x", ttl=timedelta(seconds=1))
    assert cache.get("short") == b"x"
    time.sleep(2.1)
    assert cache.get("short") is None


def test_memory_cache_evicts_least_recently_used_and_expires() -> None:
    cache = MemoryCache(max_entries=2)
    cache.set("a", b"1")
    cache.set("b", b"2")
    cache.get("a")
    cache.set("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert len(cache) == 2
    ttl_cache = MemoryCache(ttl=timedelta(milliseconds=50))
    ttl_cache.set("k", b"v")
    time.sleep(0.1)
    assert ttl_cache.get("k") is None


def test_sqlite_database_persists_across_instances_and_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "db" / "shop.db")
    db = SQLiteDatabase(path=path)
    assert db.health()
    db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER)")

    def insert(i: int) -> None:
        db.execute("INSERT INTO orders VALUES (?, ?)", (f"o{i}", i))

    import threading

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db.close()
    again = SQLiteDatabase(path=path)
    assert again.query("SELECT count(*), sum(total) FROM orders") == [(20, 190)]
    again.close()


def test_local_storage_writes_atomically_and_refuses_escapes(tmp_path: Path) -> None:
    storage = LocalStorage(root=str(tmp_path / "files"), max_object=10)
    storage.put("a/b.txt", b"hello")
    assert storage.get("a/b.txt") == b"hello"
    assert storage.list() == ["a/b.txt"]
    with pytest.raises(ValueError, match=r"without '\.\.'"):
        storage.put("../escape", b"x")
    with pytest.raises(ValueError, match="limit is 10"):
        storage.put("big", b"x" * 11)
    assert storage.delete("a/b.txt") is True
    assert storage.get("a/b.txt") is None
    assert storage.health()


def test_redis_cache_against_a_real_server(redis_url: str) -> None:
    from oneiric.adapters.redis import RedisCache

    cache = RedisCache(url=redis_url)
    check_cache(cache)
    cache.close()


def test_memcached_cache_against_a_real_server(memcached_server: str) -> None:
    from oneiric.adapters.memcached import MemcachedCache

    cache = MemcachedCache(servers=[memcached_server])
    check_cache(cache)
    cache.close()


@pytest.mark.anyio
async def test_live_swap_from_memory_to_redis_to_memcached(
    redis_url: str, memcached_server: str, tmp_path: Path
) -> None:
    """The built-ins are used from plans like any component, and swap live."""
    memory = component("adapter:cache", "memory", impl="oneiric.adapters.memory:MemoryCache")
    redis = component(
        "adapter:cache",
        "redis",
        impl="oneiric.adapters.redis:RedisCache",
        config={"url": {"$env": "RT_REDIS_URL", "default": redis_url}},
    )
    memcached = component(
        "adapter:cache",
        "memcached",
        impl="oneiric.adapters.memcached:MemcachedCache",
        config={"servers": [memcached_server], "ttl": {"$duration_ms": 60000}},
    )
    for c in (memory, redis, memcached):
        del c["config"]["tag"]
    runtime = Runtime()
    await runtime.apply(plan(memory))
    cache = runtime.handle("adapter:cache")
    cache.set("k", b"in-memory")
    await runtime.apply(plan(redis))
    assert cache.provider == "redis"
    assert cache.get("k") is None  # a different backend
    cache.set("k", b"in-redis")
    await runtime.apply(plan(memcached))
    cache.set("k", b"in-memcached")
    assert cache.get("k") == b"in-memcached"
    await runtime.stop()
    await anyio.sleep(0)
