"""Commands that make projects: `oneiricc init` (a new one) and `oneiricc import` (from
the original Oneiric's settings and manifests).

Both write all their files or none (`_authoring.staging`) and never overwrite
one: exit 1 when a file exists already, 2 on usage or I/O errors.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from oneiric._text import plural

from oneiricc._authoring import scaffold
from oneiricc._authoring.staging import Refused, write_new
from oneiricc._cli.context import cli_state, fail_usage, format_option


class _BuildFailed(Exception):
    """The new project did not compile (a bug of the templates): nothing is written."""


def _compile_golden(root: Path) -> None:
    from oneiricc._build import pipeline
    from oneiricc._build.project import load_project
    from oneiricc._language.diagnostics import render_human

    project = load_project(root)
    build = pipeline.build(project)
    if build.failed:
        raise _BuildFailed(render_human(build.diagnostics, build.sources.texts(), color=False))
    for name, plan in build.outputs.items():
        path = project.golden_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(plan.data)


@click.command()
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--package", help="The Python package to create (default: from DIRECTORY's name).")
@format_option
def init(directory: Path | None, package: str | None, output: str | None) -> None:
    """Create a working project in DIRECTORY (default: the working directory).

    Writes oneiric.toml, a src/ package with typed components, stacks with two
    targets (dev, prod), their compiled golden/ plans, a test, .gitignore and a
    pre-commit configuration.  Refuses to overwrite any file (exit 1); writes
    everything or nothing.
    """
    state = cli_state(output)
    target = (directory or Path.cwd()).absolute()
    name = package or scaffold.package_name(target.name)
    if not scaffold.valid_package(name):
        fail_usage(f'"{name}" is not a valid Python package name (pass --package NAME)')
    if target.exists() and not target.is_dir():
        fail_usage(f"{target} exists and is not a directory")
    if not target.parent.is_dir():
        fail_usage(f"{target.parent}: no such directory")
    try:
        written = write_new(target, scaffold.project_files(name), _compile_golden)
    except Refused as exc:
        _fail_checked(state.output, str(exc))
    except _BuildFailed as exc:
        fail_usage(f"internal error, please report it: the new project does not build:\n{exc}")
    except OSError as exc:
        fail_usage(f"cannot write {target}: {exc.strerror or exc}")
    if state.output == "json":
        click.echo(json.dumps({"created": str(target), "package": name, "files": written}))
        return
    shown = directory.as_posix() if directory is not None else "."
    click.echo(f"created {shown}: package {name}, {len(written)} files")
    for path in written:
        click.echo(f"  {path}")
    prefix = f"cd {shown} && " if directory is not None else ""
    click.echo(
        f"next: {prefix}oneiricc build --check && "
        "oneiric workflow run onboarding --unsigned-plan golden/dev.plan.json"
    )


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("stacks/imported.oneiric"),
    show_default=True,
    help="The stack file to write (relative to the project root); its report goes beside it.",
)
@click.option("--target", "target", default="imported", show_default=True, help="Target name.")
@click.option(
    "--stack-order",
    metavar="NAME:N,...",
    default="",
    help="The original's ONEIRIC_STACK_ORDER: the priority of a factory's top-level package "
    "when an entry has none.",
)
@format_option
def import_command(
    paths: tuple[Path, ...], out: Path, target: str, stack_order: str, output: str | None
) -> None:
    """Write stacks equivalent to the original Oneiric's settings and remote manifests.

    PATH...: its settings (YAML, TOML or JSON: per-domain selections and
    provider_settings, or per-domain files such as settings/adapters.yml) and
    remote manifests (`entries`), in registration order.  Writes the formatted
    stack file and a report (`.report.md` beside it) of everything not carried
    over and why; refuses to overwrite (exit 1), writes both or neither.
    """
    from oneiricc._authoring.migrate import MigrationError, convert, parse_stack_order
    from oneiricc._language.diagnostics import CompileError
    from oneiricc._language.formatter import format_source

    state = cli_state(output)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target):
        fail_usage(f'--target "{target}" is not a name')
    if out.suffix != ".oneiric":
        fail_usage(f"--out {out}: a stack file ends in .oneiric")
    root = state.project.root
    destination = out if out.is_absolute() else Path.cwd() / out
    try:
        relative = destination.resolve().relative_to(root).as_posix()
    except ValueError:
        fail_usage(f"--out {out} is outside the project root {root}")
    report_path = relative.removesuffix(".oneiric") + ".report.md"
    try:
        order = parse_stack_order(stack_order)
    except MigrationError as exc:
        fail_usage(str(exc))
    try:
        inputs = [(str(path), _read_any(path), path.stem) for path in paths]
        migration, text = convert(inputs, target, order)
    except MigrationError as exc:
        _fail_checked(state.output, str(exc))
    try:
        formatted = format_source(relative, text)
    except CompileError as exc:
        fail_usage(f"internal error, please report it: the imported stacks do not parse: {exc}")
    report = migration.report(relative, target)
    try:
        write_new(root, {relative: formatted, report_path: report})
    except Refused as exc:
        _fail_checked(state.output, str(exc))
    except OSError as exc:
        fail_usage(f"cannot write {relative}: {exc.strerror or exc}")
    if state.output == "json":
        document = {
            "written": [relative, report_path],
            "dropped": [list(item) for item in migration.dropped],
            "renamed": [list(item) for item in migration.renamed],
        }
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(
        f"wrote {relative} (target {target}) and {report_path}: "
        f"{plural(len(migration.dropped), 'item')} not carried over, "
        f"{plural(len(migration.renamed), 'name')} changed"
    )
    click.echo("next: oneiricc build (the factories must be importable: see module-path)")


def _fail_checked(output: str, message: str) -> NoReturn:
    """Exit 1: the input was read and found wrong (or a file exists)."""
    if output == "json":
        click.echo(json.dumps({"format": "oneiric-error", "error": message}))
    else:
        click.echo(f"oneiricc: error: {message}", err=True)
    sys.exit(1)


def _read_any(path: Path) -> Any:
    """A settings or manifest file: YAML (.yml, .yaml), TOML (.toml) or JSON."""
    from oneiricc._authoring.migrate import MigrationError

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail_usage(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ValueError as exc:  # tomllib, json and yaml errors are ValueErrors
        raise MigrationError(f"{path}: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # yaml.YAMLError is no ValueError
        raise MigrationError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
