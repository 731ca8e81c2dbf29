"""The status page at GET /: one self-contained HTML document, rendered on the server.

No JavaScript, no external assets: inline CSS, workflow DAGs as inline SVG,
and `<meta http-equiv="refresh">` to refresh itself.  Every value is escaped.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneiric._flows.store import FILENAME as FLOWS_DB
from oneiric._flows.store import FlowStore, RunRecord
from oneiric._ops.words import backlog_text, link_state

if TYPE_CHECKING:
    from oneiric._lifecycle.supervisor import Supervisor
    from oneiric._ops.metrics import Metrics

REFRESH_S = 2
RECENT_RUNS = 10
RECENT_LETTERS = 20
NODE_W, NODE_H, GAP_X, GAP_Y = 150, 34, 40, 14

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:20px;margin:0 0 .3em}h2{font-size:16px;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:50%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}code{font-size:12px}.muted{color:#777}
.ok,.succeeded,.applied,.delivered{color:#116611;font-weight:600}
.bad,.failed,.rejected,.aborted,.rolled_back,.unhealthy{color:#b00020;font-weight:600}
.running,.pending,.reconnecting,.stopping{color:#8a5a00;font-weight:600}
.connected{color:#116611;font-weight:600}
.down,.not-running,.unknown,.stopped{color:#b00020;font-weight:600}
.kv span{margin-right:1.5em}
svg text{font:12px system-ui,sans-serif}
"""
NODE_FILL = {
    "succeeded": "#d8f0d8",
    "failed": "#f7d4d8",
    "running": "#fbeac0",
    "pending": "#eeeeee",
    "skipped": "#e4e4f4",
    "cancelled": "#e0e0e0",
}


def render(status: dict[str, Any], supervisor: Supervisor, metrics: Metrics) -> str:
    """The whole page for `status` (the document served at /status)."""
    now = time.time()
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        "<title>oneiric status</title>",
        f"<style>{STYLE}</style></head><body>",
        _plan(status, now),
        _components(status, supervisor),
        _fleet(status, now),
        _swaps(metrics, now),
        *_flows(supervisor.settings.state / FLOWS_DB, now),
        f"<p class=muted>rendered {_clock(now)}; refreshes every {REFRESH_S}s</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _plan(status: dict[str, Any], now: float) -> str:
    plan = status.get("plan") or {}
    ready = status["ready"]
    expires = status.get("expires_at")
    applied = status.get("applied_at")
    facts = [
        ("state", f"{status['state']} ({'ready' if ready else 'NOT READY'})"),
        ("target", plan.get("target")),
        ("serial", "none (unsigned)" if plan.get("serial") is None else plan["serial"]),
        ("digest", plan.get("digest")),
        ("profile", status.get("profile")),
        ("age", _ago(now - applied) if applied else None),
        ("expires", f"{_clock(expires)} (in {_ago(expires - now)})" if expires else "unsigned"),
        ("pid", status.get("pid")),
    ]
    cls = "ok" if ready else "bad"
    spans = "".join(
        f"<span>{escape(k)}: <b id=plan-{escape(k)}>{escape(str(v))}</b></span>" for k, v in facts
    )
    problem = status.get("last_problem")
    last = (
        f"<p class=bad>last problem ({escape(problem['kind'])}): {escape(problem['error'])}</p>"
        if problem
        else ""
    )
    return f"<h1 class={cls}>oneiric</h1><p class=kv>{spans}</p>{last}"


def _components(status: dict[str, Any], supervisor: Supervisor) -> str:
    plan = supervisor.runtime.plan
    rules = {c.id: c.explanation.rule for c in plan.components} if plan else {}
    health = status.get("health", {})
    rows = []
    for cid, comp in sorted(status["components"].items()):
        entry = health.get(cid)
        if entry is None:
            state, cls = "not checked", "pending"
        elif entry["healthy"]:
            state, cls = "healthy", "ok"
        else:
            state, cls = f"unhealthy: {entry['reason']}", "bad"
        if comp["paused"]:
            state += " (paused)"
        rows.append(
            f"<tr id='component-{escape(cid)}'><td><code>{escape(cid)}</code></td>"
            f"<td class=provider>{escape(str(comp['provider']))}</td>"
            f"<td>{escape(str(rules.get(cid, '')))}</td><td>{comp['generation']}</td>"
            f"<td class={cls}>{escape(state)}</td><td>{comp['inflight']}</td>"
            f"<td>{comp['calls']}</td></tr>"
        )
    return (
        "<h2>Components</h2><table id=components><tr><th>component</th><th>provider</th>"
        "<th>rule</th><th>generation</th><th>health</th><th>in flight</th><th>calls</th></tr>"
        + "".join(rows)
        + "</table>"
    )


FLEET = (  # (status key, title, counters shown: (where, key))
    ("consumers", "Event consumers", (("broker", "delivered"), ("broker", "dead_lettered"),
                                      ("broker", "claimed"), ("broker", "inflight"))),
    ("workers", "Workers", (("", "done"), ("", "failed"), ("", "claimed"), ("", "inflight"))),
    ("runtimes", "Flow runtimes (workflow serve)", ()),
    ("schedulers", "Schedulers (task serve)", ()),
)  # fmt: skip
ROLES = ("broker", "store", "tasks")


def _fleet(status: dict[str, Any], now: float) -> str:
    """The runtime's own connections, then the processes beside it (`snapshots.fleet`)."""
    own = status.get("connections") or {}
    out = ["<h2>Connections</h2>"]
    if own:
        rows = [_link_row(f"connection-{role}", link, now) for role, link in sorted(own.items())]
        out.append(f"<table id=connections>{_link_head()}{''.join(rows)}</table>")
    else:
        out.append("<p id=connections class=muted>none held by this runtime</p>")
    for key, title, counters in FLEET:
        processes = status.get(key) or []
        if not processes:
            continue
        heads = "".join(f"<th>{escape(k.replace('_', ' '))}</th>" for _, k in counters)
        rows = []
        for p in processes:
            state = cls = str(p["state"])
            if not p["alive"]:
                state = f"not running (last seen {_ago(p.get('heartbeat_age_s', 0))} ago)"
                cls = "not-running"
            cells = ""
            for where, k in counters:
                holder = p.get(where) if where else p
                value = holder.get(k, "") if isinstance(holder, dict) else ""
                cells += f"<td>{escape(str(value))}</td>"
            what = ", ".join(p.get("groups") or []) or (
                f"{len(p['runs'])} runs" if p.get("runs") is not None else ""
            )
            backlog = "".join(
                f"<div class=backlog>{escape(backlog_text(b, now))}</div>"
                for b in p.get("backlog") or []
            )
            links = "".join(
                f"<div>{_link_text(p[role], now)}</div>"
                for role in ROLES
                if isinstance(p.get(role), dict)
            )
            rows.append(
                f"<tr id='{key}-{escape(p['name'])}'><td><code>{escape(p['name'])}</code></td>"
                f"<td>{p['pid']}</td><td class={escape(cls)}>{escape(state)}</td>"
                f"<td><code>{escape(str(p.get('plan') or ''))[:19]}</code></td>"
                f"<td>{escape(what)}{backlog}</td>{cells}<td>{links}</td></tr>"
            )
        out.append(
            f"<h2>{escape(title)}</h2><table id={key}><tr><th>name</th><th>pid</th>"
            f"<th>state</th><th>plan</th><th>groups / runs</th>{heads}<th>connections</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return "\n".join(out)


def _link_head() -> str:
    return (
        "<tr><th>role</th><th>endpoint</th><th>state</th><th>since</th><th>reconnects</th>"
        "<th>last error</th></tr>"
    )


def _link_row(row_id: str, link: dict[str, Any], now: float) -> str:
    state = str(link.get("state", ""))
    since = link.get("since")
    return (
        f"<tr id='{escape(row_id)}'><td>{escape(str(link.get('role', '')))}</td>"
        f"<td><code>{escape(str(link.get('url', '')))}</code></td>"
        f"<td class={escape(state)}>{escape(link_state(link, now))}</td>"
        f"<td>{_clock(since) + f' ({_ago(now - since)} ago)' if since else ''}</td>"
        f"<td>{link.get('reconnects', 0)}</td>"
        f"<td>{escape(str(link.get('last_error') or ''))}</td></tr>"
    )


def _link_text(link: dict[str, Any], now: float) -> str:
    state = str(link.get("state", ""))
    error = link.get("last_error") if state != "connected" else None
    return (
        f"{escape(str(link.get('role', '')))} <code>{escape(str(link.get('url', '')))}</code> "
        f"<span class={escape(state)}>{escape(link_state(link, now))}</span>"
        + (f" <span class=muted>{escape(str(error))}</span>" if error else "")
    )


def _swaps(metrics: Metrics, now: float) -> str:
    if not metrics.recent:
        return (
            "<h2>Recent swaps</h2><p id=swaps class=muted>none since this page's server started</p>"
        )
    rows = [
        f"<tr><td>{_clock(s.at)} ({_ago(now - s.at)} ago)</td>"
        f"<td class={escape(s.outcome)}>{escape(s.outcome)}</td>"
        f"<td>{'' if s.seconds is None else f'{s.seconds * 1000:.1f} ms'}</td>"
        f"<td>{'' if s.serial is None else s.serial}</td>"
        f"<td><code>{escape((s.digest or '')[:19])}</code></td><td>{escape(s.detail)}</td></tr>"
        for s in metrics.recent
    ]
    return (
        "<h2>Recent swaps</h2><table id=swaps><tr><th>when</th><th>outcome</th><th>duration</th>"
        "<th>serial</th><th>plan</th><th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _flows(path: Path, now: float) -> list[str]:
    if not path.exists():
        return ["<h2>Workflow runs</h2><p class=muted>none recorded</p>"]
    store = FlowStore(path.parent)
    try:
        runs = store.runs(limit=RECENT_RUNS)
        letters = store.dead_letters(limit=RECENT_LETTERS)
    finally:
        store.close()
    out = ["<h2>Workflow runs</h2>"]
    if not runs:
        out.append("<p class=muted>none recorded</p>")
    for run in runs:
        took = f", {_ago((run.finished_at or now) - run.created_at)}" if run.created_at else ""
        error = f" <span class=bad>{escape(run.error)}</span>" if run.error else ""
        out.append(
            f"<div class=run id='run-{escape(run.id)}'><p><b>{escape(run.workflow)}</b> "
            f"<code>{escape(run.id)}</code> <span class={escape(run.status)}>"
            f"{escape(run.status)}</span> started {_clock(run.created_at)}{took}{error}</p>"
            f"{dag_svg(run)}</div>"
        )
    out.append("<h2>Dead letters</h2>")
    if not letters:
        out.append("<p id=dead-letters class=muted>none</p>")
    else:
        rows = [
            f"<tr><td>{d.id}</td><td>{escape(d.topic)}</td><td><code>{escape(d.handler)}"
            f"</code></td><td>{d.attempts}</td><td>{_clock(d.created_at)}</td>"
            f"<td>{escape(d.error)}</td></tr>"
            for d in letters
        ]
        out.append(
            "<table id=dead-letters><tr><th>id</th><th>topic</th><th>handler</th>"
            "<th>attempts</th><th>when</th><th>error</th></tr>" + "".join(rows) + "</table>"
        )
    return out


def dag_svg(run: RunRecord) -> str:
    """The run's DAG, one column per depth, each node coloured by its state."""
    nodes = {n["name"]: n for n in run.definition}
    depth: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in depth:
            deps = [d for d in nodes[name].get("depends_on", []) if d in nodes]
            depth[name] = 1 + max((level(d) for d in deps), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for name in nodes:
        columns.setdefault(level(name), []).append(name)
    where: dict[str, tuple[int, int]] = {}
    for col, names in columns.items():
        for row, name in enumerate(names):
            where[name] = (col * (NODE_W + GAP_X), row * (NODE_H + GAP_Y))
    width = max(x for x, _ in where.values()) + NODE_W + 2 if where else 0
    height = max(y for _, y in where.values()) + NODE_H + 2 if where else 0
    shapes = []
    for name, node in nodes.items():
        x, y = where[name]
        for dep in node.get("depends_on", []):
            if dep in where:
                dx, dy = where[dep]
                shapes.append(
                    f'<line x1="{dx + NODE_W}" y1="{dy + NODE_H // 2}" x2="{x}" '
                    f'y2="{y + NODE_H // 2}" stroke="#888" marker-end="url(#arrow)"/>'
                )
    for name in nodes:
        x, y = where[name]
        record = run.nodes.get(name)
        state = record.status if record else "pending"
        tries = f", {record.attempts} attempts" if record and record.attempts > 1 else ""
        shapes.append(
            f'<g class="node {escape(state)}" data-node="{escape(name)}" '
            f'data-state="{escape(state)}"><rect x="{x + 1}" y="{y + 1}" width="{NODE_W}" '
            f'height="{NODE_H}" rx="5" fill="{NODE_FILL.get(state, "#fff")}" stroke="#666"/>'
            f'<text x="{x + 8}" y="{y + 15}">{escape(name)}</text>'
            f'<text x="{x + 8}" y="{y + 29}" fill="#555">{escape(state)}{tries}</text></g>'
        )
    return (
        f'<svg width="{width}" height="{height}" role="img" '
        f'aria-label="workflow {escape(run.workflow)}"><defs><marker id="arrow" '
        'viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M0,0L10,5L0,10z" fill="#888"/></marker></defs>'
        + "".join(shapes)
        + "</svg>"
    )


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
