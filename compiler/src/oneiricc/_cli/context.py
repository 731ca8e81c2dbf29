"""What every command shares: the command line's state (`CliState`), its options,
usage errors (exit 2), compiling for a command and reporting its diagnostics."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from oneiricc._build.pipeline import Build
from oneiricc._build.project import Project, ProjectError, load_project
from oneiricc._incremental.build import compile_project
from oneiricc._incremental.memos import WarmState
from oneiricc._language.diagnostics import render_human, render_json, summary_line

F = TypeVar("F", bound=Callable[..., Any])


def use_color(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


class CliState:
    def __init__(self, root: Path | None, output: str, warm: WarmState | None = None) -> None:
        self._root = root
        self.output = output
        self.warm = warm  # what a build server keeps between builds
        self._project: Project | None = None
        self._paths: tuple[Path, ...] = ()

    def locate(self, paths: tuple[Path, ...]) -> None:
        """Find the project from the command's `paths` (before `project` is first read)."""
        self._paths = paths

    @property
    def project(self) -> Project:
        if self._project is None:
            try:
                self._project = load_project(self._root, self._paths)
            except ProjectError as exc:
                fail_usage(str(exc))
        return self._project


def fail_usage(message: str) -> NoReturn:
    """Exit 2 with a one-line error (JSON on stdout under --format json)."""
    click_ctx = click.get_current_context(silent=True)
    state = click_ctx.find_object(CliState) if click_ctx is not None else None
    if state is not None and state.output == "json":
        click.echo(json.dumps({"format": "oneiric-error", "error": message}))
    else:
        click.echo(f"oneiricc: error: {message}", err=True)
    sys.exit(2)


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output",
        type=click.Choice(["human", "json"]),
        default=None,
        help="Output format; json prints one machine-readable document on stdout.",
    )(func)


def build_options(func: F) -> F:
    func = click.option(
        "--strict",
        is_flag=True,
        default=None,
        help="Treat decisions made by declaration order as errors.",
    )(func)
    func = click.option("--no-cache", is_flag=True, help="Do not read or write the parse cache.")(
        func
    )
    func = click.option(
        "--module-path",
        multiple=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="Extra directory to find implementation modules in (repeatable).",
    )(func)
    return func


def cli_state(output: str | None) -> CliState:
    context = click.get_current_context().find_object(CliState)
    assert context is not None
    if output:
        context.output = output
    return context


def compile_sources(
    ctx: CliState,
    paths: tuple[Path, ...],
    targets: list[str] | None,
    strict: bool | None,
    no_cache: bool,
    module_path: tuple[Path, ...],
    *,
    reuse_outputs: bool = False,
) -> Build:
    """`reuse_outputs`: the command needs only outputs, diagnostics and source texts."""
    ctx.locate(paths)
    try:
        return compile_project(
            ctx.project,
            list(paths) or None,
            targets,
            strict=strict,
            use_cache=not no_cache,
            module_path=list(module_path),
            reuse_outputs=reuse_outputs,
            warm=ctx.warm,
        )
    except ProjectError as exc:
        fail_usage(str(exc))


def report(ctx: CliState, build: Build, extra: dict[str, Any] | None = None) -> None:
    diagnostics = build.diagnostics
    if ctx.output == "json":
        document = json.loads(render_json(diagnostics))
        document.update(extra or {})
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    if diagnostics:
        texts = build.sources.texts()
        click.echo(
            render_human(diagnostics, texts, color=use_color(sys.stderr)), err=True, nl=False
        )
        click.echo(summary_line(diagnostics), err=True)
