"""`oneiricc build` of this checkout against another checkout's, in one run, interleaved.

For a change that adds work to every build (issue 15: implementations and config
checked against their Python source), the figure that matters is the ratio to the
compiler without it, on the same machine under the same load.  `--baseline DIR`
names a second checkout (a `git worktree` at the old commit, with its own `.venv`);
both compilers build the same generated project (`gen_project.py`, N components):

* cold: `oneiricc build --no-cache --target all --out FILE`, a fresh process;
* unchanged: `oneiricc build --target all --out FILE` with the cache on, after one
  uncounted build filled it (each compiler keys its own entries: the code is part
  of the key), so nothing changed since;
* served: the same unchanged rebuild handed to a build server (`oneiricc server
  start`, one per compiler, each on its own copy of the project), and a
  --no-cache build through it (served cold);

alternating baseline and current, after one uncounted warm-up of each, with compiled
bytecode as on a user's machine (`bench_build.child_env`).  Figures are the median wall
time and CPU time (user + sys: steadier than wall time on a loaded machine) of --repeat
runs, and current / baseline.

    python bench/bench_compare.py --baseline /work/wt/old --size 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

import gen_project  # noqa: E402 - a sibling script, importable once HERE is on the path
from bench_build import NO_SERVER_ENV, child_env  # noqa: E402 - the same: compiled bytecode


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall and CPU (user + sys, from `os.wait4`) seconds of one run of `command` (in fresh
    processes, no build server, unless `env` says otherwise)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=child_env(True) if env is None else env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode})")
    return elapsed, usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, with its .venv")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.baseline is None:
        print("bench_compare: no --baseline checkout given; nothing to compare")
        return 0
    compilers = {
        "baseline": args.baseline.resolve() / ".venv" / "bin" / "oneiricc",
        "current": HERE.parent / ".venv" / "bin" / "oneiricc",
    }
    root = OUT / f"compare-n{args.size}"
    gen_project.generate(root, args.size)
    out = root / "plan.json"
    cold = {name: [*compiler_args, "--no-cache"] for name, compiler_args in _builds(compilers, out)}
    warm = dict(_builds(compilers, out))
    shutil.rmtree(root / ".oneiric-cache", ignore_errors=True)
    for name in compilers:  # warm-up, uncounted; fills each compiler's cache entries
        _timed(cold[name], root)
        _timed(warm[name], root)
    kinds = ("cold", "unchanged", "served", "served cold")
    wall: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in compilers}
    cpu: dict[str, dict[str, list[float]]] = {n: {k: [] for k in kinds} for n in compilers}
    # A copy of the project per compiler for its build server (one server per project).
    served_roots = {name: root.with_name(f"{root.name}-served-{name}") for name in compilers}
    for served_root in served_roots.values():
        shutil.rmtree(served_root, ignore_errors=True)
        shutil.copytree(root / "stacks", served_root / "stacks")
        shutil.copy(root / "oneiric.toml", served_root / "oneiric.toml")
    served_env = {k: v for k, v in child_env(True).items() if k != NO_SERVER_ENV}
    started: list[str] = []
    try:
        for name, exe in compilers.items():
            _timed([str(exe), "server", "start"], served_roots[name], served_env)
            started.append(name)
            _timed(cold[name], served_roots[name], served_env)  # the server's first build
            _timed(warm[name], served_roots[name], served_env)  # fills the cache
        for _ in range(args.repeat):
            for name in compilers:
                runs = (
                    ("cold", cold[name], root, None),
                    ("unchanged", warm[name], root, None),
                    ("served", warm[name], served_roots[name], served_env),
                    ("served cold", cold[name], served_roots[name], served_env),
                )
                for kind, command, where, env in runs:
                    seconds, used = _timed(command, where, env)
                    wall[name][kind].append(seconds)
                    cpu[name][kind].append(used)
    finally:
        for name in started:
            _timed([str(compilers[name]), "server", "stop"], served_roots[name], served_env)
    median = statistics.median
    ratios = {
        f"{kind} {what}": median(d["current"][kind]) / median(d["baseline"][kind])
        for kind in kinds
        for what, d in (("wall", wall), ("cpu", cpu))
        if what == "wall" or not kind.startswith("served")
    }
    print(f"N = {args.size}, median of {args.repeat}, interleaved")
    print(f"{'':18}{'baseline':>10}{'current':>10}{'ratio':>8}")
    for kind in kinds:
        for what, d in (("wall", wall), ("cpu", cpu)):
            if what == "cpu" and kind.startswith("served"):
                continue  # the client's alone: the server does the work
            base, current = median(d["baseline"][kind]), median(d["current"][kind])
            print(f"{kind + ' ' + what:18}{base:>9.2f}s{current:>9.2f}s{current / base:>8.2f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_compare.json").write_text(
        json.dumps({"size": args.size, "wall": wall, "cpu": cpu, "ratios": ratios}, indent=2) + "\n"
    )
    return 0


def _builds(compilers: dict[str, Path], out: Path) -> list[tuple[str, list[str]]]:
    return [
        (name, [str(exe), "build", "--target", "all", "--out", str(out)])
        for name, exe in compilers.items()
    ]


if __name__ == "__main__":
    sys.exit(main())
