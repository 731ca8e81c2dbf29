"""Tasks, handlers and actions for the workflow and event tests.

Each call appends one JSON line to the file named by its `log` config (an
`env("WF_LOG")` in the test stacks), so tests, including those that kill a
process, can see exactly which calls happened, when, and with what input.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

import anyio

_lock = threading.Lock()
_running: dict[str, int] = {}


def _record(log: str, **entry: Any) -> None:
    with _lock, open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**entry, "t": time.time(), "pid": os.getpid()}) + "\n")
        handle.flush()


def calls(log: str, kind: str | None = None) -> list[dict[str, Any]]:
    try:
        with open(log, encoding="utf-8") as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
    return [e for e in entries if kind is None or e["kind"] == kind]


def _attempt(log: str, name: str) -> int:
    return sum(1 for e in calls(log, "start") if e["name"] == name)


async def step(
    input: Any,
    upstream: dict[str, Any],
    *,
    name: str,
    log: str,
    sleep_ms: int = 0,
    fail_times: int = 0,
) -> dict[str, Any]:
    """Record, sleep, fail the first `fail_times` attempts, then return a result."""
    _record(log, kind="start", name=name, upstream=upstream, input=input)
    attempt = _attempt(log, name)
    if sleep_ms:
        await anyio.sleep(sleep_ms / 1000)
    if attempt <= fail_times:
        raise RuntimeError(f"{name} failing on purpose (attempt {attempt})")
    _record(log, kind="end", name=name)
    return {"node": name, "attempt": attempt, "seen": sorted(upstream)}


def blocking_step(
    input: Any, upstream: dict[str, Any], *, name: str, log: str, sleep_ms: int = 0
) -> dict[str, Any]:
    """A sync task (runs in a worker thread)."""
    _record(log, kind="start", name=name, upstream=upstream, input=input)
    time.sleep(sleep_ms / 1000)
    _record(log, kind="end", name=name)
    return {"node": name, "sync": True}


def not_json(input: Any, upstream: dict[str, Any]) -> Any:
    return {1, 2}


async def handler(
    event: Any, *, name: str, log: str, sleep_ms: int = 0, fail_times: int = 0, hang: bool = False
) -> dict[str, Any]:
    """An event handler that records how many of its kind run at once."""
    with _lock:
        _running[name] = _running.get(name, 0) + 1
        now = _running[name]
    try:
        _record(log, kind="start", name=name, event=event.id, attempt=event.attempt, running=now)
        attempt = _attempt(log, name)
        if hang:
            await anyio.sleep(3600)
        if sleep_ms:
            await anyio.sleep(sleep_ms / 1000)
        if attempt <= fail_times:
            raise RuntimeError(f"{name} failing on purpose (attempt {attempt})")
        _record(log, kind="end", name=name, event=event.id, payload=event.payload)
        return {"handled_by": name}
    finally:
        with _lock:
            _running[name] -= 1


async def touchy(event: Any, *, name: str, log: str, own_timeout_ms: int = 0) -> dict[str, Any]:
    """Changes its payload (its siblings must not see that); with `own_timeout_ms`, enters an
    `asyncio.timeout` of its own before suspending, which then fails it (its TimeoutError)."""
    payload = event.payload
    payload["touched_by"] = name
    if own_timeout_ms:
        async with asyncio.timeout(own_timeout_ms / 1000):
            await asyncio.sleep(3600)
    _record(log, kind="end", name=name, event=event.id, payload=payload, again=event.payload)
    return {"handled_by": name}


def flaky_handler(event: Any, *, name: str, log: str, marker: str) -> str:
    """Sync handler: fails while the file `marker` exists."""
    _record(log, kind="start", name=name, event=event.id)
    if os.path.exists(marker):
        raise RuntimeError(f"{name}: downstream unavailable")
    return "ok"


async def picky(event: Any, *, name: str, log: str, sleep_ms: int = 0) -> dict[str, Any]:
    """A handler that always fails for a payload with `"poison": true` (and records attempts)."""
    _record(log, kind="start", name=name, event=event.id, attempt=event.attempt)
    if sleep_ms:
        await anyio.sleep(sleep_ms / 1000)
    if isinstance(event.payload, dict) and event.payload.get("poison"):
        raise RuntimeError(f"{name}: poison event {event.id}")
    _record(
        log, kind="end", name=name, event=event.id, payload=event.payload, attempt=event.attempt
    )
    return {"handled_by": name}


async def emitting_app(supervisor: Any) -> None:
    """`oneiric run --app`: emit on "t" once and on "u" twice through an event bus over
    the running runtime's handlers; then record ("emitted") in WF_LOG."""
    from oneiric._flows.events import EventBus
    from oneiric._flows.store import FlowStore

    runtime = supervisor.runtime
    bus = EventBus(runtime.plan, runtime, FlowStore(supervisor.settings.state))
    await bus.emit("t", {})
    for _ in range(2):
        await bus.emit("u", {})
    _record(os.environ["WF_LOG"], kind="emitted")


async def observe(
    input: Any, upstream: dict[str, Any], *, name: str, log: str, fail_times: int = 0
) -> dict[str, Any]:
    """Record the flow context a node sees; then, from code, emit an event and start a
    child run (`oneiric.actions.flow`), recording what became of each."""
    from oneiric import _trace
    from oneiric._flows.context import attempt, current, node
    from oneiric.actions import ActionError
    from oneiric.actions.flow import dispatch, start

    here, context = node(), current()
    seen = {
        "node": list(here) if here else None,
        "attempt": attempt(),
        "plan": context.plan.digest if context else None,
        "trace": list(_trace.ids() or ()),
    }
    _record(log, kind="observe", name=name, **seen)
    if (attempt() or 1) <= fail_times:
        raise RuntimeError(f"{name} failing on purpose (attempt {attempt()})")
    run_id = here[0] if here else "none"
    done: dict[str, Any] = {}
    try:
        emitted = await dispatch({"topic": "seen", "payload": {"run": run_id}})
        done["emitted"] = [o["handler"] for o in emitted["outcomes"] if o["status"] == "delivered"]
        child = await start(
            {"workflow": "child", "input": {"parent": run_id}, "run_id": f"{run_id}-child"}
        )
        done["child"] = child["run"]
    except ActionError as exc:
        done["error"] = str(exc)
    _record(log, kind="end", name=name, **done)
    return {**seen, **done}


async def relay(event: Any, *, name: str, log: str, to: str) -> dict[str, Any]:
    """A handler that emits a follow-up event on topic `to` from code (`event.dispatch`)."""
    from oneiric.actions.flow import dispatch

    emitted = await dispatch({"topic": to, "payload": {"after": event.id}})
    _record(log, kind="end", name=name, event=event.id, emitted=emitted)
    return emitted


async def announce(
    input: Any, upstream: dict[str, Any], *, name: str, log: str, topic: str, fail_times: int = 0
) -> dict[str, Any]:
    """A node that emits as an `event.dispatch` node does (its RUN-NODE id), then fails its
    first `fail_times` attempts: each attempt emits again."""
    from oneiric._flows.context import attempt
    from oneiric.actions.flow import dispatch

    emitted = await dispatch(input, upstream, topic=topic)
    _record(log, kind="emitted", name=name, attempt=attempt(), emitted=emitted)
    if (attempt() or 1) <= fail_times:
        raise RuntimeError(f"{name} failing on purpose after emitting (attempt {attempt()})")
    return emitted


async def calling_app(supervisor: Any) -> None:
    """`oneiric run --app`: calls the plan's actions as asked, until the runtime stops.

    Each request is a file REQUESTS/N.json {"action": KEY, "payload": ...} in the
    directory $APP_REQUESTS (action "emit": `oneiric.events.emit(**payload)`); the
    result (or the error) goes to REQUESTS/N.out.
    """
    from pathlib import Path

    from oneiric.events import emit

    requests = Path(os.environ["APP_REQUESTS"])
    while not supervisor.stopping.is_set():
        for path in sorted(requests.glob("*.json")):
            asked = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()
            try:
                if asked["action"] == "emit":  # the public way, no action component
                    done = await emit(**asked["payload"])
                else:
                    done = await supervisor.handle(f"action:{asked['action']}")(asked["payload"])
                answer = {"result": done}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(answer), encoding="utf-8")
            tmp.replace(path.with_suffix(".out"))
        await anyio.sleep(0.02)
