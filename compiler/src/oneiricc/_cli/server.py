"""`oneiricc server start|run|stop|status`: the build server's commands.

The server (`_incremental.server.BuildServer`) runs what this module hands it:
the command line itself (`main`), with the server's warm state as its object.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from oneiric._text import plural

from oneiricc._cli.context import cli_state, fail_usage
from oneiricc._cli.main import main
from oneiricc._incremental.memos import WarmState
from oneiricc._incremental.server import BuildServer, ServerError
from oneiricc._incremental.wire import ask, server_address

START_TIMEOUT_S = 20.0  # for `server start` to see the new server answer
LOG_FILE = "server.log"  # in the project's cache directory


def run_command_line(argv: list[str], prog: str, warm: WarmState) -> None:
    """One forwarded `build` or `check`, as the caller's process would run it."""
    main.main(args=argv, prog_name=prog, obj=warm, standalone_mode=True)


@click.group()
def server() -> None:
    """Keep a compiler warm for this project, so `build` and `check` skip start-up.

    While a server runs for the project, `oneiricc build` and `oneiricc check`
    run in it and answer exactly as they would in their own process.  Set
    ONEIRICC_NO_SERVER=1 to build in-process regardless.
    """


def _idle_option(func: Any) -> Any:
    return click.option(
        "--idle-timeout",
        type=click.IntRange(min=0),
        default=3600,
        show_default=True,
        help="Stop after this many seconds without a request (0: never).",
    )(func)


def _root() -> Path:
    return cli_state(None).project.root


@server.command("run")
@_idle_option
def run_command(idle_timeout: int) -> None:
    """Serve in the foreground (what `start` runs in the background), logging to stderr."""
    try:
        BuildServer(_root(), idle_timeout or None, run_command_line).run()
    except ServerError as exc:
        fail_usage(str(exc))


@server.command()
@_idle_option
def start(idle_timeout: int) -> None:
    """Start a build server for this project in the background."""
    root = _root()
    running = ask(str(root), "status")
    if running is not None:
        click.echo(f"a build server already runs for {root} (pid {running.get('pid')})")
        return
    log_path = cli_state(None).project.cache_dir / LOG_FILE
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("w", encoding="utf-8")
    except OSError as exc:
        fail_usage(f"cannot write {log_path}: {exc.strerror or exc}")
    with log:
        command = [sys.executable, "-m", "oneiricc", "--root", str(root), "server", "run"]
        process = subprocess.Popen(
            [*command, "--idle-timeout", str(idle_timeout)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while (answer := ask(str(root), "status", timeout_s=1.0)) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            fail_usage(f"the build server did not start (log: {log_path}):\n{tail.rstrip()}")
        time.sleep(0.02)
    click.echo(
        f"build server running for {root} (pid {answer.get('pid')}, log {log_path}); "
        "stop it with `oneiricc server stop`"
    )


def _answer_of_running(control: str) -> tuple[Path, dict[str, Any] | None]:
    """This project's root and its server's answer to `control`; None (and said so)
    when no server runs."""
    root = _root()
    answer = ask(str(root), control)
    if answer is None:
        click.echo(f"no build server runs for {root}")
    return root, answer


@server.command()
def stop() -> None:
    """Stop this project's build server, if one runs."""
    root, answer = _answer_of_running("stop")
    if answer is None:
        return
    address = server_address(str(root))
    deadline = time.monotonic() + START_TIMEOUT_S
    while os.path.exists(address) and time.monotonic() < deadline:
        time.sleep(0.02)
    click.echo(f"stopped the build server for {root} (pid {answer.get('stopped')})")


@server.command()
def status() -> None:
    """Say whether a build server runs for this project (exit 1 when none does)."""
    root, answer = _answer_of_running("status")
    if answer is None:
        sys.exit(1)
    uptime = time.time() - float(answer.get("started", time.time()))
    click.echo(
        f"build server for {root}: pid {answer.get('pid')}, up {uptime:.0f} s, "
        f"{plural(int(answer.get('builds', 0)), 'build')} served, "
        f"{plural(int(answer.get('kept_files', 0)), 'checked file')} kept, "
        f"peak memory {float(answer.get('max_rss_mib', 0)):.0f} MiB"
    )
