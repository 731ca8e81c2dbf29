"""Make-before-break swaps on the real engine, with real concurrent callers (threads)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest
import rtcomponents
import structlog
from oneiric._lifecycle.runtime import (
    PlanRejected,
    RolledBack,
    Runtime,
    Superseded,
    SwapAborted,
)
from planbuild import component, plan

pytestmark = pytest.mark.anyio

CACHE = "adapter:cache"
# A hang (sleep in a factory, health check or close) far longer than the 100 ms timeouts
# under test; "returned before the hang ended" is the property, robust on a loaded machine.
HANG_MS = 2500
NOT_THE_HANG_S = HANG_MS / 1000 - 0.5


async def until_event(event: tuple[str, str], timeout_s: float = HANG_MS / 1000 + 10) -> None:
    """Wait until `rtcomponents.EVENTS` holds (what, tag) (a late worker's cleanup)."""
    deadline = time.monotonic() + timeout_s
    while event not in [e[:2] for e in rtcomponents.EVENTS]:
        assert time.monotonic() < deadline, f"never saw {event}"
        await anyio.sleep(0.05)


def live_tags() -> set[str]:
    return {store.tag for store in rtcomponents.LIVE}


async def started(*components: dict) -> Runtime:  # type: ignore[type-arg]
    runtime = Runtime()
    await runtime.apply(plan(*components))
    return runtime


async def test_start_binds_in_activation_order_and_stop_cleans_up_in_reverse() -> None:
    runtime = await started(component("service:orders", requires=[CACHE]), component(CACHE))
    assert runtime.handle("service:orders").via(CACHE) == "orders-one->cache-one"
    assert [e[:2] for e in rtcomponents.EVENTS] == [
        ("activate", "cache-one"),
        ("activate", "orders-one"),
    ]
    assert await runtime.stop() == []
    assert [e[:2] for e in rtcomponents.EVENTS[2:]] == [
        ("close", "orders-one"),
        ("close", "cache-one"),
    ]
    assert not rtcomponents.LIVE


async def test_swap_changes_only_changed_components_and_dependents_see_the_new_one(
    callers,  # type: ignore[no-untyped-def]
) -> None:
    orders = component("service:orders", requires=[CACHE])
    runtime = await started(orders, component(CACHE, "memory"))
    old_orders = next(s for s in rtcomponents.LIVE if s.tag == "orders-one")
    with callers(8, lambda: runtime.handle("service:orders").via(CACHE)) as calls:
        await anyio.sleep(0.05)
        report = await runtime.apply(plan(orders, component(CACHE, "redis")))
        await anyio.sleep(0.05)
    assert report.changed == [CACHE]
    assert report.added == []
    assert report.removed == []
    assert calls.failures == []
    # The dependent kept its instance and now reaches the new cache through its handle.
    assert old_orders in rtcomponents.LIVE
    assert runtime.handle("service:orders").via(CACHE) == "orders-one->cache-redis"
    assert live_tags() == {"orders-one", "cache-redis"}


async def test_concurrent_callers_see_exactly_old_or_new_never_none(callers) -> None:  # type: ignore[no-untyped-def]
    runtime = await started(component(CACHE, "old"))
    handle = runtime.handle(CACHE)
    with callers(16, handle.who) as calls:
        await anyio.sleep(0.05)
        await runtime.apply(plan(component(CACHE, "new")))
        await anyio.sleep(0.05)
    assert calls.failures == []
    assert calls.total > 100
    for seen in calls.results:
        assert set(seen) <= {"cache-old", "cache-new"}
        # Once a caller has seen the new instance it never sees the old one again.
        first_new = seen.index("cache-new")
        assert "cache-old" not in seen[first_new:]
    assert all(seen[-1] == "cache-new" for seen in calls.results)


async def test_unhealthy_new_instance_leaves_old_bound_with_zero_failed_calls(callers) -> None:  # type: ignore[no-untyped-def]
    runtime = await started(component(CACHE, "old"))
    before = runtime.plan
    with callers(8, runtime.handle(CACHE).who) as calls:
        with pytest.raises(SwapAborted, match="health check returned False"):
            await runtime.apply(plan(component(CACHE, "new", config={"unhealthy": True})))
        await anyio.sleep(0.05)
    assert calls.failures == []
    assert {r for seen in calls.results for r in seen} == {"cache-old"}
    assert runtime.plan is before
    assert live_tags() == {"cache-old"}  # the failed instance was torn down


async def test_warming_instance_gets_no_traffic(callers) -> None:  # type: ignore[no-untyped-def]
    runtime = await started(component(CACHE, "old"))
    new = component(CACHE, "new", config={"activate_sleep_ms": 150, "health_sleep_ms": 50})
    with callers(8, runtime.handle(CACHE).who):
        await runtime.apply(plan(new))
    store = next(s for s in rtcomponents.LIVE if s.tag == "cache-new")
    # Its pre-bind health check ran after 150 ms of warming under load: it had had no call.
    assert store.calls_seen_by_health[0] == 0
    assert store.calls > 0


async def test_activation_that_raises_aborts_and_leaves_old_untouched() -> None:
    runtime = await started(component(CACHE, "old"))
    with pytest.raises(SwapAborted, match="refuses to activate"):
        await runtime.apply(plan(component(CACHE, "new", config={"fail_activate": True})))
    assert runtime.handle(CACHE).who() == "cache-old"
    assert live_tags() == {"cache-old"}


async def test_activation_that_hangs_past_its_timeout_aborts() -> None:
    runtime = await started(component(CACHE, "old"))
    slow = component(CACHE, "new", config={"activate_sleep_ms": HANG_MS}, activate_timeout_ms=100)
    started_at = time.monotonic()
    with pytest.raises(SwapAborted, match=r"activation exceeded 0.1s"):
        await runtime.apply(plan(slow))
    assert time.monotonic() - started_at < NOT_THE_HANG_S
    assert runtime.handle(CACHE).who() == "cache-old"
    # The abandoned worker makes, then closes, the late instance after the hang: wait for
    # it here, so it cannot land in a later test's events.
    deadline = time.monotonic() + HANG_MS / 1000 + 10
    while ("close", "cache-new") not in [e[:2] for e in rtcomponents.EVENTS]:
        assert time.monotonic() < deadline, "the late instance was never cleaned up"
        await anyio.sleep(0.05)
    assert live_tags() == {"cache-old"}


async def test_a_hang_midway_through_a_batch_of_sync_activations_aborts_and_cleans_up() -> None:
    # Many sync factories share one worker thread; the third one hangs past its timeout.
    components = [component(f"adapter:a{i}", f"p{i}") for i in range(5)]
    components[2] = component(
        "adapter:a2", "p2", config={"activate_sleep_ms": HANG_MS}, activate_timeout_ms=100
    )
    runtime = Runtime()
    started_at = time.monotonic()
    with pytest.raises(SwapAborted, match=r"adapter:a2: activation exceeded 0.1s"):
        await runtime.apply(plan(*components))
    assert time.monotonic() - started_at < NOT_THE_HANG_S  # not the hang the factory takes
    assert runtime.plan is None
    assert runtime.handles == {}
    # Made before the hang: torn down in reverse.  The late instance is cleaned up by the
    # abandoned worker once its factory returns; nothing after it was activated.
    await until_event(("close", "a2-p2"))
    ours = {f"a{i}-p{i}" for i in range(5)}  # (an earlier test's abandoned worker may finish now)
    assert [e[:2] for e in rtcomponents.EVENTS if e[1] in ours] == [
        ("activate", "a0-p0"),
        ("activate", "a1-p1"),
        ("activate", "a2-p2"),
        ("close", "a1-p1"),
        ("close", "a0-p0"),
        ("close", "a2-p2"),
    ]
    assert not {store.tag for store in rtcomponents.LIVE} & ours


async def test_health_checks_share_a_worker_and_a_hung_one_times_out_alone() -> None:
    from oneiric._lifecycle.runtime import check_health

    runtime = await started(
        component("adapter:a"),
        component("adapter:b", health_timeout_ms=100),
        component("adapter:c"),
        component(CACHE),
    )
    # Healthy at activation; now b's check hangs past its timeout and c's fails.
    runtime.instances["adapter:b"].value.health_sleep_ms = HANG_MS
    runtime.instances["adapter:c"].value.unhealthy = True
    started_at = time.monotonic()
    problems = await check_health(list(runtime.instances.values()))
    assert time.monotonic() - started_at < NOT_THE_HANG_S
    assert problems == {
        "adapter:a": None,
        "adapter:b": "health check exceeded 0.1s",
        "adapter:c": "health check returned False",
        CACHE: None,
    }
    await anyio.sleep(HANG_MS / 1000)
    assert await runtime.stop() == []


async def test_a_cleanup_that_hangs_at_stop_is_reported_and_the_others_still_run() -> None:
    runtime = await started(
        component("adapter:a"),
        component("adapter:b", config={"close_sleep_ms": HANG_MS}, drain_timeout_ms=100),
        component("adapter:c"),
    )
    started_at = time.monotonic()
    assert await runtime.stop() == ["adapter:b"]
    assert time.monotonic() - started_at < NOT_THE_HANG_S
    assert runtime.handles == {}
    assert runtime.cleanup_failures == 1
    await until_event(("close", "b-one"))  # the abandoned worker finishes b's close late
    ours = {"a-one", "b-one", "c-one"}  # (an earlier test's abandoned worker may finish now)
    assert [e[:2] for e in rtcomponents.EVENTS if e[0] == "close" and e[1] in ours] == [
        ("close", "c-one"),
        ("close", "a-one"),
        ("close", "b-one"),
    ]
    assert runtime.cleanup_failures == 1


async def test_in_flight_calls_on_the_old_instance_finish_before_its_cleanup() -> None:
    runtime = await started(component(CACHE, "old"))
    handle = runtime.handle(CACHE)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(handle.slow(0.3))) for _ in range(5)]
    for thread in threads:
        thread.start()
    await anyio.sleep(0.05)
    old = next(s for s in rtcomponents.LIVE if s.tag == "cache-old")
    assert old.inflight == 5
    await runtime.apply(plan(component(CACHE, "new")))
    for thread in threads:
        thread.join(5)
    assert results == ["cache-old"] * 5  # no call failed, none was cut short
    assert old.closed
    assert old.inflight_at_close == 0
    assert handle.who() == "cache-new"


async def test_failed_cleanup_of_the_old_instance_keeps_the_new_one_bound() -> None:
    runtime = await started(component(CACHE, "old", config={"fail_close": True}))
    with structlog.testing.capture_logs() as logs:
        report = await runtime.apply(plan(component(CACHE, "new")))
    assert report.cleanup_failures == [CACHE]
    assert runtime.handle(CACHE).who() == "cache-new"
    failed = [e for e in logs if e["event"] == "cleanup failed"]
    assert failed
    assert failed[0]["provider"] == "old"
    assert "fails to close" in failed[0]["error"]


async def test_probation_failure_rolls_back_to_the_old_instance(callers) -> None:  # type: ignore[no-untyped-def]
    runtime = await started(component(CACHE, "old"))
    before = runtime.plan
    with callers(8, runtime.handle(CACHE).who) as calls:
        with pytest.raises(RolledBack, match="probation"):
            await runtime.apply(plan(component(CACHE, "new", config={"fail_probation": True})))
        await anyio.sleep(0.05)
    assert calls.failures == []
    assert runtime.plan is before
    assert runtime.handle(CACHE).who() == "cache-old"
    assert live_tags() == {"cache-old"}  # the old instance was never cleaned up


async def test_rejected_plan_changes_nothing_and_the_next_valid_plan_applies() -> None:
    runtime = await started(component(CACHE, "old"))
    before = runtime.plan
    tampered = component(CACHE, "new")
    tampered["pin"]["sha256"] = "0" * 64
    with pytest.raises(PlanRejected) as info:
        await runtime.apply(plan(tampered))
    message = str(info.value)
    assert "adapter:cache" in message
    assert "0" * 64 in message
    assert rtcomponents.LIVE
    assert live_tags() == {"cache-old"}
    assert runtime.plan is before
    await runtime.apply(plan(component(CACHE, "new")))
    assert runtime.handle(CACHE).who() == "cache-new"


async def test_distribution_version_mismatch_is_refused_naming_expected_and_found() -> None:
    bad = component(CACHE)
    bad["pin"].update(distribution="oneiric-runtime", version="99.0")
    with pytest.raises(PlanRejected, match=r"adapter:cache.*expected 99.0, found 0.1.0"):
        await started(bad)


async def test_adding_b_and_repointing_a_activates_b_first_and_removes_stale_last() -> None:
    runtime = await started(
        component("service:a", requires=["adapter:old"]), component("adapter:old")
    )
    rtcomponents.EVENTS.clear()
    report = await runtime.apply(
        plan(component("service:a", requires=["adapter:b"]), component("adapter:b"))
    )
    assert report.added == ["adapter:b"]
    assert report.changed == ["service:a"]
    assert report.removed == ["adapter:old"]
    assert [e[:2] for e in rtcomponents.EVENTS] == [
        ("activate", "b-one"),
        ("activate", "a-one"),
        ("close", "a-one"),
        ("close", "old-one"),
    ]
    assert runtime.handle("service:a").via("adapter:b") == "a-one->b-one"
    with pytest.raises(KeyError):
        runtime.handle("adapter:old")


async def test_v2_and_v3_back_to_back_end_on_v3_with_nothing_leaked() -> None:
    runtime = await started(component(CACHE, "v1"))
    v2 = plan(component(CACHE, "v2", config={"activate_sleep_ms": 100}))
    v3 = plan(component(CACHE, "v3"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(runtime.apply, v2)
        await anyio.sleep(0.01)
        tg.start_soon(runtime.apply, v3)
    assert runtime.plan == v3
    assert runtime.handle(CACHE).who() == "cache-v3"
    assert live_tags() == {"cache-v3"}
    await runtime.stop()
    assert not rtcomponents.LIVE


async def test_function_components_get_their_config_as_keyword_arguments() -> None:
    runtime = await started(
        component("task:stamp", impl="rtcomponents:stamp", config={"suffix": "!"})
    )
    assert runtime.handle("task:stamp")("hi") == "hi!"


async def test_a_use_block_holds_the_old_instance_until_it_ends() -> None:
    runtime = await started(component(CACHE, "old"))
    handle = runtime.handle(CACHE)
    closed_during_block: list[bool] = []

    async def hold() -> None:
        with handle.use() as store:
            await anyio.sleep(0.3)
            closed_during_block.append(store.closed)
            assert store.who() == "cache-old"

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await anyio.sleep(0.05)
        report = await runtime.apply(plan(component(CACHE, "new")))
    assert closed_during_block == [False]
    assert report.total_seconds >= 0.2  # the swap waited for the block before cleanup


async def test_a_swap_superseded_before_bind_is_torn_down_unserved() -> None:
    """A newer plan arrives while the new instances are made: nothing is bound, what was
    made is closed, the old instance keeps serving (no failure counted)."""
    runtime = await started(component(CACHE, "old"), component("adapter:extra", "old"))
    newer = plan(component(CACHE, "new"), component("adapter:extra", "new"))

    def superseded() -> bool:  # the newer write lands once the first new instance exists
        return ("activate", "cache-new") in [e[:2] for e in rtcomponents.EVENTS]

    with pytest.raises(Superseded):
        await runtime.apply(newer, superseded=superseded)
    assert runtime.handle(CACHE).who() == "cache-old"
    assert runtime.handle("adapter:extra").who() == "extra-old"
    assert ("close", "cache-new") in [e[:2] for e in rtcomponents.EVENTS]
    assert ("activate", "extra-new") not in [e[:2] for e in rtcomponents.EVENTS]
    assert live_tags() == {"cache-old", "extra-old"}
    assert (await runtime.apply(newer)).changed == [CACHE, "adapter:extra"]
    assert runtime.handle(CACHE).who() == "cache-new"
