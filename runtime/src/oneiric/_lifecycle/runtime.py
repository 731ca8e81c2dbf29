"""The lifecycle engine: activate a plan's components and swap them live, make before break.

`Runtime.apply(plan)` is the one way a plan takes effect, at start (from no
plan) and for every later plan:

0. load: diff against the running plan by component fingerprint; for every
   changed or added component check its pin and import it.  Any failure
   rejects the plan (`PlanRejected`) and nothing changes.
1. make: in activation order (dependencies first) activate each new instance
   with its timeout and health-check it, while the old one keeps serving.  A
   new instance gets no traffic until bound; an added component is bound as
   soon as it is healthy so that new dependents can reach it while warming.
   Any failure tears down what was made (`SwapAborted`); old instances stay.
2. bind: all changed components are rebound in one pass with no await, so
   no other coroutine observes a half-bound plan.
3. probation: new instances are health-checked again; a failure rebinds the
   old instances (still alive, never cleaned up before this point) and
   tears down the new ones (`RolledBack`).
4. break: old instances and removed components, in reverse activation order,
   stop taking calls, drain their in-flight calls (deadline), then clean up.
   A cleanup failure is logged and the new plan stays.

Dependents are not recreated when a dependency changes: they hold the
dependency's `Handle`, which now points at the new instance.

Embedding (docs/components.md): `async with Runtime("golden/dev.plan.json") as
rt:` applies the plan and stops the runtime at the end; `with Runtime(...) as
rt:` does the same from synchronous code, the runtime's event loop running in
a thread of its own (`rt.portal` runs coroutines on it).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio
import structlog

from oneiric import _trace
from oneiric._lifecycle import attest, configcheck
from oneiric._lifecycle.deadlines import (
    Abandoned,
    DeadlineRunner,
    Overrun,
    run_abandonable,
    run_each,
)
from oneiric._lifecycle.handle import Handle, Slot
from oneiric._lifecycle.modulepath import Imports
from oneiric._plan import values
from oneiric._plan.canonical import dumps
from oneiric._plan.model import Component, Plan, load_plan

DEFAULT_ACTIVATE_TIMEOUT_S = 30.0
DEFAULT_HEALTH_TIMEOUT_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 10.0
# Domains whose implementation is a factory producing an instance; the others are callables.
FACTORY_DOMAINS = ("adapter", "service")

# `_sync_health`'s answer for a check that must run on the event loop.
ON_LOOP = "<on loop>"

# Component fields that do not change the instance: a plan differing only there swaps nothing.
_COSMETIC = {"explanation", "span", "layer", "layers", "priority"}


class PlanRejected(Exception):
    """The plan cannot be run here (pin mismatch, missing implementation): nothing changed."""


class SwapAborted(Exception):
    """A new instance failed to activate or was unhealthy: the old plan keeps serving."""


class RolledBack(Exception):
    """A new instance failed its probation health check: the previous plan was restored."""


class Superseded(Exception):
    """A newer plan arrived before this one was bound: its new instances were torn down
    unserved and the old plan keeps serving (not a failure: the newer plan is applied next)."""


@dataclass
class Instance:
    component: Component
    value: Any
    slot: Slot
    healthy_at: float | None = None  # time.time() its health check passed before bind
    secrets: str = ""  # digest of the secret values it was made with (values.secret_digest)


@dataclass
class _Pending:
    """A component the worker thread could not finish with sync calls; the event loop does."""

    component: Component
    value: Any  # an Instance to health-check, or (awaiting) an awaitable of the value
    awaiting: bool


class _Failed(Exception):
    """A new instance failed in the worker thread; `instance` (if made) needs cleaning up."""

    def __init__(self, message: str, instance: Instance | None = None) -> None:
        super().__init__(message)
        self.instance = instance


@dataclass
class SwapReport:
    digest: str | None
    serial: int | None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    cleanup_failures: list[str] = field(default_factory=list)
    bind_seconds: float = 0.0
    total_seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "serial": self.serial,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "cleanup_failures": self.cleanup_failures,
            "bind_ms": round(self.bind_seconds * 1000, 3),
            "total_ms": round(self.total_seconds * 1000, 3),
        }


class Deps:
    """What a factory that takes a `deps` argument receives: handles of its requirements."""

    def __init__(self, handles: dict[str, Handle[Any]]) -> None:
        self._handles = handles

    def __getitem__(self, component_id: str) -> Handle[Any]:
        try:
            return self._handles[component_id]
        except KeyError:
            known = ", ".join(sorted(self._handles)) or "none"
            raise KeyError(
                f"{component_id} is not required by this component (has: {known})"
            ) from None

    def handle(self, component_id: str, kind: Callable[..., T]) -> Handle[T]:
        """`deps[component_id]` typed: `deps.handle("adapter:cache", Cache).api` is a `Cache`."""
        return self[component_id]

    def __contains__(self, component_id: object) -> bool:
        return component_id in self._handles

    def __iter__(self) -> Any:
        return iter(self._handles)


def fingerprint(component: Component) -> bytes:
    """What identifies a running instance: everything but explanation and source positions."""
    data = component.model_dump(mode="json", exclude=_COSMETIC)
    for requirement in data["requires"]:
        requirement.pop("span", None)
    return dumps(data)


if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

_generations = itertools.count(1)
T = TypeVar("T")


class Runtime:
    """Holds the running plan, one `Handle` per component, and applies new plans."""

    def __init__(
        self,
        plan: Plan | str | Path | None = None,
        *,
        probation_s: float = 0.0,
        imports: Imports | None = None,
    ) -> None:
        """`plan`: what `async with`/`with` applies (a plan, or an unsigned plan file).

        `imports`: where the plans' module paths are (default: found from the plan
        file, else the working directory; see `oneiric._lifecycle.modulepath`).
        """
        near = str(plan) if isinstance(plan, str | Path) else None
        self.imports = imports or Imports.find(near)
        self._initial = plan
        self._portal: Any = None  # the blocking portal's context manager (`with`)
        self.portal: BlockingPortal | None = None
        self.plan: Plan | None = None
        self.serial: int | None = None
        self.handles: dict[str, Handle[Any]] = {}
        self.instances: dict[str, Instance] = {}
        self.probation_s = probation_s
        self.cleanup_failures = 0
        self.uncleaned: list[str] = []  # components `stop` abandoned at its deadline
        self.drain_overruns: Counter[str] = Counter()  # by component: drain deadline passed
        self._lock = anyio.Lock()
        self._log = structlog.get_logger("oneiric.runtime")
        self._secret_digests: dict[str, str] = {}  # by component, at its latest activation

    # -- application access --------------------------------------------------
    @overload
    def handle(self, component_id: str) -> Handle[Any]: ...
    @overload
    def handle(self, component_id: str, kind: Callable[..., T]) -> Handle[T]: ...

    def handle(self, component_id: str, kind: Callable[..., Any] | None = None) -> Handle[Any]:
        """The handle of `component_id`; with `kind` (a class or protocol) typed `Handle[kind]`.

        (`kind` is typed `Callable[..., T]`, not `type[T]`: mypy refuses a Protocol
        where `type[T]` is expected.)

        A runtime-checkable `kind` is checked against the bound instance now
        (`TypeError` when it does not fit); `handle.api` is then typed `kind`.
        """
        handle = self.handles.get(component_id)
        if handle is None:
            known = ", ".join(sorted(self.handles)) or "none"
            raise KeyError(f"no component {component_id} in the running plan (known: {known})")
        slot = handle.slot
        if kind is not None and slot is not None and not _fits(slot.instance, kind):
            raise TypeError(
                f"{component_id} is {type(slot.instance).__qualname__} "
                f"({handle.provider}), not a {getattr(kind, '__qualname__', kind)}"
            )
        return handle

    # -- embedding -------------------------------------------------------------
    async def __aenter__(self) -> Runtime:
        if self._initial is not None:
            await self.apply(_plan_of(self._initial))
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> Runtime:
        from anyio.from_thread import start_blocking_portal

        self._portal = start_blocking_portal()
        self.portal = cast("BlockingPortal", self._portal.__enter__())
        try:
            self.portal.call(self.__aenter__)
        except BaseException:
            self._portal.__exit__(None, None, None)
            self.portal = self._portal = None
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.portal is not None, "__exit__ without __enter__"
        try:
            self.portal.call(self.stop)
        finally:
            self._portal.__exit__(None, None, None)
            self.portal = self._portal = None

    # -- applying plans ------------------------------------------------------
    async def apply(
        self,
        plan: Plan,
        serial: int | None = None,
        superseded: Callable[[], bool] | None = None,
        renew: Collection[str] = (),
    ) -> SwapReport:
        """Make `plan` the running plan (see the module docstring for the phases).

        `superseded` (thread-safe, cheap) is asked between activations and just
        before bind: once it is true, what was made is torn down, never served,
        and `Superseded` is raised.  Components in `renew` are swapped for new
        instances even when the plan did not change them (a rotated secret).
        """
        async with self._lock:
            attributes = {"oneiric.plan": plan.digest or "", "oneiric.target": plan.target}
            with _trace.span("oneiric.swap", attributes) as span:
                try:
                    report = await self._apply(plan, serial, superseded or _never, renew)
                except (PlanRejected, SwapAborted, RolledBack, Superseded) as exc:
                    span.set("oneiric.outcome", _OUTCOMES[type(exc)])
                    span.fail(str(exc))
                    raise
                span.set("oneiric.outcome", "applied")
                for what in ("added", "changed", "removed"):
                    span.set(f"oneiric.{what}", len(getattr(report, what)))
                return report

    async def refresh_secrets(self, references: Collection[str] = ()) -> SwapReport | None:
        """Re-read secrets (those in `references`, or all) and swap, make before break,
        exactly the running components whose secret values changed; None when none did.

        A secret that cannot be read now fails the swap (`SwapAborted`, naming the
        component and the reference); the instances made with the old value keep serving.
        """
        values.SECRETS.invalidate(references)
        plan = self.plan
        if plan is None:
            return None
        wanted = set(references)
        changed: list[str] = []
        for cid, instance in list(self.instances.items()):
            used = values.secret_references(instance.component.config)
            if not used or (wanted and not wanted & set(used)):
                continue
            config = instance.component.config
            try:
                resolved = await anyio.to_thread.run_sync(values.resolve, cid, config)
            except values.ConfigError as exc:
                raise SwapAborted(str(exc)) from None
            if values.secret_digest(resolved) != instance.secrets:
                changed.append(cid)
        if not changed:
            return None
        self._log.info("secrets changed", components=changed)
        return await self.apply(plan, self.serial, renew=changed)

    async def _apply(
        self,
        plan: Plan,
        serial: int | None,
        superseded: Callable[[], bool],
        renew: Collection[str] = (),
    ) -> SwapReport:
        started = time.perf_counter()
        old_plan, old_serial = self.plan, self.serial
        log = self._log.bind(plan=plan.digest, serial=serial)
        report = SwapReport(plan.digest, serial)
        old = {c.id: c for c in old_plan.components} if old_plan else {}
        new = {c.id: c for c in plan.components}
        order = [cid for cid in plan.activation_order if cid in new]
        for cid in order:
            if cid not in old:
                report.added.append(cid)
            elif cid in renew or fingerprint(old[cid]) != fingerprint(new[cid]):
                report.changed.append(cid)
        old_order = old_plan.activation_order if old_plan else []
        report.removed = [cid for cid in old_order if cid not in new]
        position = {cid: i for i, cid in enumerate(order)}
        todo = sorted([*report.added, *report.changed], key=position.__getitem__)

        # 0. load: pins and imports, before anything is activated.
        self.imports.install(plan.module_path)
        loader = attest.Loader(plan.module_path)
        factories: dict[str, Any] = {}
        for cid in todo:
            component = new[cid]
            if component.implementation is None:
                continue
            try:
                factories[cid] = loader.load(component)
            except (attest.PinMismatch, attest.ImplementationError) as exc:
                log.error("plan rejected", component=cid, error=str(exc))
                raise PlanRejected(str(exc)) from exc

        # 1. make.
        for cid in report.added:
            self.handles.setdefault(cid, Handle(cid))
        made: dict[str, Instance] = {}
        try:
            await self._make(
                [new[cid] for cid in todo], factories, set(report.added), made, log, superseded
            )
            if superseded():
                raise Superseded(f"plan {plan.digest} superseded before bind")
        except Exception as exc:
            await self._teardown(made, report.added, log)
            for cid in report.added:  # not made before the failure: never bound
                self.handles.pop(cid, None)
            if isinstance(exc, Superseded):
                log.info("swap abandoned: superseded before bind", torn_down=list(made))
                raise
            raise SwapAborted(str(exc)) from exc

        # 2. bind: no await inside this loop.
        bind_started, traced = time.perf_counter(), _trace.start()
        previous: dict[str, Instance] = {}
        for cid in report.changed:
            previous[cid] = self.instances[cid]
            self.handles[cid].bind(made[cid].slot)
        _trace.record("oneiric.bind", traced, {"oneiric.components": len(report.changed)})
        self.instances.update(made)
        self.plan, self.serial = plan, serial
        report.bind_seconds = time.perf_counter() - bind_started

        # 3. probation.
        if old_plan is not None and made:
            if self.probation_s:
                await anyio.sleep(self.probation_s)
            failure = await self._probation(made)
            if failure is not None:
                for cid, instance in previous.items():
                    self.handles[cid].bind(_rebound(instance))
                    self.instances[cid] = instance
                for cid in made:
                    if cid not in previous:
                        self.instances.pop(cid, None)
                self.plan, self.serial = old_plan, old_serial
                await self._teardown(made, report.added, log)
                log.error("rolled back", reason=failure)
                raise RolledBack(failure)

        # 4. break: stale instances drain, then clean up, dependents first.
        stale = [(cid, previous[cid]) for cid in report.changed]
        for cid in report.removed:
            handle = self.handles.pop(cid)
            handle.bind(None)
            stale.append((cid, self.instances.pop(cid)))
        old_position = {cid: i for i, cid in enumerate(old_order)}
        stale.sort(key=lambda item: old_position[item[0]], reverse=True)
        report.cleanup_failures = await self._retire_all([i for _, i in stale], log)
        report.total_seconds = time.perf_counter() - started
        log.info("plan applied", **report.as_json())
        return report

    async def stop(self, budget_s: float | None = None) -> list[str]:
        """Stop taking calls, drain, clean up in reverse activation order; return failures.

        Each component's handle is unbound just before it is retired, so a
        dependent's cleanup can still reach its dependencies.  `budget_s` bounds
        the whole: components not cleaned up by then are abandoned, returned
        with the failures and listed in `uncleaned`.
        """
        async with self._lock:
            order = self.plan.activation_order if self.plan else []
            log = self._log.bind(plan=self.plan.digest if self.plan else None, serial=self.serial)
            running = [self.instances.pop(c) for c in reversed(order) if c in self.instances]
            retired: set[str] = set()
            failures: list[str] = []
            with anyio.move_on_after(budget_s if budget_s is not None else float("inf")):
                await self._retire_all(
                    running, log, unbind=True, retired=retired, failures=failures
                )
            left = [i.component.id for i in running if i.component.id not in retired]
            if left:
                self.uncleaned = left
                log.error("shutdown deadline passed", uncleaned=left, deadline_s=budget_s)
                failures = [*failures, *(cid for cid in left if cid not in failures)]
            for handle in self.handles.values():  # none left in a consistent runtime
                handle.bind(None)
            self.handles.clear()
            self.plan = None
        return failures

    def drain_deadline(self) -> float:
        """The longest drain deadline among the running components, in seconds."""
        return max(
            (
                _seconds(i.component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
                for i in self.instances.values()
            ),
            default=0.0,
        )

    # -- operator controls ---------------------------------------------------
    async def drain(self, ids: list[str], timeout_s: float) -> dict[str, dict[str, int]]:
        """Pause `ids` and wait (up to `timeout_s`) for their in-flight calls to finish."""
        waited: dict[str, dict[str, int]] = {}
        deadline = time.monotonic() + timeout_s
        for cid in ids:
            self.handles[cid].paused = True
        for cid in ids:
            slot = self.handles[cid].slot
            before = slot.inflight if slot else 0
            remaining = 0
            if slot is not None and before:
                left = max(0.0, deadline - time.monotonic())
                remaining = await anyio.to_thread.run_sync(slot.wait_idle, left)
            waited[cid] = {"inflight": before, "remaining": remaining}
        return waited

    # -- making instances ----------------------------------------------------
    async def _make(
        self,
        components: list[Component],
        factories: dict[str, Any],
        added: set[str],
        made: dict[str, Instance],
        log: Any,
        superseded: Callable[[], bool],
    ) -> None:
        """Activate and health-check `components` in order into `made`, binding added ones.

        Runs of components with sync factories are made in one worker thread
        under per-call deadlines (`deadlines.DeadlineRunner`), with no thread
        switch per component.  An async factory, an awaitable result or an
        async health check is finished on the event loop.
        """
        on_loop = _async_factories(components, factories)
        index = 0
        while index < len(components):
            component = components[index]
            if superseded():
                raise Superseded(component.id)
            if component.id in on_loop:
                self._keep(
                    await self._activate(component, factories[component.id], log), made, added
                )
                index += 1
                continue
            batch: list[Component] = []
            for candidate in components[index:]:
                if candidate.id in on_loop:
                    break
                batch.append(candidate)
            runner = DeadlineRunner()

            def work(
                batch: list[Component] = batch, runner: DeadlineRunner = runner
            ) -> _Pending | None:
                # Runs in the worker thread.  Abandonment happens only during a call,
                # so once a call has returned, `runner.abandoned` is final until the next.
                for item in batch:
                    if superseded():
                        raise Superseded(item.id)
                    try:
                        outcome = self._make_sync(item, factories.get(item.id), runner, log)
                    except _Failed as failed:
                        if failed.instance is not None and runner.abandoned:
                            _abandon(failed.instance, log)
                        raise
                    if isinstance(outcome, _Pending):
                        return outcome
                    if runner.abandoned:
                        _abandon(outcome, log)
                        raise Abandoned(item.id)
                    self._keep(outcome, made, added)
                return None

            before = len(made)
            try:
                pending = await runner.run(work)
            except _Failed as failed:
                if failed.instance is not None:
                    await _close(failed.instance)
                raise SwapAborted(str(failed)) from None
            except Overrun as exc:
                raise SwapAborted(str(exc)) from None
            index += len(made) - before
            if pending is not None:
                self._keep(await self._finish(pending, log), made, added)
                index += 1

    def _keep(self, instance: Instance, made: dict[str, Instance], added: set[str]) -> None:
        """A healthy new instance: record it; an added component is bound at once."""
        cid = instance.component.id
        instance.secrets = self._secret_digests.pop(cid, "")
        made[cid] = instance
        if cid in added:
            self.handles[cid].bind(instance.slot)

    def _factory_kwargs(self, component: Component, factory: Any) -> dict[str, Any]:
        """The factory's keyword arguments: resolved config, and `deps` when it takes them."""
        resolved = values.resolve(component.id, component.config)
        self._secret_digests[component.id] = values.secret_digest(resolved)
        config = configcheck.check(component, factory, resolved)
        if component.domain in FACTORY_DOMAINS and _takes_deps(factory):
            needed = [f"{r.domain}:{r.key}" for r in component.requires]
            config["deps"] = Deps({cid: self.handles[cid] for cid in needed})
        return config

    def _make_sync(
        self, component: Component, factory: Any, runner: DeadlineRunner, log: Any
    ) -> Instance | _Pending:
        """In the worker thread: activate and health-check one component with sync calls.

        Returns the healthy instance, or `_Pending` when the rest needs the event
        loop (an awaitable from the factory, an async health check); raises
        `_Failed` (with the instance to clean up, if one was made) otherwise.
        """
        cid = component.id
        value: Any = None
        if factory is not None:
            try:
                config = self._factory_kwargs(component, factory)
            except values.ConfigError as exc:
                raise _Failed(str(exc)) from None
            if component.domain in FACTORY_DOMAINS:
                timeout = _seconds(
                    component.lifecycle.activate_timeout_ms, DEFAULT_ACTIVATE_TIMEOUT_S
                )
                started = _trace.start()
                try:
                    value = runner.call(
                        functools.partial(factory, **config), timeout, f"{cid}: activation"
                    )
                except Overrun as exc:
                    _trace.record(ACTIVATE, started, _attributes(component), str(exc))
                    raise _Failed(str(exc), _instance(component, exc.result)) from None
                except Abandoned:
                    raise
                except Exception as exc:
                    _trace.record(ACTIVATE, started, _attributes(component), repr(exc))
                    _component_log(log, component).error("activation failed", error=repr(exc))
                    raise _Failed(f"{cid}: activation failed: {exc!r}") from exc
                if inspect.isawaitable(value):
                    return _Pending(component, value, awaiting=True)
                _trace.record(ACTIVATE, started, _attributes(component))
            else:
                value = functools.partial(factory, **config) if config else factory
        instance = _instance(component, value)
        problem = _sync_health(instance, runner)
        if problem is ON_LOOP:
            return _Pending(component, instance, awaiting=False)
        if problem is not None:
            raise self._unhealthy(instance, problem, log)
        _activated(instance, log)
        return instance

    def _unhealthy(self, instance: Instance, problem: str, log: Any) -> _Failed:
        _component_log(log, instance.component).error("unhealthy", reason=problem)
        return _Failed(f"{instance.component.id}: {problem}", instance)

    async def _finish(self, pending: _Pending, log: Any) -> Instance:
        """On the event loop: await what the worker could not, then health-check."""
        component = pending.component
        if pending.awaiting:
            timeout = _seconds(component.lifecycle.activate_timeout_ms, DEFAULT_ACTIVATE_TIMEOUT_S)
            started = _trace.start()
            try:
                with anyio.fail_after(timeout):
                    value = await pending.value
            except TimeoutError:
                message = f"{component.id}: activation exceeded {timeout:g}s"
                _trace.record(ACTIVATE, started, _attributes(component), message)
                raise SwapAborted(message) from None
            except Exception as exc:
                _trace.record(ACTIVATE, started, _attributes(component), repr(exc))
                _component_log(log, component).error("activation failed", error=repr(exc))
                raise SwapAborted(f"{component.id}: activation failed: {exc!r}") from exc
            _trace.record(ACTIVATE, started, _attributes(component))
            return await self._admit(_instance(component, value), log)
        instance: Instance = pending.value
        return await self._admit(instance, log)

    async def _activate(self, component: Component, factory: Any, log: Any) -> Instance:
        """On the event loop: activate a component whose factory is async, then health-check."""
        try:
            config = self._factory_kwargs(component, factory)
        except values.ConfigError as exc:
            raise SwapAborted(str(exc)) from None
        return await self._finish(_Pending(component, factory(**config), awaiting=True), log)

    async def _admit(self, instance: Instance, log: Any) -> Instance:
        """Health-check a new instance on the event loop; unhealthy ones are cleaned up."""
        problem = await health_of(instance)
        if problem is not None:
            _component_log(log, instance.component).error("unhealthy", reason=problem)
            await _close(instance)
            raise SwapAborted(f"{instance.component.id}: {problem}")
        _activated(instance, log)
        return instance

    async def _probation(self, made: dict[str, Instance]) -> str | None:
        problems = await check_health(list(made.values()))
        for cid, problem in problems.items():
            if problem is not None:
                return f"{cid}: probation {problem}"
        return None

    async def _teardown(self, made: dict[str, Instance], added: list[str], log: Any) -> None:
        for cid in reversed(list(made)):
            if cid in added:
                handle = self.handles.pop(cid, None)
                if handle is not None:
                    handle.bind(None)
            else:
                made[cid].slot.retire()
        await self._retire_all(list(reversed(made.values())), log)

    async def _retire_all(
        self,
        instances: list[Instance],
        log: Any,
        *,
        unbind: bool = False,
        retired: set[str] | None = None,
        failures: list[str] | None = None,
    ) -> list[str]:
        """Retire `instances` in order (drain, then clean up); return ids whose cleanup failed.

        Sync cleanups run one after another in one worker thread, each under
        its drain timeout (see `deadlines`); async ones on the event loop.
        `unbind`: pop and unbind each one's handle just before retiring it.
        `retired`: collects the ids of those done with (cleaned up or failed);
        `failures`: the list to collect failures in (returned).
        """
        failures = [] if failures is None else failures
        done = retired if retired is not None else set()

        def step(runner: DeadlineRunner, instance: Instance) -> bool:
            if _async_cleanup(instance.value):
                return False  # the event loop retires this one
            if unbind:
                self._unbind(instance.component.id)
            if not self._retire_sync(instance, runner, log) and not runner.abandoned:
                failures.append(instance.component.id)
            if not runner.abandoned:
                done.add(instance.component.id)
            return True

        def overrun(instance: Instance, message: str) -> None:
            self._cleanup_failed(instance, message, log)
            failures.append(instance.component.id)
            done.add(instance.component.id)

        todo = list(instances)
        while todo:
            index = await run_each(todo, step, overrun)
            if index < len(todo):
                instance = todo[index]
                if unbind:
                    self._unbind(instance.component.id)
                if not await self._retire(instance, log):
                    failures.append(instance.component.id)
                done.add(instance.component.id)
            todo = todo[index + 1 :]
        return failures

    def _unbind(self, component_id: str) -> None:
        handle = self.handles.pop(component_id, None)
        if handle is not None:
            handle.bind(None)

    def _retire_sync(self, instance: Instance, runner: DeadlineRunner, log: Any) -> bool:
        """In a worker thread: drain the instance (deadline), then its sync cleanup."""
        slot = instance.slot
        started = _trace.start()
        slot.retire()
        deadline = _seconds(instance.component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
        left = slot.wait_idle(deadline) if slot.inflight else 0
        self._drained(instance, left, deadline, started, log)
        started = _trace.start()
        close = _closer(instance.value)
        if close is not None:
            try:
                result = runner.call(close, deadline, f"{instance.component.id}: cleanup")
            except Abandoned:
                return False
            except Exception as exc:  # an Overrun too: it returned after its deadline
                if not runner.abandoned:  # else the event loop reported it already
                    self._cleanup_failed(instance, str(exc), log, started)
                return False
            if inspect.isawaitable(result):
                _discard(result)
                message = "close() returned an awaitable; not awaited"
                self._cleanup_failed(instance, message, log, started)
                return False
        self._cleaned_up(instance, started, log)
        return True

    def _drained(
        self, instance: Instance, left: int, deadline: float, started: int, log: Any
    ) -> None:
        problem = None
        if left:
            self.drain_overruns[instance.component.id] += 1
            _retire_log(log, instance).warning(
                "drain deadline passed", inflight=left, deadline_s=deadline
            )
            problem = f"{left} call(s) still in flight after {deadline:g}s"
        _trace.record("oneiric.drain", started, _attributes(instance.component), problem)

    def _cleaned_up(self, instance: Instance, started: int, log: Any) -> None:
        _trace.record("oneiric.cleanup", started, _attributes(instance.component))
        _retire_log(log, instance).info("cleaned up")

    def _cleanup_failed(self, instance: Instance, error: str, log: Any, started: int = 0) -> None:
        self.cleanup_failures += 1
        _trace.record("oneiric.cleanup", started, _attributes(instance.component), error)
        _retire_log(log, instance).error("cleanup failed", error=error)

    async def _retire(self, instance: Instance, log: Any) -> bool:
        """On the event loop: drain the instance (deadline), then its async cleanup."""
        slot = instance.slot
        started = _trace.start()
        slot.retire()
        deadline = _seconds(instance.component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
        left = 0
        if slot.inflight:
            left = await anyio.to_thread.run_sync(slot.wait_idle, deadline, abandon_on_cancel=True)
        self._drained(instance, left, deadline, started, log)
        started = _trace.start()
        try:
            await _close(instance)
        except Exception as exc:
            self._cleanup_failed(instance, repr(exc), log, started)
            return False
        self._cleaned_up(instance, started, log)
        return True


def _never() -> bool:
    return False


ACTIVATE = "oneiric.activate"
_OUTCOMES: dict[type[Exception], str] = {
    PlanRejected: "rejected",
    SwapAborted: "aborted",
    RolledBack: "rolled_back",
    Superseded: "superseded",
}


def _attributes(component: Component) -> dict[str, str]:
    """A component's span attributes."""
    return {"oneiric.component": component.id, "oneiric.provider": component.provider}


def _rebound(instance: Instance) -> Slot:
    """A fresh slot for an instance whose old slot was retired (rollback)."""
    slot = Slot(instance.value, instance.slot.provider, instance.slot.generation)
    instance.slot = slot
    return slot


def _seconds(ms: int | None, default: float) -> float:
    return default if ms is None else ms / 1000


@functools.lru_cache(maxsize=1024)
def _takes_deps(factory: Callable[..., Any]) -> bool:
    try:
        return "deps" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


async def _call(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run a sync or async callable with a timeout; sync code runs in a worker thread
    (abandoned at the timeout, and listed as `what` in `hung_calls()` until it returns)."""
    with anyio.fail_after(timeout):
        if _is_async(fn):
            return await fn()
        result = await run_abandonable(fn, f"{what} exceeded {timeout:g}s")
        if inspect.isawaitable(result):
            return await result
        return result


def _is_async(fn: Callable[..., Any]) -> bool:
    target = fn.func if isinstance(fn, functools.partial) else fn
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004
    )


async def check_health(
    instances: list[Instance], durations: dict[str, float] | None = None
) -> dict[str, str | None]:
    """Each instance's health problem (None when healthy), by component id, in order.

    Sync checks run one after another in one worker thread, each under its
    own timeout (see `deadlines`); a check that hangs is reported as timed
    out and the next ones run in a fresh worker.  Async checks run on the loop.
    `durations` (when given) receives each check's duration in seconds.
    """
    results: dict[str, str | None] = {}
    took = {} if durations is None else durations

    def step(runner: DeadlineRunner, instance: Instance) -> bool:
        started = time.perf_counter()
        problem = _sync_health(instance, runner)
        if problem is not ON_LOOP and not runner.abandoned:
            results[instance.component.id] = problem
            took[instance.component.id] = time.perf_counter() - started
        return True

    def overrun(instance: Instance, message: str) -> None:
        results[instance.component.id] = message

    await run_each(instances, step, overrun)
    for instance in instances:
        if instance.component.id not in results:
            started = time.perf_counter()
            results[instance.component.id] = await health_of(instance)
            took[instance.component.id] = time.perf_counter() - started
    return {i.component.id: results[i.component.id] for i in instances}


def _sync_health(instance: Instance, runner: DeadlineRunner) -> str | None:
    """In a worker thread: one sync health check under its timeout (None when healthy).

    `ON_LOOP` when the check is async (or returned an awaitable): it must run on the loop.
    """
    check = _health_check(instance.value)
    if check is None:
        return None
    started = _trace.start()
    problem = _sync_check(instance, check, runner)
    if problem is not ON_LOOP:
        _trace.record("oneiric.health", started, _attributes(instance.component), problem)
    return problem


def _sync_check(instance: Instance, check: Callable[[], Any], runner: DeadlineRunner) -> str | None:
    if _is_async(check):
        return ON_LOOP
    timeout = _seconds(instance.component.health.timeout_ms, DEFAULT_HEALTH_TIMEOUT_S)
    try:
        result = runner.call(check, timeout, "health check")
    except Overrun as exc:
        return str(exc)
    except Abandoned:
        return None
    except Exception as exc:
        return f"health check raised {exc!r}"
    if inspect.isawaitable(result):
        _discard(result)
        return ON_LOOP
    return "health check returned False" if result is False else None


async def health_of(instance: Instance) -> str | None:
    """None when healthy; otherwise why not (False returned, exception, or timeout)."""
    check = _health_check(instance.value)
    if check is None:
        return None
    started = _trace.start()
    problem = await _check(instance, check)
    _trace.record("oneiric.health", started, _attributes(instance.component), problem)
    return problem


async def _check(instance: Instance, check: Callable[[], Any]) -> str | None:
    component = instance.component
    timeout = _seconds(component.health.timeout_ms, DEFAULT_HEALTH_TIMEOUT_S)
    try:
        result = await _call(check, timeout, f"{component.id}: health check")
    except TimeoutError:
        return f"health check exceeded {timeout:g}s"
    except Exception as exc:
        return f"health check raised {exc!r}"
    return "health check returned False" if result is False else None


def _closer(value: Any) -> Callable[[], Any] | None:
    """The instance's cleanup: `aclose()`, else `close()`; None when it has neither."""
    close = getattr(value, "aclose", None) or getattr(value, "close", None)
    return close if callable(close) else None


def _async_cleanup(value: Any) -> bool:
    close = _closer(value)
    return close is not None and _is_async(close)


async def _close(instance: Instance) -> None:
    close = _closer(instance.value)
    if close is None:
        return
    timeout = _seconds(instance.component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
    await _call(close, timeout, f"{instance.component.id}: cleanup")


def _health_check(value: Any) -> Callable[[], Any] | None:
    check = getattr(value, "health", None)
    return check if callable(check) else None


def _async_factories(components: list[Component], factories: dict[str, Any]) -> set[str]:
    """The components whose factory is async (made on the event loop); each factory
    is inspected once, however many components share it."""
    is_async: dict[int, bool] = {}
    found = set()
    for component in components:
        factory = factories.get(component.id)
        if component.domain not in FACTORY_DOMAINS or factory is None:
            continue
        if id(factory) not in is_async:
            is_async[id(factory)] = _is_async(factory)
        if is_async[id(factory)]:
            found.add(component.id)
    return found


def _instance(component: Component, value: Any) -> Instance:
    return Instance(component, value, Slot(value, component.provider, next(_generations)))


def _retire_log(log: Any, instance: Instance) -> Any:
    return _component_log(log, instance.component).bind(generation=instance.slot.generation)


def _component_log(log: Any, component: Component) -> Any:
    return log.bind(
        component=component.id,
        domain=component.domain,
        key=component.key,
        provider=component.provider,
    )


def _activated(instance: Instance, log: Any) -> None:
    instance.healthy_at = time.time()
    component = instance.component
    _component_log(log, component).info(
        "activated", generation=instance.slot.generation, config=component.config
    )


def _discard(awaitable: Any) -> None:
    """Close an awaitable that will not be awaited (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _abandon(instance: Instance, log: Any) -> None:
    """In an abandoned worker thread: clean up what a late call made, if that can be done here."""
    clog = _component_log(log, instance.component)
    close = getattr(instance.value, "close", None)
    if getattr(instance.value, "aclose", None) is not None or not callable(close):
        clog.warning("late instance not cleaned up (async or no close)")
        return
    try:
        result = close()
    except Exception as exc:
        clog.error("cleanup of late instance failed", error=repr(exc))
        return
    if inspect.isawaitable(result):
        _discard(result)
        clog.warning("late instance not cleaned up (async close)")
    else:
        clog.info("late instance cleaned up")


def _fits(instance: Any, kind: Callable[..., Any]) -> bool:
    """Whether `instance` is a `kind`; True when that cannot be checked (a plain Protocol)."""
    if not isinstance(kind, type):
        return True
    try:
        return isinstance(instance, kind)
    except TypeError:
        return True


def _plan_of(plan: Plan | str | Path) -> Plan:
    if isinstance(plan, Plan):
        return plan
    try:
        return load_plan(Path(plan).read_bytes())
    except OSError as exc:
        raise PlanRejected(f"{plan}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise PlanRejected(f"{plan}: not a valid plan: {exc}") from None
