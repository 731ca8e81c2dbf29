"""Runtime benchmarks; every figure also as a ratio to a baseline measured in the same run.

* CLI start: `oneiric --help` and `oneiric status` whole-process time and peak RSS,
  against bare `python -c pass` (goal: < 0.2 s and < 50 MiB).
* import: `import oneiric._lifecycle.supervisor` (everything `oneiric run` needs).
* cold start to ready on plans of 10 and 1,000 no-op components, process spawn →
  status.json says running (goal: 0.5 s at 1,000), for each way a plan arrives:
  a signed manifest with the plan inline, a signed manifest referencing the plan
  file (digest and size pinned), and `--unsigned-plan`.
* swap latency: new plan file renamed into place → new instance bound, median
  and p99 over 200 swaps, through the real file watcher (goal: median < 50 ms).
* failed calls during 1,000 swaps under 100 concurrent callers (must be 0).
* metrics: a handle call (today's proxied call) with and without the Prometheus
  metrics of `--http` attached and scraped every 10 ms by another thread, beside a
  direct call to the instance (budget: at most 2 µs more per call); and the cold
  start to ready of `oneiric run` with `--http` against without it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
from nacl.signing import SigningKey
from oneiric._cli import logs
from oneiric._delivery import dsse
from oneiric._delivery.keys import PublicKey
from oneiric._delivery.manifest import MANIFEST_PAYLOAD_TYPE, manifest_payload
from oneiric._delivery.sources import UnsignedPlanFile
from oneiric._delivery.trust import trust_bytes
from oneiric._lifecycle.runtime import Runtime
from oneiric._lifecycle.supervisor import Settings, Supervisor
from oneiric._plan.model import Component, Plan

IMPL = "oneiric.adapters.memory"


def _pin() -> dict[str, Any]:
    from oneiricc._build.pins import Pinner

    return dict(Pinner([]).pin_module(IMPL))


PIN = _pin()


def make_plan(n: int, provider: str = "p") -> Plan:
    span = "bench.oneiric:1:1"
    components = [
        Component.model_validate(
            {
                "id": f"adapter:c{i}",
                "domain": "adapter",
                "key": f"c{i}",
                "provider": provider,
                "layer": "bench",
                "span": span,
                "layers": ["bench"],
                "implementation": {"kind": "module", "module": IMPL, "attr": "MemoryCache"},
                "pin": PIN,
                "priority": 0,
                "provides": [],
                "requires": [],
                "config": {"max_entries": 10},
                "health": {},
                "lifecycle": {},
                "explanation": {
                    "rule": "only",
                    "summary": "bench",
                    "losers": [],
                    "winner": {"provider": provider, "layer": "bench", "span": span},
                },
            }
        )
        for i in range(n)
    ]
    return Plan(
        target="bench",
        profile="default",
        sources=[],
        components=components,
        activation_order=[c.id for c in components],
        workflows=[],
        routes=[],
    ).sealed()


def write(path: Path, plan: Plan) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(plan.to_bytes())
    os.replace(tmp, path)


def timed(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float, int]:
    """Best wall time and best CPU time (user + system) of `runs`, and the peak RSS (KiB).

    Measured from a fresh parent, so that the peak RSS is the command's alone.
    """
    code = f"""
import resource, subprocess, sys, time
best = cpu = float("inf")
for _ in range({runs}):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(sys.argv[1:], capture_output=True)
    best = min(best, time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = min(cpu, used)
print(best, cpu, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LAYOUTS = ("signed, plan inline", "signed, plan by URL", "unsigned plan file")


def sources(directory: Path, n: int) -> dict[str, list[str]]:
    """`oneiric run` arguments for each layout of LAYOUTS, written into `directory`."""
    plan_path = directory / "plan.json"
    write(plan_path, make_plan(n))
    plan = plan_path.read_bytes()
    key = SigningKey.generate()
    public = PublicKey.from_raw(bytes(key.verify_key))
    (directory / "trust.json").write_bytes(trust_bytes(1, 1, [public]))
    expires = datetime.now(UTC) + timedelta(days=1)
    arguments: dict[str, list[str]] = {}
    for layout, url in zip(LAYOUTS, (None, plan_path.name), strict=False):
        payload = manifest_payload("bench", 1, expires, plan, url)
        envelope = dsse.sign(MANIFEST_PAYLOAD_TYPE, payload, [(key, public.keyid)])
        manifest = directory / f"manifest-{len(arguments)}.json"
        manifest.write_bytes(envelope.to_bytes())
        arguments[layout] = ["--manifest", str(manifest), "--trust", str(directory / "trust.json")]
    arguments[LAYOUTS[2]] = ["--unsigned-plan", str(plan_path)]
    return arguments


def cold_start(n: int, runs: int, env: dict[str, str]) -> dict[str, tuple[float, float, float]]:
    """Per layout: best wall, median wall and best CPU time from spawn to status "running".

    The layouts take turns run after run, so that each sees the same machine load.
    """
    walls: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    cpus: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    with tempfile.TemporaryDirectory() as tmp:
        arguments = sources(Path(tmp), n)
        for run in range(runs):
            for layout in LAYOUTS:
                state = Path(tmp) / f"state-{run}-{LAYOUTS.index(layout)}"
                wall, cpu = _time_to_ready(arguments[layout], state, env)
                walls[layout].append(wall)
                cpus[layout].append(cpu)
    return {
        layout: (min(walls[layout]), statistics.median(walls[layout]), min(cpus[layout]))
        for layout in LAYOUTS
    }


def _time_to_ready(arguments: list[str], state: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU time of one `oneiric run` from spawn to status.json "running"."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "oneiric", "run", *arguments, "--state", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "LOG_LEVEL": "warning"},
    )
    status = state / "status.json"
    try:
        while True:
            try:
                if json.loads(status.read_bytes())["state"] == "running":
                    return time.perf_counter() - started, cpu_seconds(proc.pid)
            except (FileNotFoundError, ValueError):
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"oneiric run {' '.join(arguments)} exited {proc.returncode}")
            if time.perf_counter() - started > 30:
                raise RuntimeError("runtime did not become ready in 30 s")
            time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(30)


async def swap_latency(swaps: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        write(path, make_plan(1, "p0"))
        sup = Supervisor(
            Settings(state=Path(tmp) / "state", source=UnsignedPlanFile(path), handle_signals=False)
        )
        latencies: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            while not sup.watching:
                await anyio.sleep(0.01)
            handle = sup.handle("adapter:c0")
            for i in range(1, swaps + 1):
                plan = make_plan(1, f"p{i}")
                started = time.perf_counter()
                write(path, plan)
                while handle.provider != f"p{i}":
                    await anyio.sleep(0.0005)
                latencies.append(time.perf_counter() - started)
                await anyio.sleep(0.02)
            sup.request_stop()
        return latencies


async def failed_calls(swaps: int, callers: int) -> tuple[int, int, float]:
    runtime = Runtime()
    plans = [make_plan(1, "a"), make_plan(1, "b")]
    await runtime.apply(plans[0])
    handle = runtime.handle("adapter:c0")
    stop = threading.Event()
    failures: list[BaseException] = []
    calls = [0] * callers

    def call(index: int) -> None:
        while not stop.is_set():
            try:
                handle.set("k", b"v")
                handle.get("k")
                calls[index] += 2
            except Exception as exc:
                failures.append(exc)
            time.sleep(0.005)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    for i in range(swaps):
        await runtime.apply(plans[(i + 1) % 2])
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    await runtime.stop()
    return len(failures), sum(calls), elapsed


def call_cost(calls: int) -> tuple[float, float, float]:
    """Seconds per call: direct, through the handle, through the handle with metrics scraped.

    Interleaved rounds, best of each, so that all three see the same machine load.
    """
    from oneiric._ops.metrics import Metrics
    from prometheus_client import generate_latest

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        write(path, make_plan(1))
        plain = Supervisor(Settings(state=Path(tmp) / "a", source=UnsignedPlanFile(path)))
        metered = Supervisor(Settings(state=Path(tmp) / "b", source=UnsignedPlanFile(path)))
        anyio.run(plain.runtime.apply, make_plan(1))
        anyio.run(metered.runtime.apply, make_plan(1))
        metrics = Metrics(metered)
        metered.observers.append(metrics)
        stop = threading.Event()

        def scrape() -> None:
            while not stop.is_set():
                generate_latest(metrics.registry)
                time.sleep(0.01)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        direct = plain.runtime.instances["adapter:c0"].value
        targets = (direct.get, plain.handle("adapter:c0").get, metered.handle("adapter:c0").get)
        best = [float("inf")] * 3
        try:
            for _ in range(7):
                for index, get in enumerate(targets):
                    started = time.perf_counter()
                    for _ in range(calls):
                        get("k")
                    best[index] = min(best[index], (time.perf_counter() - started) / calls)
        finally:
            stop.set()
            scraper.join()
        anyio.run(plain.runtime.stop)
        anyio.run(metered.runtime.stop)
    return best[0], best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI smoke)")
    args = parser.parse_args(argv)
    os.environ.setdefault("LOG_LEVEL", "warning")
    logs.configure()
    runs, swaps, storm = (2, 20, 100) if args.quick else (5, 200, 1000)
    python = [sys.executable]
    # Child processes get a bytecode cache (as an installed package has): this machine's
    # environment sets PYTHONDONTWRITEBYTECODE and the venv holds no .pyc files.
    with tempfile.TemporaryDirectory(prefix="oneiric-pyc-") as pyc:
        compiled = {**os.environ, "PYTHONPYCACHEPREFIX": pyc}
        compiled.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(
            [
                *python,
                "-c",
                "import oneiric._cli.main, oneiric._cli.runtime, oneiric._lifecycle.supervisor",
            ],
            env=compiled,
            check=True,
        )
        source_only = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        base_t, base_cpu, base_rss = timed([*python, "-c", "pass"], runs, compiled)
        print(
            f"baseline python -c pass: {base_t * 1000:.1f} ms (cpu {base_cpu * 1000:.0f} ms), "
            f"{base_rss / 1024:.1f} MiB"
        )
        for label, cli, env in (
            ("oneiric --help", ["--help"], compiled),
            ("oneiric status", ["status", "--state", "/nonexistent"], compiled),
            ("oneiric --help, no bytecode", ["--help"], source_only),
            ("oneiric status, no bytecode", ["status", "--state", "/nonexistent"], source_only),
        ):
            t, cpu, rss = timed([*python, "-m", "oneiric", *cli], runs, env)
            print(
                f"{label}: {t * 1000:.1f} ms ({t / base_t:.1f}x baseline), "
                f"cpu {cpu * 1000:.0f} ms ({cpu / base_cpu:.1f}x), "
                f"{rss / 1024:.1f} MiB ({rss / base_rss:.1f}x)"
            )
        t, cpu, _ = timed([*python, "-c", "import oneiric._lifecycle.supervisor"], runs, compiled)
        print(
            f"import supervisor: {t * 1000:.1f} ms ({t / base_t:.1f}x baseline), "
            f"cpu {cpu * 1000:.0f} ms, {(t - base_t) * 1000:.1f} ms over it"
        )
        for n in (10, 1000):
            for layout, (best, median, cpu) in cold_start(n, runs, compiled).items():
                print(
                    f"cold start to ready, {n} components, {layout}: best {best * 1000:.0f} ms "
                    f"({best / base_t:.1f}x baseline), median {median * 1000:.0f} ms, "
                    f"cpu {cpu * 1000:.0f} ms ({cpu / base_cpu:.1f}x)"
                )
        with tempfile.TemporaryDirectory() as tmp:
            arguments = sources(Path(tmp), 10)[LAYOUTS[2]]
            plain, served = [], []
            for run in range(runs):
                plain.append(_time_to_ready(arguments, Path(tmp) / f"p{run}", compiled))
                served.append(
                    _time_to_ready(
                        [*arguments, "--http", "127.0.0.1:0"], Path(tmp) / f"h{run}", compiled
                    )
                )
            wall, cpu = min(w for w, _ in plain), min(c for _, c in plain)
            http_wall, http_cpu = min(w for w, _ in served), min(c for _, c in served)
            print(
                f"cold start to ready, 10 components, unsigned: without --http best "
                f"{wall * 1000:.0f} ms (cpu {cpu * 1000:.0f} ms); with --http best "
                f"{http_wall * 1000:.0f} ms ({http_wall / wall:.2f}x), "
                f"cpu {http_cpu * 1000:.0f} ms ({http_cpu / cpu:.2f}x)"
            )
    direct, proxied, metered = call_cost(20_000 if args.quick else 200_000)
    print(
        f"handle call: direct {direct * 1e9:.0f} ns, proxied {proxied * 1e9:.0f} ns "
        f"({proxied / direct:.1f}x direct), proxied with metrics scraped {metered * 1e9:.0f} ns: "
        f"{(metered - proxied) * 1e9:+.0f} ns per call for metrics (budget +2000 ns)"
    )
    latencies = anyio.run(swap_latency, swaps)
    latencies.sort()
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"swap latency over {swaps} swaps (file renamed → new instance bound): "
        f"median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"({median / base_t:.2f}x baseline start)"
    )
    failures, calls, elapsed = anyio.run(failed_calls, storm, 100)
    print(
        f"{storm} swaps under 100 concurrent callers: {failures} failed calls of {calls} "
        f"({elapsed:.1f} s, {elapsed / storm * 1000:.2f} ms per swap)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
