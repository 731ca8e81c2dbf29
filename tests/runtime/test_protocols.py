"""The protocols of the built-in kinds, and the built-in adapters that satisfy them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import oneiric
import pytest
from oneiric.adapters.localfs import LocalStorage
from oneiric.adapters.memory import MemoryCache
from oneiric.adapters.sqlite import SQLiteDatabase
from oneiric.protocols import Cache, CacheReader, CacheWriter, Database, Storage


def test_builtin_adapters_satisfy_their_protocols(tmp_path: Path) -> None:
    cache = MemoryCache()
    assert isinstance(cache, Cache)
    assert isinstance(cache, CacheReader)
    assert isinstance(cache, CacheWriter)
    database = SQLiteDatabase()
    assert isinstance(database, Database)
    assert not isinstance(database, Cache)
    storage = LocalStorage(root=str(tmp_path))
    assert isinstance(storage, Storage)
    assert not isinstance(storage, Database)
    database.close()


def test_protocols_are_public_and_lazy() -> None:
    assert oneiric.Cache is Cache
    assert oneiric.Storage is Storage
    assert {"Cache", "CacheReader", "CacheWriter", "Database", "Storage"} <= set(dir(oneiric))


@pytest.mark.slow
def test_builtin_adapters_satisfy_their_protocols_statically(tmp_path: Path) -> None:
    """mypy (strict) accepts every built-in adapter where its protocol is expected."""
    api = pytest.importorskip("mypy.api")
    probe = textwrap.dedent(
        """
        from oneiric.adapters.localfs import LocalStorage
        from oneiric.adapters.memcached import MemcachedCache
        from oneiric.adapters.memory import MemoryCache
        from oneiric.adapters.redis import RedisCache
        from oneiric.adapters.sqlite import SQLiteDatabase
        from oneiric.protocols import Cache, Database, Storage

        caches: list[type[Cache]] = [MemoryCache, RedisCache, MemcachedCache]
        database: type[Database] = SQLiteDatabase
        storage: type[Storage] = LocalStorage
        """
    )
    (tmp_path / "probe.py").write_text(probe)
    (tmp_path / "mypy.ini").write_text(
        "[mypy]\n[mypy-pymemcache.*]\nignore_missing_imports = True\n"
    )
    out, err, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(tmp_path / "probe.py"),
        ]
    )
    assert status == 0, out + err
