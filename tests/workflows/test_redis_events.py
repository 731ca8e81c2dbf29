"""Events on Redis Streams, against a real `redis-server`: groups, retries, dead letters, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import wftasks
from oneiric._flows.events import EventBus
from oneiric._flows.host import activated
from oneiric._flows.redis_events import RedisEvents
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import Workflows
from servers import Server, free_port, redis_server
from test_events import handler
from wfkit import build_plan, cli_env, oneiric, wait_for


class Redis:
    """A private redis-server with AOF (restartable with its data)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = f"redis://127.0.0.1:{server.port}/0"

    def restart(self) -> None:
        self.server.stop()
        self.server.start()


@pytest.fixture
def redis() -> Iterator[Redis]:
    for server in redis_server(aof=True):
        yield Redis(server)


def picky(key: str, topic: str, body: str = "", **config: Any) -> str:
    items = [f'name = "{key}"', 'log = env("WF_LOG", "")']
    items += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    return (
        f'  event {key} "x" {{\n    on "{topic}"\n    impl "wftasks:picky"\n'
        f"    config {{ {', '.join(items)} }}\n{body}  }}"
    )


def ends(log: str, name: str) -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, "end") if e["name"] == name]


async def consuming(tmp_path: Path, stack: str, url: str, work: Any, *, consumers: int = 1) -> Any:
    """Run `consumers` in-process consumers of the plan on `url` while `work(events)` runs."""
    plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    ids = EventBus.handler_ids(plan) + Workflows.task_ids(plan)
    publisher = await RedisEvents.open(url, plan)
    stop = anyio.Event()
    try:
        async with activated(plan, ids) as runtime, Workflows(plan, runtime, store) as flows:
            bus = EventBus(plan, runtime, store, workflows=flows, handler_timeout_s=5)
            readers = [await RedisEvents.open(url, plan) for _ in range(consumers)]
            async with anyio.create_task_group() as group:
                for i, reader in enumerate(readers):
                    group.start_soon(
                        lambda r=reader, i=i: r.consume(
                            bus, consumer=f"c{i}", block_ms=100, stop=stop
                        )
                    )
                result = await work(publisher)
                stop.set()
            for reader in readers:
                await reader.close()
            return result
    finally:
        await publisher.close()


@pytest.mark.anyio
async def test_broadcast_exclusive_filters_and_a_stable_event_id(
    tmp_path: Path, wf_log: str, redis: Redis
) -> None:
    stack = "\n".join(
        [
            handler("audit", "order.created"),
            handler("eu", "order.created", '    where payload.region == "eu"\n'),
            handler(
                "vip",
                "pay",
                "    fanout exclusive\n    priority 9\n    where payload.vip == true\n",
            ),
            handler("anyone", "pay", "    fanout exclusive\n"),
        ]
    )

    async def work(events: RedisEvents) -> list[str]:
        ids = []
        for i in range(10):
            region = "eu" if i % 2 else "us"
            ids.append((await events.emit("order.created", {"i": i, "region": region})).event_id)
        for i in range(6):
            ids.append((await events.emit("pay", {"i": i, "vip": i < 2}, {"x": "1"})).event_id)
        wait = anyio.to_thread.run_sync
        await wait(lambda: wait_for(lambda: len(wftasks.calls(wf_log, "end")) >= 21, 20))
        await anyio.sleep(0.3)  # nothing more arrives
        return ids

    ids = await consuming(tmp_path, stack, redis.url, work, consumers=2)
    assert sorted(e["event"] for e in ends(wf_log, "audit")) == sorted(ids[:10])
    assert sorted(e["payload"]["i"] for e in ends(wf_log, "eu")) == [1, 3, 5, 7, 9]
    assert sorted(e["payload"]["i"] for e in ends(wf_log, "vip")) == [0, 1]
    assert sorted(e["payload"]["i"] for e in ends(wf_log, "anyone")) == [2, 3, 4, 5]
    assert len(wftasks.calls(wf_log, "end")) == 21  # each once: no duplicates
    # The consumers shared the work (two processes' worth of consumers in one group).
    client = await RedisEvents.open(redis.url)
    groups = await client.client.xinfo_groups("oneiric:events:pay")
    await client.close()
    assert [g["name"] for g in groups] == [b"exclusive"]
    assert groups[0]["pending"] == 0


@pytest.mark.anyio
async def test_a_poison_event_ends_in_dead_letters_while_the_rest_flow(
    tmp_path: Path, wf_log: str, redis: Redis
) -> None:
    stack = picky("orders", "order", "    retry 3 backoff 10ms\n")

    async def work(events: RedisEvents) -> Any:
        for i in range(20):
            await events.emit("order", {"i": i, "poison": i == 7})
        wait = anyio.to_thread.run_sync
        await wait(lambda: wait_for(lambda: len(ends(wf_log, "orders")) == 19, 20))
        letters = await events.dead_letters()
        for _ in range(100):
            if letters:
                break
            await anyio.sleep(0.05)
            letters = await events.dead_letters()
        return letters

    letters = await consuming(tmp_path, stack, redis.url, work)
    (letter,) = letters
    assert letter.handler == "orders"
    assert letter.payload == {"i": 7, "poison": True}
    assert letter.attempts == 3
    assert "poison event" in letter.error
    poison_starts = [
        e
        for e in wftasks.calls(wf_log, "start")
        if e["event"] == letter.event_id and e["name"] == "orders"
    ]
    assert [e["attempt"] for e in poison_starts] == [1, 2, 3]

    # The command line lists and replays it (still poison: it fails again, stays open).
    _, plan = build_plan(tmp_path, stack)
    common = ["--events", redis.url, "--unsigned-plan", str(plan), "--state", str(tmp_path / "s")]
    listed = oneiric("event", "dead-letters", "--events", redis.url, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)["dead_letters"]
    assert entry["id"] == letter.id
    again = oneiric("event", "replay", str(letter.id), *common, env={"WF_LOG": wf_log})
    assert again.returncode == 1
    assert "failed again" in again.stdout
    missing = oneiric("event", "replay", "1-1", *common, env={"WF_LOG": wf_log})
    assert missing.returncode == 1
    assert "no dead letter 1-1" in missing.stderr


def test_an_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, handler("h", "t"))
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (
        ("event", "emit", "t", "--unsigned-plan", str(plan), "--events", url),
        ("event", "dead-letters", "--events", url),
        ("event", "consume", "--unsigned-plan", str(plan), "--events", url),
    ):
        result = oneiric(*args, "--state", str(tmp_path / "state"))
        assert result.returncode == 2, result.stderr
        assert f"event broker {url} is unreachable" in result.stderr
        assert "Traceback" not in result.stderr
    bad = oneiric("event", "dead-letters", "--events", "http://x", "--state", str(tmp_path))
    assert bad.returncode == 2
    assert "not a Redis URL" in bad.stderr


def _consumer(
    plan: Path, url: str, state: Path, name: str, log: str, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oneiric",
            "event",
            "consume",
            "--unsigned-plan",
            str(plan),
            "--events",
            url,
            "--state",
            str(state),
            "--consumer",
            name,
            *extra,
        ],
        env=cli_env({"WF_LOG": log}),
        stdout=subprocess.DEVNULL,
        stderr=open(state.parent / f"{name}.stderr", "w"),
        text=True,
    )


@pytest.mark.slow
def test_kill_9_of_a_consumer_mid_handler_loses_nothing(
    tmp_path: Path, wf_log: str, redis: Redis
) -> None:
    stack = picky("slow", "job", "    fanout exclusive\n    retry 3 backoff 10ms\n", sleep_ms=3000)
    _, plan = build_plan(tmp_path, stack)
    url = redis.url + "?visibility=1"
    state = tmp_path / "state"
    ids = []
    for i in range(6):
        emitted = oneiric(
            "event", "emit", "job", "--payload", json.dumps({"i": i}), "--events", url,
            "--unsigned-plan", str(plan), "--state", str(state), "--format", "json",
        )  # fmt: skip
        assert emitted.returncode == 0, emitted.stderr
        ids.append(json.loads(emitted.stdout)["event_id"])
    # Emitted before any consumer runs: the emitter created the group, nothing is lost.
    first = _consumer(plan, url, state, "first", wf_log)
    wait_for(lambda: len(wftasks.calls(wf_log, "start")) >= 6, 20, "the first consumer to start")
    os.kill(first.pid, signal.SIGKILL)  # mid-handler: six entries pending, none acknowledged
    first.wait(10)
    assert not wftasks.calls(wf_log, "end")
    second = _consumer(plan, url, state, "second", wf_log)
    try:
        wait_for(lambda: len(wftasks.calls(wf_log, "end")) >= 6, 40, "the second consumer")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    done = wftasks.calls(wf_log, "end")
    assert sorted(e["event"] for e in done) == sorted(ids)  # nothing lost, each once
    assert {e["pid"] for e in done} == {second.pid}
    assert all(e["attempt"] == 2 for e in done)  # the killed attempt counted
    status = json.loads((state / "consumers" / "second.json").read_text())
    assert status["broker"]["claimed"] == 6


@pytest.mark.slow
def test_redis_restarted_mid_stream_loses_nothing(
    tmp_path: Path, wf_log: str, redis: Redis
) -> None:
    stack = picky("count", "tick", sleep_ms=20)
    _, plan = build_plan(tmp_path, stack)
    state = tmp_path / "state"
    consumer = _consumer(plan, redis.url, state, "c", wf_log)
    common = ["--events", redis.url, "--unsigned-plan", str(plan), "--state", str(state)]
    try:
        wait_for(lambda: (state / "consumers" / "c.json").exists(), 20, "the consumer")
        for i in range(5):
            assert oneiric("event", "emit", "tick", "--payload", str(i), *common).returncode == 0
        wait_for(lambda: len(ends(wf_log, "count")) >= 5, 20, "the first five")
        redis.restart()
        for i in range(5, 10):
            assert oneiric("event", "emit", "tick", "--payload", str(i), *common).returncode == 0

        def reconnected() -> bool:
            status = json.loads((state / "consumers" / "c.json").read_text())
            return bool(status["broker"]["reconnects"] >= 1 and status["broker"]["connected"])

        wait_for(lambda: len(ends(wf_log, "count")) >= 10, 30, "the last five")
        wait_for(reconnected, 10, "the status to show the reconnect")
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(20) == 0
    assert Counter(e["payload"] for e in ends(wf_log, "count")) == dict.fromkeys(range(10), 1)
