"""`oneiricc plugins [GROUP]`: the installed plugins a stack can take with `plugins "GROUP"`.

Without GROUP: every group holding at least one entry point named DOMAIN.KEY.PROVIDER.
Each entry point is listed with its distribution, version and target, and the component
it would declare (or why it cannot be one).  Looked up where builds look: `--module-path`
directories, then `sys.path`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from oneiricc._build.pins import Pinner
from oneiricc._build.plugins import identity
from oneiricc._cli.context import cli_state, fail_usage, format_option


@click.command()
@click.argument("group", required=False)
@click.option(
    "--module-path",
    "module_path",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Also look for distributions here (as builds do).",
)
@format_option
def plugins(group: str | None, module_path: tuple[Path, ...], output: str | None) -> None:
    """List installed plugins (entry points named DOMAIN.KEY.PROVIDER) with versions."""
    ctx = cli_state(output)
    pinner = Pinner(list(module_path))
    if group is not None:
        groups = [group]
        if not pinner.group(group):
            fail_usage(f'no installed distribution declares entry points in group "{group}"')
    else:
        groups = [g for g in pinner.group_names() if any(identity(e[0]) for e in pinner.group(g))]
    listing: dict[str, list[dict[str, str | None]]] = {}
    for name in groups:
        listing[name] = [
            {
                "name": ep_name,
                "distribution": dist,
                "version": version,
                "target": value,
                "component": _component(ep_name),
            }
            for ep_name, dist, version, value in pinner.group(name)
        ]
    if ctx.output == "json":
        click.echo(json.dumps({"groups": listing}, indent=2, sort_keys=True))
        return
    if not listing:
        click.echo("no plugins installed (no entry point named DOMAIN.KEY.PROVIDER)")
    for name, entries in listing.items():
        click.echo(name)
        for entry in entries:
            component = entry["component"] or "(not DOMAIN.KEY.PROVIDER: not a plugin)"
            click.echo(
                f"  {entry['name']}  {entry['distribution']} {entry['version']}  "
                f"{entry['target']}  -> {component}"
            )


def _component(name: str) -> str | None:
    found = identity(name)
    return None if found is None else f'{found[0]} {found[1]} "{found[2]}"'
