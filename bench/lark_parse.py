"""The floor of a build: lark alone parsing files with the compiler's grammar.

Run as a process, so its wall time includes interpreter start, `import lark`
and grammar loading; it also prints the in-process figures as JSON:

    python bench/lark_parse.py GRAMMAR FILE...
    {"import_s": ..., "load_s": ..., "parse_s": ..., "bytes": ...}

`parse_s` is the sum over files of `Lark.parse` alone, the same parser and
lexer the compiler uses (LALR, contextual lexer), building lark's own tree.
Only lark and the standard library are imported here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def parse_files(grammar: str, texts: list[str]) -> tuple[float, float]:
    """(seconds to build the parser, seconds summed over `Lark.parse` of each text)."""
    from lark import Lark

    start = time.perf_counter()
    parser = Lark(grammar, parser="lalr", lexer="contextual")
    loaded = time.perf_counter()
    total = 0.0
    for text in texts:
        begin = time.perf_counter()
        parser.parse(text)
        total += time.perf_counter() - begin
    return loaded - start, total


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: lark_parse.py GRAMMAR FILE...", file=sys.stderr)
        return 2
    start = time.perf_counter()
    import lark  # noqa: F401  (timed: part of what a process pays before parsing)

    imported = time.perf_counter() - start
    grammar = Path(args[0]).read_text(encoding="utf-8")
    texts = [Path(name).read_text(encoding="utf-8") for name in args[1:]]
    load_s, parse_s = parse_files(grammar, texts)
    size = sum(len(text.encode()) for text in texts)
    print(json.dumps({"import_s": imported, "load_s": load_s, "parse_s": parse_s, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
