"""Where a build's time goes: per-stage timings in one process, and a cProfile.

Runs the stages of `oneiricc.compile_project` by hand on the project
of `gen_project.py` (default N=10,000), without the parse cache, and prints
how long each takes:

    start     a fresh `python -c "import oneiricc._cli.main"` minus a bare `python -c pass`
    grammar   building lark's parser from the grammar (once per process)
    load      loader.load: reading, decoding, parsing (lark + syntax tree) and checking
              each file alone (checker.check_file); in the "cache" runs, reading the
              cache instead (filled = cold, writing it)
    check     checker.check: joining the checked files into one program
    resolve   resolver.resolve for the target
    pins      Pinner calls made while planning (locating and hashing modules)
    plan      planner.build_plan less pins and less encoding: the plan as dicts, orders
    encode    canonical JSON of the plan, its sha256 digest and the sealed bytes (once)

With --profile, the same run under cProfile (the parse forced in-process, so
the profile sees it) writes bench/out/profile-nN.pstats and prints the top
functions; `python -m pstats FILE` browses it.

    python bench/profile_build.py [--size 10000] [--profile] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gen_project
from bench_build import child_env

R = TypeVar("R")
OUT = Path(__file__).resolve().parent / "out"
ENV = child_env(bytecode_cache=True)  # processes measured as bench_build measures them


def process_start(repeat: int = 5) -> tuple[float, float]:
    """(bare interpreter start, start plus importing the CLI), medians in seconds."""

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
        return time.perf_counter() - start

    bare = statistics.median(wall("pass") for _ in range(repeat))
    cli = statistics.median(wall("import oneiricc._cli.main") for _ in range(repeat))
    return bare, cli


def import_costs(limit: int = 12) -> list[tuple[str, float]]:
    """The costliest imports of `oneiricc._cli.main` (cumulative seconds, `-X importtime`)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import oneiricc._cli.main"],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    )
    costs: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        if (cumulative.isdigit() and "." not in name) or name.startswith("oneiric"):
            costs[name] = int(cumulative) / 1e6 if cumulative.isdigit() else 0.0
    return sorted(costs.items(), key=lambda item: -item[1])[:limit]


def stages(
    root: Path, sequential: bool, collect: bool = True, cached: bool = False
) -> dict[str, float]:
    from oneiricc._build import forking, loader, planner
    from oneiricc._build.checker import check
    from oneiricc._build.pins import Pinner
    from oneiricc._build.project import load_project
    from oneiricc._build.resolver import resolve
    from oneiricc._incremental.cache import CachedLoader, CheckCache
    from oneiricc._language.parser import parse

    class TimedPinner(Pinner):
        """Counts the time spent pinning, so planning can be split from it."""

        spent = 0.0

        def pin_module(self, module: str) -> Any:
            return self._timed(super().pin_module, module)

        def resolve_entry_point(self, group: str, name: str) -> Any:
            return self._timed(super().resolve_entry_point, group, name)

        def _timed(self, func: Callable[..., R], *args: str) -> R:
            start = time.perf_counter()
            try:
                return func(*args)
            finally:
                TimedPinner.spent += time.perf_counter() - start

    def timed_encoding(func: Callable[..., R]) -> Callable[..., R]:
        def timed(*args: Any, **kwargs: Any) -> R:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                times["encode"] += time.perf_counter() - start

        return timed

    # The planner encodes with these two (canonical JSON, the digest and the sealed bytes).
    encoders = {name: getattr(planner, name) for name in ("encode_members", "seal_members")}
    for name, func in encoders.items():
        setattr(planner, name, timed_encoding(func))
    if sequential:
        forking.MIN_WEIGHT_TO_FORK = 1 << 62  # parse in this process
    times: dict[str, float] = {"encode": 0.0}
    gc.collect()
    if not collect:
        gc.disable()
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    parse("warm-up.oneiric", "oneiric 1\n")  # builds the parser tables once per process
    lap("grammar")
    project = load_project(root)
    files = loader.Loader(project)
    if cached:
        files = CachedLoader(project, CheckCache(project.cache_dir))
    sources = files.load(loader.discover(project, [root / "stacks"]))
    lap("load")
    program = check(sources)
    lap("check")
    resolution = resolve(program, sources, gen_project.TARGET, strict=False)
    lap("resolve")
    plan, diagnostics = planner.build_plan(resolution, sources, TimedPinner([]))
    lap("plan")
    for name, func in encoders.items():
        setattr(planner, name, func)
    if plan is None:
        raise SystemExit(f"the project does not build: {diagnostics[:5]}")
    gc.enable()
    times["pins"] = TimedPinner.spent
    times["plan"] -= TimedPinner.spent + times["encode"]
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--profile", action="store_true", help="also run under cProfile")
    parser.add_argument("--top", type=int, default=30, help="functions to print from the profile")
    args = parser.parse_args(argv)
    root = OUT / f"n{args.size}"
    gen_project.generate(root, args.size)

    bare, cli = process_start()
    print(f"process start: python {bare:.2f} s; + import oneiricc._cli.main {cli - bare:.2f} s")
    print(
        "  costliest imports (cumulative, -X importtime): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in import_costs())
    )
    # (label, parse in this process, garbage collector on, through the parse cache)
    runs = [
        ("parse as the CLI does", False, True, False),
        ("parse in-process", True, True, False),
        ("parse in-process, gc disabled", True, False, False),
        ("parse cache filled", True, True, True),
        ("parse cache warm", True, True, True),
        ("parse cache warm, gc disabled", True, False, True),
    ]
    shutil.rmtree(root / ".oneiric-cache", ignore_errors=True)
    for label, sequential, collect, cached in runs:
        times = stages(root, sequential, collect, cached)
        total = sum(times.values())
        print(f"stages, N={args.size:,} ({label}): total {total:.2f} s")
        for name in ("grammar", "load", "check", "resolve", "pins", "plan", "encode"):
            print(f"  {name:8} {times[name]:7.3f} s  {times[name] / total:6.1%}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(stages, root, True)
        path = OUT / f"profile-n{args.size}.pstats"
        profiler.dump_stats(path)
        stats = pstats.Stats(str(path))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
        print(f"profile written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
