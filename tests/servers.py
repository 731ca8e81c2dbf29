"""Real servers for the tests: a private `redis-server` and a private PostgreSQL cluster.

Each listens on a free loopback port with its data in a temporary directory,
so parallel runs never collide.  A missing binary skips the test, except under
CI=true where it fails (.ci/run installs every server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def need(binary: str | None, package: str) -> str:
    if binary is None or not Path(binary).exists():
        message = f"{package} is not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.05)


class RedisServer:
    """`redis-server` on 127.0.0.1; with `aof`, every write is fsynced (survives a restart)."""

    def __init__(self, directory: Path, *, aof: bool = False) -> None:
        self.binary = need(shutil.which("redis-server"), "redis-server")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.directory), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []
        argv += ["--appendonly", "no"] if not self.aof else []
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
