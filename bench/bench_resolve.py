"""Micro-benchmark: the resolver stage alone on one key with 1,000 candidates.

The project (bench/out/resolve1000) has 20 layers in one file; `adapter store`
has 1,000 providers spread over them with tied priorities (so priority, layer
and declaration order all take part), every third providing `write`; a
service requiring `adapter store (write)` makes the capability rule run too,
and a workflow of 20 nodes over 20 tasks adds dependency edges.  The files are
parsed and checked once; then only `oneiricc._build.resolver.resolve` is timed, the
way `oneiricc.compile_project` calls it.  Goal (issue 2, item 9):
under 10 ms (the runtime resolver this replaces spends about 1.2 s
registering 1,000 candidates).

    python bench/bench_resolve.py [--candidates 1000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from oneiricc._build.checker import check
from oneiricc._build.loader import discover, load
from oneiricc._build.project import load_project
from oneiricc._build.resolver import resolve
from oneiricc._language.diagnostics import has_errors

OUT = Path(__file__).resolve().parent / "out"
LAYERS = 20
TARGET = "t"
GOAL_MS = 10.0


def write_project(root: Path, candidates: int) -> None:
    lines = ["oneiric 1"]
    for layer in range(LAYERS):
        lines.append(f"stack l{layer:02d} {{")
        for provider in range(layer, candidates, LAYERS):
            caps = "read, write" if provider % 3 == 0 else "read"
            lines += [
                f'  adapter store "p{provider:04d}" {{',
                '    impl "argparse:Namespace"',
                f"    priority {provider % 7}",
                f"    provides {caps}",
                "  }",
            ]
        lines += [
            f'  task step{layer:02d} "default" {{ impl "argparse:Namespace" }}',
            "}",
        ]
    lines += [
        "stack app {",
        '  service api "default" {',
        '    impl "argparse:Namespace"',
        "    requires adapter store (write)",
        "  }",
        '  workflow flow "default" {',
        "    " + " -> ".join(f"step{i:02d}" for i in range(LAYERS)),
        "  }",
        "}",
        f"target {TARGET} {{ layers {', '.join(f'l{i:02d}' for i in range(LAYERS))}, app }}",
    ]
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n', encoding="utf-8")
    (root / "stacks" / "one_key.oneiric").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    root = OUT / f"resolve{args.candidates}"
    write_project(root, args.candidates)
    project = load_project(root)
    sources = load(project, discover(project, [root / "stacks"]))
    program = check(sources)
    if sources.diagnostics or program.diagnostics:
        raise SystemExit(
            f"the resolver project does not check: {sources.diagnostics}{program.diagnostics}"
        )
    resolution = resolve(program, sources, TARGET, strict=False)  # warm-up, and a sanity check
    decision = resolution.decisions[("adapter", "store")]
    if len(decision.losers) != args.candidates - 1 or has_errors(resolution.diagnostics):
        raise SystemExit(f"unexpected resolution: {decision.rule}, {resolution.diagnostics}")
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        resolve(program, sources, TARGET, strict=False)
        times.append((time.perf_counter() - start) * 1000)
    med = statistics.median(times)
    print(
        f"bench_resolve: {args.candidates} candidates of adapter:store, winner "
        f'"{decision.winner.provider}" by {decision.rule}; resolve median {med:.2f} ms, '
        f"min {min(times):.2f} ms over {args.repeat} runs "
        f"(goal < {GOAL_MS:.0f} ms: {'ok' if med < GOAL_MS else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
