"""`oneiric`: the runtime's command line.

Commands are loaded lazily: `oneiric --help` and `oneiric status` must start
in well under 0.2 s, so nothing heavy (pydantic, httpx, nacl, anyio) is
imported until a command that needs it runs.  Each command lives in
`oneiric._cli.<module>`; `COMMANDS` maps its name to "module:attribute".

Exit codes (DESIGN §7): 0 success; 1 checked and found wrong (failed
verification, unhealthy probe); 2 usage, configuration or I/O error.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

COMMANDS: dict[str, str] = {
    **{
        name: f"oneiric._cli.runtime:{name}"
        for name in ("run", "status", "explain", "health", "pause", "resume", "drain", "secrets")
    },
    "list": "oneiric._cli.inventory:list_",
    "verify": "oneiric._cli.security:verify",
    "remote-sync": "oneiric._cli.security:remote_sync",
    "trust": "oneiric._cli.security:trust",
    "worker": "oneiric._cli.worker:worker",
    **{name: f"oneiric._cli.flows:{name}" for name in ("workflow", "event", "action", "task")},
}


class LazyGroup(click.Group):
    """A group whose `lazy_commands` ("name": "module:attribute") import on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.lazy_commands, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="oneiric-runtime", prog_name="oneiric")
def main() -> None:
    """oneiric: run verified, hash-pinned resolution plans and swap them live."""
