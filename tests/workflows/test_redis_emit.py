"""Emitting from code follows the event transport: `event.dispatch` on Redis Streams.

Real `redis-server`, real `oneiric` processes: a workflow node's, a handler's
and an invoked action's `event.dispatch` append to the topic's stream (a
stable node id appended once), and separate `event consume` processes deliver.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis as redis_sync
import wftasks
from oneiric._flows import streams
from oneiric._flows.context import Following
from oneiric._flows.engine import follow
from oneiric._flows.host import activated
from oneiric._flows.store import FlowStore
from oneiric._flows.workers import RedisTasks, serve_worker
from oneiric._flows.workflows import Workflows
from oneiric._ops import tracing
from servers import free_port
from test_events import handler
from test_redis_events import _consumer
from test_tracing import Traced
from test_workflows import task
from wfkit import build_plan, oneiric, wait_for

FLOW = "oneiric.actions.flow"


def ends(log: str, name: str) -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, "end") if e["name"] == name]


def groups(url: str, stream: str) -> list[str]:
    client = redis_sync.Redis.from_url(url)
    try:
        return [g["name"].decode() for g in client.xinfo_groups(stream)]
    except redis_sync.ResponseError:  # no such stream yet
        return []
    finally:
        client.close()


def xlen(url: str, stream: str) -> int:
    client = redis_sync.Redis.from_url(url)
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


NODES = "\n".join(
    [
        handler("audit", "order.done"),
        task("a"),
        f'  task notify "x" {{ impl "{FLOW}:dispatch"\n    config {{ topic = "order.done" }} }}',
        task(
            "again",
            "wftasks:announce",
            "    retry 2 backoff 10ms\n",
            topic="order.done",
            fail_times=1,
        ),
        '  workflow main "x" {',
        "    a -> notify",
        "    a -> again",
        "  }",
    ]
)


@pytest.mark.slow
def test_a_workflow_node_emits_to_the_stream_once_and_a_consumer_delivers(
    tmp_path: Path, wf_log: str, redis_url: str
) -> None:
    _, plan = build_plan(tmp_path, NODES)
    state = tmp_path / "state"
    common = ["--events", redis_url, "--unsigned-plan", str(plan), "--state", str(state)]
    consumer = _consumer(plan, redis_url, state, "c", wf_log)
    try:
        run = oneiric("workflow", "run", "main", *common, "--format", "json")
        assert run.returncode == 0, run.stderr
        record = json.loads(run.stdout)
        rid = record["id"]
        stream = "oneiric:events:order.done"
        # Queued, not delivered: where it went, under the node's stable id.
        (notified,) = [n["result"] for n in record["nodes"] if n["name"] == "notify"]
        assert notified["event_id"] == f"{rid}-notify"
        assert (notified["topic"], notified["stream"], notified["queued"]) == (
            "order.done",
            stream,
            True,
        )
        assert "outcomes" not in notified
        # The retried node emitted twice under one id: appended once, the second told so.
        first, second = [e["emitted"] for e in wftasks.calls(wf_log, "emitted")]
        assert first["event_id"] == second["event_id"] == f"{rid}-again"
        assert (first["queued"], second["queued"]) == (True, False)
        assert first["entry"] == second["entry"]
        invoked = oneiric(
            "action", "invoke", "event.dispatch", *common, "--format", "json",
            "--payload", json.dumps({"topic": "order.done", "payload": {"by": "action"}}),
        )  # fmt: skip
        assert invoked.returncode == 0, invoked.stderr
        queued = json.loads(invoked.stdout)["result"]
        assert (queued["stream"], queued["queued"]) == (stream, True)
        wait_for(lambda: len(ends(wf_log, "audit")) >= 3, 20, "the consumer to deliver")
        time.sleep(0.5)  # nothing more arrives
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(20) == 0, (state.parent / "c.stderr").read_text()
    audit = ends(wf_log, "audit")
    assert sorted(e["event"] for e in audit) == sorted(
        [f"{rid}-notify", f"{rid}-again", queued["event_id"]]
    )  # each once: the retried node's event was not handled twice
    assert {e["pid"] for e in audit} == {consumer.pid}  # delivered there, not in the run
    assert xlen(redis_url, stream) == 3


@pytest.mark.slow
def test_a_handler_in_event_consume_emits_to_the_stream_for_another_consumer(
    tmp_path: Path, wf_log: str, redis_url: str
) -> None:
    # The relaying consumer's plan knows "order.shipped" (its own `echo`); the shipping
    # consumer's plan subscribes `ship`, a group only that consumer reads.
    relaying = "\n".join(
        [
            handler("relay", "order.created", impl="wftasks:relay", to="order.shipped"),
            handler("echo", "order.shipped"),
        ]
    )
    _, relay_plan = build_plan(tmp_path / "relay", relaying)
    _, ship_plan = build_plan(tmp_path / "ship", handler("ship", "order.shipped"))
    state = tmp_path / "state"
    shipping = _consumer(ship_plan, redis_url, state, "shipping", wf_log)
    relay = _consumer(relay_plan, redis_url, state, "relaying", wf_log)
    try:
        shipped = "oneiric:events:order.shipped"
        wait_for(lambda: "handler:ship" in groups(redis_url, shipped), 20, "the ship group")
        emitted = oneiric(
            "event", "emit", "order.created", "--payload", "{}", "--events", redis_url,
            "--unsigned-plan", str(relay_plan), "--state", str(state), "--format", "json",
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        first = json.loads(emitted.stdout)["event_id"]
        wait_for(lambda: ends(wf_log, "ship") and ends(wf_log, "echo"), 20, "the follow-up")
    finally:
        for proc in (relay, shipping):
            proc.send_signal(signal.SIGTERM)
        for proc, name in ((relay, "relaying"), (shipping, "shipping")):
            assert proc.wait(20) == 0, (tmp_path / f"{name}.stderr").read_text()
    (relayed,) = ends(wf_log, "relay")
    follow = relayed["emitted"]
    assert relayed["event"] == first
    assert (follow["stream"], follow["queued"]) == (shipped, True)
    (ship,) = ends(wf_log, "ship")
    assert ship["event"] == follow["event_id"]
    assert ship["payload"] == {"after": first}
    assert ship["pid"] == shipping.pid  # the other consumer handled it
    (echo,) = ends(wf_log, "echo")
    assert echo["pid"] == relay.pid  # through the stream, to the relaying process's group too
    assert relayed["pid"] == relay.pid


@pytest.mark.anyio
async def test_a_node_on_a_worker_emits_to_the_stream_within_its_trace(
    tmp_path: Path, wf_log: str, redis_url: str
) -> None:
    """A dispatcher and a worker in this process: the worker's context emits to Redis."""
    stack = "\n".join(
        [
            handler("h", "seen"),
            task("a"),
            f'  task announce "x" {{ impl "{FLOW}:dispatch"\n    config {{ topic = "seen" }} }}',
            '  workflow main "x" { a -> announce }',
        ]
    )
    plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    settings = streams.StreamSettings.parse(redis_url)
    here = RedisTasks(await streams.connect(settings), settings)
    worker_client = await streams.connect(settings)
    traced = Traced()
    try:
        async with (
            activated(plan, [c.id for c in plan.components]) as runtime,
            anyio.create_task_group() as group,
        ):
            group.start_soon(here.serve)
            engines = Following(lambda: runtime.plan)  # what `oneiric worker` opens
            group.start_soon(
                lambda: follow(
                    runtime, engines, lambda: store, anyio.sleep_forever, events_url=redis_url
                )
            )
            group.start_soon(
                lambda: serve_worker(
                    worker_client, settings, runtime, block_ms=100, engines=engines
                )
            )
            flows = Workflows(plan, runtime, store, tasks=here, cancel_poll_s=None)
            record = await flows.run("main")
            group.cancel_scope.cancel()
        on_worker = {s.attributes["oneiric.node"]: s for s in traced.named("oneiric.worker.node")}
    finally:
        tracing.uninstall(traced.provider)
        await here.close()
        await worker_client.aclose()
    assert record.status == "succeeded", record.error
    result = record.nodes["announce"].result
    assert (result["event_id"], result["queued"]) == (f"{record.id}-announce", True)
    # Not delivered in the worker: queued for the consumers.
    assert [e["name"] for e in wftasks.calls(wf_log, "start")] == ["a"]
    client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    try:
        ((entry, fields),) = client.xrange("oneiric:events:seen")
    finally:
        client.close()
    assert entry == result["entry"]
    assert fields["id"] == f"{record.id}-announce"
    assert json.loads(fields["payload"]) == {
        "input": None,
        "upstream": {"a": {"node": "a", "attempt": 1, "seen": []}},
    }
    trace = f"{on_worker['announce'].context.trace_id:032x}"
    assert json.loads(fields["headers"])["traceparent"].split("-")[1] == trace


def test_an_unreachable_event_broker_stops_a_flow_host_at_start(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, NODES)
    url = f"redis://127.0.0.1:{free_port()}/0"
    common = ["--events", url, "--unsigned-plan", str(plan), "--state", str(tmp_path / "s")]
    for args in (
        ("workflow", "run", "main"),
        ("action", "invoke", "event.dispatch", "--payload", '{"topic": "order.done"}'),
    ):
        result = oneiric(*args, *common)
        assert result.returncode == 2, result.stderr
        assert f"event broker {url} is unreachable" in result.stderr
        assert "Traceback" not in result.stderr
    listed = oneiric("workflow", "list", "--state", str(tmp_path / "s"))
    assert listed.stdout.strip() == "no runs"  # refused before anything started
