"""Whole-process `oneiricc build` against lark's bare parse, and the parse cache.

For each size N (default 1,000, 10,000 and 50,000 components) it generates the
project of `gen_project.py` under bench/out/nN and measures, in one run and
interleaved so both see the same machine load:

* build: `oneiricc build --no-cache --target all --out FILE` as a fresh
  process (the installed console script): wall time, CPU time and peak RSS
  (`os.wait4` rusage; on Linux ru_maxrss is the largest single process of the
  tree, forked parse children included);
* parse: `lark_parse.py` as a fresh process over the same 20 files with the
  same grammar: the in-process sum of `Lark.parse` (the floor) and the
  process's wall time (interpreter + `import lark` + grammar load + parse);
* start-up floor: `python -c "import click, lark"`, what any fresh process
  with this command line's two libraries pays before it reads a file;
* cache: with the cache on (the project's .oneiric-cache), a cold build (cache
  deleted first), a rebuild with nothing changed, one after a comment was
  appended to one of the 20 files, and one after a priority was changed in it
  (a semantic edit: the plan changes); wall and CPU time of each (once, untimed,
  each plan is compared with a --no-cache build of the same sources);
* server: the same three rebuilds while a build server runs for the project
  (`oneiricc server start`): wall time of the `oneiricc build` process, which
  hands the build to the server (its CPU is the client's alone, so not shown);
  and a --no-cache build through the server, beside a bare parse each time.

Each figure is the median of --repeat runs.  Goals (issue 2, item 9): build at
most 1.3x the bare parse, 50k/10k growth at most 5.5, peak RSS under 1 GiB at
50k, a rebuild after editing one file at most 20% of a cold build.

    python bench/bench_build.py [--sizes 1000,10000,50000] [--repeat 3] [--no-cache-figure]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

import gen_project

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
DEFAULT_SIZES = (1_000, 10_000, 50_000)
EDITED_FILE = 10  # the layer whose file the cache figure edits
GOAL_RATIO = 1.3
GOAL_GROWTH = 5.5
GOAL_RSS_MIB = 1024
GOAL_WARM = 0.20
NO_SERVER_ENV = "ONEIRICC_NO_SERVER"


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    cpu_s: float
    maxrss_mib: float
    stdout: str


def grammar_path() -> Path:
    """The grammar file the installed compiler loads (shipped inside `oneiricc`)."""
    spec = find_spec("oneiricc")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("oneiricc is not installed in this interpreter; use .venv/bin/python")
    return Path(next(iter(spec.submodule_search_locations))) / "_language" / "oneiric.lark"


def oneiricc_command() -> list[str]:
    """The installed `oneiricc` console script beside this interpreter, as users run it."""
    script = Path(sys.executable).with_name("oneiricc")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "oneiricc"]


def child_env(bytecode_cache: bool) -> dict[str, str]:
    """The measured processes' environment.

    With `bytecode_cache`, compiled bytecode is written to and read from
    bench/out/pycache (PYTHONPYCACHEPREFIX) even where the environment sets
    PYTHONDONTWRITEBYTECODE, as on a user's machine where .pyc files exist:
    otherwise every process compiles pydantic, lark, click... from source.
    """
    env = dict(os.environ)
    env[NO_SERVER_ENV] = "1"  # fresh processes, whatever server runs (the server cases drop it)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(OUT / "pycache")
    return env


def run_process(command: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 900) -> Run:
    """Run `command` to completion; wall, CPU and peak RSS of it (and its children)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode == -signal.SIGKILL:
        raise SystemExit(f"killed after {timeout_s:.0f} s: {' '.join(command)}")
    if proc.returncode != 0:
        raise SystemExit(
            f"exit {proc.returncode}: {' '.join(command)} (in {cwd})\n{stderr[-3000:]}"
        )
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout)


def build(root: Path, plan: Path, env: dict[str, str], *, cache: bool) -> Run:
    command = [*oneiricc_command(), "build", "--target", gen_project.TARGET, "--out", str(plan)]
    if not cache:
        command.insert(len(oneiricc_command()) + 1, "--no-cache")
    return run_process(command, root, env)


def bare_parse(root: Path, env: dict[str, str]) -> tuple[Run, dict[str, float]]:
    files = [str(p) for p in gen_project.source_files(root)]
    run = run_process(
        [sys.executable, str(BENCH / "lark_parse.py"), str(grammar_path()), *files], root, env
    )
    return run, json.loads(run.stdout)


def startup_floor(root: Path, env: dict[str, str]) -> Run:
    """What any fresh process with this command line's libraries pays before reading a
    file: the interpreter's start, `import click` and `import lark` (no grammar yet)."""
    return run_process([sys.executable, "-c", "import click, lark"], root, env)


def source_version() -> str:
    """The commit measured (`-dirty` when the work tree has changes), or "unknown"."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=BENCH,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass(slots=True)
class SizeResult:
    size: int
    shape: dict[str, object]
    build_wall_s: float
    build_cpu_s: float
    build_maxrss_mib: float
    parse_s: float  # in-process sum of Lark.parse over the 20 files
    parse_process_wall_s: float
    parse_startup_s: float  # import lark + grammar load, inside that process
    parse_process_cpu_s: float
    parse_maxrss_mib: float
    floor_wall_s: float  # a process that only starts Python and imports click and lark
    loadavg: float  # the machine's 1-minute load average after the runs: noise indicator
    plan_bytes: int
    cache: CacheResult | None = None

    @property
    def ratio_vs_parse(self) -> float:
        return self.build_wall_s / self.parse_s

    @property
    def floor_vs_parse(self) -> float:
        return self.floor_wall_s / self.parse_s

    @property
    def ratio_vs_parse_process(self) -> float:
        return self.build_wall_s / self.parse_process_wall_s

    @property
    def cpu_ratio_vs_parse_process(self) -> float:
        """CPU seconds, build over lark's process: less sensitive to machine load than wall."""
        return self.build_cpu_s / self.parse_process_cpu_s

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["ratio_vs_parse"] = self.ratio_vs_parse
        data["floor_vs_parse"] = self.floor_vs_parse
        data["ratio_vs_parse_process"] = self.ratio_vs_parse_process
        data["cpu_ratio_vs_parse_process"] = self.cpu_ratio_vs_parse_process
        if self.cache is not None:
            data["cache"]["warm_ratio"] = self.cache.warm_ratio
            data["cache"]["served_ratio"] = self.cache.served_ratio
            data["cache"]["served_full_ratio"] = self.cache.served_full_ratio
        return data


CACHE_CASES = ("cold", "unchanged", "comment", "semantic")
SERVER_CASES = CACHE_CASES[1:]


@dataclass(frozen=True, slots=True)
class CacheResult:
    """Medians per case: cold (empty cache: parse and check everything, write every
    entry), unchanged (every file from the cache), comment (a comment appended to
    one file of twenty), semantic (a priority changed in that file)."""

    wall_s: dict[str, float]
    cpu_s: dict[str, float]
    served_wall_s: dict[str, float]  # the SERVER_CASES, through a build server
    served_full_s: float  # a --no-cache build through the build server
    served_full_parse_s: float  # the bare parse, measured beside each of those builds

    @property
    def warm_ratio(self) -> float:
        """The goal's figure: the edited rebuild (the worse of the two edits) / cold, wall."""
        return max(self.wall_s["comment"], self.wall_s["semantic"]) / self.wall_s["cold"]

    @property
    def served_ratio(self) -> float:
        """The same, with a build server running."""
        edited = max(self.served_wall_s["comment"], self.served_wall_s["semantic"])
        return edited / self.wall_s["cold"]

    @property
    def served_full_ratio(self) -> float:
        """A --no-cache build through the server / the bare parse measured beside it."""
        return self.served_full_s / self.served_full_parse_s

    def ratio(self, case: str, clock: str) -> float:
        times = self.wall_s if clock == "wall" else self.cpu_s
        return times[case] / times["cold"]


def semantic_edit(text: str, attempt: int) -> str:
    """The first priority of the file raised by 50 + `attempt`: a decision (and the plan)
    changes, and each attempt's file is new to the cache."""
    edited, count = re.subn(
        r"priority (\d+)", lambda m: f"priority {int(m[1]) + 50 + attempt}", text, count=1
    )
    if not count:
        raise SystemExit("the edited file has no priority to change")
    return edited


def measure_size(size: int, repeat: int, cache_figure: bool, env: dict[str, str]) -> SizeResult:
    root = OUT / f"n{size}"
    shape = gen_project.generate(root, size)
    plan = root / "plan.json"
    builds: list[Run] = []
    parses: list[tuple[Run, dict[str, float]]] = []
    floors: list[Run] = []
    build(root, plan, env, cache=False)  # warm-up: bytecode and OS file caches, not counted
    bare_parse(root, env)
    startup_floor(root, env)
    for _ in range(repeat):
        builds.append(build(root, plan, env, cache=False))
        parses.append(bare_parse(root, env))
        floors.append(startup_floor(root, env))
    return SizeResult(
        size=size,
        shape=shape.as_dict(),
        build_wall_s=median([b.wall_s for b in builds]),
        build_cpu_s=median([b.cpu_s for b in builds]),
        build_maxrss_mib=max(b.maxrss_mib for b in builds),
        parse_s=median([info["parse_s"] for _, info in parses]),
        parse_process_wall_s=median([run.wall_s for run, _ in parses]),
        parse_startup_s=median([info["import_s"] + info["load_s"] for _, info in parses]),
        parse_process_cpu_s=median([run.cpu_s for run, _ in parses]),
        parse_maxrss_mib=max(run.maxrss_mib for run, _ in parses),
        floor_wall_s=median([run.wall_s for run in floors]),
        loadavg=os.getloadavg()[0],
        plan_bytes=plan.stat().st_size,
        cache=measure_cache(root, plan, repeat, env) if cache_figure else None,
    )


def measure_cache(root: Path, plan: Path, repeat: int, env: dict[str, str]) -> CacheResult:
    """Cold build (empty cache) vs rebuilds: nothing changed, one file of twenty edited;
    in fresh processes, then through a build server."""
    edited = gen_project.source_files(root)[EDITED_FILE]
    original = edited.read_bytes()
    runs: dict[str, list[Run]] = {case: [] for case in CACHE_CASES}
    served: dict[str, list[Run]] = {case: [] for case in SERVER_CASES}
    served_full: list[tuple[Run, float]] = []  # --no-cache through the server, bare parse
    expected: dict[str, bytes] = {}  # the --no-cache plan of each case's sources
    reference = plan.with_name("reference.plan.json")

    def edit(case: str, attempt: int) -> None:
        """Make the edit of `case`, in bytes new to the cache for each `attempt`."""
        if case == "comment":
            comment = f"# edited for the cache benchmark ({attempt})\n"
            edited.write_bytes(original + comment.encode())
        elif case == "semantic":
            edited.write_bytes(semantic_edit(original.decode(), attempt).encode())
        else:
            edited.write_bytes(original)

    def verify(case: str) -> None:
        """The cache never changes the output (not timed)."""
        build(root, reference, env, cache=False)
        if plan.read_bytes() != reference.read_bytes():
            raise SystemExit(f"{case}: the cached build differs from --no-cache")
        expected[case] = reference.read_bytes()

    try:
        for attempt in range(repeat):
            shutil.rmtree(root / ".oneiric-cache", ignore_errors=True)
            for case in CACHE_CASES:
                edit(case, attempt)
                runs[case].append(build(root, plan, env, cache=True))
                if attempt == 0:
                    verify(case)
        served_env = {name: value for name, value in env.items() if name != NO_SERVER_ENV}
        run_process([*oneiricc_command(), "server", "start"], root, served_env)
        try:
            build(root, plan, served_env, cache=False)  # the server's first parse: not counted
            for attempt in range(repeat, 2 * repeat):
                edit("unchanged", attempt)
                build(root, plan, served_env, cache=True)  # undo the last edit: not counted
                for case in SERVER_CASES:
                    edit(case, attempt)
                    served[case].append(build(root, plan, served_env, cache=True))
                    if attempt == repeat:
                        verify(case)
                full = build(root, plan, served_env, cache=False)
                served_full.append((full, bare_parse(root, env)[1]["parse_s"]))
        finally:
            run_process([*oneiricc_command(), "server", "stop"], root, served_env)
    finally:
        edited.write_bytes(original)
    if len({expected[case] for case in SERVER_CASES}) != len(SERVER_CASES):
        raise SystemExit("an edit left the plan unchanged: the benchmark measures nothing")
    return CacheResult(
        wall_s={case: median([r.wall_s for r in runs[case]]) for case in CACHE_CASES},
        cpu_s={case: median([r.cpu_s for r in runs[case]]) for case in CACHE_CASES},
        served_wall_s={case: median([r.wall_s for r in served[case]]) for case in SERVER_CASES},
        served_full_s=median([run.wall_s for run, _ in served_full]),
        served_full_parse_s=median([parse_s for _, parse_s in served_full]),
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(results: list[SizeResult]) -> str:
    lines = [
        "| N | source | build wall | build CPU | peak RSS | lark parse (sum) "
        "| lark process wall / CPU | build / parse | start-up floor / parse "
        "| build / lark process | CPU / CPU | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.size:,} | {int(str(r.shape['bytes'])) / 1e6:.2f} MB, "
            f"{int(str(r.shape['lines'])):,} lines "
            f"| {r.build_wall_s:.2f} s | {r.build_cpu_s:.2f} s | {r.build_maxrss_mib:.0f} MiB "
            f"| {r.parse_s:.2f} s | {r.parse_process_wall_s:.2f} s / {r.parse_process_cpu_s:.2f} s "
            f"| {r.ratio_vs_parse:.2f}x | {r.floor_wall_s:.2f} s: {r.floor_vs_parse:.2f}x "
            f"| {r.ratio_vs_parse_process:.2f}x "
            f"| {r.cpu_ratio_vs_parse_process:.2f}x | {r.loadavg:.1f} |"
        )
    cached = [r for r in results if r.cache is not None]
    if cached:
        lines += [
            "",
            "Cache, wall (CPU): each rebuild as a share of the cold build in the same run.",
            "",
            "| N | cold build, empty cache | rebuild, nothing changed "
            "| rebuild, comment appended to 1 of 20 files | rebuild, priority changed in it |",
            "|---|---|---|---|---|",
        ]
        for r in cached:
            c = r.cache
            assert c is not None
            cells = [f"{c.wall_s['cold']:.2f} s ({c.cpu_s['cold']:.2f} s)"] + [
                f"{c.wall_s[case]:.2f} s ({c.cpu_s[case]:.2f} s): "
                f"{c.ratio(case, 'wall'):.0%} ({c.ratio(case, 'cpu'):.0%})"
                for case in CACHE_CASES[1:]
            ]
            lines.append(f"| {r.size:,} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "The same rebuilds with a build server running (`oneiricc server start`): wall time "
            "of the `oneiricc build` process, as a share of the cold build above.",
            "",
            "| N | rebuild, nothing changed | comment appended | priority changed |",
            "|---|---|---|---|",
        ]
        for r in cached:
            c = r.cache
            assert c is not None
            cells = [
                f"{c.served_wall_s[case]:.2f} s: {c.served_wall_s[case] / c.wall_s['cold']:.0%}"
                for case in SERVER_CASES
            ]
            lines.append(f"| {r.size:,} | " + " | ".join(cells) + " |")
    lines.append("")
    by_size = {r.size: r for r in results}
    for r in results:
        lines.append(
            f"- N={r.size:,}: build / bare parse {r.ratio_vs_parse:.2f}x "
            f"(goal ≤ {GOAL_RATIO}x: {_verdict(r.ratio_vs_parse <= GOAL_RATIO)}; "
            f"the start-up floor alone is {r.floor_vs_parse:.2f}x)"
        )
    if 10_000 in by_size and 50_000 in by_size:
        growth = by_size[50_000].build_wall_s / by_size[10_000].build_wall_s
        lines.append(
            f"- growth 50k / 10k: {growth:.2f} "
            f"(goal ≤ {GOAL_GROWTH}: {_verdict(growth <= GOAL_GROWTH)})"
        )
    if 50_000 in by_size:
        rss = by_size[50_000].build_maxrss_mib
        lines.append(
            f"- peak RSS at 50k: {rss:.0f} MiB "
            f"(goal < {GOAL_RSS_MIB} MiB: {_verdict(rss < GOAL_RSS_MIB)})"
        )
    for r in results:
        if r.cache is not None:
            warm = r.cache.warm_ratio
            served = r.cache.served_ratio
            lines.append(
                f"- N={r.size:,}: edited rebuild / cold build {warm:.0%} in a fresh process, "
                f"{served:.0%} through the build server (wall, the worse edit; goal ≤ "
                f"{GOAL_WARM:.0%}: {_verdict(warm <= GOAL_WARM)}, {_verdict(served <= GOAL_WARM)})"
            )
    for r in results:
        if r.cache is not None:
            c = r.cache
            lines.append(
                f"- N={r.size:,}: a --no-cache build through the build server "
                f"{c.served_full_s:.2f} s, {c.served_full_ratio:.2f}x the bare parse measured "
                f"beside it ({c.served_full_parse_s:.2f} s)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in DEFAULT_SIZES),
        help="comma-separated component counts (default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median counts")
    parser.add_argument(
        "--as-environment",
        action="store_true",
        help="run the processes with the environment as it is (PYTHONDONTWRITEBYTECODE "
        "included), instead of with a bytecode cache in bench/out/pycache",
    )
    parser.add_argument(
        "--no-cache-figure", action="store_true", help="skip the cold/warm parse-cache builds"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=OUT / "bench_build.json",
        help="where to write the raw figures (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    env = child_env(bytecode_cache=not args.as_environment)
    print(
        f"bench_build: sizes {sizes}, {args.repeat} runs each, python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, source {source_version()}",
        flush=True,
    )
    results = []
    for size in sizes:
        result = measure_size(size, args.repeat, not args.no_cache_figure, env)
        print(
            f"  N={size:,}: build {result.build_wall_s:.2f} s, parse {result.parse_s:.2f} s",
            flush=True,
        )
        results.append(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "source": source_version(),
        "repeat": args.repeat,
        "bytecode_cache": not args.as_environment,
        "results": [r.as_dict() for r in results],
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
