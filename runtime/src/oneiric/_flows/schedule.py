"""Delayed tasks (`task.schedule`): recorded in the flow store, run by a scheduler loop.

`schedule()` writes one row to flows.db's `scheduled` table (the task, its
JSON input, when it is due); nothing is kept in memory, so a task scheduled
before the runtime stops runs after it starts again (`oneiric task serve`).
The loop claims due tasks in one transaction (a task is claimed by one
process) and calls each as a workflow node would, `task(input, {})`, with
the task component's retry, timeout and concurrency.  A task whose success
or failure was recorded never runs again; one that was running when its
process died runs again (at-least-once for in-flight tasks).
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import anyio
import structlog

from oneiric._flows.context import at_node
from oneiric._flows.store import FlowStore, Scheduled
from oneiric._flows.workflows import attempt_node, to_json
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Plan, WorkflowNode

POLL_S = 0.5
CLAIM_LIMIT = 16


class ScheduleError(Exception):
    """The task cannot be scheduled (unknown task, bad delay, no local store)."""


def schedule(
    plan: Plan, store: FlowStore, task: str, input: Any, delay_s: float, task_id: str | None
) -> tuple[str, float, bool]:
    """Record `task` due in `delay_s` seconds: (id, due_at, newly scheduled)."""
    if plan.component(f"task:{task}") is None:
        known = sorted(c.key for c in plan.components if c.domain == "task")
        raise ScheduleError(f'no task "{task}" in the plan (known: {", ".join(known) or "none"})')
    if store.remote:
        raise ScheduleError(
            "scheduled tasks are kept in the local flow store (STATE/flows.db); "
            "a shared PostgreSQL store does not hold them"
        )
    input_json = to_json(input, "the task input")
    tid = task_id or uuid.uuid4().hex[:16]
    due = time.time() + delay_s
    return tid, due, store.schedule(tid, task, input_json, due)


class Scheduler:
    """Runs the due scheduled tasks of a store on a `Runtime`'s task components."""

    def __init__(self, plan: Plan, runtime: Runtime, store: FlowStore) -> None:
        self.plan = plan
        self.runtime = runtime
        self.store = store
        self._rng = random.Random()
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._log = structlog.get_logger("oneiric.schedule").bind(plan=plan.digest)

    @staticmethod
    def task_ids(plan: Plan) -> list[str]:
        return sorted(c.id for c in plan.components if c.domain == "task")

    async def serve(self, poll_s: float = POLL_S) -> None:
        """Run due tasks, forever (cancel to stop; a task cut short runs again later)."""
        async with anyio.create_task_group() as group:
            while True:
                for due in self.store.claim_due(time.time(), CLAIM_LIMIT):
                    group.start_soon(self.run, due)
                await anyio.sleep(poll_s)

    async def run(self, due: Scheduled) -> bool:
        """Run one claimed task and record its outcome; True on success."""
        task_id = f"task:{due.task}"
        component = self.plan.component(task_id)
        if component is None or task_id not in self.runtime.handles:
            error = f'task "{due.task}" is not in the running plan'
            self._log.error("scheduled task failed", id=due.id, error=error)
            self.store.scheduled_finished(due.id, "failed", None, error)
            return False
        limiter = None
        if component.concurrency:
            limiter = self._limiters.setdefault(
                due.task, anyio.CapacityLimiter(component.concurrency)
            )
        node = WorkflowNode(
            name=f"scheduled:{due.id}",
            task=due.task,
            depends_on=[],
            span=component.span,
        )
        with at_node(due.id, due.task):  # flow actions it calls: ids "ID-TASK"
            outcome = await attempt_node(
                self.runtime.handle(task_id),
                node,
                component,
                to_json(due.input, "the task input"),
                "{}",
                limiter=limiter,
                rng=self._rng,
                log=self._log.bind(id=due.id, task=task_id),
            )
        status = "succeeded" if outcome.ok else "failed"
        self.store.scheduled_finished(due.id, status, outcome.result_json, outcome.error)
        self._log.info("scheduled task finished", id=due.id, task=due.task, status=status)
        return outcome.ok
