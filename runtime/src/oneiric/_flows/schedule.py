"""Delayed tasks (`task.schedule`): recorded in the flow store, run by a scheduler loop.

`schedule()` writes one row to the store's `scheduled` table (the task, its
JSON input, when it is due); nothing is kept in memory, so a task scheduled
before the runtime stops runs after it starts again (`oneiric task serve`).
The loop claims due tasks atomically (a task is claimed by one process) and
calls each as a workflow node would, `task(input, {})`, with the task
component's retry, timeout and concurrency.  A task whose success or failure
was recorded never runs again; one that was running when its process died
runs again (at-least-once for in-flight tasks).

The loop is the same for both stores; what differs is how a claim ends when
its holder dies.  In STATE/flows.db a claim names the process (its pid, so
another process on that machine takes the task once the pid is gone).  In
PostgreSQL, shared by runtimes on several machines, a claim is a lease,
renewed here every third of the lease time: a claimer killed with kill -9
stops renewing, and once the lease has expired another runtime claims the
task (`FOR UPDATE SKIP LOCKED`: one taker).  An outcome is written only while
the writer holds the claim, so it is recorded once.
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
from oneiric._flows.workflows import attempt_node, store_io, to_json
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Plan, WorkflowNode

POLL_S = 0.5
CLAIM_LIMIT = 16


class ScheduleError(Exception):
    """The task cannot be scheduled (unknown task, bad delay)."""


def schedule(
    plan: Plan, store: FlowStore, task: str, input: Any, delay_s: float, task_id: str | None
) -> tuple[str, float, bool]:
    """Record `task` due in `delay_s` seconds: (id, due_at, newly scheduled)."""
    if plan.component(f"task:{task}") is None:
        known = sorted(c.key for c in plan.components if c.domain == "task")
        raise ScheduleError(f'no task "{task}" in the plan (known: {", ".join(known) or "none"})')
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
        self._running: dict[str, anyio.CancelScope] = {}  # claimed task id -> its scope
        self._log = structlog.get_logger("oneiric.schedule").bind(plan=plan.digest)

    @staticmethod
    def task_ids(plan: Plan) -> list[str]:
        return sorted(c.id for c in plan.components if c.domain == "task")

    async def serve(self, poll_s: float = POLL_S) -> None:
        """Run due tasks, forever (cancel to stop: the tasks cut short are given back)."""
        async with anyio.create_task_group() as group:
            if self.store.lease_s is not None:
                group.start_soon(self._keep_leases, self.store.lease_s / 3)
            while True:
                try:
                    claimed = await store_io(
                        self.store, self.store.claim_due, time.time(), CLAIM_LIMIT
                    )
                except Exception as exc:  # the store's own retries were exhausted: keep trying
                    self._log.error("cannot look for due tasks", error=str(exc))
                    claimed = []
                for due in claimed:
                    group.start_soon(self.run, due)
                await anyio.sleep(poll_s)

    async def _keep_leases(self, interval: float) -> None:
        """Renew the claims on the tasks running here; stop those another runtime took."""
        while True:
            await anyio.sleep(interval)
            try:
                lost = await store_io(self.store, self.store.renew_scheduled, list(self._running))
            except Exception as exc:  # unreachable beyond the store's retries: keep trying
                self._log.error("cannot renew the claims on scheduled tasks", error=str(exc))
                continue
            for task_id in lost:
                scope = self._running.get(task_id)
                if scope is not None:
                    self._log.error("scheduled task lost to another runtime", id=task_id)
                    scope.cancel()

    async def run(self, due: Scheduled) -> bool:
        """Run one claimed task and record its outcome; True on success."""
        task_id = f"task:{due.task}"
        component = self.plan.component(task_id)
        if component is None or task_id not in self.runtime.handles:
            error = f'task "{due.task}" is not in the running plan'
            self._log.error("scheduled task failed", id=due.id, error=error)
            await self._record(due, "failed", None, error)
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
        scope = self._running[due.id] = anyio.CancelScope()
        try:
            with scope, at_node(due.id, due.task):  # flow actions it calls: ids "ID-TASK"
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
        except BaseException:  # cancelled (the loop stops): give the task back
            with anyio.CancelScope(shield=True):
                try:
                    await store_io(self.store, self.store.release_scheduled, [due.id])
                except Exception as exc:  # it is given back when its claim ends anyway
                    self._log.error("cannot give back a scheduled task", id=due.id, error=str(exc))
            raise
        finally:
            self._running.pop(due.id, None)
        if scope.cancel_called:  # lost its claim (`_keep_leases`): the new claimer records it
            return False
        status = "succeeded" if outcome.ok else "failed"
        if await self._record(due, status, outcome.result_json, outcome.error):
            self._log.info("scheduled task finished", id=due.id, task=due.task, status=status)
        return outcome.ok

    async def _record(
        self, due: Scheduled, status: str, result_json: str | None, error: str | None
    ) -> bool:
        """Write a task's outcome; False if not written (it then runs again, elsewhere or later)."""
        try:
            recorded = await store_io(
                self.store, self.store.scheduled_finished, due.id, status, result_json, error
            )
        except Exception as exc:  # the store's retries were exhausted
            self._log.error("scheduled task outcome not recorded", id=due.id, error=str(exc))
            return False
        if not recorded:
            self._log.warning("scheduled task lost to another runtime", id=due.id)
        return recorded
