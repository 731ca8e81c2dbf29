"""`oneiric run`: a `Runtime` fed by a plan source, obeying controls, writing snapshots.

Loops, each in its own task:

* source: a file watch (watchfiles, on the parent directory so atomic renames
  are seen, debounced) or an HTTP poll (ETag / If-None-Match); each change
  wakes the applier.  Not started under the serverless profile (SIGHUP still
  asks for one re-read).
* applier: reads the source, and applies its plan when the digest differs
  from the running one.  Reads settle (`_settled_fetch`), a swap that a newer
  write overtakes before bind is abandoned (`Superseded`), and triggers that
  arrive during a swap coalesce into one more read, so a burst of writes is
  one swap and v2, v3 back to back end on v3.  A rejected plan changes
  nothing and is counted in status.json; an unreachable source keeps the last
  known good plan serving.
* control: polls control.db (about four times a second) and obeys pause,
  resume and drain.
* health: runs the components' health checks at their intervals and writes
  health.json; status.json is refreshed every second.

Start: the last known good plan in the state dir if there is one (so a crash
mid-swap restarts on what last passed probation), then the source's plan as
an ordinary swap; with no last good plan, the source's plan.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import anyio
import structlog

from oneiric._delivery.sources import Candidate, PlanInvalid, Source, SourceUnavailable
from oneiric._lifecycle import snapshots
from oneiric._lifecycle.control import ControlStore
from oneiric._lifecycle.deadlines import hung_calls, run_abandonable
from oneiric._lifecycle.handle import Handle
from oneiric._lifecycle.modulepath import Imports
from oneiric._lifecycle.runtime import (
    Instance,
    PlanRejected,
    RolledBack,
    Runtime,
    Superseded,
    SwapAborted,
    SwapReport,
    check_health,
)
from oneiric._plan.model import Plan, load_plan

SERVERLESS = "serverless"
PROFILE_ENV = "ONEIRIC_PROFILE"
DEFAULT_HEALTH_INTERVAL_S = 10.0
CONTROL_INTERVAL_S = 0.25
STATUS_INTERVAL_S = 1.0
WATCH_TIMEOUT_MS = 250
T = TypeVar("T")
APP_GRACE_S = 5.0  # at shutdown, how long the --app function gets to return
SHUTDOWN_MARGIN_S = 2.0  # shutdown takes at most the longest drain deadline plus this
MAX_SETTLE_S = 2.0  # a source that keeps changing is applied after this long anyway


class StartError(Exception):
    """The runtime could not start (no usable plan, or the plan failed to activate)."""


class Observer:
    """Told what the supervisor does (metrics, alerts); every method is a no-op here.

    Called on the event loop's thread; an observer must not block or raise
    (an exception is logged and the observer is skipped for that call).
    """

    def applied(self, candidate: Candidate, report: SwapReport | None, seconds: float) -> None:
        """A plan was applied: at start (`report` None) or by a swap."""

    def problem(self, kind: str, message: str, seconds: float | None) -> None:
        """A plan was rejected, aborted, rolled back, or its source was unreachable
        (`kind` as in status.json); `seconds`: how long the failed swap took, if one ran."""

    def checked(self, component_id: str, problem: str | None, seconds: float | None) -> None:
        """A component's health check ran (`problem` None when healthy)."""

    def fetched(self, outcome: str) -> None:
        """The source was read after a change or poll: "changed", "unchanged", "rejected"
        or "unreachable"."""


# A long-running task started with the supervisor's loops once ready (`oneiric run --http`).
Service = Callable[["Supervisor"], Coroutine[Any, Any, None]]


@dataclass
class Settings:
    state: Path
    source: Source
    profile: str | None = None  # ONEIRIC_PROFILE; None: the plan's own profile
    poll_interval_s: float = 5.0
    watch_step_ms: int = 10  # the watcher reports once the file has been quiet this long
    watch_debounce_ms: int = 400  # ... or after this long at most
    # The settle window: after a valid read the applier waits this long for another
    # change (then reads again, so a burst is one swap to its newest plan) ...
    watch_settle_ms: int = 50
    # ... and after an invalid read (a file caught half-written) this long, before it
    # counts and records a rejection.
    invalid_settle_ms: int = 500
    probation_s: float = 0.0
    handle_signals: bool = True
    app: Callable[[Supervisor], Any] | None = None
    imports: Imports | None = None  # where plans' module paths are; None: found from cwd
    # `oneiric run` starts with the cyclic garbage collector off; ready turns it on.
    collect_garbage_when_ready: bool = False
    services: list[Service] = field(default_factory=list)
    # Re-read every secret this often and swap the components whose values changed.
    secrets_refresh_s: float | None = None


@dataclass
class Counters:
    swaps: int = 0
    rejected: int = 0
    aborted: int = 0
    rolled_back: int = 0
    unreachable: int = 0
    superseded: int = 0  # swaps abandoned before bind because a newer plan arrived
    last_swap: dict[str, Any] | None = None
    last_problem: dict[str, Any] | None = None
    history: list[str] = field(default_factory=list)  # digests applied, oldest first


class Supervisor:
    """Runs one runtime until stopped; `ready` is set once the first plan is bound."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(probation_s=settings.probation_s, imports=settings.imports)
        self.counters = Counters()
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._wake: anyio.Event | None = None
        self._stop: anyio.Event | None = None
        self._health: dict[str, dict[str, Any]] = {}
        self._log = structlog.get_logger("oneiric.supervisor")
        self._store: ControlStore | None = None
        self._app_done: anyio.Event | None = None
        self.watching = False  # a file watch is registered (status.json "watching")
        self._phase = "starting"  # then running (see `state`), stopping, stopped
        self.uncleaned: list[str] = []  # what shutdown left running (see `_shutdown`)
        self._overruns_seen: dict[str, int] = {}  # drain overruns already surfaced
        self._pid_start = snapshots.process_start(os.getpid())
        self.observers: list[Observer] = []
        self.expires_at: float | None = None  # the running manifest's expiry, when signed
        self.applied_at: float | None = None
        # Connections held by services (`oneiric worker`'s broker): role -> an object
        # whose as_json() is the connection's state; in status.json as "connections".
        self.connections: dict[str, Any] = {}

    def notify(self, method: str, *args: Any) -> None:
        """Call `method` on every observer; one that raises is logged, not fatal."""
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception as exc:
                self._log.error("observer failed", observer=repr(observer), error=repr(exc))

    @property
    def health(self) -> dict[str, dict[str, Any]]:
        """The latest health check of each running component (as in health.json)."""
        return self._health

    @property
    def state(self) -> str:
        """status.json "state": running only once the first plan is bound and, when a
        file is watched, the watch is registered (no false `watching: false`)."""
        if self._phase != "starting":
            return self._phase
        if not self.ready.is_set() or (self._watches_file and not self.watching):
            return "starting"
        return "running"

    @property
    def _watches_file(self) -> bool:
        return self.profile != SERVERLESS and self.settings.source.path is not None

    @property
    def profile(self) -> str:
        plan = self.runtime.plan
        return self.settings.profile or (plan.profile if plan else "default")

    @overload
    def handle(self, component_id: str) -> Handle[Any]: ...
    @overload
    def handle(self, component_id: str, kind: Callable[..., T]) -> Handle[T]: ...

    def handle(self, component_id: str, kind: Callable[..., Any] | None = None) -> Handle[Any]:
        """The running runtime's handle (see `Runtime.handle`)."""
        if kind is None:
            return self.runtime.handle(component_id)
        return self.runtime.handle(component_id, kind)

    # -- entry points ----------------------------------------------------------
    async def run(self) -> list[str]:
        """Start, serve until stopped, shut down; return components whose cleanup failed.

        status.json is a heartbeat from the first moment to the last: "starting"
        (until the first plan is bound and the file watch registered),
        "running", "stopping", "stopped", rewritten every second, so a reader
        can tell a live runtime from a dead one's last words.
        """
        state = self.settings.state
        state.mkdir(parents=True, exist_ok=True)
        self._wake, self._stop = anyio.Event(), anyio.Event()
        self._store = ControlStore(state)
        self._write_status()
        self._write_unhealthy("starting", snapshots.STALE_AFTER_S)
        failure: StartError | None = None
        failures: list[str] = []
        try:
            async with anyio.create_task_group() as beat:
                beat.start_soon(self._heartbeat)
                try:
                    failures = await self._serve()
                except StartError as exc:
                    failure = exc
                    self._phase = "stopped"
                finally:
                    beat.cancel_scope.cancel()
        finally:
            self._store.close()
            self._write_status()
        if failure is not None:
            raise failure
        return failures

    async def _serve(self) -> list[str]:
        await self._start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._applier)
            tg.start_soon(self._controls)
            tg.start_soon(self._health_loop)
            if self.profile != SERVERLESS:
                tg.start_soon(self._watch)
            if self.settings.handle_signals:
                tg.start_soon(self._signals)
            if self.settings.app is not None:
                tg.start_soon(self._run_app, self.settings.app)
            for service in self.settings.services:
                tg.start_soon(service, self)
            if self.settings.secrets_refresh_s:
                tg.start_soon(self._refresh_secrets, self.settings.secrets_refresh_s)
            self.ready.set()
            self._write_status()
            if self.settings.collect_garbage_when_ready:
                gc.freeze()  # what starting allocated is never scanned again
                gc.enable()
            self._log.info(
                "ready",
                plan=self._digest(),
                serial=self.runtime.serial,
                profile=self.profile,
                pid=os.getpid(),
            )
            assert self._stop is not None
            await self._stop.wait()
            if self._app_done is not None:
                # The app sees `stopping` and should return; its calls finish first.
                with anyio.move_on_after(APP_GRACE_S):
                    await self._app_done.wait()
            tg.cancel_scope.cancel()
        return await self._shutdown()

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(STATUS_INTERVAL_S)
            self._note_overruns()
            self._write_status()
            if not self.ready.is_set():  # health.json is the checks' from then on
                self._write_unhealthy("starting", snapshots.STALE_AFTER_S)

    def _write_unhealthy(self, reason: str, valid_s: float) -> None:
        """health.json for a runtime not serving (yet, or any more): unhealthy, `reason`."""
        now = time.time()
        snapshots.write_json(
            self.settings.state / snapshots.HEALTH,
            {
                "healthy": False,
                "pid": os.getpid(),
                "pid_start": self._pid_start,
                "checked_at": now,
                "expires_at": now + valid_s,
                "components": {},
                "reason": reason,
            },
        )

    def _note_overruns(self) -> None:
        """Surface drain deadlines that passed since last time as the last problem (calls
        were still running on an instance when it was cleaned up)."""
        overruns = self.runtime.drain_overruns
        new = {cid: n - self._overruns_seen.get(cid, 0) for cid, n in overruns.items()}
        new = {cid: n for cid, n in new.items() if n > 0}
        if not new:
            return
        self._overruns_seen = dict(overruns)
        message = "drain deadline passed with calls in flight: " + ", ".join(
            f"{cid} ({n}x)" for cid, n in sorted(new.items())
        )
        self.counters.last_problem = {"kind": "drain_overrun", "error": message, "at": time.time()}
        self._log.error("drain overrun", components=new, total=dict(overruns))

    def request_stop(self) -> None:
        """Ask `run` to shut down (call from the event loop's thread)."""
        self.stopping.set()
        if self._stop is not None:
            self._stop.set()

    # -- start and stop --------------------------------------------------------
    async def _start(self) -> None:
        good = self._last_good()
        candidate: Candidate | None = None
        try:
            candidate = await self.settings.source.fetch()
        except SourceUnavailable as exc:
            if good is None:
                raise StartError(f"no plan: {exc}") from None
            self._problem("unreachable", str(exc))
        except PlanInvalid as exc:
            if good is None:
                raise StartError(str(exc)) from None
            self._problem("rejected", str(exc))
        first = good if good is not None else candidate
        assert first is not None
        try:
            await self.runtime.apply(first.plan, first.serial)
        except (PlanRejected, SwapAborted) as exc:
            raise StartError(str(exc)) from None
        self._applied(first, report=None, seconds=0.0)
        await self._obey_controls()
        if candidate is not None and candidate.plan.digest != first.plan.digest:
            self.wake()  # the source's newer plan is applied as an ordinary swap, once ready
        await self._check_health()

    async def _shutdown(self) -> list[str]:
        self._log.info("stopping", plan=self._digest())
        self.stopping.set()
        self._phase = "stopping"
        with anyio.CancelScope(shield=True):
            failures = await self.runtime.stop(self.runtime.drain_deadline() + SHUTDOWN_MARGIN_S)
            self._note_overruns()
            self._phase = "stopped"
            self._write_status()
            self._write_unhealthy("stopped", 0.0)
        # What is left: components abandoned at the shutdown deadline, and calls abandoned
        # at their own deadlines that still have not returned (`oneiric run` exits
        # without waiting for them).
        self.uncleaned = [*self.runtime.uncleaned, *hung_calls()]
        if self.uncleaned:
            self._log.error("stopped", cleanup_failures=failures, uncleaned=self.uncleaned)
        else:
            self._log.info("stopped", cleanup_failures=failures)
        return failures

    # -- applying ----------------------------------------------------------------
    async def _applier(self) -> None:
        while True:
            assert self._wake is not None
            await self._wake.wait()
            settled = await self._settled_fetch()
            if settled is not None:
                await self._consider(*settled)

    async def _settled_fetch(self) -> tuple[Candidate, Any] | None:
        """Read the source once a burst of changes has settled; None if nothing to apply.

        Returns the candidate and the file's identity (`_file_token`) taken
        before the read.  The watcher waits for a quiet `watch_step_ms`; a
        writer that pauses longer mid-burst changes the file again while it is
        read or within the settle window after (`watch_settle_ms`, or
        `invalid_settle_ms` after an invalid read): then the source is read
        again (up to `MAX_SETTLE_S`), so a burst ends in one swap to its last
        version, and a half-written file is not reported as rejected.
        """
        path = self.settings.source.path
        settle = self.settings.watch_settle_ms / 1000 if path else 0.0
        invalid_settle = self.settings.invalid_settle_ms / 1000 if path else 0.0
        give_up = time.monotonic() + MAX_SETTLE_S
        while True:
            self._wake = anyio.Event()
            token = self._file_token()
            try:
                candidate = await self.settings.source.fetch()
            except SourceUnavailable as exc:
                self.notify("fetched", "unreachable")
                self._problem("unreachable", str(exc))
                return None
            except PlanInvalid as exc:
                if not await self._more_changes(invalid_settle, give_up, token):
                    self.notify("fetched", "rejected")
                    self._problem("rejected", str(exc))
                    return None
                continue
            if not await self._more_changes(settle, give_up, token):
                changed = candidate is not None and candidate.plan.digest != self._digest()
                self.notify("fetched", "changed" if changed else "unchanged")
                return None if candidate is None else (candidate, token)

    async def _more_changes(self, settle: float, give_up: float, token: Any) -> bool:
        """True when the source changed again within `settle` s (and there is time left):
        a wake-up from the watcher, or the file itself no longer the one read."""
        assert self._wake is not None
        if settle and not self._wake.is_set():
            with anyio.move_on_after(settle):
                await self._wake.wait()
        changed = self._wake.is_set() or self._file_token() != token
        return changed and time.monotonic() < give_up

    def _file_token(self) -> Any:
        """What identifies the source file's current content without reading it (inode,
        size, mtime); None for a source that is not a file, or a missing file."""
        path = self.settings.source.path
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def wake(self) -> None:
        """Ask the applier to re-read the source (call from the event loop's thread)."""
        if self._wake is not None:
            self._wake.set()

    async def _consider(self, candidate: Candidate, token: Any = None) -> None:
        if candidate.plan.digest == self._digest():
            return
        started = time.perf_counter()

        def superseded() -> bool:
            """The file changed since it was read: a newer plan is on its way (thread-safe)."""
            return token is not None and self._file_token() != token

        try:
            report = await self.runtime.apply(candidate.plan, candidate.serial, superseded)
        except Superseded:
            self.counters.superseded += 1
            self.wake()  # read the newer plan
        except PlanRejected as exc:
            self._problem("rejected", str(exc), time.perf_counter() - started)
        except SwapAborted as exc:
            self._problem("aborted", str(exc), time.perf_counter() - started)
        except RolledBack as exc:
            self._problem("rolled_back", str(exc), time.perf_counter() - started)
        else:
            self._applied(candidate, report, time.perf_counter() - started)
            # health.json names the new instances at once, not at the next tick (their
            # pre-bind check counts, so this calls nothing again).
            await self._check_health()
        self._note_overruns()
        self._write_status()

    def _applied(self, candidate: Candidate, report: SwapReport | None, seconds: float) -> None:
        plan = candidate.plan
        self.applied_at = time.time()
        self.expires_at = candidate.expires_at
        snapshots.write_last_good(
            self.settings.state / snapshots.LAST_GOOD,
            {
                "serial": candidate.serial,
                "source": self.settings.source.description,
                "applied_at": time.time(),
            },
            candidate.data if candidate.data is not None else plan.to_bytes(),
        )
        self.counters.history.append(plan.digest or "")
        if report is not None:
            self.counters.swaps += 1
            self.counters.last_swap = {**report.as_json(), "at": time.time()}
        self.notify("applied", candidate, report, seconds)

    def _problem(self, kind: str, message: str, seconds: float | None = None) -> None:
        setattr(self.counters, kind, getattr(self.counters, kind) + 1)
        self.counters.last_problem = {"kind": kind, "error": message, "at": time.time()}
        self._log.error(
            f"plan {kind.replace('_', ' ')}",
            error=message,
            plan=self._digest(),
            serial=self.runtime.serial,
        )
        self.notify("problem", kind, message, seconds)
        self._write_status()

    def _last_good(self) -> Candidate | None:
        data = snapshots.read_json(self.settings.state / snapshots.LAST_GOOD)
        if data is None:
            return None
        try:
            from oneiric._plan.canonical import dumps

            plan = load_plan(dumps(data["plan"]))
        except (ValueError, KeyError, TypeError) as exc:
            self._log.error("last good plan unusable; ignoring it", error=str(exc))
            return None
        return Candidate(plan, data.get("serial"))

    # -- source --------------------------------------------------------------------
    async def _watch(self) -> None:
        source = self.settings.source
        if source.path is not None:
            await self._watch_file(source.path)
        else:
            while True:
                await anyio.sleep(self.settings.poll_interval_s)
                self.wake()

    async def _watch_file(self, path: Path) -> None:
        import watchfiles

        target = os.path.realpath(path)
        directory = os.path.dirname(target)

        def only_target(change: watchfiles.Change, changed: str) -> bool:
            return os.path.realpath(changed) == target

        assert self._stop is not None
        # yield_on_timeout: the first (possibly empty) yield proves the watch is registered;
        # the source is then re-read once, so a change made before that is not missed.
        async for changes in watchfiles.awatch(
            directory,
            watch_filter=only_target,
            step=self.settings.watch_step_ms,
            debounce=self.settings.watch_debounce_ms,
            recursive=False,
            stop_event=self._stop,
            rust_timeout=WATCH_TIMEOUT_MS,
            yield_on_timeout=True,
        ):
            if not self.watching:
                self.watching = True
                self._log.debug("watching", path=target)
                self._write_status()
            elif not changes:
                continue
            self._log.debug("source changed", changes=sorted(c[1] for c in changes))
            self.wake()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.wake()
                else:
                    self._log.info("signal", signal=signal.Signals(signum).name)
                    self.request_stop()

    async def _run_app(self, app: Callable[[Supervisor], Any]) -> None:
        """An `async def` app is awaited on the runtime's loop; a sync one runs in a thread."""
        self._app_done = anyio.Event()
        try:
            if inspect.iscoroutinefunction(app):
                await app(self)
            else:
                result = await run_abandonable(functools.partial(app, self), "--app function")
                if inspect.isawaitable(result):
                    await result
        except Exception as exc:
            self._log.error("app failed", error=repr(exc))
        finally:
            self._app_done.set()

    # -- controls ----------------------------------------------------------------
    async def _controls(self) -> None:
        while True:
            await anyio.sleep(CONTROL_INTERVAL_S)
            await self._obey_controls()

    async def _obey_controls(self) -> None:
        store = self._store
        assert store is not None
        if not store.changed():
            return
        wanted = store.controls()
        for cid, handle in self.runtime.handles.items():
            handle.paused = cid in wanted
        for request in store.pending():
            if request.op == "rotate":
                store.complete(request.id, await self.rotate_secrets(request.components))
                continue
            known = [c for c in request.components if c in self.runtime.handles]
            unknown = [c for c in request.components if c not in self.runtime.handles]
            result: dict[str, Any] = {"pid": os.getpid(), "applied": known, "unknown": unknown}
            if request.op == "drain":
                timeout = (request.deadline_ms or 0) / 1000
                result["waited"] = await self.runtime.drain(known, timeout)
            store.complete(request.id, result)
            self._log.info(f"control {request.op}", components=known, unknown=unknown)
        if self.ready.is_set():  # at start, the one status write is when ready
            self._write_status()

    # -- secrets -------------------------------------------------------------------------
    async def rotate_secrets(self, references: list[str]) -> dict[str, Any]:
        """Re-read secrets (`references`, or all) and swap the components they changed."""
        result: dict[str, Any] = {"pid": os.getpid(), "references": references, "swapped": []}
        try:
            report = await self.runtime.refresh_secrets(references)
        except (SwapAborted, RolledBack) as exc:
            self._problem("aborted", f"secret rotation: {exc}")
            result["error"] = str(exc)
            return result
        if report is not None:
            result["swapped"] = report.changed
            self._log.info("secrets rotated", components=report.changed)
            self._write_status()
        return result

    async def _refresh_secrets(self, interval_s: float) -> None:
        while True:
            await anyio.sleep(interval_s)
            await self.rotate_secrets([])

    # -- health and status -----------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(STATUS_INTERVAL_S)
            await self._check_health()

    async def _check_health(self) -> None:
        """Run the checks that are due and write health.json.

        A new instance's check before bind counts as its first one (no second
        call right after activation, e.g. for every component at start).
        """
        now = time.time()
        due: list[Instance] = []
        for cid, instance in list(self.runtime.instances.items()):
            interval = instance.component.health.interval_ms
            every = interval / 1000 if interval else DEFAULT_HEALTH_INTERVAL_S
            last = self._health.get(cid)
            if last is None or last["generation"] != instance.slot.generation:
                checked = instance.healthy_at
                if checked is not None and now - checked < every:
                    self._health[cid] = self._health_entry(instance, None, checked)
                else:
                    due.append(instance)
            elif now - last["checked_at"] >= every:
                due.append(instance)
        durations: dict[str, float] = {}
        problems = await check_health(due, durations)
        checked_at = time.time()
        for instance in due:
            cid = instance.component.id
            self._health[cid] = self._health_entry(instance, problems[cid], checked_at)
            self.notify("checked", cid, problems[cid], durations.get(cid))
        for cid in list(self._health):
            if cid not in self.runtime.instances:
                del self._health[cid]
        healthy = all(entry["healthy"] for entry in self._health.values())
        snapshots.write_json(
            self.settings.state / snapshots.HEALTH,
            {
                "healthy": healthy,
                "pid": os.getpid(),
                "pid_start": self._pid_start,
                "checked_at": now,
                "expires_at": now + 3 * STATUS_INTERVAL_S + 5,
                "plan": self._digest(),
                "components": self._health,
            },
        )

    @staticmethod
    def _health_entry(instance: Instance, problem: str | None, checked_at: float) -> dict[str, Any]:
        return {
            "healthy": problem is None,
            "reason": problem,
            "checked_at": checked_at,
            "generation": instance.slot.generation,
            "provider": instance.component.provider,
        }

    def _write_status(self) -> None:
        snapshots.write_json(self.settings.state / snapshots.STATUS, self.status())

    def status(self) -> dict[str, Any]:
        """The status document (status.json, `oneiric status`, GET /status)."""
        plan = self.runtime.plan
        components = {}
        for cid, handle in self.runtime.handles.items():
            slot = handle.slot
            components[cid] = {
                "provider": slot.provider if slot else None,
                "generation": slot.generation if slot else None,
                "inflight": slot.inflight if slot else 0,
                "calls": slot.calls if slot else 0,
                "paused": handle.paused,
            }
        counters = self.counters
        return {
            "pid": os.getpid(),
            "pid_start": self._pid_start,
            "state": self.state,
            "started_at": self.started_at,
            "updated_at": time.time(),
            "source": self.settings.source.description,
            "watching": self.watching,
            "profile": self.profile,
            "plan": {
                "digest": plan.digest,
                "target": plan.target,
                "profile": plan.profile,
                "serial": self.runtime.serial,
            }
            if plan
            else None,
            "components": components,
            "swaps": counters.swaps,
            "rejected": counters.rejected,
            "aborted": counters.aborted,
            "rolled_back": counters.rolled_back,
            "unreachable": counters.unreachable,
            "superseded": counters.superseded,
            "drain_overruns": dict(self.runtime.drain_overruns),
            "cleanup_failures": self.runtime.cleanup_failures,
            "last_swap": counters.last_swap,
            "last_problem": counters.last_problem,
            "connections": {role: c.as_json() for role, c in sorted(self.connections.items())},
        }

    def _digest(self) -> str | None:
        plan: Plan | None = self.runtime.plan
        return plan.digest if plan else None
