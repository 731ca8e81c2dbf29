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


class PostgresCluster:
    """A private PostgreSQL cluster (initdb + pg_ctl) in a temporary directory.

    As root, the cluster runs as the unprivileged `nobody` (PostgreSQL refuses
    root); its directory is created outside pytest's root-only tree and handed
    to that user.
    """

    def __init__(self) -> None:
        need(str(PG_BIN / "initdb"), "postgresql")
        import tempfile

        self.directory = Path(tempfile.mkdtemp(prefix="oneiric-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.directory, 65534, 65534)
            self._as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        self._run(
            PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: object) -> None:
        subprocess.run(
            [*self._as_user, *map(str, argv)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.directory,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            PG_BIN / "pg_ctl", "-D", self.data, "-o", options, "-l",
            self.directory / "server.log", "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """A crash and a restart: `immediate` kills the server without a shutdown checkpoint."""
        self.stop("immediate")
        self.start()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.directory, ignore_errors=True)
