"""Manifest verification of a ~1 MB plan, against two baselines measured in the same run.

* whole: `verify_all` on a 2-of-3 signed manifest with the plan inline: size cap,
  strict envelope JSON, two Ed25519 signatures over PAE, strict payload JSON and
  schema, freshness, plan size and sha256, strict plan JSON, the plan model's
  validation and its own digest (goal: ≤ 3x json.loads of the plan bytes).
* baseline: plain `json.loads` of the plan bytes.
* baseline: one bare Ed25519 verification of the same PAE bytes.
* parts: the manifest half (`verify_manifest`) and the plan half (`check_plan`).

Median of --repeat runs each, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from oneiric._delivery import dsse
from oneiric._delivery.fetch import Fetcher
from oneiric._delivery.keys import PublicKey
from oneiric._delivery.manifest import (
    MANIFEST_PAYLOAD_TYPE,
    check_plan,
    manifest_payload,
    verify_all,
    verify_manifest,
)
from oneiric._delivery.trust import parse_trust, trust_bytes
from oneiric._plan.model import Plan


def big_plan(size: int) -> bytes:
    """The golden prod plan with its components repeated (renamed) to about `size` bytes."""
    raw = json.loads(
        (Path(__file__).resolve().parent.parent / "golden" / "prod.plan.json").read_bytes()
    )
    raw.pop("digest")
    base = raw["components"]
    per = len(json.dumps(base)) / len(base)
    components = []
    for i in range(max(1, int(size / per))):
        item = json.loads(json.dumps(base[i % len(base)]))
        item["id"] += f"-{i}"
        item["key"] += f"-{i}"
        components.append(item)
    raw["components"] = components
    raw["activation_order"] = [c["id"] for c in components]
    return Plan.model_validate(raw).to_bytes()


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Best CPU time of `repeat` runs: on a shared, noisy 2-core machine the
    process's own CPU time is far steadier than wall time, and the minimum is
    the run least disturbed by others (every step here is single-threaded)."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        runs.append(time.process_time() - start)
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="plan size in bytes")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)

    plan = big_plan(args.size)
    keys = [SigningKey.generate() for _ in range(3)]
    public = [PublicKey.from_raw(bytes(k.verify_key)) for k in keys]
    trust = parse_trust(trust_bytes(1, 2, public), "bench trust")
    now = datetime.now(UTC)
    payload = manifest_payload("prod", 1, now + timedelta(days=1), plan, None)
    envelope = dsse.sign(
        MANIFEST_PAYLOAD_TYPE, payload, [(keys[0], public[0].keyid), (keys[1], public[1].keyid)]
    )
    data = envelope.to_bytes()
    message = dsse.pae(MANIFEST_PAYLOAD_TYPE, payload)
    signature = envelope.signatures[0].sig
    verifier = public[0].verifier()
    manifest = verify_manifest(data, trust, now=now).manifest
    # The same plan referenced by URL (digest + size pinned): the manifest is
    # small and the plan bytes arrive separately, as from a CDN.
    by_url = dsse.sign(
        MANIFEST_PAYLOAD_TYPE,
        manifest_payload("prod", 1, now + timedelta(days=1), plan, "https://cdn.example/p.json"),
        [(keys[0], public[0].keyid), (keys[1], public[1].keyid)],
    ).to_bytes()
    by_url_manifest = verify_manifest(by_url, trust, now=now).manifest

    def verify_by_url() -> None:
        check_plan(verify_manifest(by_url, trust, now=now).manifest, plan)

    assert by_url_manifest.plan.size == len(plan)

    with Fetcher() as fetcher:
        whole = timed(
            lambda: verify_all(data, "bench.dsse.json", trust, fetcher, now=now), args.repeat
        )
    loads = timed(lambda: json.loads(plan), args.repeat)
    ed25519 = timed(lambda: verifier.verify(message, signature), args.repeat)
    manifest_half = timed(lambda: verify_manifest(data, trust, now=now), args.repeat)
    plan_half = timed(lambda: check_plan(manifest, plan), args.repeat)
    whole_by_url = timed(verify_by_url, args.repeat)

    print(
        f"verify: plan {len(plan):,} bytes, {len(json.loads(plan)['components'])} components; "
        f"manifest {len(data):,} bytes (plan inline), 2-of-3 signatures; "
        f"best CPU time of {args.repeat}"
    )
    rows = [
        ("json.loads(plan)", loads),
        ("bare Ed25519 verify (PAE)", ed25519),
        ("verify_manifest (envelope, 2 sigs, payload)", manifest_half),
        ("check_plan (size, sha256, parse, validate)", plan_half),
        ("whole verification (verify_all), plan inline", whole),
        ("whole verification, plan by URL (manifest + plan)", whole_by_url),
    ]
    for name, seconds in rows:
        print(f"  {name:<50} {seconds * 1000:8.2f} ms   {seconds / loads:5.2f}x json.loads")
    for layout, seconds in (("inline", whole), ("by URL", whole_by_url)):
        ratio = seconds / loads
        verdict = "met" if ratio <= 3 else "NOT met"
        print(f"  goal: whole ≤ 3x json.loads, plan {layout} → {ratio:.2f}x ({verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
