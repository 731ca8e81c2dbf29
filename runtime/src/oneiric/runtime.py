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
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from . import attest, values
from .canonical import dumps
from .handle import Handle, Slot
from .plan import Component, Plan

DEFAULT_ACTIVATE_TIMEOUT_S = 30.0
DEFAULT_HEALTH_TIMEOUT_S = 5.0
DEFAULT_DRAIN_TIMEOUT_S = 10.0
# Domains whose implementation is a factory producing an instance; the others are callables.
FACTORY_DOMAINS = ("adapter", "service")

# Component fields that do not change the instance: a plan differing only there swaps nothing.
_COSMETIC = {"explanation", "span", "layer", "layers", "priority"}


class PlanRejected(Exception):
    """The plan cannot be run here (pin mismatch, missing implementation): nothing changed."""


class SwapAborted(Exception):
    """A new instance failed to activate or was unhealthy: the old plan keeps serving."""


class RolledBack(Exception):
    """A new instance failed its probation health check: the previous plan was restored."""


@dataclass
class Instance:
    component: Component
    value: Any
    slot: Slot


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

    def __init__(self, handles: dict[str, Handle]) -> None:
        self._handles = handles

    def __getitem__(self, component_id: str) -> Handle:
        try:
            return self._handles[component_id]
        except KeyError:
            known = ", ".join(sorted(self._handles)) or "none"
            raise KeyError(
                f"{component_id} is not required by this component (has: {known})"
            ) from None

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


_generations = itertools.count(1)


class Runtime:
    """Holds the running plan, one `Handle` per component, and applies new plans."""

    def __init__(self, *, probation_s: float = 0.0) -> None:
        self.plan: Plan | None = None
        self.serial: int | None = None
        self.handles: dict[str, Handle] = {}
        self.instances: dict[str, Instance] = {}
        self.probation_s = probation_s
        self.cleanup_failures = 0
        self._lock = anyio.Lock()
        self._log = structlog.get_logger("oneiric.runtime")

    # -- application access --------------------------------------------------
    def handle(self, component_id: str) -> Handle:
        handle = self.handles.get(component_id)
        if handle is None:
            known = ", ".join(sorted(self.handles)) or "none"
            raise KeyError(f"no component {component_id} in the running plan (known: {known})")
        return handle

    # -- applying plans ------------------------------------------------------
    async def apply(self, plan: Plan, serial: int | None = None) -> SwapReport:
        """Make `plan` the running plan (see the module docstring for the phases)."""
        async with self._lock:
            return await self._apply(plan, serial)

    async def _apply(self, plan: Plan, serial: int | None) -> SwapReport:
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
            elif fingerprint(old[cid]) != fingerprint(new[cid]):
                report.changed.append(cid)
        old_order = old_plan.activation_order if old_plan else []
        report.removed = [cid for cid in old_order if cid not in new]
        todo = [*report.added, *report.changed]
        todo.sort(key=order.index)

        # 0. load: pins and imports, before anything is activated.
        factories: dict[str, Any] = {}
        for cid in todo:
            component = new[cid]
            if component.implementation is None:
                continue
            try:
                factories[cid] = attest.load(component)
            except (attest.PinMismatch, attest.ImplementationError) as exc:
                log.error("plan rejected", component=cid, error=str(exc))
                raise PlanRejected(str(exc)) from exc

        # 1. make.
        for cid in report.added:
            self.handles.setdefault(cid, Handle(cid))
        made: dict[str, Instance] = {}
        try:
            for cid in todo:
                component = new[cid]
                instance = await self._activate(component, factories.get(cid), log)
                made[cid] = instance
                if cid in report.added:
                    self.handles[cid].bind(instance.slot)
        except Exception as exc:
            await self._teardown(made, report.added, log)
            raise SwapAborted(str(exc)) from exc

        # 2. bind: no await inside this loop.
        bind_started = time.perf_counter()
        previous: dict[str, Instance] = {}
        for cid in report.changed:
            previous[cid] = self.instances[cid]
            self.handles[cid].bind(made[cid].slot)
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
        stale.sort(key=lambda item: old_order.index(item[0]), reverse=True)
        for cid, instance in stale:
            if not await self._retire(instance, log):
                report.cleanup_failures.append(cid)
        report.total_seconds = time.perf_counter() - started
        log.info("plan applied", **report.as_json())
        return report

    async def stop(self) -> list[str]:
        """Stop taking calls, drain, clean up in reverse activation order; return failures."""
        failures: list[str] = []
        async with self._lock:
            order = self.plan.activation_order if self.plan else []
            log = self._log.bind(plan=self.plan.digest if self.plan else None, serial=self.serial)
            for cid in reversed(order):
                handle = self.handles.pop(cid, None)
                if handle is not None:
                    handle.bind(None)
                instance = self.instances.pop(cid, None)
                if instance is not None and not await self._retire(instance, log):
                    failures.append(cid)
            self.plan = None
        return failures

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

    # -- one component -------------------------------------------------------
    async def _activate(self, component: Component, factory: Any, log: Any) -> Instance:
        clog = log.bind(
            component=component.id,
            domain=component.domain,
            key=component.key,
            provider=component.provider,
        )
        timeout = _seconds(component.lifecycle.activate_timeout_ms, DEFAULT_ACTIVATE_TIMEOUT_S)
        if factory is None:
            value: Any = None
        else:
            config = values.resolve(component.id, component.config)
            if component.domain in FACTORY_DOMAINS:
                if _takes_deps(factory):
                    needed = [f"{r.domain}:{r.key}" for r in component.requires]
                    config["deps"] = Deps({cid: self.handles[cid] for cid in needed})
                try:
                    value = await _call(functools.partial(factory, **config), timeout)
                except TimeoutError:
                    raise SwapAborted(f"{component.id}: activation exceeded {timeout:g}s") from None
                except Exception as exc:
                    clog.error("activation failed", error=repr(exc))
                    raise SwapAborted(f"{component.id}: activation failed: {exc!r}") from exc
            else:
                value = functools.partial(factory, **config) if config else factory
        instance = Instance(component, value, Slot(value, component.provider, next(_generations)))
        problem = await health_of(instance)
        if problem is not None:
            clog.error("unhealthy", reason=problem)
            await _close(instance)
            raise SwapAborted(f"{component.id}: {problem}")
        clog.info("activated", generation=instance.slot.generation, config=component.config)
        return instance

    async def _probation(self, made: dict[str, Instance]) -> str | None:
        for cid, instance in made.items():
            problem = await health_of(instance)
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
            await self._retire(made[cid], log)

    async def _retire(self, instance: Instance, log: Any) -> bool:
        """Drain the instance's in-flight calls (deadline), then clean it up; False on failure."""
        component = instance.component
        clog = log.bind(
            component=component.id,
            domain=component.domain,
            key=component.key,
            provider=component.provider,
            generation=instance.slot.generation,
        )
        slot = instance.slot
        slot.retire()
        deadline = _seconds(component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
        if slot.inflight:
            left = await anyio.to_thread.run_sync(slot.wait_idle, deadline)
            if left:
                clog.warning("drain deadline passed", inflight=left, deadline_s=deadline)
        try:
            await _close(instance)
        except Exception as exc:
            self.cleanup_failures += 1
            clog.error("cleanup failed", error=repr(exc))
            return False
        clog.info("cleaned up")
        return True


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


async def _call(fn: Callable[[], Any], timeout: float) -> Any:
    """Run a sync or async callable with a timeout; sync code runs in a worker thread."""
    with anyio.fail_after(timeout):
        if _is_async(fn):
            return await fn()
        result = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        if inspect.isawaitable(result):
            return await result
        return result


def _is_async(fn: Callable[..., Any]) -> bool:
    target = fn.func if isinstance(fn, functools.partial) else fn
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004
    )


async def health_of(instance: Instance) -> str | None:
    """None when healthy; otherwise why not (False returned, exception, or timeout)."""
    check = getattr(instance.value, "health", None)
    if check is None or not callable(check):
        return None
    component = instance.component
    timeout = _seconds(component.health.timeout_ms, DEFAULT_HEALTH_TIMEOUT_S)
    try:
        result = await _call(check, timeout)
    except TimeoutError:
        return f"health check exceeded {timeout:g}s"
    except Exception as exc:
        return f"health check raised {exc!r}"
    return "health check returned False" if result is False else None


async def _close(instance: Instance) -> None:
    close: Callable[[], Awaitable[Any] | Any] | None = getattr(
        instance.value, "aclose", None
    ) or getattr(instance.value, "close", None)
    if close is None or not callable(close):
        return
    timeout = _seconds(instance.component.lifecycle.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_S)
    await _call(close, timeout)
