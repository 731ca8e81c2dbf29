"""`notify` routes in the stack language: parsed, checked, formatted, planned, and obeyed
by a real `oneiric run` sending to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from oneiric._plan.model import load_plan
from oneiricc import compile_project, load_project
from oneiricc._language.formatter import format_source
from support import ROOT

sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from rtprocess import running, wait_for

__all__ = ["running"]  # a fixture
RUNTIME_TESTS = ROOT / "tests" / "runtime"


class Receiver(BaseHTTPRequestHandler):
    posts: list[Any]

    def do_POST(self) -> None:
        self.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    posts: list[Any] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (Receiver,), {"posts": posts}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", posts
    server.shutdown()


def stack(url: str) -> str:
    return f"""oneiric 1

stack base {{
  adapter cache "v1" {{
    impl "rtcomponents:Store"
    config {{ tag = "v1", sick_file = env("SICK_FILE", "") }}
    health every 200ms
  }}
  notify oncall {{
    when plan_rejected, component_unhealthy 2
    when manifest_expiring 7d
    send webhook {{ url = env("HOOK_URL", "{url}") }}
    rate 10 per 1h
  }}
}}

target dev {{ layers base }}
"""


def build(tmp_path: Path, text: str) -> Any:
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    (root / "oneiric.toml").write_text('sources = ["stacks"]\n')
    (root / "stacks" / "app.oneiric").write_text(text)
    return compile_project(
        load_project(root), None, ["dev"], use_cache=False, module_path=[RUNTIME_TESTS]
    )


def test_a_route_is_planned_formatted_and_obeyed(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
    receiver: tuple[str, list[Any]],
) -> None:
    url, posts = receiver
    text = stack(url)
    assert format_source("app.oneiric", text) == text  # already in canonical layout
    squashed = text.replace("\n    when manifest_expiring 7d\n", "; when manifest_expiring 7d\n")
    assert format_source("app.oneiric", squashed) == text
    built = build(tmp_path, text)
    assert not built.failed, [d.message for d in built.diagnostics]
    plan = built.plans["dev"]
    (route,) = plan.notifications
    assert route.name == "oncall"
    assert [(w.condition, w.checks, w.within_ms) for w in route.when] == [
        ("plan_rejected", None, None),
        ("component_unhealthy", 2, None),
        ("manifest_expiring", None, 7 * 86400 * 1000),
    ]
    assert route.channels == [{"kind": "webhook", "url": {"$env": "HOOK_URL", "default": url}}]
    assert route.rate is not None
    assert (route.rate.count, route.rate.per_ms) == (10, 3600 * 1000)
    assert route.span == "stacks/app.oneiric:9:3"
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(plan.to_bytes())
    assert load_plan(plan_path.read_bytes()).notifications == plan.notifications

    run = running(plan_path, env={"SICK_FILE": str(tmp_path / "sick")})
    run.wait_running(plan.digest)
    (tmp_path / "sick").touch()
    wait_for(lambda: posts, what="the alert")
    assert (posts[0]["route"], posts[0]["condition"], posts[0]["status"]) == (
        "oncall",
        "component_unhealthy",
        "firing",
    )
    (tmp_path / "sick").unlink()
    wait_for(lambda: len(posts) == 2, what="resolved")
    assert posts[1]["status"] == "resolved"
    assert run.stop() == 0


def test_a_plan_without_routes_has_no_notifications_member(tmp_path: Path) -> None:
    text = stack("http://x/")
    start = text.index("  notify oncall")
    built = build(tmp_path, text[:start] + text[text.index("  }\n}", start) + 4 :])
    assert not built.failed, [d.message for d in built.diagnostics]
    plan = built.plans["dev"]
    assert plan.notifications == []
    assert b"notifications" not in plan.to_bytes()
