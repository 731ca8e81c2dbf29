"""Runtime commands: `run`, `status`, `explain`, `health`, `pause`, `resume`, `drain`.

Everything but `run` acts on a running process through its state directory:
snapshot files it writes (status.json, health.json, last-good.json) and the
control database it polls.  Those commands import only click and the
standard library, so they start in well under 0.2 s.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from oneiric._cli.exits import _fail as _fail  # re-exported: every command's way out
from oneiric._cli.flowhost import EVENTS, STORE, TASKS, FlowHost
from oneiric._cli.security import ANY_TARGET, TARGET, pinned_target
from oneiric._lifecycle import snapshots
from oneiric._text import plural

FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    help="Output format; json for machines (errors included).",
)
STATE = click.option(
    "--state",
    "state",
    metavar="DIR",
    default=None,
    help="State directory of the runtime (default: $ONEIRIC_STATE or ./.oneiric).",
)
VERBOSE = click.option(
    "--verbose", "-v", is_flag=True, help="Log from info level (default: warnings only)."
)
MODULE_PATH = click.option(
    "--module-path",
    "module_path",
    multiple=True,
    metavar="DIR",
    help="Import the project's code from DIR (repeatable) instead of the plan's module path "
    "(relative to the project root); env ONEIRIC_MODULE_PATH.",
)
ACK_TIMEOUT_S = 3.0
ROTATE_TIMEOUT_S = 60.0  # re-reading secrets and swapping what changed


def _emit(fmt: str, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True) if fmt == "json" else text)


def _read(state: Path, name: str, fmt: str) -> Any:
    try:
        data = snapshots.read_json(state / name)
    except (OSError, ValueError) as exc:
        _fail(fmt, f"{state / name}: unreadable: {exc}")
    if data is None:
        _fail(fmt, f"no runtime state in {state} (start one with `oneiric run --state {state}`)")
    return data


def _running(status: dict[str, Any]) -> bool:
    """The runtime that wrote `status` is alive: not stopped, its pid neither gone nor
    reused, and its heartbeat (`updated_at`, rewritten every second) fresh."""
    return snapshots.running(status, "updated_at")


def _last_seen(at: float) -> str:
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return f"last seen {moment}, {max(0, round(time.time() - at))} s ago"


def _check_keys(fmt: str, keys: tuple[str, ...], status: dict[str, Any] | None) -> list[str]:
    known = sorted(status["components"]) if status else []
    for key in keys:
        if ":" not in key:
            _fail(fmt, f'"{key}" is not DOMAIN:KEY (for example adapter:cache)')
        if known and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else f" (known: {', '.join(known)})"
            _fail(fmt, f'no component "{key}" in the running plan{hint}')
    return list(keys)


def _duration_s(text: str) -> float:
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?\s*", text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration (e.g. 500ms, 10s, 1m)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


# -- run ---------------------------------------------------------------------------------
@click.command()
@click.option("--manifest", metavar="PATH|URL", help="Signed manifest to run (file or URL).")
@click.option("--trust", metavar="TRUSTFILE", help="Trust file for --manifest.")
@TARGET
@ANY_TARGET
@click.option(
    "--unsigned-plan",
    "unsigned",
    metavar="PATH",
    help="Run an UNSIGNED plan file (development only; prints a warning).",
)
@STATE
@click.option(
    "--poll-interval",
    default="5s",
    show_default=True,
    help="How often an HTTP manifest is polled (ETag).",
)
@click.option(
    "--probation",
    default="0s",
    show_default=True,
    help="Wait this long after a swap before the probation health check.",
)
@click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="Call this function with the supervisor once ready: an async def is awaited on "
    "the runtime's loop, a sync one runs in a thread.",
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Serve /healthz, /readyz, /metrics, /status and the status page (GET only) on "
    "HOST:PORT; a bare PORT is loopback.  Needs oneiric-runtime[http].",
)
@click.option(
    "--secrets-refresh",
    metavar="DURATION",
    help="Re-read every secret this often (e.g. 5m) and swap, make before break, the "
    "components whose secret values changed.",
)
@click.option(
    "--alerts",
    "alerts_file",
    metavar="FILE",
    help="Send alerts (plan refused, swap aborted, unhealthy component, expiring manifest, "
    "dead letters, failed runs) to the routes of this JSON file (docs/operations.md).",
)
@click.option(
    "--otel",
    is_flag=True,
    help="Export OpenTelemetry traces over OTLP/HTTP (on anyway when "
    "OTEL_EXPORTER_OTLP_ENDPOINT is set).  Needs oneiric-runtime[otel].",
)
@STORE
@EVENTS
@TASKS
@MODULE_PATH
@VERBOSE
def run(
    manifest: str | None,
    trust: str | None,
    target: str | None,
    any_target: bool,
    unsigned: str | None,
    state: str | None,
    poll_interval: str,
    probation: str,
    app: str | None,
    http: str | None,
    secrets_refresh: str | None,
    otel: bool,
    alerts_file: str | None,
    events_url: str | None,
    module_path: tuple[str, ...],
    verbose: bool,
    extra_services: Callable[[FlowHost], list[Any]] | None = None,
) -> None:
    """Run a verified plan and apply new plans live until SIGTERM/SIGINT.

    Logs warnings only unless -v (or LOG_LEVEL): a service's deployment sets
    LOG_LEVEL=info (the Dockerfile and the systemd unit do).

    Env: LOG_LEVEL, ONEIRIC_PROFILE (overrides the plan's profile; under serverless:
    no watchers, and with $PORT set and no --http the HTTP surface listens on
    0.0.0.0:$PORT), PORT, ONEIRIC_CONFIG (directory holding
    secrets/ and secrets.toml), ONEIRIC_STATE, ONEIRIC_MODULE_PATH, ONEIRIC_FLOWS,
    ONEIRIC_EVENTS, ONEIRIC_TASKS.

    A plan with routes, workflows or flow actions gets its flow engine here:
    the app's and the components' calls emit events (event.dispatch), start
    workflow runs and schedule tasks like a workflow node, on the engine of
    the plan running at the time.
    """
    if (manifest is None) == (unsigned is None):
        raise click.UsageError("give exactly one of --manifest (with --trust) or --unsigned-plan")
    if manifest is not None and trust is None:
        raise click.UsageError("--manifest needs --trust TRUSTFILE")
    if manifest is not None or target is not None:
        target = pinned_target(target, any_target)
    import gc
    import os

    # Starting allocates many long-lived, acyclic objects (modules, pydantic models, the
    # plan, instances): the cyclic collector would scan them over and over (measured: about
    # a third of the CPU time to ready).  It is re-enabled, those objects frozen, once ready.
    gc.disable()

    import anyio

    from oneiric._cli import logs
    from oneiric._delivery.sources import Source, UnsignedPlanFile
    from oneiric._lifecycle.modulepath import Imports
    from oneiric._lifecycle.supervisor import PROFILE_ENV, Settings, StartError, Supervisor

    try:
        logs.configure("info" if verbose else "warning", tracing=otel)
    except ValueError as exc:
        _fail("text", str(exc))
    source: Source
    if unsigned is not None:
        click.echo(
            f"warning: running the UNSIGNED plan {unsigned}; its origin is not "
            "verified (use --manifest and --trust in production)",
            err=True,
        )
        source = UnsignedPlanFile(Path(unsigned), target)
    else:
        from oneiric._delivery.sources import ManifestSource

        assert manifest is not None
        assert trust is not None
        from oneiric._delivery.checks import SecurityError

        try:
            source = ManifestSource(manifest, Path(trust), snapshots.state_dir(state), target)
        except SecurityError as exc:
            _fail("text", str(exc), exc.exit_code)
    unserved: list[str] = []  # why the serverless HTTP surface could not listen
    services = _http_services(http, os.environ.get(PROFILE_ENV), os.environ.get("PORT"), unserved)
    flows = FlowHost(snapshots.state_dir(state), events_url)  # a named server is checked here
    services.append(flows.serve)
    services += extra_services(flows) if extra_services else []  # `oneiric worker`
    imports = Imports.find(unsigned, module_path)
    if app and unsigned is not None:
        imports.install(_module_path_of(Path(unsigned)))  # the app may live beside the code
    settings = Settings(
        state=snapshots.state_dir(state),
        source=source,
        profile=os.environ.get(PROFILE_ENV) or None,
        poll_interval_s=_duration_s(poll_interval),
        probation_s=_duration_s(probation),
        app=_load_app(app) if app else None,
        collect_garbage_when_ready=True,
        services=services,
        imports=imports,
        secrets_refresh_s=_duration_s(secrets_refresh) if secrets_refresh else None,
    )
    supervisor = Supervisor(settings)
    _alerts(Path(alerts_file) if alerts_file else None, supervisor)
    from oneiric._flows.context import bound

    try:
        with bound(flows.following):  # every task of the runtime inherits it
            failures = anyio.run(supervisor.run)
    except StartError as exc:
        _fail("text", f"cannot start: {exc}", 1)
    if unserved:
        click.echo(f"error: {unserved[0]}", err=True)
    _exit_now(1 if failures or supervisor.uncleaned or unserved else 0)


def _exit_now(code: int) -> NoReturn:
    """Exit with `code` without joining threads still stuck in abandoned calls (Python
    would wait for them, forever for a hung connect); the "stopped" log line named them."""
    import os
    import threading

    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


HTTP_EXTRA = "pip install 'oneiric-runtime[http]'"


def _http_services(
    address: str | None, profile: str | None, port: str | None, unserved: list[str]
) -> list[Any]:
    """The HTTP surface as a supervisor service, listening already; none when not asked.

    Asked by --http, or by profile serverless with $PORT (Cloud Run and the like,
    which route to every interface).  With $PORT set and no ONEIRIC_PROFILE (which
    overrides the plan's), the plan's own profile decides once it is applied: see
    `_serverless_http`.  Its libraries are imported only here.
    """
    from oneiric._lifecycle.supervisor import SERVERLESS

    if address is None:
        if not port or (profile and profile != SERVERLESS):
            return []
        if not profile:
            return [_serverless_http(port, unserved)]
        address = f"0.0.0.0:{port}"
    try:
        from oneiric._ops.http import Address, service
    except ImportError as exc:
        _fail("text", f"--http needs the http extra ({exc.name} is missing): {HTTP_EXTRA}")
    try:
        where = Address(address)
    except ValueError as exc:
        _fail("text", str(exc))
    try:
        sock = where.bind()
    except OSError as exc:
        _fail("text", f"--http {address}: cannot listen: {exc.strerror or exc}")
    return [service(sock)]


def _serverless_http(port: str, unserved: list[str]) -> Any:
    """A service listening on 0.0.0.0:$PORT if the applied plan's profile is serverless.

    Decided after the first plan verified and activated (services start then), so
    the profile is the plan's; a failure to listen is recorded in `unserved` and
    stops the runtime (exit 1), since the platform routes nothing to it otherwise.
    """

    async def serve(supervisor: Any) -> None:
        from oneiric._lifecycle.supervisor import SERVERLESS

        if supervisor.profile != SERVERLESS:
            return
        try:
            from oneiric._ops.http import Address, service

            sock = Address(f"0.0.0.0:{port}").bind()
        except (ImportError, ValueError, OSError) as exc:
            why = f"needs the http extra: {HTTP_EXTRA}" if isinstance(exc, ImportError) else exc
            unserved.append(f"profile serverless, $PORT {port}: cannot listen: {why}")
            supervisor.request_stop()
            return
        await service(sock)(supervisor)

    return serve


def _module_path_of(plan_file: Path) -> list[str]:
    """The plan file's recorded module path, [] when unreadable (`run` then says why)."""
    from oneiric._plan.strictjson import loads

    try:
        found = loads(plan_file.read_bytes()).get("module_path", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [entry for entry in found if isinstance(entry, str)] if isinstance(found, list) else []


def _alerts(path: Path | None, supervisor: Any) -> None:
    """Route the supervisor's conditions to the channels of the alerts file `path`."""
    from oneiric._ops.alerts import Alerter, AlertsError, load

    try:
        routes = load(path) if path is not None else []
    except AlertsError as exc:
        _fail("text", str(exc))
    alerter = Alerter(routes, supervisor)
    supervisor.observers.append(alerter)
    supervisor.settings.services.append(alerter.serve)


def _load_app(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot load {target}: {exc}", param_hint="--app") from None


# -- status --------------------------------------------------------------------------------
@click.command()
@STATE
@FORMAT
def status(state: str | None, fmt: str) -> None:
    """Show the running plan, each component's provider, calls and pause state; then the
    runtime's connections and the event consumers, workers, `workflow serve`
    runtimes and `task serve` schedulers that write to the same state directory
    (alive or not, their connections).

    Exit 0 while the runtime runs (starting, running, stopping); 1 when it does
    not: stopped, its pid gone or reused, or its heartbeat older than 8 s (or
    no runtime state, when only those other processes wrote any).  The other
    processes never change the exit code: a consumer's lost broker shows here
    and in /metrics (oneiric_connection_up), not in the runtime's status.
    """
    directory = snapshots.state_dir(state)
    fleet = snapshots.fleet(directory)
    if not (directory / snapshots.STATUS).exists() and any(fleet.values()):
        data: dict[str, Any] = {"alive": False, "state": "no runtime", **fleet}
        lines = [f"no runtime in {directory}", *_fleet_lines(fleet, time.time())]
        _emit(fmt, data, "\n".join(lines))
        sys.exit(1)
    data = _read(directory, snapshots.STATUS, fmt)
    alive = data["alive"] = _running(data)
    if alive:
        header = f"runtime pid {data['pid']} {data['state']}"
    else:
        # A dead runtime's last words are not the truth: no state, no calls in flight.
        data["last_state"], data["state"] = data["state"], "not running"
        data["last_seen"] = data.get("updated_at")
        header = f"runtime pid {data['pid']} not running ({_last_seen(data['updated_at'])})"
        for comp in data["components"].values():
            comp["inflight"] = None
        for link in data.get("connections", {}).values():
            link["last_state"], link["state"], link["connected"] = link["state"], "unknown", False
    plan = data.get("plan")
    lines = [
        f"{header}  profile {data['profile'] or 'default'}",
        _plan_line(plan),
        f"source {data['source'] or '-'}",
        f"swaps {data['swaps']}  rejected {data['rejected']}  aborted {data['aborted']}  "
        f"rolled back {data['rolled_back']}  unreachable {data['unreachable']}",
    ]
    for cid, comp in sorted(data["components"].items()):
        flag = "  PAUSED" if comp["paused"] else ""
        lines.append(
            f"  {cid:<24} {comp['provider'] or '-':<14} gen {comp['generation']}  "
            + (f"in-flight {comp['inflight']}  " if alive else "")
            + f"calls {comp['calls']}{flag}"
        )
    if data.get("drain_overruns"):
        overruns = ", ".join(f"{cid} {n}" for cid, n in sorted(data["drain_overruns"].items()))
        lines.append(f"drain deadline overruns: {overruns}")
    if data.get("last_problem"):
        problem = data["last_problem"]
        lines.append(f"last problem ({problem['kind']}): {problem['error']}")
    now = time.time()
    if data.get("connections"):
        lines.append("runtime connections")
        lines += [f"  {_link_line(c, now)}" for _, c in sorted(data["connections"].items())]
    data.update(fleet)
    lines += _fleet_lines(fleet, now)
    _emit(fmt, data, "\n".join(lines))
    sys.exit(0 if alive else 1)


FLEET_TITLES = {
    "consumers": "event consumers",
    "workers": "workers",
    "runtimes": "flow runtimes (workflow serve)",
    "schedulers": "schedulers (task serve)",
}
FLEET_COUNTS = (  # (where, key, label): the counters shown when the process has them
    ("broker", "delivered", "delivered"),
    ("broker", "dead_lettered", "dead-lettered"),
    ("broker", "claimed", "claimed"),
    ("broker", "inflight", "in flight"),
    ("", "done", "done"),
    ("", "failed", "failed"),
    ("", "claimed", "claimed"),
    ("", "inflight", "in flight"),
)


def _fleet_lines(fleet: dict[str, list[dict[str, Any]]], now: float) -> list[str]:
    """The processes of `snapshots.fleet`, one line each, one per consumer group's backlog
    and one per connection."""
    from oneiric._ops.words import backlog_text

    lines = []
    for kind, processes in fleet.items():
        if not processes:
            continue
        lines.append(FLEET_TITLES.get(kind, kind))
        for p in processes:
            if p["alive"]:
                facts = [f"pid {p['pid']} {p['state']}"]
            else:
                facts = [f"pid {p['pid']} not running ({_last_seen(p.get('written_at', 0))})"]
            if p.get("plan"):
                facts.append(f"plan {p['plan']}")
            if p.get("groups"):
                facts.append(f"groups {', '.join(p['groups'])}")
            if p.get("runs") is not None:
                facts.append(f"runs {len(p['runs'])}")
            for where, key, label in FLEET_COUNTS:
                holder = p.get(where) if where else p
                if isinstance(holder, dict) and isinstance(holder.get(key), int):
                    facts.append(f"{label} {holder[key]}")
            lines.append(f"  {p['name']}  " + "  ".join(facts))
            lines += [f"    group {backlog_text(b, now)}" for b in p.get("backlog") or []]
            lines += [
                f"    {_link_line(p[role], now)}"
                for role in snapshots.CONNECTIONS
                if isinstance(p.get(role), dict)
            ]
    return lines


def _link_line(link: dict[str, Any], now: float) -> str:
    """One connection (`link.Link.as_json`): role, endpoint, state, and why when not up."""
    from oneiric._ops.words import link_state

    state = link.get("state") or ("connected" if link.get("connected") else "reconnecting")
    line = f"{link.get('role', '-'):<6} {link.get('url', '-')}  "
    line += link_state(link | {"state": state}, now)
    since = link.get("since")
    if since and state != "unknown":
        line += f" since {_clock(since)} ({max(0, round(now - since))} s)"
    if link.get("reconnects"):
        line += f"  reconnects {link['reconnects']}"
    if state != "connected" and link.get("last_error"):
        line += f"  last error: {link['last_error']}"
    return line


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(at))


def _plan_line(plan: dict[str, Any] | None) -> str:
    if not plan:
        return "plan: none accepted yet"
    serial = "no serial (unsigned)" if plan["serial"] is None else f"serial {plan['serial']}"
    return f"plan {plan['target']} {plan['digest']} {serial}"


# -- explain ---------------------------------------------------------------------------------
@click.command()
@click.argument("component", metavar="DOMAIN:KEY")
@STATE
@FORMAT
def explain(component: str, state: str | None, fmt: str) -> None:
    """Why the running plan chose its provider for DOMAIN:KEY."""
    good = _read(snapshots.state_dir(state), snapshots.LAST_GOOD, fmt)
    by_id = {c["id"]: c for c in good["plan"]["components"]}
    found = by_id.get(component)
    if found is None:
        close = difflib.get_close_matches(component, list(by_id), n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        _fail(fmt, f'no component "{component}" in the running plan{hint}')
    exp = found["explanation"]
    lines = [
        f"{component} → {found['provider']}  [{exp['rule']}] {exp['summary']}",
        f"  winner {exp['winner']['provider']} (layer {exp['winner']['layer']}, "
        f"{exp['winner']['span']})",
    ]
    lines += [
        f"  lost   {loser['provider']} ({loser['rule']}): {loser['reason']}"
        for loser in exp["losers"]
    ]
    if exp.get("selection"):
        lines.append(f"  selected at {exp['selection']}")
    serial = good["serial"]
    lines.append(
        f"  plan {good['plan']['digest']} " + ("unsigned" if serial is None else f"serial {serial}")
    )
    _emit(
        fmt,
        {
            "component": component,
            "provider": found["provider"],
            "explanation": exp,
            "plan": good["plan"]["digest"],
            "serial": good["serial"],
        },
        "\n".join(lines),
    )


# -- health ---------------------------------------------------------------------------------
@click.command()
@click.option("--probe", is_flag=True, help="Liveness probe: one line; exit 0 healthy, 1 not.")
@STATE
@FORMAT
def health(probe: bool, state: str | None, fmt: str) -> None:
    """Health of the running runtime from its snapshot (exit 0 healthy, 1 not)."""
    directory = snapshots.state_dir(state)
    data = snapshots.read_json(directory / snapshots.HEALTH)
    reasons: list[str] = []
    if data is None:
        reasons.append(f"no health snapshot in {directory}")
        data = {"components": {}}
    else:
        if not snapshots.runtime_alive(data):
            reasons.append(
                f"runtime pid {data['pid']} is not running ({_last_seen(data['checked_at'])})"
            )
        if data["expires_at"] < time.time():
            reasons.append("health snapshot is stale")
        reasons += [
            f"{cid}: {entry['reason']}"
            for cid, entry in data["components"].items()
            if not entry["healthy"]
        ]
        if data.get("reason"):
            reasons.append(str(data["reason"]))
    healthy = not reasons
    out = {"healthy": healthy, "reasons": reasons, "components": data["components"]}
    if probe:
        text = "healthy" if healthy else "unhealthy: " + "; ".join(reasons)
    else:
        lines = [f"{'healthy' if healthy else 'UNHEALTHY'}"]
        lines += [
            f"  {cid:<24} {entry['provider']:<14} {'ok' if entry['healthy'] else entry['reason']}"
            for cid, entry in sorted(data["components"].items())
        ]
        lines += [f"  ! {reason}" for reason in reasons]
        text = "\n".join(lines)
    _emit(fmt, out, text)
    sys.exit(0 if healthy else 1)


# -- pause / resume / drain ------------------------------------------------------------------
def _control(
    op: str, keys: tuple[str, ...], state: str | None, fmt: str, deadline_s: float | None = None
) -> tuple[dict[str, Any], bool]:
    """Record the request; wait for the running process to obey it (if one runs)."""
    from oneiric._lifecycle.control import ControlStore

    directory = snapshots.state_dir(state)
    status_data = snapshots.read_json(directory / snapshots.STATUS)
    components = _check_keys(fmt, keys, status_data)
    if not components and op == "drain" and status_data:
        components = sorted(status_data["components"])
    if not components:
        _fail(fmt, f"{op}: name at least one DOMAIN:KEY")
    running = bool(status_data) and _running(status_data)
    deadline_ms = None if deadline_s is None else int(deadline_s * 1000)
    try:
        store = ControlStore(directory)
        request = store.request(op, components, deadline_ms)
    except OSError as exc:
        _fail(fmt, f"{directory}: {exc}")
    answer = None
    if running:
        wait_until = time.monotonic() + ACK_TIMEOUT_S + (deadline_s or 0)
        while answer is None and time.monotonic() < wait_until:
            time.sleep(0.05)
            answer = store.result(request)
    store.close()
    result = {
        "op": op,
        "components": components,
        "request": request,
        "running": running,
        "obeyed": answer is not None,
        "result": answer,
    }
    return result, running


@click.command()
@click.argument("keys", nargs=-1, metavar="DOMAIN:KEY...")
@STATE
@FORMAT
def pause(keys: tuple[str, ...], state: str | None, fmt: str) -> None:
    """Stop routing new calls to components (persisted; obeyed by the running process)."""
    result, running = _control("pause", keys, state, fmt)
    _emit(fmt, result, _control_text(result))
    sys.exit(0 if result["obeyed"] or not running else 2)


@click.command()
@click.argument("keys", nargs=-1, metavar="DOMAIN:KEY...")
@STATE
@FORMAT
def resume(keys: tuple[str, ...], state: str | None, fmt: str) -> None:
    """Let paused or drained components take calls again."""
    result, running = _control("resume", keys, state, fmt)
    _emit(fmt, result, _control_text(result))
    sys.exit(0 if result["obeyed"] or not running else 2)


@click.command()
@click.argument("keys", nargs=-1, metavar="[DOMAIN:KEY...]")
@click.option(
    "--deadline", default="10s", show_default=True, help="How long to wait for in-flight calls."
)
@STATE
@FORMAT
def drain(keys: tuple[str, ...], deadline: str, state: str | None, fmt: str) -> None:
    """Stop new calls to components (all by default) and wait for in-flight ones.

    Exit 0 when every in-flight call finished, 1 when some were still running
    at the deadline, 2 when no running process answered.
    """
    result, running = _control("drain", keys, state, fmt, _duration_s(deadline))
    answer = result["result"]
    left = sum(w["remaining"] for w in answer["waited"].values()) if answer else 0
    _emit(fmt, result, _control_text(result))
    if not result["obeyed"]:
        sys.exit(0 if not running else 2)
    sys.exit(1 if left else 0)


@click.group()
def secrets() -> None:
    """Secrets of the running plan: `rotate` re-reads them and swaps what changed."""


@secrets.command()
@click.argument("references", nargs=-1, metavar="[REFERENCE...]")
@STATE
@FORMAT
def rotate(references: tuple[str, ...], state: str | None, fmt: str) -> None:
    """Re-read secrets (these references, e.g. aws-sm:shop/db, or all) in the running
    process and swap, make before break, exactly the components whose values changed.

    Exit 0 when done, 1 when a secret could not be read (nothing was swapped),
    2 when no running process answered.
    """
    from oneiric._lifecycle.control import ControlStore

    directory = snapshots.state_dir(state)
    status_data = snapshots.read_json(directory / snapshots.STATUS)
    if not (status_data and _running(status_data)):
        _fail(fmt, f"secrets rotate: no runtime is running with state {directory}")
    try:
        store = ControlStore(directory)
        request = store.request("rotate", list(references))
    except OSError as exc:
        _fail(fmt, f"{directory}: {exc}")
    answer = None
    wait_until = time.monotonic() + ACK_TIMEOUT_S + ROTATE_TIMEOUT_S
    while answer is None and time.monotonic() < wait_until:
        time.sleep(0.05)
        answer = store.result(request)
    store.close()
    if answer is None:
        _fail(fmt, "secrets rotate: recorded, but the runtime did not answer in time")
    result = {"op": "rotate", "references": list(references), "result": answer}
    swapped = answer["swapped"]
    if "error" in answer:
        text = f"secrets rotate: nothing swapped: {answer['error']}"
    elif swapped:
        text = f"secrets rotate: swapped {', '.join(swapped)} (runtime pid {answer['pid']})"
    else:
        text = "secrets rotate: no secret value changed; nothing swapped"
    _emit(fmt, result, text)
    sys.exit(1 if "error" in answer else 0)


def _control_text(result: dict[str, Any]) -> str:
    names = ", ".join(result["components"])
    if not result["running"]:
        return f"{result['op']} {names}: recorded; no runtime is running (applies at its start)"
    answer = result["result"]
    if answer is None:
        return f"{result['op']} {names}: recorded, but the runtime did not answer in time"
    lines = [f"{result['op']} {', '.join(answer['applied'])}: done by runtime pid {answer['pid']}"]
    for cid, waited in sorted(answer.get("waited", {}).items()):
        lines.append(
            f"  {cid}: waited for {plural(waited['inflight'], 'in-flight call')}, "
            f"{waited['remaining']} still running at the deadline"
        )
    if answer["unknown"]:
        lines.append(f"  not in the running plan: {', '.join(answer['unknown'])}")
    return "\n".join(lines)
