"""Beyond one machine: Redis Streams deliveries and a 1,000-node workflow on workers.

Starts its own `redis-server` (free loopback port, temporary directory).

* deliveries/s: `--events` events on one exclusive topic consumed by 4
  `oneiric event consume` processes (async no-op handler), against 4 bare
  redis-py processes (`stream_bare.py`: XREADGROUP 32 + XACK) on the same
  server, same entries, in the same run.  The clock runs from the first
  XADD (pipelined, 1,000 per round trip, for both) to the last XACK.
* workflow: the 1,000-node DAG of bench_workflows.py (no-op async tasks,
  SQLite checkpoints) dispatched to 4 `oneiric worker` processes, against
  the same DAG run in process.

    .venv/bin/python bench/bench_scale.py [--events 20000 --consumers 4 --levels 10 --width 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(scratch)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(BENCH), "LOG_LEVEL": "warning"}


def spawn(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *argv], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_files(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"not started: {[str(p) for p in paths if not p.exists()]}")
        time.sleep(0.05)


def drain(client: Any, stream: str, group: str, n: int) -> float:
    """XADD `n` entries (pipelined), wait until the group acknowledged them all: seconds."""
    fields = {
        "id": "",
        "topic": "bench",
        "payload": '{"i": 0}',
        "headers": "{}",
        "emitted_at": repr(time.time()),
    }
    began = time.perf_counter()
    for start in range(0, n, 1000):
        pipe = client.pipeline(transaction=False)
        for _ in range(start, min(n, start + 1000)):
            pipe.xadd(stream, {**fields, "id": uuid.uuid4().hex})
        pipe.execute()
    while True:
        info = {g["name"].decode(): g for g in client.xinfo_groups(stream)}[group]
        if info["entries-read"] is not None and info["entries-read"] >= n and not info["pending"]:
            return time.perf_counter() - began
        time.sleep(0.002)


def events(args: argparse.Namespace, scratch: Path, url: str) -> dict[str, float]:
    import redis

    sys.path.insert(0, str(BENCH))
    from bench_workflows import compile_plan

    body = '  event h "x" {\n    on "bench"\n    impl "wfnoop:handle"\n    fanout exclusive\n  }'
    plan = compile_plan(scratch / "events", body)
    plan_path = scratch / "events.plan.json"
    plan_path.write_bytes(plan.to_bytes())
    client = redis.Redis.from_url(url)
    out: dict[str, float] = {}
    for round_ in range(args.repeat):
        for label in ("bare", "oneiric"):
            stream = f"oneiric:events:bench-{label}-{round_}"
            if label == "oneiric":
                stream = "oneiric:events:bench"
                client.delete(stream)
            client.xgroup_create(stream, "exclusive", id="$", mkstream=True)
            state = scratch / f"state-{label}-{round_}"
            if label == "bare":
                state.mkdir()
                procs = [
                    spawn(str(BENCH / "stream_bare.py"), url, stream, "exclusive", f"c{i}",
                          str(state / f"c{i}.ready"))
                    for i in range(args.consumers)
                ]  # fmt: skip
                wait_files([state / f"c{i}.ready" for i in range(args.consumers)])
            else:
                procs = [
                    spawn("-m", "oneiric", "event", "consume", "--unsigned-plan", str(plan_path),
                          "--events", url, "--state", str(state), "--consumer", f"c{i}")
                    for i in range(args.consumers)
                ]  # fmt: skip
                wait_files([state / "consumers" / f"c{i}.json" for i in range(args.consumers)])
            try:
                seconds = drain(client, stream, "exclusive", args.events)
            finally:
                stop(procs)
            out[label] = max(out.get(label, 0.0), args.events / seconds)
    client.close()
    return out


async def workflow_in_process(plan: Any, scratch: Path) -> float:
    from oneiric._flows.host import activated
    from oneiric._flows.store import FlowStore
    from oneiric._flows.workflows import Workflows

    store = FlowStore(scratch / "state-inproc")
    async with activated(plan, Workflows.task_ids(plan)) as runtime:
        flows = Workflows(plan, runtime, store, cancel_poll_s=None)
        began = time.perf_counter()
        record = await flows.run("dag")
        assert record.status == "succeeded", record.error
        return time.perf_counter() - began


async def workflow_on_workers(plan: Any, scratch: Path, url: str) -> float:
    import anyio
    from oneiric._flows.host import activated
    from oneiric._flows.store import FlowStore
    from oneiric._flows.workers import RedisTasks
    from oneiric._flows.workflows import Workflows

    store = FlowStore(scratch / "state-dispatch")
    tasks = await RedisTasks.open(url)
    async with activated(plan, []) as runtime, anyio.create_task_group() as group:
        group.start_soon(tasks.serve)
        flows = Workflows(plan, runtime, store, cancel_poll_s=None, tasks=tasks)
        began = time.perf_counter()
        record = await flows.run("dag")
        elapsed = time.perf_counter() - began
        assert record.status == "succeeded", record.error
        group.cancel_scope.cancel()
    await tasks.close()
    return elapsed


def workflows(args: argparse.Namespace, scratch: Path, url: str) -> dict[str, float]:
    import anyio
    from bench_workflows import compile_plan, stack

    plan = compile_plan(scratch / "dag", stack(args.levels, args.width, "wfnoop:noop"))
    plan_path = scratch / "dag.plan.json"
    plan_path.write_bytes(plan.to_bytes())
    out = {"in_process": float("inf"), "workers": float("inf")}
    procs = [
        spawn("-m", "oneiric", "worker", "--unsigned-plan", str(plan_path), "--tasks", url,
              "--state", str(scratch / f"w{i}"), "--consumer", f"w{i}", "--prefetch", "64")
        for i in range(args.consumers)
    ]  # fmt: skip
    try:
        wait_files([scratch / f"w{i}" / "workers" / f"w{i}.json" for i in range(args.consumers)])
        for _ in range(args.repeat):
            out["in_process"] = min(
                out["in_process"], anyio.run(workflow_in_process, plan, scratch)
            )
            out["workers"] = min(out["workers"], anyio.run(workflow_on_workers, plan, scratch, url))
    finally:
        stop(procs)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    os.environ.setdefault("LOG_LEVEL", "warning")
    from oneiric._cli import logs

    logs.configure()
    with tempfile.TemporaryDirectory() as name:
        scratch = Path(name)
        server, url = start_redis(scratch)
        try:
            ev = events(args, scratch, url)
            wf = workflows(args, scratch, url)
        finally:
            server.terminate()
            server.wait(10)
    n = args.levels * args.width
    print(f"Redis Streams: {args.events} events, {args.consumers} consumer processes, best of "
          f"{args.repeat}")  # fmt: skip
    print(f"  bare redis-py XREADGROUP/XACK        {ev['bare']:10,.0f} deliveries/s")
    print(
        f"  oneiric event consume (no-op)        {ev['oneiric']:10,.0f} deliveries/s "
        f"= {ev['oneiric'] / ev['bare']:.2f}x bare (goal >= 0.5x: "
        f"{'met' if ev['oneiric'] >= 0.5 * ev['bare'] else 'MISSED'})"
    )
    print(f"workflow: {n}-node DAG of async no-ops, SQLite checkpoints, best of {args.repeat}")
    print(f"  in process                           {wf['in_process'] * 1000:10,.0f} ms")
    print(
        f"  on {args.consumers} workers                         {wf['workers'] * 1000:10,.0f} ms "
        f"= {wf['workers'] / wf['in_process']:.2f}x in process"
    )
    print(json.dumps({"events": ev, "workflow_s": wf}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
