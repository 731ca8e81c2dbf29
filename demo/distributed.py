"""The demo, distributed: two runtimes and two workers on local Redis and PostgreSQL.

`make demo-distributed` (not one of the README's two commands).  It starts a
private `redis-server` and a private PostgreSQL cluster (Debian's packages,
temporary directories, free loopback ports), then, on the demo's plan:

* two runtimes, `oneiric event consume --events REDIS --store POSTGRES --tasks
  REDIS`: they share the `order.paid` events (one consumer group), start the
  fulfillment workflow for each, record runs in PostgreSQL and dispatch the
  nodes; each also takes over runs whose owner died;
* two workers, `oneiric worker --tasks REDIS`, which run the nodes.

It emits 8 `order.paid` events, kills one runtime with SIGKILL while runs are
in flight, and waits until every run succeeded: the survivor takes the dead
runtime's runs over when their leases expire (3 s here), and no node that was
checkpointed runs again.  Everything stops and is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "golden" / "dev.plan.json"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.1)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def need(path: str | None, package: str) -> str:
    if path is None or not Path(path).exists():
        raise SystemExit(f"demo-distributed needs {package} (apt-get install {package})")
    return path


def start_redis(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = need(shutil.which("redis-server"), "redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(scratch),
         "--save", "", "--appendonly", "yes"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait("redis-server", lambda: listening(port))
    return proc, f"redis://127.0.0.1:{port}/0?visibility=3"


def start_postgres() -> tuple[Path, list[str], str]:
    """initdb + pg_ctl in a temporary directory; as `nobody` when running as root."""
    need(str(PG_BIN / "initdb"), "postgresql")
    directory = Path(tempfile.mkdtemp(prefix="oneiric-demo-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(directory, 65534, 65534)
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    data, port = directory / "data", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": directory}
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "--no-sync"],
        check=True, **quiet,  # type: ignore[arg-type]
    )  # fmt: skip
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l",
         str(directory / "log"), "-w", "start"],
        check=True, **quiet,  # type: ignore[arg-type]
    )  # fmt: skip
    return directory, as_user, f"postgresql://postgres@127.0.0.1:{port}/postgres?lease=3"


def oneiric(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oneiric", *args], capture_output=True, text=True, cwd=cwd
    )


def spawn(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """In its own directory: the plan's relative paths (var/shop.db) land there."""
    cwd = log.with_suffix("")
    cwd.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "oneiric", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, "LOG_LEVEL": "warning"},
    )


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="oneiric-demo-dist-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    redis, redis_url = start_redis(scratch)
    pg_dir, as_user, pg_url = start_postgres()
    plan = ["--unsigned-plan", str(PLAN)]
    try:
        print(f"Redis       {redis_url}\nPostgreSQL  {pg_url}\n")
        for name in ("worker-1", "worker-2"):
            state = scratch / name
            procs[name] = spawn(
                "worker", *plan, "--tasks", redis_url, "--state", str(state),
                "--consumer", name, log=scratch / f"{name}.log",
            )  # fmt: skip
        for name in ("runtime-1", "runtime-2"):
            procs[name] = spawn(
                "event", "consume", *plan, "--events", redis_url, "--store", pg_url,
                "--tasks", redis_url, "--state", str(scratch / name), "--consumer", name,
                log=scratch / f"{name}.log",
            )  # fmt: skip
        ready = [scratch / w / "workers" / f"{w}.json" for w in ("worker-1", "worker-2")]
        ready += [scratch / r / "consumers" / f"{r}.json" for r in ("runtime-1", "runtime-2")]
        wait("two runtimes and two workers", lambda: all(p.exists() for p in ready))
        print("started: runtime-1, runtime-2 (event consume), worker-1, worker-2 (worker)")

        for i in range(8):
            order = {"id": 2000 + i, "items": 1 + i % 3, "total": 40 + 10 * i, "region": "eu"}
            sent = oneiric(
                "event", "emit", "order.paid", "--payload", json.dumps(order),
                "--events", redis_url, *plan, "--state", str(scratch / "cli"), cwd=scratch,
            )  # fmt: skip
            if sent.returncode != 0:
                raise SystemExit(f"demo: emit failed: {sent.stderr}")
        print("emitted 8 order.paid events on Redis Streams")

        def runs() -> list[dict[str, object]]:
            listed = oneiric("workflow", "list", "--store", pg_url, "--format", "json", cwd=scratch)
            found: list[dict[str, object]] = json.loads(listed.stdout)["runs"]
            return found

        wait("the first runs", lambda: len(runs()) >= 2)
        victim = procs["runtime-1"]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        print("killed runtime-1 (SIGKILL) with runs in flight")

        wait("every run to succeed", lambda: len(runs()) == 8 and all(
            r["status"] == "succeeded" for r in runs()), 120)  # fmt: skip
        print("\nworkflow runs in PostgreSQL:")
        for run in sorted(runs(), key=lambda r: str(r["id"])):
            print(f"  {run['id']:<48} {run['status']:<10} {run['trigger']}")
        print("\nnodes per worker:")
        for name in ("worker-1", "worker-2"):
            status = json.loads((scratch / name / "workers" / f"{name}.json").read_text())
            print(f"  {name}: {status['done']} done, {status['claimed']} claimed")
        survivor = json.loads((scratch / "runtime-2" / "consumers" / "runtime-2.json").read_text())
        counts = Counter(str(r["status"]) for r in runs())
        print(f"\nruntime-2 delivered {survivor['broker']['delivered']} event(s); "
              f"runs: {dict(counts)}")  # fmt: skip
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        redis.terminate()
        redis.wait(10)
        subprocess.run(
            [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(pg_dir / "data"), "-m", "immediate",
             "stop"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
