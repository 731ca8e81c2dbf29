"""Prometheus metrics of a running supervisor, produced by prometheus_client.

Two kinds:

* pushed: what happens once (a swap and its duration, a source read, a
  health check) is counted by `Metrics`, a supervisor `Observer`;
* pulled: what is a state (the plan in force, per-component calls, in-flight
  calls, health, drain overruns; workflow runs and dead letters from
  STATE/flows.db) is read when Prometheus scrapes, so a handle call pays
  nothing for metrics beyond the slot's own counting (`Slot.calls`/`errors`).

Names follow the Prometheus conventions: `oneiric_` prefix, base units
(seconds), `_total` on counters, `_info` for labels-only metrics.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from oneiric._flows.events import DeliveryObserver, Outcome
from oneiric._flows.store import FILENAME as FLOWS_DB
from oneiric._lifecycle import snapshots
from oneiric._lifecycle.supervisor import Observer

if TYPE_CHECKING:
    from oneiric._delivery.sources import Candidate
    from oneiric._lifecycle.runtime import SwapReport
    from oneiric._lifecycle.supervisor import Supervisor

SWAP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
NODE_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
RECENT_SWAPS = 20


@dataclass(frozen=True)
class SwapRecord:
    """One swap (or refused plan) for the status page."""

    at: float
    outcome: str  # applied | rejected | aborted | rolled_back
    seconds: float | None
    digest: str | None
    serial: int | None
    detail: str


class Metrics(Observer):
    """The registry served at /metrics, and the supervisor observer that feeds it."""

    def __init__(self, supervisor: Supervisor, events: EventCounts | None = None) -> None:
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=True)
        self.recent: deque[SwapRecord] = deque(maxlen=RECENT_SWAPS)
        self.swaps = Counter(
            "oneiric_swaps",
            "Plans offered to the runtime, by outcome (applied, rejected, aborted, rolled_back).",
            ["outcome"],
            registry=self.registry,
        )
        self.swap_seconds = Histogram(
            "oneiric_swap_duration_seconds",
            "Duration of swaps (load, make, bind, probation, break), by outcome.",
            ["outcome"],
            buckets=SWAP_BUCKETS,
            registry=self.registry,
        )
        self.syncs = Counter(
            "oneiric_source_syncs",
            "Reads of the plan source (file or remote manifest), by outcome "
            "(changed, unchanged, rejected, unreachable).",
            ["outcome"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "oneiric_component_health_check_duration_seconds",
            "Duration of components' health checks.",
            ["component"],
            buckets=CHECK_BUCKETS,
            registry=self.registry,
        )
        self.checks = Counter(
            "oneiric_component_health_checks",
            "Health checks run, by component and outcome (healthy, unhealthy).",
            ["component", "outcome"],
            registry=self.registry,
        )
        self.events = events or EventCounts()
        self.registry.register(_State(supervisor, self.events))
        ProcessCollector(registry=self.registry)

    # -- Observer --------------------------------------------------------------
    def applied(self, candidate: Candidate, report: SwapReport | None, seconds: float) -> None:
        if report is None:  # the plan at start: not a swap
            return
        self.swaps.labels("applied").inc()
        self.swap_seconds.labels("applied").observe(seconds)
        changes = f"+{len(report.added)} ~{len(report.changed)} -{len(report.removed)}"
        self.recent.appendleft(
            SwapRecord(time.time(), "applied", seconds, report.digest, report.serial, changes)
        )

    def problem(self, kind: str, message: str, seconds: float | None) -> None:
        if kind == "unreachable":  # a source outage, not a plan (counted by syncs)
            return
        self.swaps.labels(kind).inc()
        if seconds is not None:
            self.swap_seconds.labels(kind).observe(seconds)
        self.recent.appendleft(SwapRecord(time.time(), kind, seconds, None, None, message))

    def checked(self, component_id: str, problem: str | None, seconds: float | None) -> None:
        self.checks.labels(component_id, "healthy" if problem is None else "unhealthy").inc()
        if seconds is not None:
            self.check_seconds.labels(component_id).observe(seconds)

    def fetched(self, outcome: str) -> None:
        self.syncs.labels(outcome).inc()


class EventCounts(DeliveryObserver):
    """This process's event deliveries (an `EventBus` used by the app), by route (topic)."""

    def __init__(self) -> None:
        self.deliveries: Tally[tuple[str, str]] = Tally()
        self.retries: Tally[str] = Tally()

    def retried(self, topic: str, handler: str) -> None:
        self.retries[topic] += 1

    def delivered(self, topic: str, handler: str, outcome: Outcome) -> None:
        self.deliveries[topic, outcome.status.replace("-", "_")] += 1


class _State(Collector):
    """What is read at scrape time: the plan, the components, flows.db."""

    def __init__(self, supervisor: Supervisor, events: EventCounts) -> None:
        self.supervisor = supervisor
        self.events = events

    def describe(self) -> list[Metric]:
        return []  # families vary with the plan; collected on each scrape only

    def collect(self) -> Iterator[Metric]:
        yield from self._plan()
        yield from self._components()
        yield from flow_metrics(self.supervisor.settings.state / FLOWS_DB)
        yield from event_metrics(self.supervisor.settings.state / "consumers", self.events)
        yield from connection_metrics(self.supervisor)
        yield from remote_sync_metrics(self.supervisor.settings.state / snapshots.REMOTE_SYNC)

    def _plan(self) -> Iterator[Metric]:
        supervisor = self.supervisor
        runtime = supervisor.runtime
        plan = runtime.plan
        ready = GaugeMetricFamily(
            "oneiric_ready", "1 when a plan is applied and every component is healthy."
        )
        ready.add_metric([], 1.0 if not readiness_problems(supervisor) else 0.0)
        yield ready
        if plan is None:
            return
        info = InfoMetricFamily("oneiric_plan", "The plan in force.")
        info.add_metric(
            [],
            {
                "target": plan.target,
                "digest": plan.digest or "",
                "serial": "" if runtime.serial is None else str(runtime.serial),
                "profile": supervisor.profile,
            },
        )
        yield info
        if supervisor.applied_at is not None:
            applied = GaugeMetricFamily(
                "oneiric_plan_applied_timestamp_seconds", "When the plan in force was applied."
            )
            applied.add_metric([], supervisor.applied_at)
            yield applied
        if supervisor.expires_at is not None:
            expiry = GaugeMetricFamily(
                "oneiric_manifest_expiry_timestamp_seconds",
                "When the signed manifest in force expires (alert before it does).",
            )
            expiry.add_metric([], supervisor.expires_at)
            yield expiry
        failures = CounterMetricFamily(
            "oneiric_cleanup_failures", "Instances whose cleanup failed or overran."
        )
        failures.add_metric([], runtime.cleanup_failures)
        yield failures

    def _components(self) -> Iterator[Metric]:
        runtime = self.supervisor.runtime
        health = self.supervisor.health
        label = ["component"]
        info = InfoMetricFamily(
            "oneiric_component", "Each running component's provider.", labels=label
        )
        calls = CounterMetricFamily(
            "oneiric_component_calls",
            "Calls through the component's handle, by outcome (ok, error), all generations.",
            labels=["component", "outcome"],
        )
        inflight = GaugeMetricFamily(
            "oneiric_component_inflight_calls", "Calls in flight.", labels=label
        )
        healthy = GaugeMetricFamily(
            "oneiric_component_healthy", "1 when the last health check passed.", labels=label
        )
        generation = GaugeMetricFamily(
            "oneiric_component_generation", "Generation of the bound instance.", labels=label
        )
        paused = GaugeMetricFamily(
            "oneiric_component_paused", "1 when paused or drained by an operator.", labels=label
        )
        overruns = CounterMetricFamily(
            "oneiric_component_drain_overruns",
            "Retired instances still running calls at their drain deadline.",
            labels=label,
        )
        for cid, handle in sorted(runtime.handles.items()):
            slot = handle.slot
            total, errors, busy = handle.counts()
            info.add_metric([cid], {"provider": slot.provider if slot else ""})
            calls.add_metric([cid, "ok"], total - errors)
            calls.add_metric([cid, "error"], errors)
            inflight.add_metric([cid], busy)
            entry = health.get(cid)
            healthy.add_metric([cid], 1.0 if entry is not None and entry["healthy"] else 0.0)
            generation.add_metric([cid], slot.generation if slot else 0)
            paused.add_metric([cid], 1.0 if handle.paused else 0.0)
            overruns.add_metric([cid], runtime.drain_overruns.get(cid, 0))
        yield from (info, calls, inflight, healthy, generation, paused, overruns)


def readiness_problems(supervisor: Supervisor) -> list[str]:
    """Why the runtime is not ready (empty when it is): /readyz and oneiric_ready."""
    if supervisor.stopping.is_set():
        return ["stopping"]
    if not supervisor.ready.is_set() or supervisor.runtime.plan is None:
        return ["no plan applied yet"]
    health = supervisor.health
    problems = []
    for cid in sorted(supervisor.runtime.instances):
        entry = health.get(cid)
        if entry is None:
            problems.append(f"{cid}: not checked yet")
        elif not entry["healthy"]:
            problems.append(f"{cid}: {entry['reason']}")
    return problems


def event_metrics(directory: Path, local: EventCounts) -> Iterator[Metric]:
    """Event deliveries made in this process, by route (topic) and outcome, with their
    retries; and event consumers' counters (`oneiric event consume` writes
    STATE/consumers/NAME.json every second), by consumer; a consumer's counters start
    again when it restarts.  Both share `oneiric_event_deliveries_total`: samples with
    `route` are this process's, samples with `consumer` a consumer's."""
    deliveries = CounterMetricFamily(
        "oneiric_event_deliveries",
        "Events delivered, by outcome (delivered, dead_lettered) and route (in this "
        "process) or consumer (from the broker).",
    )
    retries = CounterMetricFamily(
        "oneiric_event_retries",
        "Failed delivery attempts retried in this process, by route.",
        labels=["route"],
    )
    total = "oneiric_event_deliveries_total"
    for (route, outcome), count in sorted(local.deliveries.items()):
        deliveries.add_sample(total, {"route": route, "outcome": outcome}, count)
    for route, count in sorted(local.retries.items()):
        retries.add_metric([route], count)
    yield retries
    if not directory.is_dir():
        yield deliveries
        return
    label = ["consumer"]
    claimed = CounterMetricFamily(
        "oneiric_event_claimed", "Deliveries reclaimed from stopped consumers.", labels=label
    )
    reconnects = CounterMetricFamily(
        "oneiric_event_broker_reconnects", "Broker connections re-established.", labels=label
    )
    connected = GaugeMetricFamily(
        "oneiric_event_broker_connected", "1 while connected to the broker.", labels=label
    )
    samples: dict[tuple[str, str], dict[str, Any]] = {}  # (stream, group) -> freshest
    for path in sorted(directory.glob("*.json")):
        data = snapshots.read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("broker"), dict):
            continue
        if snapshots.running(data, "written_at"):
            for b in data.get("backlog") or []:
                key, at = (str(b["stream"]), str(b["group"])), b.get("sampled_at")
                if at is not None and at > samples.get(key, {}).get("sampled_at", 0):
                    samples[key] = b
        name, broker = str(data.get("consumer", path.stem)), data["broker"]
        for outcome in ("delivered", "dead_lettered"):
            deliveries.add_sample(
                total, {"consumer": name, "outcome": outcome}, broker.get(outcome, 0)
            )
        claimed.add_metric([name], broker.get("claimed", 0))
        reconnects.add_metric([name], broker.get("reconnects", 0))
        connected.add_metric([name], 1.0 if broker.get("connected") else 0.0)
    yield from (deliveries, claimed, reconnects, connected)
    yield from group_metrics(list(samples.values()))


def group_metrics(samples: list[dict[str, Any]]) -> Iterator[Metric]:
    """The backlog of each consumer group, one sample per (stream, group): the freshest
    of the running consumers that read it (every consumer of a group samples the same
    group-wide numbers, so they are never added up)."""
    labels = ["topic", "stream", "group"]
    pending = GaugeMetricFamily(
        "oneiric_event_group_pending",
        "Entries delivered to the consumer group and not yet acknowledged (XPENDING).",
        labels=labels,
    )
    lag = GaugeMetricFamily(
        "oneiric_event_group_lag",
        "Entries of the stream not yet delivered to the consumer group (XINFO GROUPS lag; "
        "absent where Redis cannot tell).",
        labels=labels,
    )
    age = GaugeMetricFamily(
        "oneiric_event_group_sample_age_seconds",
        "Seconds since the group's backlog was last sampled (grows while the broker is down).",
        labels=labels,
    )
    now = time.time()
    for b in sorted(samples, key=lambda b: (b["stream"], b["group"])):
        values = [str(b["topic"]), str(b["stream"]), str(b["group"])]
        pending.add_metric(values, b["pending"])
        if b.get("lag") is not None:
            lag.add_metric(values, b["lag"])
        age.add_metric(values, round(now - b["sampled_at"], 3))
    yield from (pending, lag, age)


def connection_metrics(supervisor: Supervisor) -> Iterator[Metric]:
    """The broker and database connections of this runtime (`oneiric worker`'s broker) and
    of the processes beside it (`snapshots.fleet`: event consumers, workers, `workflow
    serve` runtimes), by process kind and name, role and endpoint (password masked).  A
    process that is not running has no connection samples; `oneiric_process_up` says so."""
    labels = ["kind", "name", "role", "endpoint"]
    up = GaugeMetricFamily(
        "oneiric_connection_up",
        "1 while the connection is up, 0 while it is being re-established (or given up).",
        labels=labels,
    )
    attempt = GaugeMetricFamily(
        "oneiric_connection_reconnect_attempt",
        "Failed attempts since the connection was lost (0 while it is up).",
        labels=labels,
    )
    reconnects = CounterMetricFamily(
        "oneiric_connection_reconnects",
        "Connections re-established since the process started.",
        labels=labels,
    )
    process = GaugeMetricFamily(
        "oneiric_process_up",
        "1 while a process beside the runtime (kind consumer, worker, runtime) runs: its "
        "status file is fresh and its pid alive.",
        labels=["kind", "name"],
    )

    def add(kind: str, name: str, link: dict[str, Any]) -> None:
        key = [kind, name, str(link.get("role", "")), str(link.get("url", ""))]
        up.add_metric(key, 1.0 if link.get("connected") else 0.0)
        attempt.add_metric(key, link.get("attempt", 0))
        reconnects.add_metric(key, link.get("reconnects", 0))

    for link in supervisor.connections.values():
        add("self", "", link.as_json())
    for directory, processes in snapshots.fleet(supervisor.settings.state).items():
        kind = directory.removesuffix("s")
        for p in processes:
            process.add_metric([kind, p["name"]], 1.0 if p["alive"] else 0.0)
            if p["alive"]:
                for role in snapshots.CONNECTIONS:
                    if isinstance(p.get(role), dict):
                        add(kind, p["name"], p[role])
    yield from (up, attempt, reconnects, process)


def remote_sync_metrics(path: Path) -> Iterator[Metric]:
    """The polls of `oneiric remote-sync --watch` on this state directory, by outcome
    (accepted, unchanged, rejected, error); they start again when it restarts."""
    data = snapshots.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("counts"), dict):
        return
    polls = CounterMetricFamily(
        "oneiric_remote_syncs",
        "Polls of `oneiric remote-sync --watch`, by outcome "
        "(accepted, unchanged, rejected, error).",
        labels=["outcome"],
    )
    for outcome in ("accepted", "unchanged", "rejected", "error"):
        polls.add_metric([outcome], data["counts"].get(outcome, 0))
    yield polls
    last = GaugeMetricFamily(
        "oneiric_remote_sync_last_poll_timestamp_seconds",
        "When `oneiric remote-sync --watch` last polled (alert when it stops).",
    )
    last.add_metric([], data.get("written_at", 0))
    yield last


def flow_metrics(path: Any) -> Iterator[Metric]:
    """Workflow runs and dead letters recorded in flows.db by `oneiric workflow`/`event`."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return
    try:
        yield from _flow_metrics(db)
    except sqlite3.Error:
        return
    finally:
        db.close()


def _flow_metrics(db: sqlite3.Connection) -> Iterator[Metric]:
    runs = CounterMetricFamily(
        "oneiric_workflow_runs",
        "Finished workflow runs, by workflow and outcome (succeeded, failed, cancelled).",
        labels=["workflow", "outcome"],
    )
    running = GaugeMetricFamily(
        "oneiric_workflow_runs_running", "Workflow runs in progress.", labels=["workflow"]
    )
    for workflow, status, count in db.execute(
        "SELECT workflow, status, COUNT(*) FROM runs GROUP BY workflow, status ORDER BY 1, 2"
    ):
        if status == "running":
            running.add_metric([workflow], count)
        else:
            runs.add_metric([workflow, status], count)
    yield runs
    yield running
    buckets = ", ".join(f"SUM(n.duration_ms <= {b * 1000!r})" for b in NODE_BUCKETS)
    durations = HistogramMetricFamily(
        "oneiric_workflow_node_duration_seconds",
        "Duration of finished workflow nodes (all attempts).",
        labels=["workflow", "node"],
    )
    retries = CounterMetricFamily(
        "oneiric_workflow_node_retries",
        "Attempts beyond the first, by workflow node.",
        labels=["workflow", "node"],
    )
    for row in db.execute(
        f"SELECT r.workflow, n.name, COUNT(*), SUM(n.duration_ms), "
        f"SUM(MAX(n.attempts - 1, 0)), {buckets} "
        "FROM nodes n JOIN runs r ON r.id = n.run_id WHERE n.duration_ms IS NOT NULL "
        "GROUP BY r.workflow, n.name ORDER BY 1, 2"
    ):
        workflow, node, count, total_ms, extra, *cumulative = row
        durations.add_metric(
            [workflow, node],
            [
                *((repr(b), c) for b, c in zip(NODE_BUCKETS, cumulative, strict=True)),
                ("+Inf", count),
            ],
            total_ms / 1000,
        )
        retries.add_metric([workflow, node], extra)
    yield durations
    yield retries
    letters = CounterMetricFamily(
        "oneiric_event_dead_letters",
        "Event deliveries that exhausted their attempts, by topic and handler.",
        labels=["topic", "handler"],
    )
    unresolved = GaugeMetricFamily(
        "oneiric_event_dead_letters_unresolved",
        "Dead letters not yet replayed successfully.",
        labels=["topic", "handler"],
    )
    for topic, handler, count, open_ in db.execute(
        "SELECT topic, handler, COUNT(*), SUM(resolved_at IS NULL) FROM dead_letters "
        "GROUP BY topic, handler ORDER BY 1, 2"
    ):
        letters.add_metric([topic, handler], count)
        unresolved.add_metric([topic, handler], open_)
    yield letters
    yield unresolved
