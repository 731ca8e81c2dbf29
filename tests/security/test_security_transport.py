"""Attacks on the transport, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from oneiric._delivery.checks import Check, Rejected, TransferError
from oneiric._delivery.fetch import Fetcher
from oneiric._delivery.manifest import sync
from oneiric._delivery.store import State
from oneiric._delivery.trust import Trust
from seckit import PROD_PLAN, Key, Route, Server, manifest, variant_plan

Keys = tuple[Key, Key, Key]
CAP = 64 * 1024


def files(state: State) -> dict[str, bytes]:
    if not state.root.exists():
        return {}
    return {
        str(p.relative_to(state.root)): p.read_bytes()
        for p in state.root.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def served(keys: Keys, trust: Trust, state: State, fetcher: Fetcher, server: Server) -> State:
    """Serial 5 by URL, accepted: the last-known-good every attack must leave alone."""
    server.routes["/plans/prod.json"] = Route(PROD_PLAN)
    server.routes["/prod.dsse.json"] = Route(
        manifest(keys[:2], serial=5, plan_url="plans/prod.json")
    )
    assert sync(server.url("/prod.dsse.json"), trust, state, fetcher).status == "accepted"
    return state


def test_plan_by_relative_url_accepted(served: State, server: Server) -> None:
    assert [path for path, _ in server.requests] == ["/prod.dsse.json", "/plans/prod.json"]
    assert served.plan("prod", __import__("hashlib").sha256(PROD_PLAN).hexdigest()) == PROD_PLAN


def test_plan_served_with_other_bytes_than_its_digest(
    keys: Keys, trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    good = variant_plan("-v6")
    evil = variant_plan("-ev")  # same length, valid plan, other bytes
    assert len(good) == len(evil)
    server.routes["/plans/v6.json"] = Route(evil)
    server.routes["/prod.dsse.json"] = Route(
        manifest(keys[:2], serial=6, plan=good, plan_url="plans/v6.json")
    )
    before = files(served)
    with pytest.raises(Rejected) as caught:
        sync(server.url("/prod.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.PLAN_DIGEST
    assert files(served) == before


def test_plan_longer_than_pinned_is_abandoned_while_streaming(
    keys: Keys, trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    good = variant_plan("-v6")
    server.routes["/plans/v6.json"] = Route(b"x" * CAP, endless=True)
    server.routes["/prod.dsse.json"] = Route(
        manifest(keys[:2], serial=6, plan=good, plan_url="plans/v6.json")
    )
    before = files(served)
    with pytest.raises(Rejected) as caught:
        sync(server.url("/prod.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.PLAN_SIZE
    assert files(served) == before
    time.sleep(0.3)  # the server notices the closed socket at its next write
    assert server.sent["/plans/v6.json"] < 16 * 1024 * 1024  # it would have sent ~20 s worth


def test_plan_over_the_cap_is_not_even_requested(
    keys: Keys, trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    good = variant_plan("-v6")
    server.routes["/plans/v6.json"] = Route(good)
    server.routes["/prod.dsse.json"] = Route(
        manifest(keys[:2], serial=6, plan=good, plan_url="plans/v6.json")
    )
    with pytest.raises(Rejected) as caught:
        sync(server.url("/prod.dsse.json"), trust, served, fetcher, max_plan_bytes=len(good) - 1)
    assert caught.value.check is Check.SIZE
    assert "/plans/v6.json" not in [path for path, _ in server.requests]


def test_endless_manifest_is_abandoned_while_streaming(
    trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    server.routes["/big.dsse.json"] = Route(b" " * CAP, endless=True)
    before = files(served)
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        sync(server.url("/big.dsse.json"), trust, served, fetcher, max_manifest_bytes=CAP)
    assert caught.value.check is Check.SIZE
    assert time.monotonic() - started < 10  # the server would stream for 20 s
    assert files(served) == before
    time.sleep(0.3)
    assert server.sent["/big.dsse.json"] < 16 * 1024 * 1024


def test_declared_content_length_over_the_cap_refused_before_the_body(
    trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    server.routes["/big.dsse.json"] = Route(b"{}", content_length=10 * CAP, stall=30)
    started = time.monotonic()
    with pytest.raises(Rejected) as caught:
        sync(server.url("/big.dsse.json"), trust, served, fetcher, max_manifest_bytes=CAP)
    assert caught.value.check is Check.SIZE
    assert "Content-Length" in caught.value.message
    assert time.monotonic() - started < 10  # did not wait for the body stalled 30 s


def test_stalled_server_times_out(keys: Keys, trust: Trust, served: State, server: Server) -> None:
    server.routes["/slow.dsse.json"] = Route(manifest(keys[:2], serial=6), stall=30)
    before = files(served)
    started = time.monotonic()
    with Fetcher(timeout=0.5) as fetcher, pytest.raises(TransferError) as caught:
        sync(server.url("/slow.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.TIMEOUT
    assert time.monotonic() - started < 10  # the 0.5 s timeout, not the 30 s stall
    assert files(served) == before


def test_dripping_server_hits_the_overall_deadline(
    keys: Keys, trust: Trust, served: State, server: Server
) -> None:
    server.routes["/drip.dsse.json"] = Route(manifest(keys[:2], serial=6), drip=0.05)
    started = time.monotonic()
    with Fetcher(timeout=0.6) as fetcher, pytest.raises(TransferError) as caught:
        sync(server.url("/drip.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.TIMEOUT
    # The whole body would take minutes at 20 bytes a second; each byte is faster than
    # the per-read timeout, so only the overall deadline can end this.
    assert time.monotonic() - started < 10


def test_unreachable_source_is_a_transfer_error(
    trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    before = files(served)
    with pytest.raises(TransferError) as caught:
        sync(server.url("/missing.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.TRANSFER
    assert "404" in caught.value.message
    assert files(served) == before


def test_etag_answered_304_is_unchanged(
    keys: Keys, trust: Trust, served: State, fetcher: Fetcher, server: Server
) -> None:
    route = server.routes["/prod.dsse.json"]
    route.etag = '"v5"'
    first = sync(server.url("/prod.dsse.json"), trust, served, fetcher)
    assert (first.status, first.etag) == ("unchanged", '"v5"')
    second = sync(server.url("/prod.dsse.json"), trust, served, fetcher, etag=first.etag)
    assert second.status == "unchanged"
    assert second.accepted is None
    assert server.requests[-1][1].get("If-None-Match") == '"v5"'


def test_http_manifest_may_not_reference_a_local_file(
    keys: Keys, trust: Trust, served: State, fetcher: Fetcher, server: Server, tmp_path: Path
) -> None:
    plan = tmp_path / "p.json"
    plan.write_bytes(variant_plan("-v6"))
    server.routes["/prod.dsse.json"] = Route(
        manifest(keys[:2], serial=6, plan=plan.read_bytes(), plan_url=plan.as_uri())
    )
    with pytest.raises(Rejected) as caught:
        sync(server.url("/prod.dsse.json"), trust, served, fetcher)
    assert caught.value.check is Check.PAYLOAD
