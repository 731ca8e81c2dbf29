"""Commands that make projects: `oneiricc init` (a new one) and `oneiricc import` (from
the original Oneiric's settings and manifests).

Both write all their files or none (`_authoring.staging`) and never overwrite
one: exit 1 when a file exists already, 2 on usage or I/O errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from oneiricc._authoring import scaffold
from oneiricc._authoring.staging import Refused, write_new
from oneiricc._cli.context import cli_state, fail_usage, format_option


class _BuildFailed(Exception):
    """The new project did not compile (a bug of the templates): nothing is written."""


def _compile_golden(root: Path) -> None:
    from oneiricc._build.pipeline import compile_project
    from oneiricc._build.project import load_project
    from oneiricc._language.diagnostics import render_human

    project = load_project(root)
    build = compile_project(project, None, None, use_cache=False)
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
        if state.output == "json":
            click.echo(json.dumps({"format": "oneiric-error", "error": str(exc)}))
        else:
            click.echo(f"oneiricc: error: {exc}", err=True)
        sys.exit(1)
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
