"""Workflow runs: a plan's DAG executed with anyio and checkpointed after every node.

A node starts as soon as all its upstream nodes have succeeded (independent
nodes run concurrently) and calls its task as `task(input, upstream)`: the
run's input and a dict of upstream node name -> result, both decoded afresh
from their JSON checkpoint, so a resumed run feeds a node exactly what an
uninterrupted one would.  Tasks may be sync (run in a worker thread) or
async, and must return JSON-serialisable data.

Per node: attempts and backoff come from the node's `retry`, else the task
component's, else one attempt; backoff doubles each attempt with jitter
(uniform between half and all of it, capped at `MAX_BACKOFF_S`); `timeout`
bounds each attempt (a sync task that overruns is abandoned in its thread).
A task component's `concurrency` caps how many of its calls run at once.

Durability (`oneiric._flows.store`): the run and all its nodes are recorded
before the first node starts; each attempt and each node's outcome is one
SQLite write.  A node whose success was recorded never runs again in that
run: `resume` (after a crash, SIGKILL, failure or cancellation) re-runs the
nodes that had not succeeded, so a node that was running when the process
died runs again (at-least-once for in-flight nodes, exactly-once for
completed ones).  A failed node fails the run: independent branches finish,
nodes below it are recorded as skipped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup

from oneiric import _trace
from oneiric._flows.context import at_attempt, at_node
from oneiric._flows.host import lookup
from oneiric._flows.store import FlowStore, LeaseLost, RunRecord, StoreError, StoreUnavailable
from oneiric._lifecycle.runtime import Runtime, _is_async
from oneiric._plan.model import Component, Plan, Retry, Workflow, WorkflowNode

MAX_BACKOFF_S = 300.0
DEFAULT_BACKOFF_MS = 100
CANCEL_POLL_S = 0.25
ADOPT_LIMIT = 16
T = TypeVar("T")


class NodeRunner(Protocol):
    """Runs a node's attempts elsewhere (`workers.RedisTasks`): the outcome once it is back."""

    async def run_node(
        self, digest: str, run_id: str, node: WorkflowNode, input_json: str, upstream_json: str
    ) -> NodeOutcome: ...


class WorkflowError(Exception):
    """The request cannot be run (unknown workflow or task, bad input, run not resumable)."""


def backoff_s(backoff_ms: int, attempt: int, rng: random.Random) -> float:
    """Delay before attempt `attempt + 1`: exponential, with jitter in [half, full]."""
    full: float = min(MAX_BACKOFF_S, backoff_ms / 1000 * 2.0 ** (attempt - 1))
    return full / 2 + rng.random() * full / 2


_ENCODE = json.JSONEncoder(sort_keys=True, allow_nan=False).encode  # `json.dumps` makes one a call


def to_json(value: Any, what: str) -> str:
    try:
        return _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise WorkflowError(f"{what} is not JSON data: {exc}") from None


async def store_io(store: FlowStore, call: Callable[..., T], *args: Any) -> T:
    """A store call: in a worker thread when the store is remote (it may wait and retry)."""
    if not store.remote:
        return call(*args)
    return await anyio.to_thread.run_sync(functools.partial(call, *args))


def find(plan: Plan, name: str) -> Workflow:
    """The plan's workflow `name`; `flowhost.Unknown` naming the known ones otherwise."""
    return lookup({w.key: w for w in plan.workflows}, name, "workflow")


@dataclass
class _Run:
    id: str
    workflow: str
    nodes: dict[str, WorkflowNode]
    input_json: str
    results: dict[str, str]  # node -> result JSON, for succeeded nodes
    states: dict[str, str] = field(default_factory=dict)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)
    failure: str | None = None
    lost: str | None = None  # why this runtime no longer owns the run (shared store)


class Workflows:
    """Runs the plan's workflows on a `Runtime`'s task components, checkpointing in a store.

    `await run(name, input)` runs to the end in the calling task; inside
    `async with workflows:` , `start()` runs in the background (used by
    events), and leaving the block waits for those runs.
    """

    def __init__(
        self,
        plan: Plan,
        runtime: Runtime,
        store: FlowStore,
        *,
        rng: random.Random | None = None,
        cancel_poll_s: float | None = CANCEL_POLL_S,
        tasks: NodeRunner | None = None,
    ) -> None:
        self.plan = plan
        self.runtime = runtime
        self.store = store
        self.tasks = tasks  # None: nodes run here; else dispatched to workers
        self._rng = rng or random.Random()
        self._cancel_poll_s = cancel_poll_s
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._active: dict[str, _Run] = {}
        self._group: TaskGroup | None = None
        self._log = structlog.get_logger("oneiric.workflows").bind(plan=plan.digest)

    async def __aenter__(self) -> Workflows:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        group, self._group = self._group, None
        assert group is not None
        return await group.__aexit__(*exc)

    # -- what a workflow needs -------------------------------------------------------
    def workflow(self, name: str) -> Workflow:
        return find(self.plan, name)

    @staticmethod
    def task_ids(plan: Plan, names: list[str] | None = None) -> list[str]:
        """Task components the named workflows (all by default) run."""
        return sorted(
            {
                f"task:{node.task}"
                for w in plan.workflows
                if names is None or w.key in names
                for node in w.nodes
            }
        )

    # -- in-process API --------------------------------------------------------------
    async def run(
        self, name: str, input: Any = None, *, run_id: str | None = None, trigger: str = "api"
    ) -> RunRecord:
        """Run workflow `name` to its end in this task; return the final record."""
        run = await self._create(name, input, run_id, trigger)
        if run is None:
            raise WorkflowError(f'a run "{run_id}" already exists')
        return await self._execute(run)

    async def resume(self, run_id: str) -> RunRecord:
        """Run what a stopped, failed or cancelled run has not completed; return its record."""
        try:
            record = await self._io(self.store.claim_for_resume, run_id)
        except StoreError as exc:
            raise WorkflowError(str(exc)) from None
        return await self._execute(self._resumed(record))

    def _resumed(self, record: RunRecord) -> _Run:
        """A claimed run as this process runs it: its succeeded nodes' results kept."""
        nodes = {n["name"]: WorkflowNode.model_validate(n) for n in record.definition}
        self._check_tasks(record.workflow, nodes.values())
        if record.plan_digest != self.plan.digest:
            self._log.warning(
                "resuming under another plan", run=record.id, started_under=record.plan_digest
            )
        done = {
            name: json.dumps(n.result, sort_keys=True)
            for name, n in record.nodes.items()
            if n.status == "succeeded"
        }
        self._log.info(
            "run resumed", run=record.id, workflow=record.workflow, completed=sorted(done)
        )
        return _Run(record.id, record.workflow, nodes, json.dumps(record.input), done)

    async def adopt(self, interval_s: float | None = None) -> None:
        """Take over, forever, the runs of a shared store whose owner stopped renewing its lease.

        Checks every `interval_s` (a third of the lease by default); each run
        taken runs in the background (inside `async with`) from its last
        checkpoints.  A no-op loop for a store without leases.
        """
        if self._group is None:
            raise RuntimeError("Workflows.adopt() needs `async with workflows:`")
        lease = self.store.lease_s
        if lease is None:
            return
        while True:
            try:
                taken = await self._io(self.store.adopt, ADOPT_LIMIT)
            except Exception as exc:  # the store's own retries were exhausted
                self._log.error("cannot look for runs to take over", error=str(exc))
                taken = []
            for run_id in taken:
                record = await self._io(self.store.run, run_id)
                if record is None:
                    continue
                self._log.warning("run taken over", run=run_id)
                try:
                    run = self._resumed(record)
                except WorkflowError as exc:
                    self._log.error("cannot run a taken-over run", run=run_id, error=str(exc))
                    continue
                self._active[run.id] = run
                self._group.start_soon(self._execute, run)
            await anyio.sleep(interval_s or lease / 3)

    async def start(
        self, name: str, input: Any = None, *, run_id: str | None = None, trigger: str = "api"
    ) -> str:
        """Record a run and run it in the background (inside `async with`); return its id.

        With an explicit `run_id` that already exists nothing new starts (so an
        event delivered twice starts its workflow once).
        """
        if self._group is None:
            raise RuntimeError("Workflows.start() needs `async with workflows:`")
        run = await self._create(name, input, run_id, trigger)
        if run is None:
            assert run_id is not None
            return run_id
        self._active[run.id] = run  # before it is scheduled: `wait()` must find it
        self._group.start_soon(self._execute, run)
        return run.id

    async def wait(self, run_id: str) -> RunRecord:
        """The final record of a run started by this process (or already finished)."""
        active = self._active.get(run_id)
        if active is not None:
            await active.done.wait()
        record = await self._io(self.store.run, run_id)
        if record is None:
            raise WorkflowError(f'no workflow run "{run_id}"')
        return record

    def active(self) -> list[str]:
        """Ids of the runs this process is running."""
        return list(self._active)

    def cancel_all(self) -> None:
        """Cancel every run of this process (each is recorded as cancelled, resumable)."""
        for run in list(self._active.values()):
            run.scope.cancel()

    async def release_all(self) -> list[str]:
        """Stop this process's runs without finishing them and end their leases now.

        Another runtime sharing the store (`adopt`) takes them over from their
        last checkpoints at once; a node that was running runs again there.
        """
        runs = list(self._active.values())
        for run in runs:
            run.lost = "released for another runtime"
            run.scope.cancel()
        for run in runs:
            await run.done.wait()
        ids = [run.id for run in runs]
        await self._io(self.store.release, ids)
        return ids

    def cancel(self, run_id: str) -> bool:
        """Cancel a run of this process; False when it is not running here."""
        active = self._active.get(run_id)
        if active is None:
            return False
        active.scope.cancel()
        return True

    # -- execution ---------------------------------------------------------------------
    def _check_tasks(self, workflow: str, nodes: Any) -> None:
        if self.tasks is not None:
            return  # the workers run them
        for node in nodes:
            if f"task:{node.task}" not in self.runtime.handles:
                raise WorkflowError(
                    f'workflow "{workflow}" node "{node.name}": task "{node.task}" '
                    "is not running (not in the plan or not activated)"
                )

    async def _io(self, call: Callable[..., T], *args: Any) -> T:
        return await store_io(self.store, call, *args)

    async def _create(self, name: str, input: Any, run_id: str | None, trigger: str) -> _Run | None:
        workflow = self.workflow(name)
        self._check_tasks(name, workflow.nodes)
        input_json = to_json(input, "the workflow input")
        rid = run_id or uuid.uuid4().hex[:16]
        by_name = {node.name: node for node in workflow.nodes}
        ordered = [by_name[name] for level in workflow.generations for name in level]
        definition = [node.model_dump(mode="json") for node in ordered]
        if not await self._io(
            self.store.create_run, rid, name, self.plan.digest, definition, input_json, trigger
        ):
            return None
        self._log.info("run started", run=rid, workflow=name, trigger=trigger)
        return _Run(rid, name, {n.name: n for n in workflow.nodes}, input_json, {})

    async def _execute(self, run: _Run) -> RunRecord:
        attributes = {"oneiric.workflow": run.workflow, "oneiric.run": run.id}
        with _trace.span("oneiric.workflow.run", attributes) as span:
            record = await self._execute_run(run)
            span.set("oneiric.outcome", record.status)
            if record.error:
                span.fail(record.error)
            return record

    async def _execute_run(self, run: _Run) -> RunRecord:
        self._active[run.id] = run
        started = time.perf_counter()
        try:
            try:
                async with anyio.create_task_group() as outer:
                    if self._cancel_poll_s:
                        outer.start_soon(self._watch_cancel, run, self._cancel_poll_s)
                    if self.store.lease_s is not None:
                        outer.start_soon(self._keep_lease, run, self.store.lease_s / 3)
                    with run.scope:
                        try:
                            await self._schedule(run)
                        except BaseExceptionGroup as group:
                            # Not ours any more, or the store is gone: stop here, write
                            # nothing more; the lease expires and another runtime goes on.
                            lost, rest = group.split((LeaseLost, StoreUnavailable))
                            if rest is not None:
                                raise rest from None
                            assert lost is not None
                            run.lost = str(_leaf(lost))
                    outer.cancel_scope.cancel()
            except BaseException:
                # Cancelled from outside (or a bug): record it, then let it propagate.
                with anyio.CancelScope(shield=True):
                    await self._finish(run, cancelled=True)
                raise
            await self._finish(run, cancelled=run.scope.cancel_called)
        finally:
            self._active.pop(run.id, None)
            run.done.set()
        record = await self._io(self.store.run, run.id)
        assert record is not None
        self._log.info(
            "run finished",
            run=run.id,
            workflow=run.workflow,
            status=record.status,
            ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return record

    async def _schedule(self, run: _Run) -> None:
        dependents: dict[str, list[str]] = {name: [] for name in run.nodes}
        waiting: dict[str, int] = {}
        for name, node in run.nodes.items():
            for upstream in node.depends_on:
                dependents[upstream].append(name)
            waiting[name] = sum(1 for up in node.depends_on if up not in run.results)

        async with anyio.create_task_group() as group:

            async def node_task(name: str) -> None:
                if await self._node(run, run.nodes[name]):
                    for below in dependents[name]:
                        waiting[below] -= 1
                        if waiting[below] == 0:
                            group.start_soon(node_task, below)

            for name in run.nodes:
                if name not in run.results and waiting[name] == 0:
                    group.start_soon(node_task, name)

    async def _node(self, run: _Run, node: WorkflowNode) -> bool:
        """`_run_node` in a span (with the node's attempts when tracing)."""
        attributes = {
            "oneiric.workflow": run.workflow,
            "oneiric.node": node.name,
            "oneiric.task": node.task,
        }
        with _trace.span("oneiric.workflow.node", attributes) as span:
            ok = await self._run_node(run, node)
            record = self.store.run(run.id) if _trace.enabled() else None
            if record is not None and node.name in record.nodes:
                span.set("oneiric.attempts", record.nodes[node.name].attempts)
            if not ok:
                span.fail(f"node {node.name} failed")
            return ok

    async def _run_node(self, run: _Run, node: WorkflowNode) -> bool:
        """Run one node (here, or on a worker); checkpoint its outcome; True on success."""
        started = time.time()
        upstream_json = to_json(
            {up: json.loads(run.results[up]) for up in node.depends_on}, "upstream results"
        )
        run.states[node.name] = "running"
        if self.tasks is not None:
            # On a worker: the attempts happen there; "running" is recorded once.
            await self._io(self.store.node_started, run.id, node.name, 1, started)
            outcome = await self.tasks.run_node(
                self.plan.digest or "", run.id, node, run.input_json, upstream_json
            )
        else:

            async def attempt_started(attempt: int) -> None:
                await self._io(self.store.node_started, run.id, node.name, attempt, time.time())

            task_id = f"task:{node.task}"
            component = self.plan.component(task_id)
            with at_node(run.id, node.name):
                outcome = await attempt_node(
                    self.runtime.handle(task_id),
                    node,
                    component,
                    run.input_json,
                    upstream_json,
                    limiter=self._limiter(node.task, component.concurrency if component else None),
                    rng=self._rng,
                    log=self._log.bind(run=run.id, node=node.name, task=task_id),
                    started=attempt_started,
                )
        if outcome.ok:
            assert outcome.result_json is not None
            run.results[node.name] = outcome.result_json
            run.states[node.name] = "succeeded"
        else:
            self._log.error(
                "node failed", run=run.id, node=node.name, attempts=outcome.attempts,
                error=outcome.error,
            )  # fmt: skip
            run.states[node.name] = "failed"
            run.failure = run.failure or f"node {node.name} failed: {outcome.error}"
        await self._io(
            self.store.node_finished,
            run.id,
            node.name,
            "succeeded" if outcome.ok else "failed",
            outcome.attempts,
            outcome.result_json,
            outcome.error,
            started,
            time.time(),
        )
        return outcome.ok

    async def _finish(self, run: _Run, *, cancelled: bool) -> None:
        if run.lost is not None:
            self._log.warning("run lost to another runtime", run=run.id, reason=run.lost)
            return
        if cancelled:
            status, error = "cancelled", "cancelled"
            ends = [(n, "cancelled") for n, s in run.states.items() if s == "running"]
        elif run.failure is not None:
            status, error = "failed", run.failure
            ends = [(n, "skipped") for n in run.nodes if n not in run.states]
        else:
            status, error, ends = "succeeded", None, []
        try:
            await self._io(self.store.finish_run, run.id, status, error, ends)
        except LeaseLost as exc:
            run.lost = str(exc)
            self._log.warning("run lost to another runtime", run=run.id, reason=run.lost)

    async def _watch_cancel(self, run: _Run, interval: float) -> None:
        """Obey `oneiric workflow cancel` from another process (polls the store)."""
        version = self.store.data_version()
        while True:
            await anyio.sleep(interval)
            now = self.store.data_version()
            if now != version:
                version = now
                if await self._io(self.store.cancel_requested, run.id):
                    self._log.info("run cancel requested", run=run.id)
                    run.scope.cancel()
                    return

    async def _keep_lease(self, run: _Run, interval: float) -> None:
        """Renew this runtime's lease on the run; stop the run here if another took it."""
        while True:
            await anyio.sleep(interval)
            try:
                lost = await self._io(self.store.renew, [run.id])
            except Exception as exc:  # unreachable beyond the store's retries: keep trying
                self._log.error("cannot renew the lease", run=run.id, error=str(exc))
                continue
            if lost:
                run.lost = "its lease expired and another runtime took it over"
                self._log.error("run lost to another runtime", run=run.id)
                run.scope.cancel()
                return

    def _limiter(self, task: str, concurrency: int | None) -> anyio.CapacityLimiter | None:
        if not concurrency or concurrency < 1:
            return None
        limiter = self._limiters.get(task)
        if limiter is None:
            limiter = self._limiters[task] = anyio.CapacityLimiter(concurrency)
        return limiter


@dataclass(frozen=True)
class NodeOutcome:
    ok: bool
    attempts: int
    result_json: str | None = None
    error: str | None = None


async def attempt_node(
    handle: Callable[..., Any],
    node: WorkflowNode,
    component: Component | None,
    input_json: str,
    upstream_json: str,
    *,
    limiter: anyio.CapacityLimiter | None,
    rng: random.Random,
    log: Any,
    started: Callable[[int], Awaitable[None]] | None = None,
    count: Callable[[], Awaitable[int]] | None = None,
    done: int = 0,
) -> NodeOutcome:
    """A node's attempts (retry, backoff, timeout, concurrency), here or on a worker.

    `count()` numbers attempts when they are counted elsewhere (a worker's
    Redis counter, which survives the worker); `done` attempts were made before.
    """
    retry: Retry | None = node.retry or (component.retry if component else None)
    attempts = max(1, retry.attempts) if retry else 1
    backoff_ms = (
        retry.backoff_ms if retry is not None and retry.backoff_ms is not None else None
    ) or DEFAULT_BACKOFF_MS
    timeout = None if node.timeout_ms is None else node.timeout_ms / 1000
    error = ""
    attempt = done
    while attempt < attempts:
        attempt = await count() if count is not None else attempt + 1
        if attempt > attempts:
            break
        if started is not None:
            await started(attempt)
        try:
            async with limiter or contextlib.nullcontext():
                with anyio.move_on_after(timeout) as deadline, at_attempt(attempt):
                    result = await _call(handle, json.loads(input_json), json.loads(upstream_json))
            if deadline.cancelled_caught:
                assert timeout is not None
                error = f"timed out after {timeout:g}s"
            else:
                result_json = to_json(result, f"the result of node {node.name}")
                return NodeOutcome(True, attempt, result_json)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            delay = backoff_s(backoff_ms, attempt, rng)
            log.warning("node attempt failed", attempt=attempt, error=error, retry_in_s=delay)
            _trace.event("retry", attempt=attempt, error=error, retry_in_s=delay)
            await anyio.sleep(delay)
    return NodeOutcome(
        False,
        attempts,
        None,
        error or f"its {attempts} attempt(s) were used up by workers that stopped",
    )


_ASYNC: dict[int, tuple[Any, bool]] = {}  # id(instance) -> (instance, is async): inspect is slow


def _async(instance: Any) -> bool:
    found = _ASYNC.get(id(instance))
    if found is None or found[0] is not instance:
        if len(_ASYNC) > 4096:  # instances come and go with swaps: keep it bounded
            _ASYNC.clear()
        found = _ASYNC[id(instance)] = (instance, _is_async(instance))
    return found[1]


async def _call(target: Callable[..., Any], *args: Any) -> Any:
    """Call a handle's current instance: awaited if async, in a worker thread if sync."""
    slot = getattr(target, "slot", None)
    instance = slot.instance if slot is not None else target
    if _async(instance):
        return await target(*args)
    result = await anyio.to_thread.run_sync(
        functools.partial(target, *args), abandon_on_cancel=True
    )
    if hasattr(result, "__await__"):
        return await result
    return result


def _leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
