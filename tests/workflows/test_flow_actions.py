"""The flow actions: event.dispatch, workflow.start, task.schedule (durable across a restart)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import wftasks
from oneiric._flows.context import FlowContext, at_node, bound
from oneiric._flows.events import EventBus
from oneiric._flows.host import activated
from oneiric._flows.schedule import Scheduler
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import Workflows
from oneiric.actions import ActionError
from oneiric.actions.flow import dispatch, schedule, start
from test_events import handler
from test_workflow_cli import spawn
from test_workflows import task
from wfkit import build_plan, oneiric, wait_for

FLOW = "oneiric.actions.flow"
STACK = "\n".join(
    [
        task("a"),
        task("c"),
        handler("h", "order.done"),
        f'  task announce "x" {{ impl "{FLOW}:dispatch"\n    config {{ topic = "order.done" }} }}',
        f'  task kick "x" {{ impl "{FLOW}:start"\n    config {{ workflow = "child" }} }}',
        f'  task later "x" {{ impl "{FLOW}:schedule"\n    config {{ task = "c", delay = 1s }} }}',
        '  workflow main "x" {',
        "    a -> announce",
        "    a -> kick",
        "    a -> later",
        "  }",
        '  workflow child "x" { node c }',
    ]
)


def calls(log: str, name: str, kind: str = "start") -> list[dict[str, Any]]:
    return [e for e in wftasks.calls(log, kind) if e["name"] == name]


async def hosted(tmp_path: Path, work: Any) -> tuple[Any, FlowStore]:
    """`work()` inside a flow host: tasks and handlers activated, the context bound."""
    plan, _ = build_plan(tmp_path, STACK)
    store = FlowStore(tmp_path / "state")
    ids = EventBus.handler_ids(plan) + Workflows.task_ids(plan)
    async with activated(plan, ids) as runtime:
        async with Workflows(plan, runtime, store, cancel_poll_s=None) as flows:
            bus = EventBus(plan, runtime, store, workflows=flows)
            with bound(FlowContext(plan, store, flows, bus, bus)):
                result = await work()
        return result, store


@pytest.mark.anyio
async def test_actions_refuse_bad_input_and_do_nothing(tmp_path: Path, wf_log: str) -> None:
    with pytest.raises(ActionError, match="needs a flow host"):
        await dispatch({"topic": "order.done"})

    async def work() -> None:
        refused = [
            (dispatch({"topic": "order.dne"}), r'no handler subscribed to topic "order\.dne"'),
            (dispatch({"payload": 1}), r'the payload needs "topic"'),
            (dispatch({"topic": "order.done", "payload": {1, 2}}), "not JSON data"),
            (dispatch({"topic": "order.done", "headers": {"k": 1}}), "must be strings: k"),
            (dispatch(["order.done"]), "must be a JSON object, not list"),
            (start({"workflow": "chld"}), r'no workflow "chld".*did you mean "child"'),
            (start({"workflow": "child", "input": {1}}), "input is not JSON data"),
            (start({"workflow": 3}), 'payload "workflow" must be str, not int'),
            (schedule({"task": "cc", "delay_s": 1}), r'no task "cc" in the plan \(known: '),
            (schedule({"task": "c"}), 'needs "delay_s"'),
            (schedule({"task": "c", "delay_s": -1}), ">= 0, not -1"),
            (schedule({"task": "c", "delay_s": True}), "must be int or float, not bool"),
            (schedule({"task": "c", "delay_s": float("inf")}), "finite"),
            (schedule({"task": "c", "delay_s": 1, "input": {1}}), "not JSON data"),
            (schedule({"input": 1}, {"a": 1}), 'as a workflow node it needs config "task"'),
        ]
        for call, message in refused:
            with pytest.raises(ActionError, match=message):
                await call

    _, store = await hosted(tmp_path, work)
    assert wftasks.calls(wf_log) == []  # no handler, no task ran
    assert store.runs() == []  # no run recorded
    assert store.scheduled() == []  # nothing scheduled


@pytest.mark.anyio
async def test_actions_as_actions(tmp_path: Path, wf_log: str) -> None:
    async def work() -> Any:
        sent = await dispatch({"topic": "order.done", "payload": {"id": 1}, "headers": {"k": "v"}})
        run = await start({"workflow": "child", "input": {"id": 2}, "run_id": "r1"})
        again = await start({"workflow": "child", "input": {"id": 2}, "run_id": "r1"})
        first = await schedule({"task": "c", "delay_s": 0, "input": {"id": 3}, "id": "s1"})
        dup = await schedule({"task": "c", "delay_s": 0, "id": "s1"})
        return sent, run, again, first, dup

    (sent, run, again, first, dup), store = await hosted(tmp_path, work)
    assert sent["ok"]
    assert sent["matched"] == ["h"]
    assert [e["payload"] for e in calls(wf_log, "h", "end")] == [{"id": 1}]
    assert run == again == {"run": "r1", "workflow": "child"}
    record = store.run("r1")
    assert record is not None
    assert (record.status, record.trigger, record.input) == ("succeeded", "action", {"id": 2})
    assert len(calls(wf_log, "c")) == 1  # the workflow's; the scheduled one is not run yet
    assert first["scheduled"]
    assert not dup["scheduled"]
    (due,) = store.scheduled()
    assert (due.id, due.task, due.input, due.status) == ("s1", "c", {"id": 3}, "pending")

    # The scheduler runs it once: claimed in one transaction, its outcome recorded.
    plan, _ = build_plan(tmp_path, STACK)
    async with activated(plan, Scheduler.task_ids(plan)) as runtime:
        scheduler = Scheduler(plan, runtime, store)
        (claimed,) = store.claim_due(time.time(), 16)
        assert store.claim_due(time.time(), 16) == []
        assert await scheduler.run(claimed)
    (done,) = store.scheduled()
    assert (done.status, done.attempts) == ("succeeded", 1)
    assert done.result["node"] == "c"
    assert [e["input"] for e in calls(wf_log, "c")][-1] == {"id": 3}


@pytest.mark.anyio
async def test_a_node_run_again_starts_and_schedules_nothing_new(
    tmp_path: Path, wf_log: str
) -> None:
    async def work() -> Any:
        with at_node("r7", "later"):
            first = await schedule({"id": 1}, {"a": {}}, task="c", delay=5)
            again = await schedule({"id": 1}, {"a": {}}, task="c", delay=5)
        with at_node("r7", "kick"):
            run = await start({"id": 1}, {"a": {}}, workflow="child")
            rerun = await start({"id": 1}, {"a": {}}, workflow="child")
        return first, again, run, rerun

    (first, again, run, rerun), store = await hosted(tmp_path, work)
    assert (first["id"], first["scheduled"]) == ("r7-later", True)
    assert (again["id"], again["scheduled"]) == ("r7-later", False)
    assert run == rerun == {"run": "r7-kick", "workflow": "child"}
    assert [r.id for r in store.runs()] == ["r7-kick"]
    assert len(calls(wf_log, "c")) == 1


def test_workflow_nodes_dispatch_start_and_schedule(tmp_path: Path) -> None:
    """`oneiric workflow run`: the nodes emit, start a run and schedule a task, for real."""
    _, plan = build_plan(tmp_path, STACK)
    log, state = str(tmp_path / "calls.jsonl"), tmp_path / "state"
    done = oneiric(
        *("workflow", "run", "main", "--input", '{"id": 7}', "--format", "json"),
        *("--unsigned-plan", str(plan), "--state", str(state)),
        env={"WF_LOG": log},
    )
    assert done.returncode == 0, done.stderr
    nodes = {n["name"]: n for n in json.loads(done.stdout)["nodes"]}
    assert nodes["announce"]["result"]["matched"] == ["h"]
    (event,) = calls(log, "h", "end")
    assert event["payload"]["input"] == {"id": 7}
    assert event["payload"]["upstream"]["a"]["node"] == "a"
    run_id = json.loads(done.stdout)["id"]
    assert nodes["announce"]["result"]["event_id"] == f"{run_id}-announce"
    child = nodes["kick"]["result"]["run"]
    assert child == f"{run_id}-kick"  # a node run again starts nothing new
    status = oneiric("workflow", "status", child, "--state", str(state), "--format", "json")
    assert json.loads(status.stdout)["status"] == "succeeded"  # finished before the exit
    listed = oneiric("task", "list", "--state", str(state), "--format", "json")
    (scheduled,) = json.loads(listed.stdout)["scheduled"]
    assert scheduled["id"] == nodes["later"]["result"]["id"] == f"{run_id}-later"
    assert (scheduled["task"], scheduled["status"]) == ("c", "pending")
    assert scheduled["input"]["input"] == {"id": 7}


def test_action_invoke_bad_input_exits_1_and_records_nothing(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, STACK)
    state = tmp_path / "state"
    where = ("--unsigned-plan", str(plan), "--state", str(state))
    bad = oneiric(
        "action", "invoke", "task.schedule", "--payload", '{"task": "zz", "delay_s": 1}', *where
    )
    assert bad.returncode == 1
    assert 'action task.schedule: no task "zz" in the plan' in bad.stderr
    assert "Traceback" not in bad.stderr
    listed = oneiric("task", "list", "--state", str(state), "--format", "json")
    assert json.loads(listed.stdout)["scheduled"] == []
    no_plan = oneiric("action", "invoke", "event.dispatch", "--state", str(tmp_path / "none"))
    assert no_plan.returncode == 2
    assert "no running plan" in no_plan.stderr


@pytest.mark.slow
def test_scheduled_task_survives_a_killed_runtime_and_runs_once(tmp_path: Path) -> None:
    _, plan = build_plan(tmp_path, STACK)
    log, state = str(tmp_path / "calls.jsonl"), tmp_path / "state"
    where = ("--unsigned-plan", str(plan), "--state", str(state))
    first = spawn("task", "serve", "--poll", "100ms", *where, log=log)
    try:
        scheduled = oneiric(
            *("action", "invoke", "task.schedule", "--format", "json", *where),
            *("--payload", '{"task": "c", "delay_s": 3, "input": {"n": 1}}'),
            env={"WF_LOG": log},
        )
        assert scheduled.returncode == 0, scheduled.stderr
        due_at = json.loads(scheduled.stdout)["result"]["due_at"]
        assert first.poll() is None  # the runtime is up, the task not yet due
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    assert time.time() < due_at
    time.sleep(max(0.0, due_at - time.time()) + 0.3)
    assert calls(log, "c") == []  # due, but no runtime: nothing ran it

    second = spawn("task", "serve", "--poll", "100ms", *where, log=log)
    try:
        wait_for(lambda: calls(log, "c", "end"), what="the scheduled task to run")
        time.sleep(1.0)  # a few more polls: it must not run again
        listed = oneiric("task", "list", "--state", str(state), "--format", "json")
        (task_row,) = json.loads(listed.stdout)["scheduled"]
        assert (task_row["status"], task_row["attempts"]) == ("succeeded", 1)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0
    finally:
        second.kill()
    (ran,) = calls(log, "c")
    assert ran["input"] == {"n": 1}
    assert ran["t"] >= due_at
