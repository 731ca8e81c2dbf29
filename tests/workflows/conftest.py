"""Workflow and event test fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wfkit import HERE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def wf_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The calls log of `wftasks` (WF_LOG), with this folder importable in-process."""
    log = str(tmp_path / "calls.jsonl")
    monkeypatch.setenv("WF_LOG", log)
    monkeypatch.syspath_prepend(str(HERE))
    return log


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private `redis-server` on a free loopback port: its URL."""
    from servers import redis_server  # tests/runtime: on the path once wfkit is imported

    for server in redis_server():
        yield f"redis://127.0.0.1:{server.port}/0"
