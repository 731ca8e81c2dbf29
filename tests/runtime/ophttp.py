"""Helpers for the tests of `oneiric run --http`: start it, find its port, GET from it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from planbuild import component
from rtprocess import Running, wait_for

CACHE = "adapter:cache"


def store(provider: str, tmp: Path, **config: Any) -> dict[str, Any]:
    """The cache component, health-checked every 200 ms, unhealthy while tmp/sick exists."""
    found = component(
        CACHE,
        provider,
        config={"events_file": str(tmp / "events.jsonl"), "sick_file": str(tmp / "sick"), **config},
        drain_timeout_ms=5000,
    )
    found["health"]["interval_ms"] = 200
    return found


def http_url(run: Running) -> str:
    """The base URL the runtime logged once listening (it was started with port 0)."""

    def logged() -> str | None:
        assert run.proc.poll() is None, run.stderr.read_text()
        match = re.search(r'"url": "(http://[^"]+/)"', run.stderr.read_text())
        return match.group(1) if match else None

    url: str = wait_for(logged, what="the http listening log line")
    return url


def get(url: str, accept: str | None = None) -> tuple[int, Message, bytes]:
    """Status, headers (case-insensitive) and body, error statuses included."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def get_json(url: str) -> tuple[int, Any]:
    status, _, body = get(url)
    return status, json.loads(body)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require(binary: str, package: str) -> str:
    """The binary's path; skipped when missing, except under CI=true where that fails."""
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
