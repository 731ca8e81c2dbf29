"""The alert conditions that are states (manifest expiry, dead letters, failed workflow runs)
and the plan conditions, on a real supervisor state directory and flow store."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
from oneiric._delivery.sources import Candidate, UnsignedPlanFile
from oneiric._flows.store import FlowStore
from oneiric._lifecycle.supervisor import Settings, Supervisor
from oneiric._ops.alerts import Alerter, Channel, Condition, Message, Route
from ophttp import store
from planbuild import plan
from rtprocess import write_plan


def alerter(tmp_path: Path, *conditions: Condition) -> tuple[Alerter, Supervisor]:
    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path)))
    supervisor = Supervisor(Settings(state=tmp_path / "state", source=UnsignedPlanFile(plan_path)))
    (tmp_path / "state").mkdir()
    route = Route(
        "r",
        {c.kind: c for c in conditions},
        [Channel("webhook", {"url": "http://127.0.0.1:9/"})],
    )
    return Alerter([route], supervisor), supervisor


def queued(alerter: Alerter) -> list[tuple[str, str, str]]:
    found: list[Message] = []
    while True:
        try:
            found.append(alerter._queue.receive_nowait())
        except anyio.WouldBlock:
            return [(m.condition, m.subject, m.status) for m in found]


def test_manifest_expiring_fires_within_its_window_and_resolves(tmp_path: Path) -> None:
    alerts, supervisor = alerter(tmp_path, Condition("manifest_expiring", within_s=3600))
    now = time.time()
    supervisor.expires_at = now + 7200
    alerts.poll(now)
    assert queued(alerts) == []
    alerts.poll(now + 3601)
    alerts.poll(now + 3700)  # still firing: not sent again
    assert queued(alerts) == [("manifest_expiring", "manifest", "firing")]
    supervisor.expires_at = now + 30 * 86400  # a later manifest
    alerts.poll(now + 3800)
    assert queued(alerts) == [("manifest_expiring", "manifest", "resolved")]


def test_dead_letters_and_failed_runs_from_the_flow_store(tmp_path: Path) -> None:
    alerts, _ = alerter(tmp_path, Condition("dead_letter"), Condition("workflow_failed"))
    flows = FlowStore(tmp_path / "state")
    try:
        letter = flows.add_dead_letter("e1", "orders", "notify", "{}", {}, "smtp down", 3)
        definition = [{"name": "a", "task": "a", "depends_on": []}]
        for run_id, status in (("r1", "failed"), ("r2", "succeeded")):
            time.sleep(0.01)
            assert flows.create_run(run_id, "ship", None, definition, "{}", "test")
            flows.finish_run(run_id, status, "a failed" if status == "failed" else None, [])
        alerts.poll(time.time())
        assert queued(alerts) == [
            ("dead_letter", "events", "firing"),
            ("workflow_failed", "ship", "firing"),
            ("workflow_failed", "ship", "resolved"),
        ]
        flows.replayed(letter, None, 1)
        alerts.poll(time.time())
        assert queued(alerts) == [("dead_letter", "events", "resolved")]
    finally:
        flows.close()


def test_plan_conditions_fire_and_resolve_when_a_plan_is_applied(tmp_path: Path) -> None:
    alerts, supervisor = alerter(
        tmp_path, Condition("plan_rejected"), Condition("rolled_back"), Condition("swap_aborted")
    )
    alerts.problem("rejected", "signature", None)
    alerts.problem("rejected", "signature again", None)  # once until resolved
    alerts.problem("rolled_back", "probation failed", 0.2)
    alerts.problem("unreachable", "timeout", None)  # not a condition of its own
    assert queued(alerts) == [
        ("plan_rejected", "plan", "firing"),
        ("rolled_back", "plan", "firing"),
    ]
    good = plan(store("v2", tmp_path))
    alerts.applied(Candidate(good, None), None, 0.0)
    assert sorted(queued(alerts)) == [
        ("plan_rejected", "plan", "resolved"),
        ("rolled_back", "plan", "resolved"),
    ]
    assert supervisor.runtime.plan is None  # nothing here ran a plan: only the alerter saw it
