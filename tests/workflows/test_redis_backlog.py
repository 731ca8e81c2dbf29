"""What an operator sees of a consumer group's backlog, and the emit de-dup window, against
a real `redis-server`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis as redis_py
from oneiric._flows.redis_events import RedisEvents
from oneiric._lifecycle import snapshots
from oneiric._ops.metrics import EventCounts, event_metrics
from oneiric._ops.page import _fleet
from oneiric._plan.model import Plan
from test_redis_events import Redis, _consumer, ends, picky, redis
from wfkit import build_plan, oneiric, wait_for

__all__ = ["redis"]  # a fixture

STREAM, GROUP = "oneiric:events:tick", "handler:slow"


def _sample(state: Path) -> dict[str, Any]:
    """The consumer's last backlog sample of its one group (its status file)."""
    (backlog,) = json.loads((state / "consumers" / "c.json").read_text())["backlog"]
    assert (backlog["topic"], backlog["stream"], backlog["group"]) == ("tick", STREAM, GROUP)
    return dict(backlog)


def _xinfo(client: redis_py.Redis) -> tuple[int, int]:
    (group,) = client.xinfo_groups(STREAM)  # type: ignore[union-attr]
    return int(group["pending"]), int(group["lag"])


def _emit(plan: Plan, url: str, n: int) -> None:
    async def emit() -> None:
        events = await RedisEvents.open(url, plan)
        try:
            for i in range(n):
                await events.emit("tick", i)
        finally:
            await events.close()

    anyio.run(emit)


@pytest.mark.slow
def test_a_slow_consumer_shows_its_group_backlog_grow_and_drain(
    tmp_path: Path, wf_log: str, redis: Redis
) -> None:
    plan, plan_path = build_plan(tmp_path, picky("slow", "tick", sleep_ms=500))
    state = tmp_path / "state"
    client = redis_py.Redis.from_url(redis.url)
    consumer = _consumer(plan_path, redis.url, state, "c", wf_log, "--prefetch", "2")
    try:
        wait_for(
            lambda: (
                (state / "consumers" / "c.json").exists()
                and _sample(state)["sampled_at"] is not None
            ),
            20,
            "the consumer's first sample",
        )
        assert (_sample(state)["pending"], _sample(state)["lag"]) == (0, 0)
        _emit(plan, redis.url, 20)
        # Growing: the sample a second later shows what the consumer has not acknowledged.
        grown = wait_for(lambda: (s := _sample(state))["lag"] and s["lag"] >= 10 and s, 5, "lag")
        assert grown["pending"] in (1, 2)  # --prefetch 2: at most 2 delivered at a time
        # Cross-checked against XINFO GROUPS read here: all 20 emitted, none acknowledged yet
        # beyond what the handler finished, and a sample taken between two reads lies between.
        before_at, before = time.time(), _xinfo(client)
        sample = wait_for(
            lambda: (s := _sample(state))["sampled_at"] > before_at and s, 5, "a new sample"
        )
        after = _xinfo(client)
        assert before[1] >= sample["lag"] >= after[1]
        assert sum(before) >= sample["pending"] + sample["lag"] >= sum(after)
        assert sample["error"] is None

        shown = oneiric("status", "--state", str(state), "--format", "json")
        assert shown.returncode == 1, shown.stderr  # no runtime: the consumers still listed
        (listed,) = json.loads(shown.stdout)["consumers"]
        (backlog,) = listed["backlog"]
        assert backlog["group"] == GROUP
        assert backlog["lag"] > 0
        text = oneiric("status", "--state", str(state)).stdout
        assert f"    group tick/{GROUP}: pending " in text
        page = _fleet(snapshots.fleet(state), time.time())
        assert f"<div class=backlog>tick/{GROUP}: pending " in page

        # Drained: every event handled, the group at 0/0, as XINFO GROUPS says too.
        wait_for(lambda: len(ends(wf_log, "slow")) >= 20, 30, "the twenty events")
        done_at = time.time()
        drained = wait_for(
            lambda: (s := _sample(state))["sampled_at"] > done_at and s, 5, "a sample after"
        )
        assert (drained["pending"], drained["lag"]) == (0, 0) == _xinfo(client)
        text = oneiric("status", "--state", str(state)).stdout
        assert f"    group tick/{GROUP}: pending 0  lag 0  (sampled " in text

        # Metrics: one sample per group, the freshest of the running consumers reading it,
        # however many consumers read it (a second one here: its copy, an older sample).
        older = json.loads((state / "consumers" / "c.json").read_text())
        older["consumer"] = "c2"
        older["backlog"][0] |= {"pending": 7, "lag": 7, "sampled_at": drained["sampled_at"] - 5}
        (state / "consumers" / "c2.json").write_text(json.dumps(older))
        found = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in event_metrics(state / "consumers", EventCounts())
            for s in family.samples
            if s.name.startswith("oneiric_event_group_")
        }
        labels = (("group", GROUP), ("stream", STREAM), ("topic", "tick"))
        assert sorted(found) == [
            ("oneiric_event_group_lag", labels),
            ("oneiric_event_group_pending", labels),
            ("oneiric_event_group_sample_age_seconds", labels),
        ]
        assert found["oneiric_event_group_pending", labels] == 0
        assert found["oneiric_event_group_lag", labels] == 0
        (state / "consumers" / "c2.json").unlink()

        # The broker down: the last known values stay, with their age and the error.
        redis.server.stop()
        stale = wait_for(lambda: (s := _sample(state))["error"] and s, 10, "a failed sample")
        assert (stale["pending"], stale["lag"]) == (0, 0)
        time.sleep(1.5)
        assert _sample(state)["sampled_at"] == stale["sampled_at"]
        assert "last sample failed: " in oneiric("status", "--state", str(state)).stdout
        redis.server.start()
        wait_for(lambda: _sample(state)["error"] is None, 30, "sampling to resume")
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(20) == 0
        client.close()


@pytest.mark.anyio
async def test_the_dedupe_window_is_a_url_parameter(tmp_path: Path, redis: Redis) -> None:
    plan, _ = build_plan(tmp_path, picky("h", "tick"))
    short = await RedisEvents.open(redis.url + "?dedupe=1", plan)
    never = await RedisEvents.open(redis.url + "?dedupe=0", plan)
    try:
        first = await short.emit("tick", 1, event_id="run-1-node")
        again = await short.emit("tick", 2, event_id="run-1-node")
        assert (first.queued, again.queued, again.entry) == (True, False, first.entry)
        await anyio.sleep(1.2)  # the window (1 s) over: the same id is appended again
        later = await short.emit("tick", 3, event_id="run-1-node")
        assert later.queued
        assert later.entry != first.entry
        both = [await never.emit("tick", i, event_id="run-2-node") for i in range(2)]
        assert [p.queued for p in both] == [True, True]
        assert both[0].entry != both[1].entry
        assert await never.client.exists("oneiric:emitted:tick:run-2-node") == 0
        assert await short.client.xlen("oneiric:events:tick") == 4
    finally:
        await short.close()
        await never.close()


@pytest.mark.parametrize("value", ["-1", "abc", "1.5"])
def test_a_bad_dedupe_value_is_exit_2_naming_it(tmp_path: Path, value: str) -> None:
    _, plan = build_plan(tmp_path, picky("h", "tick"))
    url = f"redis://127.0.0.1:1/0?dedupe={value}"
    common = ["--unsigned-plan", str(plan), "--state", str(tmp_path / "state")]
    bad = oneiric("event", "emit", "tick", "--events", url, *common)
    assert bad.returncode == 2
    assert f"URL parameter dedupe={value!r}: must be whole seconds, 0 or more" in bad.stderr
    assert "Traceback" not in bad.stderr
