"""The command lines as real processes: keygen, sign, verify, trust, remote-sync, crash safety."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import stat
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from oneiric._delivery.keys import public_key_bytes, write_private_key
from oneiric._delivery.trust import trust_bytes
from seckit import (
    DEV_PLAN,
    PROD_PLAN,
    Key,
    Lines,
    Route,
    Server,
    manifest,
    run,
    spawn,
    variant_plan,
)

PROD = ("--target", "prod")


@pytest.fixture
def signer(tmp_path: Path) -> dict[str, Path]:
    """Three key files and a 2-of-3 trust file (made in-process: keygen has its own test)."""
    paths: dict[str, Path] = {}
    public = []
    for name in ("k1", "k2", "k3"):
        paths[name] = tmp_path / name
        public.append(write_private_key(paths[name], SigningKey.generate()))
        (tmp_path / f"{name}.pub").write_bytes(public_key_bytes(public[-1]))
    paths["trust"] = tmp_path / "trust.json"
    paths["trust"].write_bytes(trust_bytes(1, 2, public))
    paths["plan"] = tmp_path / "prod.plan.json"
    paths["plan"].write_bytes(PROD_PLAN)
    return paths


def sign(
    signer: dict[str, Path], out: Path, serial: int, *keys: str, extra: tuple[str, ...] = ()
) -> None:
    args = [arg for k in keys for arg in ("--key", str(signer[k]))]
    result = run(
        "oneiricc",
        "sign",
        signer["plan"],
        *args,
        "--serial",
        str(serial),
        "--expires",
        "30d",
        "--out",
        out,
        *extra,
    )
    assert result.returncode == 0, result.stderr


def test_keygen_writes_a_0600_key_it_never_prints(tmp_path: Path) -> None:
    result = run("oneiricc", "--format", "json", "keygen", "--out", tmp_path / "key")
    assert result.returncode == 0, result.stderr
    private = json.loads((tmp_path / "key").read_bytes())
    public = json.loads((tmp_path / "key.pub").read_bytes())
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert private["seed"] not in result.stdout + result.stderr
    raw = base64.b64decode(public["public"])
    assert public["keyid"] == private["keyid"] == hashlib.sha256(raw).hexdigest()
    assert json.loads(result.stdout)["keyid"] == public["keyid"]
    again = run("oneiricc", "keygen", "--out", tmp_path / "key")
    assert again.returncode == 2
    assert "already exists" in again.stderr


def test_sign_then_verify_exit_codes_and_json(signer: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    sign(signer, out, 3, "k1", "k3")
    ok = run("oneiric", "verify", out, "--trust", signer["trust"], *PROD, "--format", "json")
    assert ok.returncode == 0, ok.stderr
    document = json.loads(ok.stdout)
    assert document["valid"]
    assert document["serial"] == 3
    assert document["target"] == "prod"
    assert document["plan_digest"] == "sha256:" + hashlib.sha256(PROD_PLAN).hexdigest()

    wrong = run("oneiric", "verify", out, "--trust", signer["trust"], "--target", "dev")
    assert wrong.returncode == 1
    assert "rejected [target]" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    missing = run(
        "oneiric",
        "verify",
        tmp_path / "nope.json",
        "--trust",
        signer["trust"],
        *PROD,
        "--format",
        "json",
    )
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["check"] == "transfer"


def test_add_signature_to_an_existing_manifest(signer: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    sign(signer, out, 1, "k1")
    one = run("oneiric", "verify", out, "--trust", signer["trust"], *PROD, "--format", "json")
    assert one.returncode == 1
    assert json.loads(one.stdout)["check"] == "threshold"
    payload_before = json.loads(out.read_bytes())["payload"]
    added = run("oneiricc", "sign", "--add-to", out, "--key", signer["k2"], "--out", out)
    assert added.returncode == 0, added.stderr
    assert json.loads(out.read_bytes())["payload"] == payload_before  # exact payload kept
    two = run("oneiric", "verify", out, "--trust", signer["trust"], *PROD)
    assert two.returncode == 0, two.stderr


def test_plan_by_url_next_to_the_manifest(signer: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    sign(signer, out, 1, "k1", "k2", extra=("--plan-url", "prod.plan.json"))
    assert (
        "data" not in json.loads(base64.b64decode(json.loads(out.read_bytes())["payload"]))["plan"]
    )
    assert run("oneiric", "verify", out, "--trust", signer["trust"], *PROD).returncode == 0
    signer["plan"].write_bytes(PROD_PLAN.replace(b'"prod"', b'"prox"', 1))
    tampered = run("oneiric", "verify", out, "--trust", signer["trust"], *PROD, "--format", "json")
    assert tampered.returncode == 1
    assert json.loads(tampered.stdout)["check"] == "plan-digest"


def test_trust_rotation_needs_both_thresholds(signer: dict[str, Path], tmp_path: Path) -> None:
    for name in ("n1", "n2"):
        signer[name] = tmp_path / name
        public = write_private_key(signer[name], SigningKey.generate())
        (tmp_path / f"{name}.pub").write_bytes(public_key_bytes(public))
    new_trust = tmp_path / "new-trust.json"
    assert (
        run(
            "oneiricc",
            "trust",
            "init",
            "--threshold",
            "2",
            "--version",
            "2",
            "--out",
            new_trust,
            "--key",
            tmp_path / "n1.pub",
            "--key",
            tmp_path / "n2.pub",
            "--key",
            tmp_path / "k3.pub",
        ).returncode
        == 0
    )
    old_bytes = signer["trust"].read_bytes()

    def rotation(*keys: str) -> Path:
        out = tmp_path / f"rotation-{'-'.join(keys)}.json"
        args = [arg for k in keys for arg in ("--key", str(signer[k]))]
        result = run("oneiricc", "trust", "sign", new_trust, *args, "--out", out)
        assert result.returncode == 0, result.stderr
        return out

    for keys, needed in ((("n1", "n2"), "current keys"), (("k1", "k2"), "new keys")):
        refused = run(
            "oneiric",
            "trust",
            "rotate",
            rotation(*keys),
            "--trust",
            signer["trust"],
            "--format",
            "json",
        )
        assert refused.returncode == 1, refused.stdout
        document = json.loads(refused.stdout)
        assert document["check"] == "rotation"
        assert needed in document["error"]
        assert signer["trust"].read_bytes() == old_bytes

    rotated = run(
        "oneiric", "trust", "rotate", rotation("k1", "k2", "n1", "n2"), "--trust", signer["trust"]
    )
    assert rotated.returncode == 0, rotated.stderr
    assert signer["trust"].read_bytes() == new_trust.read_bytes()
    old_signed, new_signed = tmp_path / "old.json", tmp_path / "new.json"
    sign(signer, old_signed, 1, "k1", "k2")
    sign(signer, new_signed, 1, "n1", "k3")
    assert run("oneiric", "verify", new_signed, "--trust", signer["trust"], *PROD).returncode == 0
    assert run("oneiric", "verify", old_signed, "--trust", signer["trust"], *PROD).returncode == 1
    replay = run(
        "oneiric",
        "trust",
        "rotate",
        rotation("n1", "n2"),
        "--trust",
        signer["trust"],
        "--format",
        "json",
    )
    assert replay.returncode == 1
    assert "not higher" in json.loads(replay.stdout)["error"]


def test_remote_sync_falls_back_to_last_good_when_unreachable(
    keys: tuple[Key, Key, Key], trust_file: Path, tmp_path: Path, server: Server
) -> None:
    state = tmp_path / "state"
    server.routes["/m"] = Route(manifest(keys[:2], serial=5))
    args = ("--trust", trust_file, "--state", state, *PROD, "--format", "json")
    first = run("oneiric", "remote-sync", "--manifest", server.url("/m"), *args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["status"] == "accepted"
    stored = (state / "manifests" / "prod" / "manifest.dsse.json").read_bytes()
    del server.routes["/m"]
    offline = run("oneiric", "remote-sync", "--manifest", server.url("/m"), *args)
    assert offline.returncode == 2
    document = json.loads(offline.stdout)
    assert document["check"] == "transfer"
    assert document["last_good"]["serial"] == 5
    assert Path(document["last_good"]["plan_path"]).read_bytes() == PROD_PLAN
    assert (state / "manifests" / "prod" / "manifest.dsse.json").read_bytes() == stored


def test_remote_sync_watch_survives_bad_and_missing_manifests(
    keys: tuple[Key, Key, Key], trust_file: Path, tmp_path: Path, server: Server
) -> None:
    state = tmp_path / "state"
    server.routes["/m"] = Route(manifest(keys[:2], serial=5), etag='"five"')
    child = spawn(
        "oneiric",
        "remote-sync",
        "--manifest",
        server.url("/m"),
        "--trust",
        trust_file,
        "--state",
        state,
        *PROD,
        "--watch",
        "--interval",
        "0.1",
        "--timeout",
        "2",
    )
    log = Lines(child.stderr)  # type: ignore[arg-type]
    try:

        def event(status: str, serial: int | None = None):  # type: ignore[no-untyped-def]
            def match(line: str) -> bool:
                record = json.loads(line)
                return record.get("status") == status and serial in (None, record.get("serial"))

            return json.loads(log.wait_for(match))

        event("accepted", 5)
        event("unchanged")  # a 304 thanks to If-None-Match
        server.routes["/m"] = Route(manifest(keys[:2], serial=4))  # rollback
        assert event("rejected")["check"] == "rollback"
        server.routes["/m"] = Route(b'{"payload": ')  # garbage
        assert event("rejected")["check"] == "json"
        del server.routes["/m"]  # gone
        record = event("error")
        assert record["check"] == "transfer"
        assert record["last_good"]["serial"] == 5
        server.routes["/m"] = Route(manifest(keys[1:], serial=6))
        record = event("accepted", 6)
        assert record["counts"]["rejected"] >= 2
        assert record["counts"]["error"] >= 1
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=20)
    assert child.returncode == 0
    stopped = json.loads(log.wait_for(lambda line: json.loads(line).get("event") == "stopped"))
    assert stopped["counts"]["accepted"] == 2
    # the counts `oneiric run --http` on this state directory serves as metrics
    from oneiric._ops.metrics import remote_sync_metrics

    snapshot = json.loads((state / "remote-sync.json").read_bytes())
    assert snapshot["counts"] == stopped["counts"]
    samples = {
        (s.name, tuple(s.labels.items())): s.value
        for family in remote_sync_metrics(state / "remote-sync.json")
        for s in family.samples
    }
    for outcome in ("accepted", "unchanged", "rejected", "error"):
        key = ("oneiric_remote_syncs_total", (("outcome", outcome),))
        assert samples[key] == stopped["counts"].get(outcome, 0)
    last = samples[("oneiric_remote_sync_last_poll_timestamp_seconds", ())]
    assert last == snapshot["written_at"] > 0
    assert b'"serial":6' in base64.b64decode(
        json.loads((state / "manifests" / "prod" / "manifest.dsse.json").read_bytes())["payload"]
    )
    assert server.requests[1][1].get("If-None-Match") == '"five"'


@pytest.mark.parametrize(
    "pause",
    ["plans/", "manifest.dsse.json"],
    ids=["killed-writing-plan", "killed-writing-manifest"],
)
def test_sigkill_while_persisting_leaves_old_or_new_state(
    keys: tuple[Key, Key, Key], trust_file: Path, tmp_path: Path, pause: str
) -> None:
    """SIGKILL a real `remote-sync` inside the write→rename window (test hook in state.py)."""
    state = tmp_path / "state"
    store = state / "manifests" / "prod"
    old = tmp_path / "old.json"
    old.write_bytes(manifest(keys[:2], serial=5))
    args = ("--trust", trust_file, "--state", state, *PROD)
    assert run("oneiric", "remote-sync", "--manifest", old, *args).returncode == 0
    before = {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    new = tmp_path / "new.json"
    new.write_bytes(manifest(keys[:2], serial=6, plan=variant_plan("-v6")))

    child = spawn(
        "oneiric",
        "remote-sync",
        "--manifest",
        new,
        *args,
        env={"ONEIRIC_TEST_PAUSE_BEFORE_REPLACE": f"30:{pause}"},
    )
    log = Lines(child.stderr)  # type: ignore[arg-type]
    line = log.wait_for(lambda line: line.startswith("oneiric-test: paused before replace"))
    assert pause in line
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=20)
    assert child.returncode == -signal.SIGKILL
    assert list(store.rglob("*.tmp")), "the kill happened with a temporary file on disk"
    after = {
        p.name: p.read_bytes()
        for p in store.rglob("*")
        if p.is_file() and not p.name.endswith(".tmp")
    }
    # The old state, whole: the old manifest and the plan it pins.  Killed after the
    # new plan's rename, that plan may also be there, referenced by nothing yet.
    orphans = set(after) - set(before)
    assert orphans <= {hashlib.sha256(variant_plan("-v6")).hexdigest() + ".json"}
    assert {name: after[name] for name in before} == before
    # the stored manifest inlines its plan, so it verifies as a file on its own
    assert (
        run(
            "oneiric", "verify", store / "manifest.dsse.json", "--trust", trust_file, *PROD
        ).returncode
        == 0
    )
    resumed = run("oneiric", "remote-sync", "--manifest", new, *args, "--format", "json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["serial"] == 6
    assert not list(store.rglob("*.tmp"))
    assert (store / "manifest.dsse.json").read_bytes() == new.read_bytes()
    assert len(list((store / "plans").iterdir())) == 1  # the old plan and leftovers are gone


def test_target_must_be_pinned_or_explicitly_given_up(
    keys: tuple[Key, Key, Key], trust_file: Path, tmp_path: Path
) -> None:
    """A validly signed dev manifest offered to a prod machine: refused, nothing stored."""
    dev = tmp_path / "dev.dsse.json"
    dev.write_bytes(manifest(keys[:2], serial=9, target="dev", plan=DEV_PLAN))
    state = tmp_path / "state"
    for command in (("verify", dev), ("remote-sync", "--manifest", dev, "--state", state)):
        unpinned = run("oneiric", *command, "--trust", trust_file)
        assert unpinned.returncode == 2, unpinned.stderr
        assert "--target" in unpinned.stderr
        assert "--any-target" in unpinned.stderr
        refused = run("oneiric", *command, "--trust", trust_file, *PROD, "--format", "json")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert json.loads(refused.stdout)["check"] == "target"
        assert not (state / "manifests" / "dev").exists()
    anything = run(
        "oneiric",
        "remote-sync",
        "--manifest",
        dev,
        "--trust",
        trust_file,
        "--state",
        state,
        "--any-target",
    )
    assert anything.returncode == 0, anything.stderr
    assert (state / "manifests" / "dev" / "manifest.dsse.json").read_bytes() == dev.read_bytes()
    help_text = run("oneiric", "remote-sync", "--help").stdout
    assert "gives up target" in " ".join(help_text.split())


def test_sign_refuses_an_expiry_beyond_the_validity_window(
    signer: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "m.json"
    forever = run(
        "oneiricc",
        "--format",
        "json",
        "sign",
        signer["plan"],
        "--key",
        signer["k1"],
        "--serial",
        "1",
        "--expires",
        "9999-12-31T23:59:59Z",
        "--out",
        out,
    )
    assert forever.returncode == 2, forever.stdout
    assert json.loads(forever.stdout)["check"] == "validity"
    assert not out.exists()
    short = tmp_path / "short-trust.json"
    made = run(
        "oneiricc",
        "trust",
        "init",
        "--key",
        tmp_path / "k1.pub",
        "--threshold",
        "1",
        "--max-validity",
        "1h",
        "--out",
        short,
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(short.read_bytes())["max_validity_seconds"] == 3600
    common = ("--key", signer["k1"], "--serial", "1", "--out", out, "--trust", short)
    too_long = run("oneiricc", "sign", signer["plan"], "--expires", "2h", *common)
    assert too_long.returncode == 2
    assert "max_validity_seconds (3600 s" in too_long.stderr
    assert not out.exists()
    ok = run("oneiricc", "sign", signer["plan"], "--expires", "50m", *common)
    assert ok.returncode == 0, ok.stderr
    verified = run("oneiric", "verify", out, "--trust", short, *PROD)
    assert verified.returncode == 0, verified.stderr
