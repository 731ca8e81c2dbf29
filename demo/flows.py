"""Workflows and events end to end on the compiled demo plan (golden/dev.plan.json).

`main()` runs the fulfillment workflow once, then emits `order.created` (routed
by topic and filter to two handlers) and `order.paid` (whose exclusive handler
starts the workflow again, from the event).  Embedded defaults only: the
plan's task and handler components, checkpoints and dead letters in SQLite,
in a temporary state directory.  Called by demo/run.py.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from oneiric._text import plural

ROOT = Path(__file__).resolve().parent.parent


def _trace_run(record: object) -> None:
    from oneiric._flows.store import RunRecord

    assert isinstance(record, RunRecord)
    print(f"  run {record.id} ({record.trigger}): {record.status}")
    for node in record.nodes.values():
        print(
            f"    {node.name:<9} {node.status:<10} attempt {node.attempts}  "
            f"{node.duration_ms or 0:6.1f} ms  → {node.result}"
        )


async def _demo(state: Path) -> None:
    from oneiric._cli import logs
    from oneiric._flows.events import EventBus
    from oneiric._flows.host import activated
    from oneiric._flows.store import FlowStore
    from oneiric._flows.workflows import Workflows
    from oneiric._plan.model import load_plan

    os.environ.setdefault("LOG_LEVEL", "warning")
    logs.configure()
    plan = load_plan((ROOT / "golden" / "dev.plan.json").read_bytes())
    store = FlowStore(state)
    ids = Workflows.task_ids(plan) + EventBus.handler_ids(plan)
    async with activated(plan, ids) as runtime, Workflows(plan, runtime, store) as flows:
        order = {"id": 1042, "items": 3, "total": 120, "region": "eu"}
        print(f"\n== workflow fulfillment, input {order}")
        _trace_run(await flows.run("fulfillment", order, trigger="demo"))

        bus = EventBus(plan, runtime, store, workflows=flows)
        for topic, payload in (("order.created", order), ("order.paid", {**order, "id": 1043})):
            delivery = await bus.emit(topic, payload, {"source": "demo"})
            print(
                f"\n== event {topic} ({delivery.fanout}) → {', '.join(delivery.matched)}"
                + (f"; filtered out: {', '.join(delivery.skipped)}" if delivery.skipped else "")
            )
            for outcome in delivery.outcomes:
                print(
                    f"  {outcome.handler:<8} {outcome.status} after "
                    f"{plural(outcome.attempts, 'attempt')}"
                    + ("" if outcome.result is None else f" → {outcome.result}")
                )
                run = outcome.result.get("run") if isinstance(outcome.result, dict) else None
                if run is not None:
                    _trace_run(await flows.wait(run))
    print(f"\n{len(store.runs())} workflow runs checkpointed in {store.path.name}")
    store.close()


def main() -> int:
    import anyio

    with tempfile.TemporaryDirectory(prefix="oneiric-flows-") as scratch:
        anyio.run(_demo, Path(scratch) / "state")
    return 0


if __name__ == "__main__":
    sys.exit(main())
