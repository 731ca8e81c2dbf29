"""Micro-benchmark: what the recovering parser costs, against the clean parse.

The recovery (`oneiricc._language.recovery`) runs only after a file's parse
failed, so a file without errors never pays for it; this measures what a file
with errors pays.  One file of the `gen_project.py` project (N components,
default 10,000: about 60 KB a file) is parsed in-process as it is (the
baseline, measured in the same run) and then with 1, 10 and 100 mistakes
seeded in distinct components (a misspelt `priority`), each reported.  The
ratio is the broken file's parse (every error found, the rest kept) over the
clean one's.

    python bench/bench_recovery.py [--size 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gen_project
from oneiricc._language.parser import SyntaxErrors, parse, parser

OUT = Path(__file__).resolve().parent / "out"
MISTAKES = (1, 10, 100)


def _best(text: str, repeat: int) -> tuple[float, int]:
    """The best of `repeat` parses (seconds of CPU) and how many errors each reported."""
    best, errors = float("inf"), 0
    for _ in range(repeat):
        start = time.process_time()
        try:
            parse("stacks/bench.oneiric", text)
            errors = 0
        except SyntaxErrors as err:
            errors = len(err.diagnostics)
        best = min(best, time.process_time() - start)
    return best, errors


def _broken(text: str, count: int) -> str:
    """`text` with the first `priority` of `count` components spread over it misspelt."""
    places = [i for i in range(len(text)) if text.startswith("    priority ", i)]
    chosen = places[:: max(1, len(places) // count)][:count]
    for index in reversed(chosen):
        text = text[: index + 4] + "priorty" + text[index + 12 :]
    return text


def main(argv: list[str] | None = None) -> int:
    parser_args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_args.add_argument("--size", type=int, default=10_000)
    parser_args.add_argument("--repeat", type=int, default=5)
    args = parser_args.parse_args(argv)
    root = OUT / f"n{args.size}"
    if not root.is_dir():
        gen_project.generate(root, args.size)
    source = gen_project.source_files(root)[len(gen_project.source_files(root)) // 2]
    text = source.read_text(encoding="utf-8")
    parser()  # the tables, built once, out of every figure
    clean, _ = _best(text, args.repeat)
    print(f"{source.name}: {len(text) // 1024} KB, clean parse {clean * 1000:.1f} ms (baseline)")
    for count in MISTAKES:
        seconds, errors = _best(_broken(text, count), args.repeat)
        print(
            f"{count:>4} mistakes: {seconds * 1000:7.1f} ms, {errors} errors reported, "
            f"{seconds / clean:.2f}x the clean parse"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
