"""`oneiric verify`, `oneiric remote-sync` and `oneiric trust`: signed plan delivery.

Only click and the standard library are imported at module level (`oneiric
--help` imports every command module); nacl, httpx and pydantic are loaded
when a command runs.  Exit codes: 0 valid / synced, 1 rejected (the output
names the failed check), 2 usage, configuration or I/O.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from oneiric._delivery.limits import (
    DEFAULT_MAX_MANIFEST_BYTES,
    DEFAULT_MAX_PLAN_BYTES,
    DEFAULT_TIMEOUT,
)

if TYPE_CHECKING:
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.manifest import Accepted, Manifest
    from oneiric._delivery.store import State

_FORMAT = click.option(
    "--format",
    "output",
    type=click.Choice(["human", "json"]),
    default="human",
    show_default=True,
    help="json prints one machine-readable document on stdout, errors too.",
)
_TRUST = click.option(
    "--trust",
    "trust_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Trust file: the accepted public keys and the threshold.",
)
TARGET = click.option(
    "--target",
    metavar="TARGET",
    help="Accept only manifests for this target (check `target`); required unless --any-target.",
)
ANY_TARGET = click.option(
    "--any-target",
    is_flag=True,
    help="Accept a validly signed manifest for ANY target. This gives up target pinning: "
    "whoever controls the manifest source and holds a signed manifest of another target "
    "(dev, staging) can make this machine run that target's plan.",
)


def pinned_target(target: str | None, any_target: bool) -> str | None:
    """The target to pin, after checking that exactly one of --target / --any-target is given."""
    if target is not None and any_target:
        raise click.UsageError("give --target TARGET or --any-target, not both")
    if target is None and not any_target:
        raise click.UsageError(
            "give --target TARGET (the target this machine runs), or --any-target to "
            "accept a manifest for any target (gives up target pinning)"
        )
    return target


_TIMEOUT = click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds a whole transfer may take.",
)
_MAX_MANIFEST = click.option(
    "--max-manifest-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_MANIFEST_BYTES,
    show_default=True,
)
_MAX_PLAN = click.option(
    "--max-plan-bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PLAN_BYTES,
    show_default=True,
)


def _finish(output: str, document: dict[str, Any], human: str, code: int = 0) -> NoReturn:
    if output == "json":
        import json

        click.echo(json.dumps(document, sort_keys=True, ensure_ascii=False))
    else:
        click.echo(human, err=code != 0)
    sys.exit(code)


def _fail(output: str, kind: str, error: SecurityError, **extra: Any) -> NoReturn:
    label = "rejected" if error.exit_code == 1 else "error"
    document = {
        "format": kind,
        "valid": False,
        "check": str(error.check),
        "error": error.message,
        **extra,
    }
    _finish(output, document, f"oneiric: {label} [{error.check}]: {error.message}", error.exit_code)


def _summary(accepted: Accepted) -> dict[str, Any]:
    manifest = accepted.manifest
    return {
        "target": manifest.target,
        "serial": manifest.serial,
        "expires": manifest.expires,
        "plan_digest": manifest.plan.digest,
        "plan_size": manifest.plan.size,
        "signers": sorted(accepted.verified.signers),
    }


@click.command()
@click.argument("manifest")
@_TRUST
@TARGET
@ANY_TARGET
@click.option(
    "--state",
    "state_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also check the serial against the last manifest accepted in this state "
    "directory (nothing is written).",
)
@_TIMEOUT
@_MAX_MANIFEST
@_MAX_PLAN
@_FORMAT
def verify(
    manifest: str,
    trust_path: Path,
    target: str | None,
    any_target: bool,
    state_dir: Path | None,
    timeout: float,
    max_manifest_bytes: int,
    max_plan_bytes: int,
    output: str,
) -> None:
    """Verify a signed manifest (PATH or URL) and its plan against a trust file.

    Exit 0 when valid, 1 when rejected (the failed check is named), 2 on a
    usage, configuration or I/O error.
    """
    target = pinned_target(target, any_target)
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.fetch import Fetcher
    from oneiric._delivery.manifest import utc_now, verify_all
    from oneiric._delivery.store import State
    from oneiric._delivery.trust import load_trust

    try:
        trust = load_trust(trust_path)
        with Fetcher(timeout=timeout) as fetcher:
            data = fetcher.fetch(manifest, "manifest", max_bytes=max_manifest_bytes).data
            accepted = verify_all(
                data,
                manifest,
                trust,
                fetcher,
                now=utc_now(),
                target=target,
                state=State(state_dir) if state_dir else None,
                max_manifest_bytes=max_manifest_bytes,
                max_plan_bytes=max_plan_bytes,
            )
    except SecurityError as exc:
        _fail(output, "oneiric-verify", exc, manifest=manifest)
    summary = _summary(accepted)
    _finish(
        output,
        {"format": "oneiric-verify", "valid": True, "manifest": manifest, **summary},
        f"ok: target {summary['target']}, serial {summary['serial']}, expires "
        f"{summary['expires']}, plan {summary['plan_digest']} ({summary['plan_size']} bytes), "
        f"{len(summary['signers'])} of {len(trust.keys)} keys signed "
        f"(threshold {trust.threshold})",
    )


def _last_good(state: State, target: str | None) -> tuple[Manifest, Path] | None:
    """The manifest the state falls back to, when it can tell which target is meant."""
    from oneiric._delivery.manifest import stored_manifest

    targets = [target] if target else state.targets()
    if len(targets) != 1:
        return None
    stored = stored_manifest(state, targets[0])
    if stored is None:
        return None
    manifest = stored[0]
    return manifest, state.plan_path(manifest.target, manifest.plan.digest.removeprefix("sha256:"))


def _fallback_info(state: State, target: str | None) -> dict[str, Any]:
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.manifest import utc_now

    try:
        found = _last_good(state, target)
    except SecurityError as exc:
        return {"last_good": None, "last_good_error": exc.message}
    if found is None:
        return {"last_good": None}
    manifest, plan_path = found
    return {
        "last_good": {
            "target": manifest.target,
            "serial": manifest.serial,
            "expires": manifest.expires,
            "plan_digest": manifest.plan.digest,
            "plan_path": str(plan_path),
            "expired": manifest.expires_at <= utc_now(),
        }
    }


@click.command("remote-sync")
@click.option(
    "--manifest", "source", required=True, help="Manifest URL (http, https, file) or path."
)
@_TRUST
@click.option(
    "--state", "state_option", help="State directory (default $ONEIRIC_STATE or .oneiric)."
)
@TARGET
@ANY_TARGET
@click.option(
    "--watch", is_flag=True, help="Keep polling; never exit on a bad or missing manifest."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=60.0,
    show_default=True,
    help="Seconds between polls with --watch.",
)
@click.option(
    "--max-polls",
    type=click.IntRange(min=0),
    default=0,
    help="With --watch, stop after this many polls (0: never).",
)
@_TIMEOUT
@_MAX_MANIFEST
@_MAX_PLAN
@_FORMAT
def remote_sync(
    source: str,
    trust_path: Path,
    state_option: str | None,
    target: str | None,
    any_target: bool,
    watch: bool,
    interval: float,
    max_polls: int,
    timeout: float,
    max_manifest_bytes: int,
    max_plan_bytes: int,
    output: str,
) -> None:
    """Fetch a manifest, verify it and its plan, and keep it as last-known-good.

    Once: exit 0 when accepted or unchanged, 1 when rejected, 2 when the source
    is unreachable (the last-known-good manifest, if any, stays in place and is
    reported).  With --watch: poll every --interval seconds with
    If-None-Match, log one JSON line per poll with running counts, and keep
    the last good manifest whatever arrives; SIGTERM or SIGINT stop cleanly.
    """
    target = pinned_target(target, any_target)
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.fetch import Fetcher
    from oneiric._delivery.manifest import sync
    from oneiric._delivery.store import State
    from oneiric._delivery.trust import load_trust
    from oneiric._lifecycle.snapshots import state_dir

    state = State(state_dir(state_option))
    if watch:
        _watch(
            source,
            trust_path,
            state,
            target,
            interval,
            max_polls,
            timeout,
            max_manifest_bytes,
            max_plan_bytes,
        )
        return
    try:
        trust = load_trust(trust_path)
        with Fetcher(timeout=timeout) as fetcher:
            synced = sync(
                source,
                trust,
                state,
                fetcher,
                target=target,
                max_manifest_bytes=max_manifest_bytes,
                max_plan_bytes=max_plan_bytes,
            )
    except SecurityError as exc:
        _fail(
            output,
            "oneiric-sync",
            exc,
            status="rejected" if exc.exit_code == 1 else "error",
            **_fallback_info(state, target),
        )
    assert synced.accepted is not None  # no ETag was sent, so no 304
    summary = _summary(synced.accepted)
    manifest = synced.accepted.manifest
    plan_path = state.plan_path(manifest.target, manifest.plan.digest.removeprefix("sha256:"))
    _finish(
        output,
        {
            "format": "oneiric-sync",
            "valid": True,
            "status": synced.status,
            "plan_path": str(plan_path),
            **summary,
        },
        f"{synced.status}: target {summary['target']}, serial {summary['serial']}, plan "
        f"{summary['plan_digest']} → {plan_path}",
    )


def _watch(
    source: str,
    trust_path: Path,
    state: State,
    target: str | None,
    interval: float,
    max_polls: int,
    timeout: float,
    max_manifest_bytes: int,
    max_plan_bytes: int,
) -> None:
    """The polling loop: every failure is logged and counted, none ends the loop."""
    import signal
    import threading
    from collections import Counter

    import structlog

    from oneiric._cli.logs import configure
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.fetch import Fetcher
    from oneiric._delivery.manifest import sync
    from oneiric._delivery.trust import load_trust

    configure()
    log = structlog.get_logger("oneiric.remote-sync").bind(source=source)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    counts: Counter[str] = Counter()
    etag: str | None = None
    polls = 0
    with Fetcher(timeout=timeout) as fetcher:
        while not stop.is_set():
            polls += 1
            try:
                synced = sync(
                    source,
                    load_trust(trust_path),
                    state,
                    fetcher,
                    target=target,
                    etag=etag,
                    max_manifest_bytes=max_manifest_bytes,
                    max_plan_bytes=max_plan_bytes,
                )
            except SecurityError as exc:
                etag = None  # fetch it whole next time, and report it again
                status = "rejected" if exc.exit_code == 1 else "error"
                counts[status] += 1
                log.warning(
                    "sync",
                    status=status,
                    check=str(exc.check),
                    error=exc.message,
                    counts=dict(counts),
                    **_fallback_info(state, target),
                )
            except Exception as exc:  # a bug must not stop the fleet's refresh loop
                etag = None
                counts["error"] += 1
                log.error(
                    "sync",
                    status="error",
                    check="internal",
                    error=repr(exc),
                    counts=dict(counts),
                    exc_info=True,
                )
            else:
                etag = synced.etag
                counts[synced.status] += 1
                details = _summary(synced.accepted) if synced.accepted else {}
                log.info("sync", status=synced.status, counts=dict(counts), **details)
            _write_sync_counts(state, source, counts, log)
            if max_polls and polls >= max_polls:
                break
            stop.wait(interval)
    log.info("stopped", polls=polls, counts=dict(counts))


def _write_sync_counts(state: State, source: str, counts: Any, log: Any) -> None:
    """STATE/remote-sync.json: the running counts by outcome, rewritten after every poll
    (`oneiric run --http` on the same state directory serves them as metrics)."""
    import os
    import time

    from oneiric._lifecycle.snapshots import REMOTE_SYNC, write_json

    directory = state.root.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        snapshot = {"pid": os.getpid(), "source": source, "written_at": time.time()}
        write_json(directory / REMOTE_SYNC, {**snapshot, "counts": dict(counts)})
    except OSError as exc:  # never stops the loop
        log.warning("cannot write the sync counts", error=str(exc))


@click.group()
def trust() -> None:
    """Inspect the trust file, or replace it by a signed rotation."""


@trust.command("show")
@_TRUST
@_FORMAT
def trust_show(trust_path: Path, output: str) -> None:
    """Print the trust file's version, threshold and key ids."""
    from oneiric._delivery.checks import SecurityError
    from oneiric._delivery.trust import load_trust

    try:
        loaded = load_trust(trust_path)
    except SecurityError as exc:
        _fail(output, "oneiric-trust", exc)
    keys = sorted(loaded.keys)
    _finish(
        output,
        {
            "format": "oneiric-trust-summary",
            "valid": True,
            "version": loaded.version,
            "threshold": loaded.threshold,
            "keys": keys,
        },
        f"trust version {loaded.version}: threshold {loaded.threshold} of {len(keys)} keys\n"
        + "\n".join(f"  {keyid}" for keyid in keys),
    )


@trust.command("rotate")
@click.argument("rotation")
@_TRUST
@_TIMEOUT
@_FORMAT
def trust_rotate(rotation: str, trust_path: Path, timeout: float, output: str) -> None:
    """Replace the trust file by ROTATION (PATH or URL), a DSSE envelope of the new trust
    file signed by the threshold of the current keys and the threshold of the new keys."""
    from oneiric._delivery.checks import Check, SecurityError, TransferError
    from oneiric._delivery.fetch import Fetcher
    from oneiric._delivery.store import atomic_write
    from oneiric._delivery.trust import MAX_TRUST_BYTES, load_trust, rotate

    try:
        current = load_trust(trust_path)
        with Fetcher(timeout=timeout) as fetcher:
            data = fetcher.fetch(rotation, "rotation", max_bytes=2 * MAX_TRUST_BYTES).data
        new, new_bytes = rotate(current, data)
        try:
            atomic_write(trust_path, new_bytes)
        except OSError as exc:
            raise TransferError(Check.TRUST, f"cannot write {trust_path}: {exc}") from None
    except SecurityError as exc:
        _fail(output, "oneiric-rotation", exc)
    _finish(
        output,
        {
            "format": "oneiric-rotation",
            "valid": True,
            "from_version": current.version,
            "version": new.version,
            "threshold": new.threshold,
            "keys": sorted(new.keys),
        },
        f"trust rotated: version {current.version} → {new.version}, threshold "
        f"{new.threshold} of {len(new.keys)} keys; {trust_path} replaced",
    )
