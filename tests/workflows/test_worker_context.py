"""A workflow node sees the same flow context in process and on an `oneiric worker`:
its run id, node name and attempt (`oneiric._flows.context`), a bound engine to emit an
event and start a child run from code, and the flow actions as nodes (`RUN-NODE` ids)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import wftasks
from oneiric._flows import streams
from oneiric._flows.context import Following
from oneiric._flows.engine import follow
from oneiric._flows.host import activated
from oneiric._flows.store import FlowStore
from oneiric._flows.workers import RedisTasks, serve_worker
from oneiric._flows.workflows import Workflows
from oneiric._ops import tracing
from test_events import handler
from test_tracing import Traced, parent_of
from test_workflow_cli import spawn
from test_workflows import task
from wfkit import build_plan, oneiric, wait_for

FLOW = "oneiric.actions.flow"
STACK = "\n".join(
    [
        task("o", "wftasks:observe", "    retry 2 backoff 10ms\n", fail_times=1),
        task("c"),
        handler("h", "seen"),
        f'  task announce "x" {{ impl "{FLOW}:dispatch"\n    config {{ topic = "seen" }} }}',
        '  workflow main "x" {',
        "    o -> announce",
        "  }",
        '  workflow child "x" { node c }',
    ]
)


def child_status(store: Path, run_id: str) -> str | None:
    found = oneiric("workflow", "status", run_id, "--state", str(store), "--format", "json")
    return str(json.loads(found.stdout)["status"]) if found.returncode == 0 else None


def seen(log: str, run: dict[str, Any], store: Path, digest: str) -> dict[str, Any]:
    """What the node and the things it started observed, with the run id written RUN."""
    rid = run["id"]

    def norm(value: Any) -> Any:
        return json.loads(json.dumps(value).replace(rid, "RUN"))

    observed = [
        {"node": e["node"], "attempt": e["attempt"], "same plan": e["plan"] == digest}
        for e in wftasks.calls(log, "observe")
    ]
    (ended,) = [e for e in wftasks.calls(log, "end") if e["name"] == "o"]
    events = [e["event"] for e in wftasks.calls(log, "start") if e["name"] == "h"]
    return norm(
        {
            "run": run["status"],
            "nodes": {n["name"]: n["attempts"] for n in run["nodes"]},
            "observed": observed,
            "from code": {k: ended.get(k) for k in ("emitted", "child", "error")},
            "events": sorted(e if rid in e else "(its own id)" for e in events),
            "child": child_status(store, f"{rid}-child"),
            "child node": [e["input"] for e in wftasks.calls(log, "start") if e["name"] == "c"],
        }
    )


EXPECTED = {
    "run": "succeeded",
    "nodes": {"o": 2, "announce": 1},
    "observed": [
        {"node": ["RUN", "o"], "attempt": 1, "same plan": True},
        {"node": ["RUN", "o"], "attempt": 2, "same plan": True},
    ],
    "from code": {"emitted": ["h"], "child": "RUN-child", "error": None},
    "events": ["(its own id)", "RUN-announce"],
    "child": "succeeded",
    "child node": [{"parent": "RUN"}],
}


def test_a_node_sees_the_same_flow_context_in_process_and_on_a_worker(
    tmp_path: Path, redis_url: str
) -> None:
    plan, path = build_plan(tmp_path, STACK)

    # In process: `workflow run` runs the nodes, the handler and the child run itself.
    log = str(tmp_path / "here.jsonl")
    here = oneiric(
        "workflow", "run", "main", "--unsigned-plan", str(path), "--state",
        str(tmp_path / "here"), "--format", "json", env={"WF_LOG": log},
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    in_process = seen(log, json.loads(here.stdout), tmp_path / "here", plan.digest or "")
    assert in_process == EXPECTED

    # On a worker: the same workflow, its nodes taken from Redis by `oneiric worker`.
    log = str(tmp_path / "worker.jsonl")
    state = tmp_path / "w0"
    worker = spawn(
        "worker", "--unsigned-plan", str(path), "--tasks", redis_url, "--state", str(state),
        "--consumer", "w0", log=log,
    )  # fmt: skip
    try:
        wait_for(lambda: (state / "workers" / "w0.json").exists(), 30, "the worker")
        there = oneiric(
            "workflow", "run", "main", "--unsigned-plan", str(path), "--tasks", redis_url,
            "--state", str(tmp_path / "dispatcher"), "--format", "json", env={"WF_LOG": log},
        )  # fmt: skip
        assert there.returncode == 0, there.stderr
        run = json.loads(there.stdout)
        child = f"{run['id']}-child"  # runs on, in the worker, after `workflow run` exits
        wait_for(lambda: child_status(state, child) == "succeeded", 30, "the child run")
        on_worker = seen(log, run, state, plan.digest or "")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.stderr.read() if worker.stderr else ""
    assert on_worker == in_process
    assert {e["pid"] for e in wftasks.calls(log, "observe")} == {worker.pid}


@pytest.fixture
def traced() -> Iterator[Traced]:
    found = Traced()
    yield found
    tracing.uninstall(found.provider)


@pytest.mark.anyio
async def test_a_node_on_a_worker_is_traced_under_the_dispatchers_node(
    tmp_path: Path, wf_log: str, redis_url: str, traced: Traced
) -> None:
    """The dispatcher and a worker in this process, talking only through Redis."""
    plan, _ = build_plan(tmp_path, STACK)
    store = FlowStore(tmp_path / "state")
    settings = streams.StreamSettings.parse(redis_url)
    here = RedisTasks(await streams.connect(settings), settings)
    there = RedisTasks(await streams.connect(settings), settings)  # the worker's own runs
    worker_client = await streams.connect(settings)
    async with (
        activated(plan, [c.id for c in plan.components]) as runtime,
        anyio.create_task_group() as group,
    ):
        group.start_soon(here.serve)
        group.start_soon(there.serve)
        engines = Following(lambda: runtime.plan)  # what `oneiric worker` opens
        group.start_soon(
            lambda: follow(runtime, engines, lambda: store, anyio.sleep_forever, tasks=there)
        )
        group.start_soon(
            lambda: serve_worker(worker_client, settings, runtime, block_ms=100, engines=engines)
        )
        record = await Workflows(plan, runtime, store, tasks=here, cancel_poll_s=None).run("main")
        with anyio.fail_after(20):
            while (child := store.run(f"{record.id}-child")) is None or child.status != "succeeded":
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()
    for client in (here, there):
        await client.close()
    await worker_client.aclose()
    assert record.status == "succeeded"

    dispatched = {s.attributes["oneiric.node"]: s for s in traced.named("oneiric.workflow.node")}
    on_worker = {s.attributes["oneiric.node"]: s for s in traced.named("oneiric.worker.node")}
    assert sorted(on_worker) == ["announce", "c", "o"]
    for name in ("o", "announce", "c"):  # c: the child run's node, dispatched by the worker
        assert parent_of(on_worker[name]) == dispatched[name].context.span_id
        assert on_worker[name].context.trace_id == dispatched[name].context.trace_id
    trace = f"{dispatched['o'].context.trace_id:032x}"
    # The task ran inside that span; the child run it started is in the same trace.
    assert {e["trace"][0] for e in wftasks.calls(wf_log, "observe")} == {trace}
    runs = {s.attributes["oneiric.run"]: s for s in traced.named("oneiric.workflow.run")}
    assert f"{runs[f'{record.id}-child'].context.trace_id:032x}" == trace
