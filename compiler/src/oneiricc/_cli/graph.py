"""`oneiricc graph`: a target's workflow DAG, or its component dependency graph, as text.

Mermaid (`flowchart`) for Markdown renderers, DOT for Graphviz.  The output
is deterministic: nodes and edges come in a fixed order, so a rendered graph
can be committed and diffed.  Plain string building: no graph library needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from oneiric._plan.model import Plan, Workflow

from oneiricc._cli.context import build_options, cli_state, compile_sources, report
from oneiricc._language.diagnostics import Diagnostic, did_you_mean

Edge = tuple[str, str, str]  # from, to, label


def _ms(ms: int) -> str:
    return f"{ms // 1000}s" if ms and ms % 1000 == 0 else f"{ms}ms"


def _workflow_graph(workflow: Workflow) -> tuple[list[tuple[str, str]], list[Edge]]:
    by_name = {n.name: n for n in workflow.nodes}
    nodes: list[tuple[str, str]] = []
    for name in (name for level in workflow.generations for name in level):
        node = by_name[name]
        details = [f"task {node.task}"] if node.task != node.name else []
        if node.retry is not None:
            backoff = f" backoff {_ms(node.retry.backoff_ms)}" if node.retry.backoff_ms else ""
            details.append(f"retry {node.retry.attempts}{backoff}")
        if node.timeout_ms is not None:
            details.append(f"timeout {_ms(node.timeout_ms)}")
        nodes.append((name, "\n".join([name, *details])))
    edges = sorted((up, n.name, "") for n in workflow.nodes for up in n.depends_on)
    return nodes, edges


def _component_graph(plan: Plan) -> tuple[list[tuple[str, str]], list[Edge]]:
    nodes = [(c.id, f"{c.id}\n{c.provider}") for c in sorted(plan.components, key=lambda c: c.id)]
    edges: list[Edge] = [
        (c.id, f"{r.domain}:{r.key}", ", ".join(r.capabilities))
        for c in plan.components
        for r in c.requires
    ]
    edges += [
        (f"workflow:{w.key}", f"task:{task}", "runs")
        for w in plan.workflows
        for task in sorted({n.task for n in w.nodes})
    ]
    return nodes, sorted(set(edges))


def _mermaid(nodes: list[tuple[str, str]], edges: list[Edge]) -> str:
    ids = {name: f"n{index}" for index, (name, _) in enumerate(nodes)}
    lines = ["flowchart TD"]
    for name, text in nodes:
        escaped = text.replace('"', "#quot;").replace("\n", "<br/>")
        lines.append(f'  {ids[name]}["{escaped}"]')
    for source, target, text in edges:
        arrow = f"-- {text} -->" if text else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
    return "\n".join(lines) + "\n"


def _dot(title: str, nodes: list[tuple[str, str]], edges: list[Edge]) -> str:
    def quote(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)  # a valid DOT string: "..." with escapes

    lines = [f"digraph {quote(title)} {{", "  rankdir=TB;", "  node [shape=box];"]
    lines += [f"  {quote(name)} [label={quote(text)}];" for name, text in nodes]
    for source, target, text in edges:
        attrs = f" [label={quote(text)}]" if text else ""
        lines.append(f"  {quote(source)} -> {quote(target)}{attrs};")
    return "\n".join(lines) + "\n}\n"


@click.command()
@click.option("--target", "-t", required=True, help="The target whose plan to draw.")
@click.option("--workflow", "workflow", metavar="NAME", help="Draw this workflow's DAG.")
@click.option("--components", is_flag=True, help="Draw the component dependency graph.")
@click.option(
    "--format",
    "graph_format",
    type=click.Choice(["mermaid", "dot"]),
    default="mermaid",
    show_default=True,
    help="Mermaid flowchart or Graphviz DOT.",
)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@build_options
def graph(
    target: str,
    workflow: str | None,
    components: bool,
    graph_format: str,
    paths: tuple[Path, ...],
    strict: bool | None,
    no_cache: bool,
    module_path: tuple[Path, ...],
) -> None:
    """Draw a workflow DAG (--workflow NAME) or the component graph (--components)."""
    if (workflow is None) == (not components):
        raise click.UsageError("give exactly one of --workflow NAME or --components")
    ctx = cli_state(None)
    result = compile_sources(ctx, paths, [target], strict, no_cache, module_path)
    if result.failed:
        report(ctx, result)
        sys.exit(1)
    plan = result.plans[target]
    if workflow is not None:
        found = next((w for w in plan.workflows if w.key == workflow), None)
        if found is None:
            hint = did_you_mean(workflow, [w.key for w in plan.workflows])
            diag = Diagnostic("E0206", f"no workflow {workflow} in target {target}", help=hint)
            result.diagnostics = [diag]
            report(ctx, result)
            sys.exit(1)
        nodes, edges = _workflow_graph(found)
        title = f"workflow {workflow}"
    else:
        nodes, edges = _component_graph(plan)
        title = f"target {target}"
    text = _mermaid(nodes, edges) if graph_format == "mermaid" else _dot(title, nodes, edges)
    click.echo(text, nl=False)
