"""Events: routing, filters, fan-out, retries, concurrency limits, dead letters, replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import wftasks
from oneiric._flows.events import EventBus, matches
from oneiric._flows.host import Unknown, activated, subplan
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import Workflows
from wfkit import build_plan, oneiric


def handler(
    key: str, topic: str, body: str = "", impl: str = "wftasks:handler", **config: Any
) -> str:
    items = [f'name = "{key}"', 'log = env("WF_LOG", "")']
    items += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    return (
        f'  event {key} "x" {{\n    on "{topic}"\n    impl "{impl}"\n'
        f"    config {{ {', '.join(items)} }}\n{body}  }}"
    )


async def with_bus(tmp_path: Path, stack: str, work: Any, timeout_s: float = 5.0) -> Any:
    plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    ids = EventBus.handler_ids(plan) + Workflows.task_ids(plan)
    async with activated(plan, ids) as runtime, Workflows(plan, runtime, store) as flows:
        bus = EventBus(plan, runtime, store, workflows=flows, handler_timeout_s=timeout_s)
        return await work(bus)


def handled(log: str, name: str) -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, "end") if e["name"] == name]


def test_filters() -> None:
    doc = {"topic": "t", "payload": {"region": "eu", "total": 120, "vip": True}, "headers": {}}
    region_in = {"op": "in", "path": ["payload", "region"], "value": ["eu", "us"]}
    assert matches(region_in, doc)
    assert not matches({**region_in, "op": "not in"}, doc)
    assert matches({"op": ">=", "path": ["payload", "total"], "value": 100}, doc)
    assert not matches({"op": "<", "path": ["payload", "total"], "value": 100}, doc)
    assert not matches({"op": "<", "path": ["payload", "region"], "value": 3}, doc)  # types differ
    assert not matches({"op": "==", "path": ["payload", "vip"], "value": 1}, doc)  # true is not 1
    assert not matches({"op": "==", "path": ["payload", "missing"], "value": None}, doc)
    assert matches({"not": {"exists": ["headers", "x-test"]}}, doc)
    assert matches({"or": [{"exists": ["payload", "nope"]}, region_in]}, doc)
    assert not matches({"and": [region_in, {"exists": ["payload", "nope"]}]}, doc)


@pytest.mark.anyio
async def test_broadcast_by_priority_with_filters(tmp_path: Path, wf_log: str) -> None:
    stack = "\n".join(
        [
            handler("low", "order.created"),
            handler("high", "order.created", "    priority 5\n"),
            handler(
                "eu_only", "order.created", '    where payload.region == "eu"\n    priority 3\n'
            ),
        ]
    )

    async def work(bus: EventBus) -> Any:
        assert bus.route("order.created").handlers == ["high", "eu_only", "low"]
        us = await bus.emit("order.created", {"region": "us"}, {"k": "v"})
        eu = await bus.emit("order.created", {"region": "eu"})
        with pytest.raises(Unknown, match=r'did you mean "order\.created"'):
            await bus.emit("order.creatd", {})
        return us, eu

    us, eu = await with_bus(tmp_path, stack, work)
    assert us.matched == ["high", "low"]
    assert us.skipped == ["eu_only"]
    assert us.ok
    assert eu.matched == ["high", "eu_only", "low"]
    assert len(handled(wf_log, "high")) == 2
    assert len(handled(wf_log, "eu_only")) == 1


@pytest.mark.anyio
async def test_exclusive_goes_to_the_first_matching_handler(tmp_path: Path, wf_log: str) -> None:
    stack = "\n".join(
        [
            handler(
                "vip",
                "pay",
                "    fanout exclusive\n    priority 9\n    where payload.vip == true\n",
            ),
            handler("anyone", "pay", "    fanout exclusive\n"),
        ]
    )

    async def work(bus: EventBus) -> Any:
        return await bus.emit("pay", {"vip": True}), await bus.emit("pay", {"vip": False})

    vip, plain = await with_bus(tmp_path, stack, work)
    assert vip.matched == ["vip"]
    assert vip.skipped == ["anyone"]
    assert plain.matched == ["anyone"]


@pytest.mark.anyio
async def test_concurrency_limit_holds_under_a_burst(tmp_path: Path, wf_log: str) -> None:
    stack = handler("limited", "burst", "    concurrency 3\n", sleep_ms=40)

    async def work(bus: EventBus) -> list[Any]:
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append(await bus.emit("burst", {"i": i}))

        async with anyio.create_task_group() as group:
            for i in range(30):
                group.start_soon(one, i)
        return results

    results = await with_bus(tmp_path, stack, work)
    assert len(results) == 30
    assert all(r.ok for r in results)
    running = [e["running"] for e in wftasks.calls(wf_log, "start")]
    assert len(running) == 30
    assert max(running) == 3  # reached, never exceeded


@pytest.mark.anyio
async def test_failing_and_hanging_handlers_do_not_hold_back_siblings(
    tmp_path: Path, wf_log: str
) -> None:
    stack = "\n".join(
        [
            handler("hangs", "t", "    priority 3\n", hang=True),
            handler("fails", "t", "    priority 2\n    retry 2 backoff 10ms\n", fail_times=5),
            handler("flaky", "t", "    priority 1\n    retry 3 backoff 10ms\n", fail_times=2),
            handler("fine", "t"),
        ]
    )

    async def work(bus: EventBus) -> Any:
        with anyio.fail_after(5):
            return await bus.emit("t", {"n": 1})

    delivery = await with_bus(tmp_path, stack, work, timeout_s=1.0)
    by = {o.handler: o for o in delivery.outcomes}
    assert by["fine"].status == "delivered"
    # Not held back: fine ran to its end before the hanging sibling's timeout fired.
    started = {e["name"]: e["t"] for e in wftasks.calls(wf_log, "start")}
    ended = {e["name"]: e["t"] for e in wftasks.calls(wf_log, "end")}
    assert ended["fine"] < started["hangs"] + 1.0
    assert by["flaky"].status == "delivered"
    assert by["flaky"].attempts == 3
    assert by["fails"].status == "dead-lettered"
    assert by["fails"].attempts == 2
    assert by["hangs"].status == "dead-lettered"
    assert by["hangs"].error == "timed out after 1s"
    assert not delivery.ok
    letters = FlowStore(tmp_path / "state").dead_letters()
    assert sorted(d.handler for d in letters) == ["fails", "hangs"]
    assert all(d.event_id == delivery.event_id and d.payload == {"n": 1} for d in letters)


def test_dead_letters_listed_and_replayed_from_the_command_line(tmp_path: Path) -> None:
    marker = tmp_path / "down"
    marker.touch()
    stack = (
        '  event flaky "x" {\n    on "order.paid"\n    impl "wftasks:flaky_handler"\n'
        f'    config {{ name = "flaky", log = env("WF_LOG", ""), marker = "{marker}" }}\n'
        "    retry 2 backoff 10ms\n  }"
    )
    _, plan = build_plan(tmp_path, stack)
    log, state = str(tmp_path / "calls.jsonl"), str(tmp_path / "state")
    common = ["--unsigned-plan", str(plan), "--state", state]
    env = {"WF_LOG": log}

    emitted = oneiric(
        "event",
        "emit",
        "order.paid",
        "--payload",
        '{"id": 5}',
        "--header",
        "X-Trace=abc",
        *common,
        "--format",
        "json",
        env=env,
    )
    assert emitted.returncode == 1, emitted.stderr
    outcome = json.loads(emitted.stdout)["outcomes"][0]
    assert outcome["status"] == "dead-lettered"
    assert outcome["attempts"] == 2
    letter = outcome["dead_letter"]

    listed = oneiric("event", "dead-letters", "--state", state, "--format", "json")
    (entry,) = json.loads(listed.stdout)["dead_letters"]
    assert entry["id"] == letter
    assert entry["headers"] == {"x-trace": "abc"}
    assert "downstream unavailable" in entry["error"]

    failed_again = oneiric("event", "replay", str(letter), *common, env=env)
    assert failed_again.returncode == 1
    assert "failed again" in failed_again.stdout
    marker.unlink()
    replayed = oneiric("event", "replay", str(letter), *common, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert "delivered, resolved" in replayed.stdout
    assert json.loads(
        oneiric("event", "dead-letters", "--state", state, "--format", "json").stdout
    ) == {"dead_letters": []}
    twice = oneiric("event", "replay", str(letter), *common, env=env)
    assert twice.returncode == 1
    assert "already replayed" in twice.stderr

    for args, message in {
        ("event", "emit", "order.payd", *common): 'did you mean "order.paid"',
        ("event", "emit", "order.paid", "--payload", "{x", *common): "--payload is not valid JSON",
        ("event", "emit", "order.paid", "--header", "novalue", *common): "is not KEY=VALUE",
        ("event", "replay", "999", *common): "no dead letter 999",
    }.items():
        result = oneiric(*args, env=env)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    starts = [e for e in wftasks.calls(log, "start")]
    assert len(starts) == 2 + 2 + 1  # emit (2 attempts), failed replay (2), good replay (1)


@pytest.mark.anyio
async def test_an_event_starts_a_workflow_once(tmp_path: Path, wf_log: str) -> None:
    stack = "\n".join(
        [
            '  task a "x" {\n    impl "wftasks:step"\n'
            '    config { name = "a", log = env("WF_LOG", "") }\n  }',
            '  workflow w "x" { node a }',
            '  event go "x" {\n    on "go"\n    impl "oneiric.events:start_workflow"\n'
            '    config { workflow = "w" }\n  }',
        ]
    )

    async def work(bus: EventBus) -> Any:
        first = await bus.emit("go", {"order": 1}, event_id="e1")
        again = await bus.emit("go", {"order": 1}, event_id="e1")  # redelivered
        return first, again

    first, again = await with_bus(tmp_path, stack, work)
    run_id = first.outcomes[0].result["run"]
    assert run_id == again.outcomes[0].result["run"] == "w-e1"
    record = FlowStore(tmp_path / "state").run(run_id)
    assert record is not None
    assert record.status == "succeeded"
    assert record.trigger == "event:go:e1"
    (call,) = wftasks.calls(wf_log, "start")
    assert call["input"] == {"order": 1}


@pytest.mark.anyio
async def test_cancelling_an_emit_cancels_its_deliveries(tmp_path: Path, wf_log: str) -> None:
    stack = "\n".join([handler("a", "t", hang=True), handler("b", "t", hang=True)])

    async def work(bus: EventBus) -> float:
        began = anyio.current_time()
        with anyio.move_on_after(0.3) as scope:
            await bus.emit("t", {"n": 1})
        assert scope.cancelled_caught
        return anyio.current_time() - began

    # Cancelled with the caller's scope, long before the handler timeout; nothing dead-lettered.
    assert await with_bus(tmp_path, stack, work, timeout_s=10.0) < 5.0
    assert sorted(e["name"] for e in wftasks.calls(wf_log, "start")) == ["a", "b"]
    assert FlowStore(tmp_path / "state").dead_letters() == []


@pytest.mark.anyio
async def test_deliveries_started_eagerly_keep_every_semantic(tmp_path: Path, wf_log: str) -> None:
    """Siblings whose first step finishes, suspends once, raises, hangs after a sync prefix,
    changes its payload, or enters a timeout of its own before suspending."""
    stack = "\n".join(
        [
            handler("touchy", "t", "    priority 7\n", impl="wftasks:touchy"),
            handler("quick", "t", "    priority 6\n"),
            handler("once", "t", "    priority 5\n", sleep_ms=5),
            handler("flaky", "t", "    priority 4\n    retry 2 backoff 10ms\n", fail_times=1),
            handler("hangs", "t", "    priority 3\n", hang=True),
            handler("own", "t", "    priority 2\n", impl="wftasks:touchy", own_timeout_ms=20),
        ]
    )
    names = ["touchy", "quick", "once", "flaky", "hangs", "own"]

    async def work(bus: EventBus) -> Any:
        caller = asyncio.current_task()
        deliveries = [await bus.emit("t", {"n": i}) for i in range(3)]
        assert caller is not None
        assert caller.cancelling() == 0
        return deliveries, {k: bus.runtime.handle(f"event:{k}").counts() for k in names}

    deliveries, counts = await with_bus(tmp_path, stack, work, timeout_s=0.3)
    for i, delivery in enumerate(deliveries):
        assert delivery.matched == names
        by = {o.handler: o for o in delivery.outcomes}
        for key in ("touchy", "quick", "once", "flaky"):
            assert by[key].status == "delivered", by[key]
            assert by[key].result == {"handled_by": key}
        assert by["flaky"].attempts == (2 if i == 0 else 1)  # raised on its first step, once
        assert by["hangs"].status == "dead-lettered"
        assert by["hangs"].error == "timed out after 0.3s"
        assert by["own"].status == "dead-lettered"
        assert by["own"].error is not None
        assert by["own"].error.startswith("TimeoutError")
    # Each handler decoded its own payload: the change of the first did not reach the others.
    for key in ("quick", "once", "flaky"):
        assert [e["payload"] for e in handled(wf_log, key)] == [{"n": i} for i in range(3)]
    for end in handled(wf_log, "touchy"):
        assert end["payload"] == end["again"] == {"n": end["payload"]["n"], "touched_by": "touchy"}
    # In-flight accounting is exact: (calls, failed calls, in flight) per handle.
    assert counts == {
        "touchy": (3, 0, 0),
        "quick": (3, 0, 0),
        "once": (3, 0, 0),
        "flaky": (4, 1, 0),
        "hangs": (3, 3, 0),
        "own": (3, 3, 0),
    }


@pytest.mark.anyio
async def test_a_live_swap_under_emits_loses_no_call_and_counts_none_twice(
    tmp_path: Path, wf_log: str
) -> None:
    """Handlers that finish in their first step and handlers that suspend, swapped live
    (new config) while four callers emit: every call is counted once, on one instance."""
    keys = ["h0", "h1", "h2", "h3"]
    before = "\n".join(
        handler(k, "t", sleep_ms=ms) for k, ms in zip(keys, [0, 0, 2, 5], strict=True)
    )
    after = "\n".join(
        handler(k, "t", sleep_ms=ms) for k, ms in zip(keys, [1, 0, 2, 0], strict=True)
    )
    plan, _ = build_plan(tmp_path / "before", before)
    swapped, _ = build_plan(tmp_path / "after", after)
    ids = EventBus.handler_ids(plan)
    async with activated(plan, ids) as runtime:
        bus = EventBus(plan, runtime, FlowStore(tmp_path / "state"))
        old = {k: runtime.handle(f"event:{k}").slot for k in keys}
        deliveries: list[Any] = []

        async def emitting() -> None:
            for i in range(40):
                deliveries.append(await bus.emit("t", {"i": i}))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(emitting)
            await anyio.sleep(0.05)
            report = await runtime.apply(subplan(swapped, ids))
        assert sorted(report.changed) == ["event:h0", "event:h3"]
        assert all(d.ok for d in deliveries)
        assert len(deliveries) == 160
        for key in keys:
            handle = runtime.handle(f"event:{key}")
            assert handle.counts() == (160, 0, 0)  # calls, failed calls, in flight
            retired = old[key]
            assert retired is not None
            assert retired.inflight == 0
            if f"event:{key}" in report.changed:
                current = handle.slot
                assert current is not None
                assert current is not retired
                assert retired.calls > 0
                assert current.calls > 0
                assert retired.calls + current.calls == 160


@pytest.mark.anyio
async def test_a_handler_swapped_from_async_to_sync_runs_in_a_thread(
    tmp_path: Path, wf_log: str
) -> None:
    keys = ["a", "b"]
    before = "\n".join(handler(k, "t", impl="wftasks:touchy") for k in keys)
    marker = str(tmp_path / "no-such-marker")
    after = "\n".join(
        [
            handler("a", "t", impl="wftasks:flaky_handler", marker=marker),
            handler("b", "t", impl="wftasks:touchy"),
        ]
    )
    plan, _ = build_plan(tmp_path / "before", before)
    swapped, _ = build_plan(tmp_path / "after", after)
    ids = EventBus.handler_ids(plan)
    async with activated(plan, ids) as runtime:
        bus = EventBus(plan, runtime, FlowStore(tmp_path / "state"))
        first = await bus.emit("t", {"n": 1})
        await runtime.apply(subplan(swapped, ids))
        second = await bus.emit("t", {"n": 2})
    assert [o.result for o in first.outcomes] == [{"handled_by": "a"}, {"handled_by": "b"}]
    assert second.ok
    assert [o.result for o in second.outcomes] == ["ok", {"handled_by": "b"}]
