"""`oneiricc`: the compiler's command line.

Exit codes (DESIGN §7): 0 success; 1 the input was checked and found wrong
(diagnostics, `build --check` differences); 2 usage, configuration or I/O.
Human output goes to stderr for diagnostics and stdout for results;
`--format json` prints one JSON document on stdout, errors included.
"""

from __future__ import annotations

import difflib
import gc
import json
import sys
from pathlib import Path

import click
from oneiric._cli.main import LazyGroup
from oneiric._delivery.store import atomic_write
from oneiric._text import plural

from oneiricc._authoring.ci import CI_FORMATS, check_format_option, render_ci
from oneiricc._authoring.errordocs import CODE as ERROR_CODE
from oneiricc._authoring.explanation import check_lines, render_explanation
from oneiricc._build.planner import CompiledPlan
from oneiricc._build.project import Project
from oneiricc._cli.context import (
    CliState,
    build_options,
    cli_state,
    compile_sources,
    fail_usage,
    format_option,
    report,
)
from oneiricc._incremental.memos import WarmState
from oneiricc._language.diagnostics import Diagnostic, summary_line

# Commands defined in their own modules, imported only when invoked (keeps start-up lean).
LAZY_COMMANDS = {
    "keygen": "oneiricc._signing:keygen",
    "sign": "oneiricc._signing:sign",
    "trust": "oneiricc._signing:trust_group",
    "fmt": "oneiricc._cli.authoring:fmt",
    "diff": "oneiricc._cli.authoring:diff",
    "lsp": "oneiricc._cli.authoring:lsp_command",
    "graph": "oneiricc._cli.graph:graph",
    "init": "oneiricc._cli.project:init",
    "import": "oneiricc._cli.project:import_command",
    "server": "oneiricc._cli.server:server",
    "plugins": "oneiricc._cli.plugins:plugins",
}


@click.group(
    cls=LazyGroup,
    lazy_commands=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Project root (default: the nearest directory with oneiric.toml above the paths "
    "given, else above the working directory).",
)
@format_option
@click.version_option(package_name="oneiric-compiler", prog_name="oneiricc")
@click.pass_context
def main(ctx: click.Context, root: Path | None, output: str | None) -> None:
    """oneiricc: compile .oneiric stacks into deterministic, explained, hash-pinned plans."""
    # A short-lived process full of long-lived acyclic objects: the cyclic
    # collector only costs time here (see oneiric._plan.gcpause).
    gc.disable()
    # A build server runs commands in its own process, passing what it keeps as `obj`.
    warm = ctx.obj if isinstance(ctx.obj, WarmState) else None
    ctx.obj = CliState(root, output or "human", warm)


def _describe(plan: CompiledPlan) -> str:
    parts = plan.parts
    return (
        f"{plural(parts.components, 'component')}, {plural(parts.workflows, 'workflow')}, "
        f"{plural(parts.routes, 'route')}, {plan.digest}"
    )


def _pretty(data: bytes) -> list[str]:
    return json.dumps(json.loads(data), indent=2, sort_keys=True, ensure_ascii=False).splitlines(
        keepends=True
    )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--target", "-t", "targets", multiple=True, help="Build only this target (repeatable)."
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    help="Write the plan here ('-' for stdout) instead of the golden directory.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Write nothing; exit 1 with a diff when a golden plan is stale.",
)
@build_options
@format_option
def build(
    paths: tuple[Path, ...],
    targets: tuple[str, ...],
    out: Path | None,
    check_only: bool,
    strict: bool | None,
    no_cache: bool,
    module_path: tuple[Path, ...],
    output: str | None,
) -> None:
    """Compile targets into plans (by default every target, into the golden directory)."""
    ctx = cli_state(output)
    if out is not None and len(targets) != 1:
        fail_usage("--out needs exactly one --target")
    if out is not None and check_only:
        fail_usage("--out and --check cannot be combined")
    result = compile_sources(
        ctx, paths, list(targets) or None, strict, no_cache, module_path, reuse_outputs=True
    )
    if result.failed:
        report(ctx, result)
        sys.exit(1)
    project = ctx.project
    plans = {name: plan.data for name, plan in result.outputs.items()}
    summary = [
        {
            "target": name,
            "digest": result.outputs[name].digest,
            "path": "-"
            if out == Path("-")
            else (
                str(out) if out else project.golden_file(name).relative_to(project.root).as_posix()
            ),
        }
        for name in plans
    ]
    if check_only:
        stale = _stale_golden(project, plans, all_targets=not targets and not paths)
        provenance = _provenance_only(project, plans, stale)
        report(
            ctx, result, {"plans": summary, "stale": sorted(stale), "provenance_only": provenance}
        )
        if ctx.output != "json":
            for name, diff in stale.items():
                if name in provenance:
                    rel = project.golden_file(name).relative_to(project.root).as_posix()
                    click.echo(
                        f"{rel}: provenance only: the source hashes of "
                        f"{', '.join(provenance[name]) or 'the sources'} changed (a "
                        "formatting-only edit?), every component and decision is identical; "
                        "run `oneiricc build` and commit the result"
                    )
                else:
                    sys.stdout.writelines(diff)
            if stale:
                click.echo(
                    f"{plural(len(stale), 'golden plan')} out of date: {', '.join(sorted(stale))}; "
                    "run `oneiricc build` and commit the result",
                    err=True,
                )
            else:
                click.echo(f"{plural(len(plans), 'golden plan')} up to date", err=True)
        sys.exit(1 if stale else 0)
    if out == Path("-"):
        sys.stdout.buffer.write(next(iter(plans.values())))
        sys.stdout.flush()
        report(ctx, result) if ctx.output != "json" else None
        return
    written = []
    for name, data in plans.items():
        path = out if out is not None else project.golden_file(name)
        try:
            if not path.exists() or path.read_bytes() != data:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data)
                written.append(name)
        except OSError as exc:
            fail_usage(f"cannot write {path}: {exc.strerror or exc}")
    if out is None and not targets and not paths:
        for stale_file in sorted(project.golden_dir.glob("*.plan.json")):
            if stale_file.name.removesuffix(".plan.json") not in plans:
                stale_file.unlink()
    report(ctx, result, {"plans": summary})
    if ctx.output != "json":
        for name, plan in result.outputs.items():
            destination = next(item["path"] for item in summary if item["target"] == name)
            click.echo(f"{name}: {_describe(plan)} → {destination}")


def _provenance_only(
    project: Project, plans: dict[str, bytes], stale: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The stale targets whose plan changed in provenance only (source hashes, spans), with
    the sources whose hashes changed; semantic changes are compared as `oneiricc diff` does."""
    from oneiric._plan.model import load_plan

    from oneiricc._authoring.plandiff import diff_plans

    found: dict[str, list[str]] = {}
    for name in stale:
        path = project.golden_file(name)
        if name not in plans or not path.is_file():
            continue
        try:
            old = load_plan(path.read_bytes())
        except ValueError:
            continue
        change = diff_plans(name, old, load_plan(plans[name]))
        if change.provenance_only:
            found[name] = change.changed_sources()
    return found


def _stale_golden(
    project: Project, plans: dict[str, bytes], *, all_targets: bool
) -> dict[str, list[str]]:
    stale: dict[str, list[str]] = {}
    for name, data in sorted(plans.items()):
        path = project.golden_file(name)
        rel = path.relative_to(project.root).as_posix()
        old = path.read_bytes() if path.exists() else None
        if old == data:
            continue
        try:
            before = _pretty(old) if old is not None else []
        except ValueError:
            before = old.decode("utf-8", "replace").splitlines(keepends=True) if old else []
        stale[name] = list(difflib.unified_diff(before, _pretty(data), f"a/{rel}", f"b/{rel}"))
    if all_targets and project.golden_dir.is_dir():
        for extra in sorted(project.golden_dir.glob("*.plan.json")):
            name = extra.name.removesuffix(".plan.json")
            if name not in plans:
                rel = extra.relative_to(project.root).as_posix()
                stale[name] = [
                    f"--- a/{rel}\n",
                    "+++ /dev/null\n",
                    f"@@ target {name} no longer exists @@\n",
                ]
    return stale


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@build_options
@check_format_option
def check(
    paths: tuple[Path, ...],
    strict: bool | None,
    no_cache: bool,
    module_path: tuple[Path, ...],
    output: str | None,
) -> None:
    """Check sources and resolve every target without writing anything."""
    ctx = cli_state(output)
    result = compile_sources(ctx, paths, None, strict, no_cache, module_path, reuse_outputs=True)
    if ctx.output in CI_FORMATS:
        click.echo(render_ci(ctx.output, result.diagnostics, ctx.project.root), nl=False)
        sys.exit(1 if result.failed else 0)
    report(ctx, result, {"targets": sorted(result.outputs)})
    if ctx.output != "json" and not result.failed:
        click.echo(
            f"ok: {plural(len(result.sources.files), 'file')}, "
            f"{plural(len(result.outputs), 'target')} "
            f"({summary_line(result.diagnostics)})",
            err=True,
        )
    sys.exit(1 if result.failed else 0)


@main.command()
@click.argument("component")
@click.option("--target", "-t", help="The target whose decision to explain (for DOMAIN:KEY).")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, exists=True))
@build_options
@format_option
def explain(
    component: str,
    target: str | None,
    paths: tuple[Path, ...],
    strict: bool | None,
    no_cache: bool,
    module_path: tuple[Path, ...],
    output: str | None,
) -> None:
    """Explain why DOMAIN:KEY resolved as it did in a target, or what an error CODE means.

    `oneiricc explain adapter:cache -t prod` shows the decision and its losers;
    `oneiricc explain E0203` prints the documentation of a diagnostic code.
    """
    ctx = cli_state(output)
    if ERROR_CODE.fullmatch(component.upper()):
        from oneiricc._cli.authoring import explain_code

        explain_code(ctx, component)
        return
    if target is None:
        fail_usage("--target is required to explain DOMAIN:KEY")
    if ":" not in component:
        fail_usage(f'expected DOMAIN:KEY (for example adapter:cache), got "{component}"')
    result = compile_sources(ctx, paths, [target], strict, no_cache, module_path)
    if result.failed:
        report(ctx, result)
        sys.exit(1)
    plan = result.plans[target]
    found = plan.component(component)
    if found is None:
        known = [c.id for c in plan.components]
        from oneiricc._language.diagnostics import did_you_mean

        hint = did_you_mean(component, known)
        diag = Diagnostic("E0206", f"no component {component} in target {target}", help=hint)
        result.diagnostics = [diag]
        report(ctx, result)
        sys.exit(1)
    contract = result.contracts.get(target, {}).get(found.id)
    fits = result.fits.get(target, {}).get(found.id, {})
    if ctx.output == "json":
        document = {
            "format": "oneiric-explanation",
            "version": 1,
            "target": target,
            "component": found.id,
            "provider": found.provider,
            "implementation": found.implementation.model_dump(mode="json")
            if found.implementation
            else None,
            "explanation": found.explanation.model_dump(mode="json"),
            "checked": None
            if contract is None
            else {"implementation": contract.checked, "reason": contract.reason,
                  "config": contract.keys},
            "capabilities": {
                capability: {"protocol": fit.protocol, "checked": fit.reason is None,
                             "reason": fit.reason}
                for capability, fit in sorted(fits.items())
            },
        }  # fmt: skip
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(render_explanation(found, target))
    checked = check_lines(contract, fits)
    if checked:
        click.echo("\n".join(checked))
