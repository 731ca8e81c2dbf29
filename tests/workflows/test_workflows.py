"""Workflows: real DAG runs on real task components, checkpointed in a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
import wftasks
from oneiric._flows.host import Unknown, activated
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import WorkflowError, Workflows
from wfkit import build_plan


def task(key: str, impl: str = "wftasks:step", extra: str = "", **config: Any) -> str:
    """A task declaration whose config names it and logs to $WF_LOG."""
    items = [f'name = "{key}"', 'log = env("WF_LOG", "")']
    items += [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    return (
        f'  task {key} "x" {{\n    impl "{impl}"\n    config {{ {", ".join(items)} }}\n{extra}  }}'
    )


def diamond(
    b: dict[str, Any] | None = None, c: dict[str, Any] | None = None, nodes: str = ""
) -> str:
    """a -> (b, c) -> d."""
    return "\n".join(
        [
            task("a"),
            task("b", **(b or {})),
            task("c", **(c or {})),
            task("d"),
            '  workflow w "x" {',
            nodes,
            "    a -> b -> d",
            "    a -> c -> d",
            "  }",
        ]
    )


async def run_flow(tmp_path: Path, stack: str, work: Any) -> Any:
    plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    async with activated(plan, Workflows.task_ids(plan)) as runtime:
        return await work(Workflows(plan, runtime, store, cancel_poll_s=None))


def starts(log: str, name: str) -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, "start") if e["name"] == name]


@pytest.mark.anyio
async def test_independent_nodes_run_concurrently_and_get_upstream_results(
    tmp_path: Path, wf_log: str
) -> None:
    stack = diamond(b={"sleep_ms": 400}, c={"sleep_ms": 400})
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w", {"order": 7}))
    assert record.status == "succeeded"
    # Concurrent: each of b and c started before the other ended (sequential runs would
    # not overlap, however fast or loaded the machine).
    b, c = starts(wf_log, "b")[0], starts(wf_log, "c")[0]
    ends = {e["name"]: e["t"] for e in wftasks.calls(wf_log, "end")}
    assert c["t"] < ends["b"], "c started after b ended"
    assert b["t"] < ends["c"], "b started after c ended"
    (d,) = starts(wf_log, "d")
    assert d["input"] == {"order": 7}
    assert d["upstream"] == {
        "b": {"node": "b", "attempt": 1, "seen": ["a"]},
        "c": {"node": "c", "attempt": 1, "seen": ["a"]},
    }
    assert [n.status for n in record.nodes.values()] == ["succeeded"] * 4
    assert list(record.nodes) == ["a", "b", "c", "d"]  # topological order
    assert all(n.attempts == 1 and n.duration_ms is not None for n in record.nodes.values())
    assert record.nodes["b"].duration_ms >= 400


@pytest.mark.anyio
async def test_retry_with_exponential_backoff(tmp_path: Path, wf_log: str) -> None:
    stack = diamond(b={"fail_times": 2}, nodes="    node b { retry 3 backoff 100ms }")
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w"))
    assert record.status == "succeeded"
    assert record.nodes["b"].attempts == 3
    times = [e["t"] for e in starts(wf_log, "b")]
    assert len(times) == 3
    # Jittered between half and all of 100 ms, then of 200 ms: the lower bounds are the
    # property (the second wait is at least the first's maximum: it grew); the upper
    # bounds only show that nothing else (a timeout) was waited for, generously.
    assert 0.05 <= times[1] - times[0] < 3
    assert 0.1 <= times[2] - times[1] < 3


@pytest.mark.anyio
async def test_task_retry_applies_when_the_node_has_none(tmp_path: Path, wf_log: str) -> None:
    stack = diamond().replace(
        task("c"), task("c", extra="    retry 2 backoff 10ms\n", fail_times=1)
    )
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w"))
    assert record.status == "succeeded"
    assert record.nodes["c"].attempts == 2


@pytest.mark.anyio
async def test_timeout_fails_the_node_skips_below_and_siblings_finish(
    tmp_path: Path, wf_log: str
) -> None:
    stack = diamond(b={"sleep_ms": 60_000}, nodes="    node b { timeout 200ms }")
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w"))
    assert record.finished_at - record.created_at < 20  # the timeout, not b's 60 s
    assert record.status == "failed"
    assert record.nodes["b"].status == "failed"
    assert record.nodes["b"].error == "timed out after 0.2s"
    assert record.nodes["c"].status == "succeeded"
    assert record.nodes["d"].status == "skipped"
    assert "node b failed" in (record.error or "")
    assert starts(wf_log, "d") == []


@pytest.mark.anyio
async def test_resume_after_failure_runs_only_what_did_not_succeed(
    tmp_path: Path, wf_log: str
) -> None:
    stack = diamond(b={"fail_times": 1})

    async def work(wf: Workflows) -> Any:
        failed = await wf.run("w", {"n": 1})
        assert failed.status == "failed"
        resumed = await wf.resume(failed.id)
        with pytest.raises(WorkflowError, match="already finished"):
            await wf.resume(failed.id)
        return resumed

    record = await run_flow(tmp_path, stack, work)
    assert record.status == "succeeded"
    assert [len(starts(wf_log, n)) for n in "abcd"] == [1, 2, 1, 1]
    assert starts(wf_log, "d")[0]["upstream"]["b"]["attempt"] == 2
    assert starts(wf_log, "b")[1]["input"] == {"n": 1}


@pytest.mark.anyio
async def test_cancel_records_a_resumable_run(tmp_path: Path, wf_log: str) -> None:
    stack = diamond(b={"sleep_ms": 5000})
    plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    async with activated(plan, Workflows.task_ids(plan)) as runtime:
        async with Workflows(plan, runtime, store, cancel_poll_s=None) as wf:
            run_id = await wf.start("w")
            with anyio.fail_after(5):
                while not starts(wf_log, "b"):
                    await anyio.sleep(0.01)
            assert wf.cancel(run_id)
            cancelled = await wf.wait(run_id)
        assert cancelled.status == "cancelled"
        assert cancelled.nodes["b"].status == "cancelled"
        assert cancelled.nodes["c"].status == "succeeded"
        assert cancelled.nodes["d"].status == "pending"
        assert store.run(run_id) == cancelled


@pytest.mark.anyio
async def test_task_concurrency_limit(tmp_path: Path, wf_log: str) -> None:
    stack = "\n".join(
        [
            task("a"),
            task("slow", extra="    concurrency 1\n", sleep_ms=150),
            '  workflow w "x" {',
            "    node b { task slow }",
            "    node c { task slow }",
            "    a -> b",
            "    a -> c",
            "  }",
        ]
    )
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w"))
    assert record.status == "succeeded"
    ends = [e["t"] for e in wftasks.calls(wf_log, "end") if e["name"] == "slow"]
    begins = [e["t"] for e in starts(wf_log, "slow")]
    assert len(begins) == 2
    assert begins[1] >= ends[0] - 0.001  # the second started after the first finished


@pytest.mark.anyio
async def test_bad_requests_change_nothing(tmp_path: Path, wf_log: str) -> None:
    async def work(wf: Workflows) -> None:
        with pytest.raises(Unknown, match=r"no workflow \"v\" in the plan \(known: w\)"):
            await wf.run("v")
        with pytest.raises(WorkflowError, match="input is not JSON"):
            await wf.run("w", {"x": object()})
        with pytest.raises(WorkflowError, match='no workflow run "nope"'):
            await wf.resume("nope")

    await run_flow(tmp_path, diamond(), work)
    assert FlowStore(tmp_path / "state").runs() == []
    assert wftasks.calls(wf_log) == []


@pytest.mark.anyio
async def test_a_result_that_is_not_json_fails_the_node(tmp_path: Path, wf_log: str) -> None:
    stack = '  task odd "x" { impl "wftasks:not_json" }\n  workflow w "x" { node odd }'
    record = await run_flow(tmp_path, stack, lambda wf: wf.run("w"))
    assert record.status == "failed"
    assert "the result of node odd is not JSON data" in (record.nodes["odd"].error or "")
