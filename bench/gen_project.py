"""Write a deterministic benchmark project of N components for `oneiricc build`.

The shape follows issue 2, item 9: 20 files, one stack (layer) each, every file
importing the previous one so the target in the last file sees all 20 layers;
about 10 candidates per (domain, key), spread over distinct layers; priorities
with ties (decided by layer, a few on purpose by declaration order); some
selections; requirements with capabilities between keys (always towards lower
key numbers, so the dependency graph is a DAG); events, tasks, config values;
one workflow of 1,000 nodes whose edges form a DAG; one target over every layer.
Components are written about one per five lines.  Implementations point at a
handful of standard-library modules, so pinning finds them on any machine.

The same (components, seed) always gives the same bytes.

    python bench/gen_project.py 10000 bench/out/n10000
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

FILES = 20
CANDIDATES_PER_KEY = 10
WORKFLOW_NODES = 1000
TARGET = "all"
# One key in this many gets two providers tied on priority in the same layer:
# a declaration-order decision, reported as warning W0503.
TIE_EVERY = 97
# A few keys are chosen explicitly with `select`.
SELECT_EVERY = 20
KEY_DOMAINS = ("adapter", "service", "task", "event", "action")
# Standard-library implementations that fit what the generated config sets (any of
# timeout, buffer, url, tags): factories (adapter, service) taking **kwargs and no
# required parameter, callables (task, event, action) taking **kw after the arguments
# the runtime passes.  Some the compiler checks, some it records as "not checked"
# (bound twice at the top level, re-exported from a C module, assigned).
FACTORY_IMPLS = (
    "argparse:Namespace",
    "collections:Counter",
    "collections:OrderedDict",
    "types:SimpleNamespace",
)
CALLABLE_IMPLS = (
    "json:dumps",
    "json:loads",
    "json:load",
    "functools:reduce",
    "csv:reader",
    "csv:writer",
)
PRIORITIES = (0, 0, 1, 2, 3, 5, 10)


@dataclass(frozen=True, slots=True)
class Shape:
    """What was written, for reports."""

    root: Path
    components: int  # component declarations, the workflow included
    keys: int
    files: int
    lines: int
    bytes: int
    workflow_nodes: int
    selections: int

    def as_dict(self) -> dict[str, object]:
        return {
            "components": self.components,
            "keys": self.keys,
            "files": self.files,
            "lines": self.lines,
            "bytes": self.bytes,
            "workflow_nodes": self.workflow_nodes,
            "selections": self.selections,
        }


def layer_name(index: int) -> str:
    return f"l{index:02d}"


def file_name(index: int) -> str:
    return f"layer{index:02d}.oneiric"


def key_name(index: int) -> str:
    return f"k{index:05d}"


def key_domain(index: int) -> str:
    return KEY_DOMAINS[index % len(KEY_DOMAINS)]


def _provides(provider: int) -> str:
    # Every provider reads; every third also writes, so a `(write)` requirement
    # always leaves candidates and a selection of p0/p3/p6/p9 always satisfies it.
    return "read, write" if provider % 3 == 0 else "read"


def _impl(domain: str, index: int) -> str:
    impls = FACTORY_IMPLS if domain in ("adapter", "service") else CALLABLE_IMPLS
    return impls[index % len(impls)]


def _component(rng: random.Random, key: int, provider: int, priority: int | None) -> list[str]:
    domain = key_domain(key)
    lines = [
        f'  {domain} {key_name(key)} "p{provider}" {{',
        f'    impl "{_impl(domain, key + provider)}"',
    ]
    if priority is not None:
        lines.append(f"    priority {priority}")
    lines.append(f"    provides {_provides(provider)}")
    if key > 0 and rng.random() < 0.3:
        dep = rng.randrange(key)
        cap = "write" if rng.random() < 0.3 else "read"
        lines.append(f"    requires {key_domain(dep)} {key_name(dep)} ({cap})")
    roll = rng.random()
    if roll < 0.12:
        lines.append(
            f"    config {{ timeout = {rng.randrange(1, 60)}s, buffer = 64MiB, "
            f'url = env("URL_{key}", "http://127.0.0.1:{8000 + provider}"), tags = ["a", "b"] }}'
        )
    elif roll < 0.2:
        lines.append("    health every 10s timeout 1s")
    if domain == "event":
        lines.append(f'    on "topic.{key % 37}"')
        if rng.random() < 0.2:
            lines.append('    where payload.region in ["eu", "us"] and not headers["x-test"]')
    elif domain == "task" and rng.random() < 0.2:
        lines.append(f"    retry {rng.randrange(1, 6)} backoff 200ms")
    lines.append("  }")
    return lines


def _workflow(rng: random.Random, task_keys: list[int], nodes: int) -> list[str]:
    lines = ['  workflow pipeline "main" {']
    for i in range(nodes):
        task = key_name(task_keys[i % len(task_keys)])
        extra = " retry 2 backoff 1s timeout 30s" if i % 10 == 0 else ""
        lines.append(f"    node n{i:04d} {{ task {task}{extra} }}")
    for i in range(1, nodes):
        lines.append(f"    n{rng.randrange(max(0, i - 40), i):04d} -> n{i:04d}")
        if i > 1 and rng.random() < 0.25:
            lines.append(f"    n{rng.randrange(i - 1):04d} -> n{i:04d}")
    lines.append("  }")
    return lines


def generate(root: Path, components: int, *, seed: int = 2, clean: bool = True) -> Shape:
    """Write `oneiric.toml` and `stacks/layerNN.oneiric` under `root`; return their shape."""
    rng = random.Random(seed)
    keys = max(1, components // CANDIDATES_PER_KEY)
    per_layer: list[list[list[str]]] = [[] for _ in range(FILES)]
    selections: list[list[str]] = [[] for _ in range(FILES)]
    for key in range(keys):
        layers = rng.sample(range(FILES), CANDIDATES_PER_KEY)
        tie = key % TIE_EVERY == 0
        if tie:  # p8 and p9 share the last layer and the top priority
            layers[8] = layers[9] = FILES - 1
        for provider, layer in enumerate(layers):
            if tie and provider >= 8:
                priority: int | None = 100
            else:
                priority = rng.choice(PRIORITIES) if rng.random() < 0.8 else None
            per_layer[layer].append(_component(rng, key, provider, priority))
        if key % SELECT_EVERY == 7:
            chosen = rng.choice((0, 3, 6, 9))
            selections[rng.randrange(FILES)].append(
                f'  select {key_domain(key)} {key_name(key)} = "p{chosen}"'
            )
    task_keys = [k for k in range(keys) if key_domain(k) == "task"]
    if not task_keys:
        raise ValueError("too few components for a workflow: it needs a task key")
    per_layer[0].append(_workflow(rng, task_keys, WORKFLOW_NODES))

    if clean and root.exists():
        shutil.rmtree(root)
    stacks = root / "stacks"
    stacks.mkdir(parents=True, exist_ok=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n', encoding="utf-8")
    total_lines = total_bytes = 0
    for index in range(FILES):
        blocks = per_layer[index]
        rng.shuffle(blocks)
        out = ["oneiric 1"]
        if index > 0:
            out.append(f'import "{file_name(index - 1)}"')
        out.append(f"# layer {index} of {FILES}: {len(blocks)} components")
        out.append(f"stack {layer_name(index)} {{")
        for block in blocks:
            out.extend(block)
        out.extend(selections[index])
        out.append("}")
        if index == FILES - 1:
            out.append(f"target {TARGET} {{")
            out.append("  layers " + ", ".join(layer_name(i) for i in range(FILES)))
            out.append("  profile bench")
            out.append("}")
        text = "\n".join(out) + "\n"
        (stacks / file_name(index)).write_text(text, encoding="utf-8")
        total_lines += len(out)
        total_bytes += len(text.encode())
    shape = Shape(
        root=root,
        components=keys * CANDIDATES_PER_KEY + 1,
        keys=keys + 1,
        files=FILES,
        lines=total_lines,
        bytes=total_bytes,
        workflow_nodes=WORKFLOW_NODES,
        selections=sum(len(s) for s in selections),
    )
    (root / "shape.json").write_text(json.dumps(shape.as_dict(), indent=2) + "\n")
    return shape


def source_files(root: Path) -> list[Path]:
    """The generated source files, in layer order."""
    return [root / "stacks" / file_name(i) for i in range(FILES)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("components", type=int, help="number of components (about)")
    parser.add_argument("root", type=Path, help="directory to write the project into (replaced)")
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    if args.components < CANDIDATES_PER_KEY * len(KEY_DOMAINS):
        parser.error(f"need at least {CANDIDATES_PER_KEY * len(KEY_DOMAINS)} components")
    shape = generate(args.root, args.components, seed=args.seed)
    print(json.dumps({"root": str(shape.root), **shape.as_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
