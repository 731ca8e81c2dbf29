"""Run every benchmark: each bench/bench_*.py module's `main()`, in name order.

A benchmark module takes its options from the command line (argparse) and
returns an exit status from `main()`; here each runs with its defaults (an
empty command line).  Name some to run only those:

    python bench/run.py              # all of them
    python bench/run.py resolve      # bench_resolve.py only
"""

from __future__ import annotations

import importlib.util
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def discover(names: list[str]) -> list[Path]:
    found = sorted(BENCH.glob("bench_*.py"))
    if not names:
        return found
    chosen = [p for p in found if p.stem.removeprefix("bench_") in names or p.stem in names]
    matched = {p.stem for p in chosen} | {p.stem.removeprefix("bench_") for p in chosen}
    unknown = set(names) - matched
    if unknown:
        known = ", ".join(p.stem.removeprefix("bench_") for p in found)
        raise SystemExit(f"unknown benchmark(s) {', '.join(sorted(unknown))}; known: {known}")
    return chosen


def run(path: Path) -> int:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    saved = sys.argv
    sys.argv = [str(path)]  # each benchmark with its defaults
    try:
        spec.loader.exec_module(module)
        main = getattr(module, "main", None)
        if not callable(main):
            print(f"{path.name}: no main(), skipped", flush=True)
            return 0
        status = main()
    except SystemExit as exc:  # a benchmark that gives up says why on its way out
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            status = 1
        else:
            status = exc.code or 0
    except Exception:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        status = 1
    finally:
        sys.argv = saved
    return int(status or 0)


def main() -> int:
    sys.path.insert(0, str(BENCH))  # benchmarks import their helpers (gen_project, ...)
    failed = []
    for path in discover(sys.argv[1:]):
        print(f"== {path.name}", flush=True)
        start = time.perf_counter()
        status = run(path)
        print(f"== {path.name}: exit {status} in {time.perf_counter() - start:.0f} s\n", flush=True)
        if status:
            failed.append(path.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
