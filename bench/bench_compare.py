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

alternating baseline and current, after one uncounted warm-up of each, with compiled
bytecode as on a user's machine (`bench_build.child_env`).  Figures are
the median wall time of --repeat runs, and current / baseline.

    python bench/bench_compare.py --baseline /work/wt/old --size 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
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
from bench_build import child_env  # noqa: E402 - the same: compiled bytecode, as users have


def _timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False, env=child_env(True)
    )
    elapsed = time.perf_counter() - started
    if result.returncode not in (0,):
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return elapsed


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
    times: dict[str, dict[str, list[float]]] = {n: {"cold": [], "unchanged": []} for n in compilers}
    for _ in range(args.repeat):
        for name in compilers:
            times[name]["cold"].append(_timed(cold[name], root))
            times[name]["unchanged"].append(_timed(warm[name], root))
    figures = {
        name: {kind: statistics.median(values) for kind, values in kinds.items()}
        for name, kinds in times.items()
    }
    ratios = {
        kind: figures["current"][kind] / figures["baseline"][kind] for kind in ("cold", "unchanged")
    }
    print(f"N = {args.size}, median of {args.repeat}, interleaved")
    print(f"{'':12}{'baseline':>10}{'current':>10}{'ratio':>8}")
    for kind in ("cold", "unchanged"):
        print(
            f"{kind:12}{figures['baseline'][kind]:>9.2f}s{figures['current'][kind]:>9.2f}s"
            f"{ratios[kind]:>8.2f}"
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_compare.json").write_text(
        json.dumps({"size": args.size, "times": times, "ratios": ratios}, indent=2) + "\n"
    )
    return 0


def _builds(compilers: dict[str, Path], out: Path) -> list[tuple[str, list[str]]]:
    return [
        (name, [str(exe), "build", "--target", "all", "--out", str(out)])
        for name, exe in compilers.items()
    ]


if __name__ == "__main__":
    sys.exit(main())
