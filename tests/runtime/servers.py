"""Real servers on 127.0.0.1 for the adapter tests: started, stopped and restarted by the tests.

Each runs from Debian's packages (`.ci/run` installs them) in a temporary directory on a free
port.  A missing server skips its tests on a developer machine and FAILS them under CI=true.
`stop()` and `start()` let a test take a server away and bring it back on the same port with
the same data.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def need(binary: str) -> str:
    """The path of `binary` (PATH, then /usr/sbin); a skip locally, a failure under CI=true."""
    found = shutil.which(binary) or shutil.which(binary, path=f"/usr/sbin:{PG_BIN}")
    if found is None:
        message = f"{binary} is not installed (.ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


class Server:
    """One server process: `argv` listening on `port`, stoppable and restartable."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        *,
        workdir: Path,
        stop_signal: int = signal.SIGTERM,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.stop_signal = stop_signal
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> None:
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=log, preexec_fn=self.preexec, cwd=self.workdir
        )
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                tail = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.argv[0]} did not start on port {self.port}:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        deadline = time.monotonic() + 10
        while listening(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


def _unprivileged() -> tuple[Callable[[], None] | None, int | None]:
    """Run as `postgres` (or `nobody`) when root: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return None, None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue

        def drop(uid: int = user.pw_uid, gid: int = user.pw_gid) -> None:
            os.setgid(gid)
            os.setuid(uid)

        return drop, user.pw_uid
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _workdir(owner: int | None = None) -> Path:
    path = Path(tempfile.mkdtemp(prefix="oneiric-srv-"))
    if owner is not None:
        os.chown(path, owner, -1)
    return path


def postgres_server() -> Iterator[Server]:
    initdb = need("initdb")
    drop, owner = _unprivileged()
    workdir = _workdir(owner)
    subprocess.run(
        [initdb, "-D", str(workdir / "data"), "-U", "postgres", "--auth=trust", "--no-sync"],
        preexec_fn=drop,
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    port = free_port()
    postgres = str(Path(initdb).parent / "postgres")
    argv = [postgres, "-D", str(workdir / "data"), "-p", str(port), "-h", "127.0.0.1"]
    argv += ["-k", str(workdir), "-F"]
    # SIGINT: "fast" shutdown, which disconnects clients (SIGTERM would wait for them).
    server = Server(argv, port, workdir=workdir, stop_signal=signal.SIGINT, preexec=drop)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def mariadb_server() -> Iterator[Server]:
    install = need("mariadb-install-db")
    mariadbd = need("mariadbd")
    workdir = _workdir()
    root = ["--user=root"] if os.geteuid() == 0 else []
    argv = [install, "--no-defaults", f"--datadir={workdir / 'data'}", *root]
    subprocess.run(
        [*argv, "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    port = free_port()
    argv = [mariadbd, "--no-defaults", f"--datadir={workdir / 'data'}", *root, f"--port={port}"]
    argv += ["--bind-address=127.0.0.1", f"--socket={workdir / 'sock'}", "--skip-name-resolve"]
    argv += ["--skip-log-bin", f"--pid-file={workdir / 'pid'}"]
    server = Server(argv, port, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def nats_server() -> Iterator[Server]:
    binary = need("nats-server")
    workdir = _workdir()
    port = free_port()
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "js")]
    server = Server(argv, port, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def moto_server() -> Iterator[Server]:
    """moto in server mode: an EMULATOR of S3, Secrets Manager and SSM (no AWS here)."""
    workdir = _workdir()
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = Server(argv, port, workdir=workdir)
    server.start(timeout=60)
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def redis_server(*, aof: bool = False) -> Iterator[Server]:
    """redis-server; with `aof`, every write is fsynced, so a restart keeps streams and groups."""
    binary = need("redis-server")
    workdir = _workdir()
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
    server = Server(argv, port, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def http_server(name: str) -> Iterator[Server]:
    """tests/runtime/httpd.py: a real HTTP server (Python's http.server) in its own process."""
    workdir = _workdir()
    port = free_port()
    script = Path(__file__).with_name("httpd.py")
    server = Server([sys.executable, str(script), str(port), name], port, workdir=workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
