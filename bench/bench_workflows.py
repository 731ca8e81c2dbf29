"""Workflow scheduling overhead per node, and event dispatch throughput to 10 handlers.

A 1,000-node layered DAG (`--levels` x `--width`, each node depending on two
nodes of the level above) of no-op tasks runs through the real `Runtime`,
`Workflows` and the SQLite checkpoint store (two writes a node: attempt
started, node finished).  Baselines measured in the same run: awaiting the
no-op 1,000 times in a bare loop, and a bare loop of 1,000 SQLite
UPDATE+commit statements in WAL mode (the checkpoint cost alone).  Events:
`--events` emitted one after the other to 10 async no-op handlers on one
topic, against a bare loop that awaits the 10 handlers directly, in `--repeat`
interleaved rounds (best of each).  `--events-against FILE` also measures the
`EventBus` of another copy of `oneiric/_flows/events.py` (e.g. the previous
commit's, from `git show`) in the same rounds.

    .venv/bin/python bench/bench_workflows.py [--levels 10 --width 100 --events 2000]
        [--events-against OLD_EVENTS.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def stack(levels: int, width: int, impl: str) -> str:
    lines = [f'  task noop "x" {{ impl "{impl}" }}', '  workflow dag "x" {']
    for level in range(levels):
        for i in range(width):
            lines.append(f"    node n{level}_{i} {{ task noop }}")
    for level in range(1, levels):
        for i in range(width):
            for j in {i, (i + 1) % width}:
                lines.append(f"    n{level - 1}_{j} -> n{level}_{i}")
    lines.append("  }")
    lines += [
        f'  event h{i} "x" {{\n    on "bench"\n    impl "wfnoop:handle"\n  }}' for i in range(10)
    ]
    return "\n".join(lines)


def compile_plan(root: Path, body: str) -> Any:
    from oneiricc import compile_project, load_project

    (root / "stacks").mkdir(parents=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n')
    (root / "stacks" / "b.oneiric").write_text(
        f"oneiric 1\n\nstack b {{\n{body}\n}}\n\ntarget b {{ layers b }}\n"
    )
    build = compile_project(load_project(root), None, ["b"], use_cache=False, module_path=[BENCH])
    if build.failed:
        raise SystemExit("\n".join(d.message for d in build.diagnostics))
    return build.plans["b"]


def sqlite_baseline(path: Path, n: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t VALUES (?, NULL)", [(str(i),) for i in range(n)])
    started = time.perf_counter()
    for i in range(n):
        db.execute("UPDATE t SET v = ? WHERE k = ?", ("done", str(i)))
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def keep_best(out: dict[str, float], key: str, began: float, n: int) -> None:
    out[key] = min(out.get(key, float("inf")), (time.perf_counter() - began) / n * 1e6)


def load_events(path: Path) -> Any:
    """Another copy of `oneiric._flows.events` (say, the previous commit's), as its own module."""
    name = "oneiric._flows.events_against"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def measure(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    import wfnoop
    from oneiric._flows.events import EventBus
    from oneiric._flows.host import activated
    from oneiric._flows.store import FlowStore
    from oneiric._flows.workflows import Workflows

    n = args.levels * args.width
    out: dict[str, float] = {}

    started = time.perf_counter()
    for _ in range(n):
        await wfnoop.noop(None, {})
    out["bare_loop_us"] = (time.perf_counter() - started) / n * 1e6
    out["sqlite_us"] = sqlite_baseline(scratch / "baseline.db", n) / n * 1e6

    for label, impl in (("async", "wfnoop:noop"), ("sync", "wfnoop:noop_sync")):
        plan = compile_plan(scratch / f"p-{label}", stack(args.levels, args.width, impl))
        store = FlowStore(scratch / f"state-{label}")
        async with activated(plan, Workflows.task_ids(plan)) as runtime:
            flows = Workflows(plan, runtime, store, cancel_poll_s=None)
            best = float("inf")
            for _ in range(args.repeat):
                began = time.perf_counter()
                record = await flows.run("dag")
                best = min(best, time.perf_counter() - began)
                assert record.status == "succeeded", record.error
            out[f"dag_{label}_us"] = best / n * 1e6
        if label == "async":
            ids = EventBus.handler_ids(plan)
            async with activated(plan, ids) as runtime:
                buses = {"emit_us": EventBus(plan, runtime, store)}
                if args.events_against:
                    other = load_events(args.events_against)
                    buses["against_us"] = other.EventBus(plan, runtime, store)
                handlers = [runtime.handle(cid) for cid in ids]
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    for _ in range(args.events):
                        for h in handlers:
                            await h(None)
                    keep_best(out, "bare_dispatch_us", began, args.events)
                    for key, bus in buses.items():
                        began = time.perf_counter()
                        for i in range(args.events):
                            delivery = await bus.emit("bench", {"i": i})
                            assert delivery.ok
                            assert len(delivery.outcomes) == 10
                        keep_best(out, key, began, args.events)
        store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events-against", type=Path, help="another events.py to measure beside")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH))
    import os

    os.environ.setdefault("LOG_LEVEL", "warning")
    import anyio
    from oneiric._cli import logs

    logs.configure()
    with tempfile.TemporaryDirectory() as scratch:
        r = anyio.run(measure, args, Path(scratch))
    n = args.levels * args.width
    print(f"workflow: {n}-node DAG ({args.levels} levels x {args.width}), best of {args.repeat}")
    print(f"  baseline bare await of the no-op      {r['bare_loop_us']:8.2f} us/call")
    print(f"  baseline SQLite UPDATE+commit (WAL)   {r['sqlite_us']:8.2f} us/write")
    for label in ("async", "sync"):
        per = r[f"dag_{label}_us"]
        print(
            f"  DAG of {label:<5} no-ops, checkpointed      {per:8.2f} us/node "
            f"= {per / r['bare_loop_us']:6.0f}x bare call, {per / r['sqlite_us']:5.1f}x one write"
            f"  (goal < 1000 us: {'met' if per < 1000 else 'MISSED'})"
        )
    eps = 1e6 / r["emit_us"]
    print(
        f"events: {args.events} emitted one at a time to 10 async no-op handlers, "
        f"best of {args.repeat} interleaved rounds"
    )
    print(f"  baseline bare await of 10 handlers    {r['bare_dispatch_us']:8.2f} us/event")
    print(
        f"  bus.emit (route, filter, 10 eager)    {r['emit_us']:8.2f} us/event "
        f"= {eps:,.0f} events/s, {eps * 10:,.0f} deliveries/s "
        f"({r['emit_us'] / r['bare_dispatch_us']:.1f}x bare, goal <= 3x)"
    )
    if "against_us" in r:
        print(
            f"  the same, {args.events_against.name:<22} {r['against_us']:8.2f} us/event "
            f"({r['against_us'] / r['bare_dispatch_us']:.1f}x bare)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
