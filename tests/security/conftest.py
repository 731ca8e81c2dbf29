"""Fixtures of the security suite: three keys, a 2-of-3 trust, a state dir, an HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from oneiric._delivery.fetch import Fetcher
from oneiric._delivery.store import State
from oneiric._delivery.trust import Trust
from seckit import Key, Server, make_trust


@pytest.fixture(scope="session")
def keys() -> tuple[Key, Key, Key]:
    return Key.new(), Key.new(), Key.new()


@pytest.fixture
def trust(keys: tuple[Key, Key, Key]) -> Trust:
    return make_trust(keys, threshold=2)[0]


@pytest.fixture
def trust_file(tmp_path: Path, keys: tuple[Key, Key, Key]) -> Path:
    path = tmp_path / "trust.json"
    path.write_bytes(make_trust(keys, threshold=2)[1])
    return path


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(tmp_path / "state")


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    with Fetcher(timeout=2.0) as client:
        yield client


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), srv.handler())
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield srv
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
