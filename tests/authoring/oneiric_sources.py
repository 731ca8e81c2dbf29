"""Hypothesis strategies: valid `.oneiric` projects written in a random layout.

A source is drawn as a list of tokens (with `;` and optional commas placed
where the grammar allows them) joined by random gaps: spaces, tabs, newlines,
blank lines and comments.  Every drawn source compiles without errors, so a
test can compare the plan compiled before and after formatting.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

GAPS = (" ", " ", " ", "  ", "\t", "\n", "\n", "\n\n", "\n\n\n", "\n    ")
KEYS = ("cache", "db", "orders", "mail", "jobs", "b-c", "x_1")
CAPS = ("read", "write", "sql", "fast")

_names = st.sampled_from(KEYS)


@st.composite
def _string(draw: Any) -> str:
    text = draw(st.text(st.sampled_from('ab c-é"\\\t/'), max_size=6))
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return f'"{escaped}"'


def _scalar(kind: str) -> st.SearchStrategy[list[str]]:
    return {
        "int": st.integers(-1000, 1000).map(lambda i: ["-", str(-i)] if i < 0 else [str(i)]),
        "str": _string().map(lambda s: [s]),
        "dur": st.sampled_from(["30s", "5m", "200ms", "1h"]).map(lambda s: [s]),
        "size": st.sampled_from(["64MiB", "1KiB", "10MB"]).map(lambda s: [s]),
        "bool": st.sampled_from(["true", "false"]).map(lambda s: [s]),
        "env": _string().map(lambda d: ["env", "(", '"NAME"', ",", d, ")"]),
        "secret": st.just(["secret", "(", '"a/b"', ")"]),
    }[kind]


@st.composite
def _value(draw: Any, depth: int = 0) -> list[str]:
    kinds = ["int", "str", "dur", "size", "bool", "env", "secret"]
    if depth < 2:
        kinds += ["list", "map"]
    kind = draw(st.sampled_from(kinds))
    if kind == "list":
        item_kind = draw(st.sampled_from(["int", "str", "bool"]))
        items = draw(st.lists(_scalar(item_kind), max_size=4))
        out = ["["]
        for index, item in enumerate(items):
            out += ([","] if index else []) + item
        if items and draw(st.booleans()):
            out.append(",")
        return [*out, "]"]
    if kind == "map":
        return draw(_map(depth + 1))
    return list(draw(_scalar(kind)))


@st.composite
def _map(draw: Any, depth: int = 0) -> list[str]:
    keys = draw(st.lists(st.sampled_from(["a", "ttl", "url", '"quoted key"', "b_2"]), unique=True))
    out = ["{"]
    for key in keys:
        out += [key, "=", *draw(_value(depth))]
        if draw(st.booleans()):
            out.append(",")
    return [*out, "}"]


def _sep(draw: Any) -> list[str]:
    return [";"] if draw(st.integers(0, 3)) == 0 else []


@st.composite
def _filter(draw: Any, depth: int = 0) -> list[str]:
    choice = draw(st.integers(0, 5 if depth < 2 else 2))
    path = draw(
        st.sampled_from(
            [["payload", ".", "region"], ["headers", "[", '"x-test"', "]"], ["payload", ".", "n"]]
        )
    )
    if choice == 0:
        return path
    if choice == 1:
        return [*path, draw(st.sampled_from(["==", "!="])), *draw(_scalar("str"))]
    if choice == 2:
        op = draw(st.sampled_from([["in"], ["not", "in"]]))
        return [*path, *op, "[", '"eu"', ",", '"us"', "]"]
    if choice == 3:
        return ["not", *draw(_filter(depth + 1))]
    if choice == 4:
        return ["(", *draw(_filter(depth + 1)), ")"]
    op = draw(st.sampled_from(["and", "or"]))
    return [*draw(_filter(depth + 1)), op, *draw(_filter(depth + 1))]


@st.composite
def _component(draw: Any, domain: str, key: str, provider: str) -> list[str]:
    factory = domain in ("adapter", "service")  # takes config alone: no required parameter
    fields: list[list[str]] = [["impl", '"argparse:Namespace"' if factory else '"json:loads"']]
    if domain == "event":
        fields.append(["on", '"order.created"'])
        if draw(st.booleans()):
            fields.append(["where", *draw(_filter())])
        if draw(st.booleans()):
            fields.append(["fanout", draw(st.sampled_from(["broadcast", "exclusive"]))])
    if draw(st.booleans()):
        fields.append(["priority", *draw(_scalar("int"))])
    if draw(st.booleans()):
        caps = draw(st.lists(st.sampled_from(CAPS), min_size=1, max_size=3, unique=True))
        fields.append(["provides", *sum(([",", c] for c in caps[1:]), [caps[0]])])
    if draw(st.booleans()):
        fields.append(["config", *draw(_map())])
    if draw(st.booleans()):
        fields.append(["health", "every", "10s", "timeout", "2s"])
    if domain == "task" and draw(st.booleans()):
        fields.append(["retry", str(draw(st.integers(0, 9))), "backoff", "1s"])
    fields = draw(st.permutations(fields))
    out = [domain, key, f'"{provider}"', "{"]
    for field in fields:
        out += field + _sep(draw)
    return [*out, "}"]


@st.composite
def _workflow(draw: Any, tasks: list[str]) -> list[str]:
    nodes = draw(st.lists(st.sampled_from(tasks), min_size=1, max_size=4, unique=True))
    out = ["workflow", "flow", '"default"', "{"]
    for index, name in enumerate(nodes):
        if draw(st.booleans()):
            body = draw(
                st.lists(
                    st.sampled_from([["task", name], ["retry", "2"], ["timeout", "5s"]]),
                    unique_by=lambda f: f[0],
                )
            )
            out += ["node", name]
            if body or draw(st.booleans()):
                out.append("{")
                for field in body:
                    out += field + _sep(draw)
                out.append("}")
            out += _sep(draw)
        if index:
            out += [nodes[index - 1], "->", name, *_sep(draw)]
    return [*out, "}"]


@st.composite
def projects(draw: Any) -> list[str]:
    """The tokens of one valid source file: a stack, maybe a selection, a workflow, a target."""
    decls: dict[tuple[str, str], list[str]] = {}
    for _ in range(draw(st.integers(1, 5))):
        domain = draw(st.sampled_from(["adapter", "service", "task", "event"]))
        key = draw(_names)
        providers = decls.setdefault((domain, key), [])
        providers.append(f"p{len(providers)}")
    out = ["oneiric", "1", "stack", "main", "{"]
    for (domain, key), providers in decls.items():
        for provider in providers:
            out += draw(_component(domain, key, provider))
    choices = sorted(decls)
    domain, key = draw(st.sampled_from(choices))
    if len(decls[domain, key]) > 1 or draw(st.booleans()):
        provider = draw(st.sampled_from(decls[domain, key]))
        out += ["select", domain, key, "=", f'"{provider}"', *_sep(draw)]
    tasks = [key for (domain, key) in decls if domain == "task"]
    if tasks and draw(st.booleans()):
        out += draw(_workflow(tasks))
    out.append("}")
    out += ["target", "prod", "{", "layers", "main", *_sep(draw)]
    if draw(st.booleans()):
        out += ["profile", "serverless", *_sep(draw)]
    return [*out, "}"]


@st.composite
def layouts(draw: Any, tokens: list[str]) -> str:
    """`tokens` joined by random whitespace and comments."""
    parts = []
    if draw(st.integers(0, 4)) == 0:
        parts.append("# leading comment\n\n")
    for index, token in enumerate(tokens):
        parts.append(token)
        if index == len(tokens) - 1:
            break
        roll = draw(st.integers(0, 30))
        if roll == 0:
            parts.append(f"  # note {index}\n")
        elif roll == 1:
            parts.append(f"\n# own line {index}\n")
        elif roll == 2:
            parts.append(f"\n\n  #gap {index}\n\n")
        else:
            parts.append(GAPS[roll % len(GAPS)])
    if draw(st.integers(0, 4)) == 0:
        parts.append("\n# trailing comment")
    parts.append(draw(st.sampled_from(["\n", "", "\n\n", "  \n"])))
    return "".join(parts)


sources = projects().flatmap(layouts)
