"""Two installs of the compiler, interleaved in one run: is a change faster or slower?

Each install is a checkout with its own venv (`uv sync` in it), for example the commit
before a change in a second worktree:

    git worktree add --detach /tmp/base HEAD~1 && (cd /tmp/base && uv sync --frozen)
    python bench/compare_installs.py --base /tmp/base --new . --sizes 10000,50000

* builds: `oneiricc build --no-cache --target all --out FILE` of the `gen_project.py`
  project of each size, in a fresh process (the installed console script), the two
  installs alternating (the order swapped every round) after one uncounted round;
  median wall and CPU time (`os.wait4`), and new / base.  The plans must be the same
  bytes.
* `--served`: each install on its own copy of the project with a build server running
  (`oneiricc server start`): rebuilds after nothing changed, a comment appended to one
  file of twenty and a priority changed in it, each as a share of that install's cold
  build (fresh process, empty cache), as `bench_build.py` reports them.

A benchmark tool, not part of `make bench` (it needs a second install).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gen_project

OUT = Path(__file__).resolve().parent / "out" / "compare"
EDITED_FILE = 10
SERVED_CASES = ("unchanged", "comment", "semantic")


def run(tree: Path, root: Path, args: list[str], *, served: bool = False) -> tuple[float, float]:
    """Wall and CPU time of `oneiricc ARGS` of the install in `tree`, run in `root`."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(OUT / f"pycache-{tree.name}"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("ONEIRICC_NO_SERVER", None)
    if not served:
        env["ONEIRICC_NO_SERVER"] = "1"
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(tree / ".venv/bin/oneiricc"), *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{tree}: oneiricc {' '.join(args)} failed:\n{error}")
    return wall, usage.ru_utime + usage.ru_stime


def compare_builds(trees: dict[str, Path], size: int, rounds: int) -> None:
    root = OUT / f"n{size}"
    gen_project.generate(root, size)
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for index in range(rounds + 1):
        order = list(trees) if index % 2 == 0 else list(reversed(trees))
        plans = {}
        for name in order:
            plan = OUT / f"{name}-{size}.plan.json"
            args = ["build", "--no-cache", "--target", gen_project.TARGET, "--out", str(plan)]
            times = run(trees[name], root, args)
            plans[name] = plan.read_bytes()
            if index:  # the first round warms the OS and bytecode caches
                figures[name].append(times)
        if len(set(plans.values())) != 1:
            raise SystemExit(f"N={size}: the installs build different plans")
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in figures.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in figures.items()}
    print(
        f"N={size:,}, {rounds} rounds: base wall {wall['base']:.2f} s, CPU {cpu['base']:.2f} s; "
        f"new wall {wall['new']:.2f} s, CPU {cpu['new']:.2f} s; new / base: wall "
        f"{wall['new'] / wall['base']:.3f}, CPU {cpu['new'] / cpu['base']:.3f}",
        flush=True,
    )


def compare_served(trees: dict[str, Path], size: int, rounds: int) -> None:
    roots = {name: OUT / f"served-{name}-n{size}" for name in trees}
    for root in roots.values():
        gen_project.generate(root, size)
    edited = {name: gen_project.source_files(root)[EDITED_FILE] for name, root in roots.items()}
    original = {name: path.read_bytes() for name, path in edited.items()}
    args = ["build", "--target", gen_project.TARGET, "--out", "plan.json"]

    def edit(name: str, case: str, attempt: int) -> None:
        text = original[name].decode()
        if case == "comment":
            text += f"# edited for the comparison ({attempt})\n"
        elif case == "semantic":
            text = re.sub(
                r"priority (\d+)", lambda m: f"priority {int(m[1]) + 50 + attempt}", text, count=1
            )
        edited[name].write_text(text, encoding="utf-8")

    cold: dict[str, list[float]] = {name: [] for name in trees}
    served: dict[str, dict[str, list[float]]] = {
        name: {case: [] for case in SERVED_CASES} for name in trees
    }
    try:
        for index in range(rounds):
            for name in list(trees) if index % 2 == 0 else list(reversed(trees)):
                shutil.rmtree(roots[name] / ".oneiric-cache", ignore_errors=True)
                edit(name, "unchanged", 0)
                cold[name].append(run(trees[name], roots[name], args)[0])
        for name in trees:
            run(trees[name], roots[name], ["server", "start"])
            run(trees[name], roots[name], args, served=True)  # the server's first build
        for attempt in range(1, rounds + 1):
            for name in list(trees) if attempt % 2 == 0 else list(reversed(trees)):
                edit(name, "unchanged", attempt)
                run(trees[name], roots[name], args, served=True)  # undo the last edit
                for case in SERVED_CASES:
                    edit(name, case, attempt)
                    served[name][case].append(run(trees[name], roots[name], args, served=True)[0])
        if len({(root / "plan.json").read_bytes() for root in roots.values()}) != 1:
            raise SystemExit(f"N={size}: the installs build different plans")
    finally:
        for name in trees:
            edit(name, "unchanged", 0)
            subprocess.run(
                [str(trees[name] / ".venv/bin/oneiricc"), "server", "stop"],
                cwd=roots[name],
                capture_output=True,
                check=False,
            )
    for name in trees:
        base = statistics.median(cold[name])
        shares = ", ".join(
            f"{case} {statistics.median(times):.3f} s ({statistics.median(times) / base:.0%})"
            for case, times in served[name].items()
        )
        print(f"N={size:,} {name}: cold {base:.2f} s; served: {shares}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--new", type=Path, default=Path("."), help="the changed checkout")
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--served", action="store_true", help="served rebuilds too")
    args = parser.parse_args(argv)
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    OUT.mkdir(parents=True, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",") if s):
        compare_builds(trees, size, args.rounds)
        if args.served:
            compare_served(trees, size, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
