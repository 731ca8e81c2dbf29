"""`oneiricc keygen`, `oneiricc sign` and `oneiricc trust`: the signing side of DESIGN §5.

The primitives (DSSE, key files, manifest payload, trust files) live in the
runtime package, so what signs and what verifies is one implementation.
Exit codes: 0 success, 1 the input (plan, envelope, trust file) is wrong,
2 usage, configuration or I/O.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from nacl.signing import SigningKey
from oneiric._delivery import dsse
from oneiric._delivery.checks import Check, Rejected, SecurityError, TrustError
from oneiric._delivery.keys import (
    KeyFileError,
    PublicKey,
    load_private_key,
    load_public_key,
    private_key_exposed,
    public_key_bytes,
    write_private_key,
)
from oneiric._delivery.limits import DEFAULT_MAX_PLAN_BYTES
from oneiric._delivery.manifest import (
    MANIFEST_PAYLOAD_TYPE,
    check_validity,
    format_utc,
    manifest_payload,
    parse_duration,
    parse_expiry,
    utc_now,
)
from oneiric._delivery.store import atomic_write
from oneiric._delivery.trust import (
    DEFAULT_MAX_VALIDITY_S,
    MAX_TRUST_BYTES,
    TRUST_PAYLOAD_TYPE,
    load_trust,
    parse_trust,
    trust_bytes,
)
from oneiric._plan.canonical import MAX_SAFE_INTEGER
from oneiric._plan.model import load_plan
from oneiric._text import plural

_FORMAT = click.option(
    "--format",
    "output",
    type=click.Choice(["human", "json"]),
    default=None,
    help="json prints one machine-readable document on stdout, errors too.",
)
_MAX_ENVELOPE_BYTES = 4 * DEFAULT_MAX_PLAN_BYTES


def _output(output: str | None) -> str:
    """This command's --format, else the group's `oneiricc --format`."""
    if output:
        return output
    parent = click.get_current_context().find_root().obj
    return getattr(parent, "output", None) or "human"


def _fail(output: str, code: int, message: str, check: str | None = None) -> NoReturn:
    if output == "json":
        click.echo(json.dumps({"format": "oneiric-error", "check": check, "error": message}))
    else:
        click.echo(f"oneiricc: error: {message}", err=True)
    sys.exit(code)


def _fail_security(output: str, exc: SecurityError) -> NoReturn:
    _fail(output, exc.exit_code, exc.message, str(exc.check))


def _done(output: str, document: dict[str, Any], human: str) -> None:
    if output == "json":
        click.echo(json.dumps(document, sort_keys=True, ensure_ascii=False))
    else:
        click.echo(human)


def _read(path: Path, what: str, limit: int, output: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        _fail(output, 2, f"cannot read {what} {path}: {exc.strerror or exc}")
    if len(data) > limit:
        _fail(output, 1, f"{what} {path} is larger than {limit} bytes", str(Check.SIZE))
    return data


def _write(path: Path, data: bytes, output: str) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        _fail(output, 2, f"cannot write {path}: {exc.strerror or exc}")


def _signing_keys(paths: tuple[Path, ...], output: str) -> list[tuple[SigningKey, str]]:
    keys = []
    for path in paths:
        try:
            signing, public = load_private_key(path)
        except KeyFileError as exc:
            _fail(output, 2, str(exc))
        if private_key_exposed(path):
            click.echo(
                f"oneiricc: warning: {path} is readable by group or others; run chmod 600 {path}",
                err=True,
            )
        keys.append((signing, public.keyid))
    return keys


@click.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private key file to create (mode 0600); the public key goes to OUT.pub.",
)
@_FORMAT
def keygen(out: Path, output: str | None) -> None:
    """Create an Ed25519 signing key: OUT (private, 0600, never printed) and OUT.pub."""
    fmt = _output(output)
    public_path = out.with_name(out.name + ".pub")
    for path in (out, public_path):
        if path.exists() or path.is_symlink():
            _fail(fmt, 2, f"{path} already exists; keys are never overwritten")
    try:
        public = write_private_key(out, SigningKey.generate())
    except OSError as exc:
        _fail(fmt, 2, f"cannot create {out}: {exc.strerror or exc}")
    _write(public_path, public_key_bytes(public), fmt)
    _done(
        fmt,
        {
            "format": "oneiric-keygen",
            "keyid": public.keyid,
            "private_key": str(out),
            "public_key": str(public_path),
        },
        f"key id {public.keyid}\nprivate key: {out} (mode 0600; keep it secret)\n"
        f"public key:  {public_path}",
    )


@click.command()
@click.argument("plan", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private key file to sign with (repeatable: one signature per key).",
)
@click.option(
    "--serial",
    type=click.IntRange(0, MAX_SAFE_INTEGER),
    help="Manifest serial: higher than every serial signed before for this target.",
)
@click.option(
    "--expires",
    help="When the manifest stops being valid: a duration (30d, 12h, "
    "90m) from now, or a UTC timestamp (2030-01-01T00:00:00Z).",
)
@click.option(
    "--plan-url",
    help="Reference the plan by this URL (relative to the manifest's "
    "location, or absolute) instead of embedding it.",
)
@click.option(
    "--trust",
    "trust_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Trust file the manifest is meant for: --expires may lie at most its "
    f"max_validity_seconds ahead (without it: the default, "
    f"{DEFAULT_MAX_VALIDITY_S // 86400} days).",
)
@click.option(
    "--add-to",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Add signatures to this existing envelope (manifest or trust rotation) "
    "instead of signing a plan; its payload bytes are kept exactly.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the signed envelope.",
)
@_FORMAT
def sign(
    plan: Path | None,
    keys: tuple[Path, ...],
    serial: int | None,
    expires: str | None,
    plan_url: str | None,
    trust_path: Path | None,
    add_to: Path | None,
    out: Path,
    output: str | None,
) -> None:
    """Sign PLAN into a manifest (DSSE envelope), or add signatures with --add-to."""
    fmt = _output(output)
    if (plan is None) == (add_to is None):
        _fail(fmt, 2, "give either PLAN or --add-to ENVELOPE")
    if add_to is not None:
        if serial is not None or expires is not None or plan_url is not None or trust_path:
            _fail(
                fmt,
                2,
                "--serial, --expires, --plan-url and --trust describe a new manifest; "
                "--add-to keeps the existing payload",
            )
        try:
            envelope = dsse.parse_envelope(_read(add_to, "envelope", _MAX_ENVELOPE_BYTES, fmt))
        except Rejected as exc:
            _fail_security(fmt, exc)
        if envelope.payload_type not in (MANIFEST_PAYLOAD_TYPE, TRUST_PAYLOAD_TYPE):
            _fail(
                fmt,
                1,
                f"{add_to}: payloadType {envelope.payload_type!r} is not an oneiric "
                "manifest or trust rotation",
                str(Check.PAYLOAD_TYPE),
            )
    else:
        assert plan is not None
        if serial is None or expires is None:
            _fail(fmt, 2, "signing a plan needs --serial and --expires")
        now = utc_now()
        try:
            expires_at = parse_expiry(expires, now)
        except ValueError as exc:
            _fail(fmt, 2, f"--expires: {exc}")
        if expires_at <= now:
            _fail(fmt, 2, f"--expires {format_utc(expires_at)} is not in the future")
        max_validity = DEFAULT_MAX_VALIDITY_S
        if trust_path is not None:
            try:
                max_validity = load_trust(trust_path).max_validity_s
            except TrustError as exc:
                _fail_security(fmt, exc)
        try:
            check_validity(expires_at, now, max_validity)
        except Rejected as exc:
            _fail(fmt, 2, f"--expires: {exc.message}; runtimes would refuse it", str(exc.check))
        data = _read(plan, "plan", DEFAULT_MAX_PLAN_BYTES, fmt)
        try:
            loaded = load_plan(data)
        except ValueError as exc:
            _fail(fmt, 1, f"{plan}: not a valid plan: {str(exc).splitlines()[0]}", str(Check.PLAN))
        try:
            payload = manifest_payload(loaded.target, serial, expires_at, data, plan_url)
        except Rejected as exc:
            _fail_security(fmt, exc)
        envelope = dsse.Envelope(MANIFEST_PAYLOAD_TYPE, payload, ())
    for key, keyid in _signing_keys(keys, fmt):
        envelope = envelope.with_signature(key, keyid)
    _write(out, envelope.to_bytes() + b"\n", fmt)
    keyids = [s.keyid for s in envelope.signatures]
    _done(
        fmt,
        {
            "format": "oneiric-signed",
            "out": str(out),
            "payload_type": envelope.payload_type,
            "signatures": keyids,
        },
        f"signed {out}: {plural(len(keyids), 'signature')} ({', '.join(k[:16] for k in keyids)})",
    )


@click.group("trust")
def trust_group() -> None:
    """Create trust files and sign trust rotations."""


@trust_group.command("init")
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Public key file (OUT.pub from keygen) to trust (repeatable).",
)
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    required=True,
    help="How many distinct keys must sign a manifest.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(1, MAX_SAFE_INTEGER),
    default=1,
    show_default=True,
    help="Trust file version; a rotation must raise it.",
)
@click.option(
    "--max-validity",
    default=f"{DEFAULT_MAX_VALIDITY_S // 86400}d",
    show_default=True,
    help="How far ahead a manifest's expiry may lie (30d, 12h, 3600s, 2w); runtimes "
    "refuse longer-lived manifests (check validity), and `oneiricc sign --trust` too.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@_FORMAT
def trust_init(
    keys: tuple[Path, ...],
    threshold: int,
    version: int,
    max_validity: str,
    out: Path,
    output: str | None,
) -> None:
    """Write a trust file listing public keys and a threshold."""
    fmt = _output(output)
    public: list[PublicKey] = []
    for path in keys:
        try:
            public.append(load_public_key(path))
        except KeyFileError as exc:
            _fail(fmt, 2, str(exc))
    validity = parse_duration(max_validity)
    if not validity:
        _fail(
            fmt, 2, f"--max-validity: expected a duration such as 30d or 12h, got {max_validity!r}"
        )
    try:
        data = trust_bytes(version, threshold, public, validity)
    except TrustError as exc:
        _fail_security(fmt, exc)
    _write(out, data, fmt)
    _done(
        fmt,
        {
            "format": "oneiric-trust-file",
            "out": str(out),
            "version": version,
            "threshold": threshold,
            "max_validity_seconds": validity,
            "keys": [k.keyid for k in public],
        },
        f"trust file {out}: version {version}, threshold {threshold} of {len(public)} keys, "
        f"manifests valid for at most {validity} s",
    )


@trust_group.command("sign")
@click.argument("new_trust", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key",
    "keys",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private key to sign with (repeatable); a rotation needs the threshold of "
    "the current keys and of the new keys.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@_FORMAT
def trust_sign(new_trust: Path, keys: tuple[Path, ...], out: Path, output: str | None) -> None:
    """Sign NEW_TRUST (a trust file) into a rotation envelope for `oneiric trust rotate`."""
    fmt = _output(output)
    data = _read(new_trust, "trust file", MAX_TRUST_BYTES, fmt)
    try:
        parse_trust(data, str(new_trust))
    except TrustError as exc:
        _fail(fmt, 1, exc.message, str(exc.check))
    envelope = dsse.sign(TRUST_PAYLOAD_TYPE, data, _signing_keys(keys, fmt))
    _write(out, envelope.to_bytes() + b"\n", fmt)
    keyids = [s.keyid for s in envelope.signatures]
    _done(
        fmt,
        {
            "format": "oneiric-signed",
            "out": str(out),
            "payload_type": TRUST_PAYLOAD_TYPE,
            "signatures": keyids,
        },
        f"signed rotation {out}: {plural(len(keyids), 'signature')}; more can be added with "
        f"`oneiricc sign --add-to {out} --key KEY --out {out}`",
    )
