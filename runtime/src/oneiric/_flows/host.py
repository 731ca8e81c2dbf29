"""What workflows, events and actions run on: the plan's components, activated by a `Runtime`.

A command line process that runs a workflow or delivers an event activates
only the components it needs (the tasks or handlers and, transitively, what
they require), through the same `Runtime` as `oneiric run`: pins are checked
before import, config is resolved, lifecycle and handles are the usual ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from oneiric._lifecycle.modulepath import Imports
from oneiric._lifecycle.runtime import Runtime
from oneiric._plan.model import Plan, load_plan

T = TypeVar("T")


class PlanUnavailable(Exception):
    """No plan to run (no running runtime's last good plan, unreadable or invalid file)."""


class Unknown(LookupError):
    """A name (workflow, topic, action) that the plan does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """`table[name]`, or `Unknown` with a did-you-mean hint and the known names."""
    found = table.get(name)
    if found is None:
        import difflib

        known = sorted(table)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f'; did you mean "{close[0]}"?' if close else ""
        raise Unknown(f'no {what} "{name}" in the plan{hint} (known: {", ".join(known) or "none"})')
    return found


def closure(plan: Plan, ids: Iterable[str]) -> list[str]:
    """`ids` and everything they require, in the plan's activation order."""
    wanted: set[str] = set()
    todo = [cid for cid in ids if plan.component(cid) is not None]
    by_id = {c.id: c for c in plan.components}
    while todo:
        cid = todo.pop()
        if cid in wanted:
            continue
        wanted.add(cid)
        todo.extend(f"{r.domain}:{r.key}" for r in by_id[cid].requires)
    return [cid for cid in plan.activation_order if cid in wanted]


def subplan(plan: Plan, ids: Iterable[str]) -> Plan:
    """The plan restricted to `ids` and their requirements (same digest: same origin)."""
    keep = closure(plan, ids)
    kept = set(keep)
    return plan.model_copy(
        update={
            "components": [c for c in plan.components if c.id in kept],
            "activation_order": keep,
        }
    )


@asynccontextmanager
async def activated(
    plan: Plan, ids: Iterable[str], imports: Imports | None = None
) -> AsyncIterator[Runtime]:
    """A `Runtime` running the components `ids` need; stopped (drained, cleaned up) at exit."""
    runtime = Runtime(imports=imports)
    await runtime.apply(subplan(plan, ids))
    try:
        yield runtime
    finally:
        await runtime.stop()


def read_plan(path: Path) -> Plan:
    """An unsigned plan file (development), or the running runtime's `last-good.json`."""
    from oneiric._plan.canonical import dumps
    from oneiric._plan.strictjson import loads

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlanUnavailable(f"{path}: {exc.strerror}") from None
    try:
        if path.name == "last-good.json":
            data = dumps(loads(data)["plan"])
        return load_plan(data)
    except (ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()
        raise PlanUnavailable(f"{path}: not a valid plan: {' '.join(first[:3])}") from None
