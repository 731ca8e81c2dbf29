"""Alerts: runtime conditions routed to notification channels.

Routes come from the plan (`notify` blocks in the stacks, checked by the
compiler) and from `oneiric run --alerts FILE`, a JSON file of the same shape:

    {"routes": [{
        "name": "oncall",
        "when": ["plan_rejected", "swap_aborted", "rolled_back", "dead_letter",
                 "workflow_failed",
                 {"condition": "component_unhealthy", "checks": 3},
                 {"condition": "manifest_expiring", "within": "7d"}],
        "channels": [{"kind": "slack", "url": {"$secret": "alerts/slack"}},
                     {"kind": "email", "host": "smtp.example.com", "port": 587,
                      "starttls": true, "username": "ops", "password": {"$secret": "smtp"},
                      "from": "oneiric@example.com", "to": ["ops@example.com"]}],
        "rate": {"count": 10, "per": "1h"}
    }]}

Channel values take the plan's tagged values ({"$secret": path}, {"$env": ...}).
A condition fires once per subject (a component, a workflow, the plan) until
it resolves, which sends a "resolved" message; plan_rejected, swap_aborted and
rolled_back resolve when a plan is next applied, component_unhealthy when the
component's check passes, manifest_expiring when a later manifest is applied,
dead_letter when no unresolved dead letter is left, workflow_failed when a
later run of the workflow succeeds.  Each route sends at most `rate.count`
messages per `rate.per` (more are dropped and logged).  Sending happens in
the background: observers only queue a message, so an alert never delays a
swap; a failing channel is retried with exponential backoff and logged.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from oneiric._flows.store import FILENAME as FLOWS_DB
from oneiric._lifecycle.supervisor import Observer
from oneiric._plan import values
from oneiric._plan.document import NOTIFY_CHANNELS as CHANNELS
from oneiric._plan.document import NOTIFY_CONDITIONS as CONDITIONS
from oneiric._plan.model import Plan

if TYPE_CHECKING:
    from oneiric._delivery.sources import Candidate
    from oneiric._lifecycle.runtime import SwapReport
    from oneiric._lifecycle.supervisor import Supervisor

_PROBLEMS = {"rejected": "plan_rejected", "aborted": "swap_aborted", "rolled_back": "rolled_back"}
POLL_S = 1.0  # manifest expiry, dead letters and workflow runs are checked this often
ATTEMPTS = 5
BACKOFF_S = 0.5
QUEUE = 1000


class AlertsError(ValueError):
    """The alerts file is unusable: names the file and the place."""


@dataclass(frozen=True)
class Condition:
    kind: str
    checks: int = 1  # component_unhealthy: after this many failed checks in a row
    within_s: float = 0.0  # manifest_expiring: when it expires within this long


@dataclass(frozen=True)
class Channel:
    kind: str
    config: Mapping[str, Any]  # as written (tagged values); resolved when sending


@dataclass
class Route:
    name: str
    conditions: dict[str, Condition]
    channels: list[Channel]
    rate: tuple[int, float] | None = None  # at most count per seconds
    sent: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class Message:
    route: str
    condition: str
    subject: str
    status: str  # firing | resolved
    summary: str
    at: float
    plan: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "condition": self.condition,
            "subject": self.subject,
            "status": self.status,
            "summary": self.summary,
            "at": self.at,
            "plan": dict(self.plan),
        }

    def text(self) -> str:
        head = "RESOLVED" if self.status == "resolved" else "FIRING"
        target = self.plan.get("target") or "-"
        return f"[oneiric {target}] {head} {self.condition} {self.subject}: {self.summary}"


# -- loading ---------------------------------------------------------------------------
_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def load(path: Path) -> list[Route]:
    """The routes of an alerts file; `AlertsError` naming the file and place otherwise."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise AlertsError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AlertsError(f"{path}: not JSON: {exc}") from None
    routes = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(routes, list) or not routes:
        raise AlertsError(f'{path}: expected {{"routes": [...]}} with at least one route')
    return [_route(path, f"routes[{i}]", item) for i, item in enumerate(routes)]


def _route(path: Path, where: str, item: Any) -> Route:
    def fail(message: str) -> AlertsError:
        return AlertsError(f"{path}: {where}: {message}")

    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise fail('a route is an object with a "name"')
    unknown = sorted(set(item) - {"name", "when", "channels", "rate"})
    if unknown:
        raise fail(f"unknown field {unknown[0]!r} (route fields: name, when, channels, rate)")
    conditions: dict[str, Condition] = {}
    for i, entry in enumerate(item.get("when") or []):
        spec = {"condition": entry} if isinstance(entry, str) else entry
        kind = spec.get("condition") if isinstance(spec, dict) else None
        if kind not in CONDITIONS:
            raise fail(f"when[{i}]: unknown condition {kind!r} (known: {', '.join(CONDITIONS)})")
        checks = spec.get("checks", 1)
        if not isinstance(checks, int) or checks < 1:
            raise fail(f"when[{i}]: checks must be a positive integer")
        within = _duration(spec.get("within", "0s"))
        if within is None or (kind == "manifest_expiring" and not within):
            raise fail(f"when[{i}]: within must be a duration such as 7d or 12h")
        conditions[kind] = Condition(kind, checks, within)
    if not conditions:
        raise fail('"when" names no condition')
    channels = []
    for i, spec in enumerate(item.get("channels") or []):
        kind = spec.get("kind") if isinstance(spec, dict) else None
        if kind not in CHANNELS:
            raise fail(f"channels[{i}]: unknown channel {kind!r} (known: {', '.join(CHANNELS)})")
        missing = [name for name in CHANNELS[kind] if name not in spec]
        if missing:
            raise fail(f"channels[{i}]: a {kind} channel needs {', '.join(missing)}")
        channels.append(Channel(kind, {k: v for k, v in spec.items() if k != "kind"}))
    if not channels:
        raise fail('"channels" names no channel')
    rate = None
    if "rate" in item:
        count, per = item["rate"].get("count"), _duration(item["rate"].get("per", ""))
        if not isinstance(count, int) or count < 1 or not per:
            raise fail('rate is {"count": N, "per": "1h"}')
        rate = (count, per)
    return Route(item["name"], conditions, channels, rate)


def plan_routes(plan: Plan) -> list[Route]:
    """The plan's `notify` routes (checked by the compiler)."""
    return [
        Route(
            route.name,
            {
                when.condition: Condition(
                    when.condition, when.checks or 1, (when.within_ms or 0) / 1000
                )
                for when in route.when
            },
            [
                Channel(str(spec["kind"]), {k: v for k, v in spec.items() if k != "kind"})
                for spec in route.channels
            ],
            (route.rate.count, route.rate.per_ms / 1000) if route.rate else None,
        )
        for route in plan.notifications
    ]


def _duration(text: Any) -> float | None:
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    return None if match is None else int(match.group(1)) * _UNITS[match.group(2)]


# -- the alerter -----------------------------------------------------------------------
class Alerter(Observer):
    """Watches the supervisor (as an observer and a service) and sends what fires."""

    def __init__(self, routes: list[Route], supervisor: Supervisor) -> None:
        self.file_routes = routes
        self.routes = list(routes)
        self.supervisor = supervisor
        self.firing: dict[tuple[str, str, str], Message] = {}
        self.failed_checks: dict[str, int] = {}
        self.dropped = 0
        self._send, self._queue = anyio.create_memory_object_stream[Message](QUEUE)
        self._log = structlog.get_logger("oneiric.alerts")
        self._seen_letter = 0
        self._seen_run = time.time()

    def _use(self, plan: Plan) -> None:
        """Route by the `--alerts` file and `plan`'s routes (a route keeps its rate history;
        what fired on a route that is gone is forgotten)."""
        before = {route.name: route for route in self.routes}
        self.routes = [*self.file_routes, *plan_routes(plan)]
        for route in self.routes:
            if route.name in before:
                route.sent = before[route.name].sent
        names = {route.name for route in self.routes}
        self.firing = {key: m for key, m in self.firing.items() if key[0] in names}

    # -- conditions ---------------------------------------------------------------------
    def applied(self, candidate: Candidate, report: SwapReport | None, seconds: float) -> None:
        self._use(candidate.plan)
        for kind in _PROBLEMS.values():
            self._resolve_all(kind, "a plan was applied")

    def problem(self, kind: str, message: str, seconds: float | None) -> None:
        if kind in _PROBLEMS:
            self._fire(_PROBLEMS[kind], "plan", message)

    def checked(self, component_id: str, problem: str | None, seconds: float | None) -> None:
        if problem is None:
            self.failed_checks.pop(component_id, None)
            self._resolve("component_unhealthy", component_id, "healthy again")
            return
        failed = self.failed_checks[component_id] = self.failed_checks.get(component_id, 0) + 1
        self._fire("component_unhealthy", component_id, problem, failed)

    def poll(self, now: float) -> None:
        """Conditions that are states, not events: expiry, dead letters, failed runs."""
        expires = self.supervisor.expires_at
        for route in self.routes:
            condition = route.conditions.get("manifest_expiring")
            if condition is None:
                continue
            key = (route.name, "manifest_expiring", "manifest")
            if expires is not None and expires - now < condition.within_s:
                left = max(0.0, expires - now)
                self._fire_route(route, "manifest_expiring", "manifest", f"expires in {left:.0f}s")
            elif key in self.firing:
                self._resolve_route(route, "manifest_expiring", "manifest", "a later manifest")
        path = self.supervisor.settings.state / FLOWS_DB
        if path.exists() and any(
            {"dead_letter", "workflow_failed"} & set(r.conditions) for r in self.routes
        ):
            self._poll_flows(path)

    def _poll_flows(self, path: Path) -> None:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        except sqlite3.Error:
            return
        try:
            letters = db.execute(
                "SELECT id, topic, handler, error FROM dead_letters WHERE id > ? ORDER BY id",
                (self._seen_letter,),
            ).fetchall()
            unresolved = db.execute(
                "SELECT COUNT(*) FROM dead_letters WHERE resolved_at IS NULL"
            ).fetchone()[0]
            runs = db.execute(
                "SELECT workflow, status, error, finished_at FROM runs "
                "WHERE finished_at > ? ORDER BY finished_at",
                (self._seen_run,),
            ).fetchall()
        except sqlite3.Error:
            return
        finally:
            db.close()
        for letter_id, topic, handler, error in letters:
            self._seen_letter = letter_id
            self._fire("dead_letter", "events", f"{topic} → {handler}: {error}")
        if not unresolved:
            self._resolve("dead_letter", "events", "no unresolved dead letter left")
        for workflow, status, error, finished_at in runs:
            self._seen_run = finished_at
            if status == "failed":
                self._fire("workflow_failed", workflow, error or "failed")
            elif status == "succeeded":
                self._resolve("workflow_failed", workflow, "a later run succeeded")

    # -- firing and resolving -------------------------------------------------------------
    def _fire(self, kind: str, subject: str, summary: str, count: int = 1) -> None:
        for route in self.routes:
            condition = route.conditions.get(kind)
            if condition is not None and count >= condition.checks:
                self._fire_route(route, kind, subject, summary)

    def _fire_route(self, route: Route, kind: str, subject: str, summary: str) -> None:
        key = (route.name, kind, subject)
        if key in self.firing:
            return  # sent once until it resolves
        message = self._message(route, kind, subject, "firing", summary)
        self.firing[key] = message
        self._queue_message(route, message)

    def _resolve(self, kind: str, subject: str, summary: str) -> None:
        for route in self.routes:
            self._resolve_route(route, kind, subject, summary)

    def _resolve_all(self, kind: str, summary: str) -> None:
        for route_name, fired, subject in list(self.firing):
            if fired == kind:
                route = next(r for r in self.routes if r.name == route_name)
                self._resolve_route(route, kind, subject, summary)

    def _resolve_route(self, route: Route, kind: str, subject: str, summary: str) -> None:
        if self.firing.pop((route.name, kind, subject), None) is not None:
            self._queue_message(route, self._message(route, kind, subject, "resolved", summary))

    def _message(self, route: Route, kind: str, subject: str, status: str, text: str) -> Message:
        plan = self.supervisor.runtime.plan
        about = {
            "target": plan.target if plan else None,
            "digest": plan.digest if plan else None,
            "serial": self.supervisor.runtime.serial,
        }
        return Message(route.name, kind, subject, status, text, time.time(), about)

    def _queue_message(self, route: Route, message: Message) -> None:
        if route.rate is not None:
            count, per = route.rate
            while route.sent and route.sent[0] <= message.at - per:
                route.sent.popleft()
            if len(route.sent) >= count:
                self.dropped += 1
                self._log.warning("alert dropped by the rate limit", **message.as_json())
                return
            route.sent.append(message.at)
        try:
            self._send.send_nowait(message)
        except anyio.WouldBlock:
            self.dropped += 1
            self._log.error("alert dropped: queue full", **message.as_json())

    # -- sending (the service) -----------------------------------------------------------------
    async def serve(self, supervisor: Supervisor) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._poller)
            async for message in self._queue:
                route = next(r for r in self.routes if r.name == message.route)
                for channel in route.channels:
                    group.start_soon(self._deliver, channel, message)

    async def _poller(self) -> None:
        while True:
            self.poll(time.time())
            await anyio.sleep(POLL_S)

    async def _deliver(self, channel: Channel, message: Message) -> None:
        log = self._log.bind(channel=channel.kind, **message.as_json())
        delay = BACKOFF_S
        for attempt in range(1, ATTEMPTS + 1):
            try:
                config = values.resolve(f"alerts {message.route}", channel.config)
                await SENDERS[channel.kind](config, message)
            except Exception as exc:
                if attempt == ATTEMPTS:
                    log.error("alert not sent", attempts=attempt, error=repr(exc))
                    return
                log.warning("alert send failed", attempt=attempt, error=repr(exc), retry_in_s=delay)
                await anyio.sleep(delay)
                delay *= 2
            else:
                log.info("alert sent", attempts=attempt)
                return


async def _post(url: str, body: dict[str, Any]) -> None:
    import httpx  # imported when an alert is sent: every `oneiric run` has an Alerter

    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(str(url), json=body)
        response.raise_for_status()


async def _webhook(config: Mapping[str, Any], message: Message) -> None:
    await _post(config["url"], message.as_json())


async def _slack(config: Mapping[str, Any], message: Message) -> None:
    await _post(config["url"], {"text": message.text()})


async def _teams(config: Mapping[str, Any], message: Message) -> None:
    title = f"oneiric: {message.condition} {message.status}"
    body = {"@type": "MessageCard", "summary": title, "title": title, "text": message.text()}
    await _post(config["url"], body)


async def _discord(config: Mapping[str, Any], message: Message) -> None:
    await _post(config["url"], {"content": message.text()[:2000]})


async def _email(config: Mapping[str, Any], message: Message) -> None:
    import smtplib
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["Subject"] = message.text()[:200]
    mail["From"] = str(config["from"])
    recipients = config["to"] if isinstance(config["to"], list) else [config["to"]]
    mail["To"] = ", ".join(str(r) for r in recipients)
    mail.set_content(json.dumps(message.as_json(), indent=2, sort_keys=True))

    def send() -> None:
        with smtplib.SMTP(str(config["host"]), int(config.get("port", 25)), timeout=10) as smtp:
            if config.get("starttls"):
                smtp.starttls()
            if config.get("username"):
                smtp.login(str(config["username"]), str(config.get("password", "")))
            smtp.send_message(mail)

    await anyio.to_thread.run_sync(send)


SENDERS: dict[str, Callable[[Mapping[str, Any], Message], Any]] = {
    "webhook": _webhook,
    "slack": _slack,
    "teams": _teams,
    "discord": _discord,
    "email": _email,
}
