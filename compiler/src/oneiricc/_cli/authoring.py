"""Authoring and review commands: `oneiricc fmt`, `oneiricc diff`, `oneiricc lsp`.

Exit codes follow DESIGN §7: 0 success; 1 the input was checked and found
wrong (a file `fmt --check` would change, a syntax error, `diff --exit-code`
differences); 2 usage, configuration or I/O.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from oneiric._text import plural

from oneiricc._build.loader import SOURCE_SUFFIX
from oneiricc._cli.context import CliState, cli_state, fail_usage, use_color
from oneiricc._language.diagnostics import CompileError, Diagnostic, render_human, render_json
from oneiricc._language.formatter import FormatterBug, format_source
from oneiricc._language.parser import decode_source

if TYPE_CHECKING:
    from oneiric._plan.model import Plan

F = TypeVar("F", bound=Callable[..., Any])


def _format_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--format",
        "output",
        type=click.Choice(["human", "json", *choices]),
        default=None,
        help="Output format; json prints one machine-readable document on stdout.",
    )


# ---------------------------------------------------------------------- fmt --


@dataclass(slots=True)
class _Formatted:
    label: str  # the path as shown to the user
    path: Path | None  # None for standard input
    before: bytes
    after: str | None  # None when the file could not be formatted

    @property
    def changed(self) -> bool:
        return self.after is not None and self.after.encode("utf-8") != self.before

    def diff(self) -> list[str]:
        if self.after is None:
            return []
        before = self.before.decode("utf-8", "replace").splitlines(keepends=True)
        return list(
            difflib.unified_diff(
                before, self.after.splitlines(keepends=True), f"a/{self.label}", f"b/{self.label}"
            )
        )


def _sources_to_format(state: CliState, paths: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """(label, path) for every file to format: named files, and `.oneiric` files under dirs."""
    if not paths:
        project = state.project
        paths = tuple(project.root / s for s in project.sources if (project.root / s).exists())
        return [
            (file.relative_to(project.root).as_posix(), file)
            for directory in paths
            for file in _walk(directory)
        ]
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            found.extend((file.as_posix(), file) for file in _walk(path))
        elif path.is_file():
            found.append((path.as_posix(), path))
        else:
            fail_usage(f"{path}: no such file or directory")
    return sorted(set(found))


def _walk(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob(f"*{SOURCE_SUFFIX}") if p.is_file())


def _format_one(label: str, path: Path | None, data: bytes) -> tuple[_Formatted, list[Diagnostic]]:
    try:
        text = decode_source(label, data)
        return _Formatted(label, path, data, format_source(label, text)), []
    except CompileError as err:
        return _Formatted(label, path, data, None), err.diagnostics
    except FormatterBug as exc:
        fail_usage(f"internal error, please report it: {exc}")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path, allow_dash=True))
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 listing files.")
@click.option(
    "--diff", "show_diff", is_flag=True, help="Write nothing; print a unified diff; exit 1."
)
@_format_option()
def fmt(paths: tuple[Path, ...], check_only: bool, show_diff: bool, output: str | None) -> None:
    """Format .oneiric files in place (by default the project's sources; '-' for stdin).

    With --check or --diff nothing is written, and the exit code is 1 when a
    file is not formatted.  Comments are kept; formatting twice changes nothing.
    """
    state = cli_state(output)
    if Path("-") in paths:
        if len(paths) > 1:
            fail_usage("'-' (standard input) cannot be combined with other paths")
        jobs = [_format_one("<stdin>", None, sys.stdin.buffer.read())]
    else:
        jobs = []
        for label, path in _sources_to_format(state, paths):
            try:
                data = path.read_bytes()
            except OSError as exc:
                fail_usage(f"cannot read {label}: {exc.strerror or exc}")
            jobs.append(_format_one(label, path, data))
    results = [result for result, _ in jobs]
    diagnostics = [d for _, found in jobs for d in found]
    write = not (check_only or show_diff)
    for result in results:
        if write and result.changed and result.path is not None:
            _rewrite(result.path, result.after or "")
    changed = [r for r in results if r.changed]
    if state.output == "json":
        document = json.loads(render_json(diagnostics))
        document.update(
            {
                "format": "oneiric-fmt",
                "files": [
                    {"path": r.label, "changed": r.changed, "formatted": r.after is not None}
                    | ({"diff": "".join(r.diff())} if show_diff else {})
                    for r in results
                ],
            }
        )
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        _fmt_human(results, changed, diagnostics, check_only, show_diff, write)
    if diagnostics or (changed and not write):
        sys.exit(1)


def _fmt_human(
    results: list[_Formatted],
    changed: list[_Formatted],
    diagnostics: list[Diagnostic],
    check_only: bool,
    show_diff: bool,
    write: bool,
) -> None:

    if diagnostics:
        texts = {r.label: r.before.decode("utf-8", "replace") for r in results}
        click.echo(
            render_human(diagnostics, texts, color=use_color(sys.stderr)), err=True, nl=False
        )
    stdin = len(results) == 1 and results[0].path is None
    if stdin and write:
        sys.stdout.write(results[0].after or "")
        return
    if not results:
        click.echo("oneiricc: warning: no .oneiric files found", err=True)
        return
    if show_diff:
        for result in changed:
            sys.stdout.writelines(result.diff())
    elif check_only:
        for result in changed:
            click.echo(f"would reformat: {result.label}")
    unchanged = sum(1 for r in results if r.after is not None and not r.changed)
    parts = [
        f"{plural(len(changed), 'file')} {'reformatted' if write else 'would be reformatted'}",
        f"{plural(unchanged, 'file')} already formatted",
    ]
    if diagnostics:
        parts.append(f"{plural(len({d.file for d in diagnostics}), 'file')} with syntax errors")
    click.echo(", ".join(parts), err=True)


def _rewrite(path: Path, text: str) -> None:
    from oneiric._delivery.store import atomic_write

    try:
        atomic_write(path, text.encode("utf-8"), mode=stat.S_IMODE(os.stat(path).st_mode))
    except OSError as exc:
        fail_usage(f"cannot write {path}: {exc.strerror or exc}")


# --------------------------------------------------------------------- diff --


def _read_plan(path: Path) -> Plan:
    from oneiric._plan.model import load_plan

    try:
        return load_plan(path.read_bytes())
    except OSError as exc:
        fail_usage(f"cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:
        fail_usage(f"{path} is not a valid plan: {exc}")


def _git(project_root: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(project_root), *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail_usage(f"cannot run git: {exc}")
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        fail_usage(f"git {' '.join(args)}: {message[-1] if message else 'failed'}")
    return done.stdout


def _golden_at(state: CliState, ref: str) -> tuple[dict[str, Plan], dict[str, Plan]]:
    """(plans at `ref`, plans in the working tree), from the project's golden directory."""
    from oneiric._plan.model import load_plan

    project = state.project
    golden = project.golden_dir.relative_to(project.root).as_posix()
    _git(project.root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    names = _git(project.root, "ls-tree", "--name-only", ref, "--", f"{golden}/")
    old: dict[str, Plan] = {}
    for line in names.decode("utf-8").splitlines():
        name = line.rsplit("/", 1)[-1]
        if not name.endswith(".plan.json"):
            continue
        data = _git(project.root, "show", f"{ref}:./{golden}/{name}")
        try:
            old[name.removesuffix(".plan.json")] = load_plan(data)
        except ValueError as exc:
            fail_usage(f"{ref}:{golden}/{name} is not a valid plan: {exc}")
    new = {
        path.name.removesuffix(".plan.json"): _read_plan(path)
        for path in sorted(project.golden_dir.glob("*.plan.json"))
    }
    return old, new


@click.command("diff")
@click.argument("old", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.argument("new", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--against",
    metavar="REF",
    help="Compare the golden plans in the working tree with those at this git revision.",
)
@click.option("--verbose", "-v", is_flag=True, help="Show every detail and unchanged targets.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the plans differ.")
@_format_option("markdown")
def diff(
    old: Path | None,
    new: Path | None,
    against: str | None,
    verbose: bool,
    exit_code: bool,
    output: str | None,
) -> None:
    """Summarise what changed between two plans, and why (OLD NEW, or --against REF).

    Not a text diff: per component added / removed / provider / pin / config /
    explanation changes, each traced to the source change that caused it;
    workflow and event-route changes; a one-line total.  Moved declarations
    and reformatted files are not changes.
    """
    from oneiricc._authoring import plandiff

    state = cli_state(output)
    stale: dict[str, list[str]] = {}
    if against is not None:
        if old is not None or new is not None:
            fail_usage("give either two plan files or --against REF, not both")
        before, after = _golden_at(state, against)
        result = plandiff.diff_plan_sets(before, after)
        stale = _unbuilt_sources(state.project.root, after)
    else:
        if old is None or new is None:
            fail_usage("expected two plan files (OLD NEW) or --against REF")
        old_plan, new_plan = _read_plan(old), _read_plan(new)
        result = plandiff.PlanDiff([plandiff.diff_plans(new_plan.target, old_plan, new_plan)])
    golden = state.project.golden if against is not None else ""
    notes = [
        f"note: {golden}/{name}.plan.json was built from other sources than those in the "
        f"working tree ({', '.join(files)} changed since): run `oneiricc build` and commit "
        "the result (`oneiricc build --check` fails until then)"
        for name, files in sorted(stale.items())
    ]
    if state.output == "json":
        document = plandiff.to_json(result) | {"unbuilt": stale}
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    elif state.output == "markdown":
        click.echo(plandiff.render_markdown(result, verbose=verbose), nl=False)
        click.echo("".join(f"\n> {note}\n" for note in notes), nl=False)
    else:
        click.echo(
            plandiff.render_human(result, verbose=verbose, color=use_color(sys.stdout)), nl=False
        )
        click.echo("".join(f"{note}\n" for note in notes), nl=False)
    sys.exit(1 if exit_code and result.different else 0)


def _unbuilt_sources(root: Path, plans: dict[str, Plan]) -> dict[str, list[str]]:
    """Per golden plan, its sources whose content is no longer what it was built from."""
    import hashlib

    found: dict[str, list[str]] = {}
    for name, plan in plans.items():
        changed = []
        for source in plan.sources:
            try:
                digest = hashlib.sha256((root / source.path).read_bytes()).hexdigest()
            except OSError:
                digest = None
            if digest != source.sha256.removeprefix("sha256:"):
                changed.append(source.path)
        if changed:
            found[name] = changed
    return found


# ------------------------------------------------------------ explain CODE --


def explain_code(state: CliState, code: str) -> None:
    """`oneiricc explain E0203`: the documented meaning, example and fix of a code."""
    from oneiricc._authoring.errordocs import error_doc
    from oneiricc._language.diagnostics import CODES, did_you_mean

    doc = error_doc(code)
    if doc is None:
        hint = did_you_mean(code.upper(), CODES)
        fail_usage(
            f"unknown error code {code}; "
            + (hint or f"codes are {min(CODES)}…{max(CODES)}, listed in docs/errors.md")
        )
    if state.output == "json":
        document = {
            "format": "oneiric-error-code",
            "version": 1,
            "code": doc.code,
            "title": doc.title,
            "documentation": doc.text or None,
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(f"{doc.code}: {doc.title}\n")
    click.echo(doc.text or "(not documented yet: see docs/errors.md)")


# ---------------------------------------------------------------------- lsp --


@click.command("lsp")
@click.option(
    "--target", "-t", help="The target hover explains (initializationOptions.target wins)."
)
@click.option("--stdio", is_flag=True, help="Talk over stdin/stdout (the default and only way).")
def lsp_command(target: str | None, stdio: bool) -> None:
    """Run the language server (LSP over stdio) for editors."""
    from oneiricc._authoring.lsp import serve

    serve(target)
