"""Alerts: a real `oneiric run --alerts` sending to a real HTTP receiver (webhook, Slack,
Teams, Discord formats) and a real SMTP server (aiosmtpd), both on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from ophttp import CACHE, free_port, store
from planbuild import plan
from rtprocess import oneiric, running, wait_for, write_plan

__all__ = ["running"]  # a fixture


class Receiver(BaseHTTPRequestHandler):
    """Records each POST body by path; /flaky fails its first two requests."""

    posts: dict[str, list[Any]]
    attempts: dict[str, int]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.attempts[self.path] = self.attempts.get(self.path, 0) + 1
        if self.path == "/flaky" and self.attempts[self.path] <= 2:
            self.send_response(503)
            self.end_headers()
            return
        self.posts.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[tuple[str, dict[str, list[Any]], dict[str, int]]]:
    posts: dict[str, list[Any]] = {}
    attempts: dict[str, int] = {}
    handler = type("Handler", (Receiver,), {"posts": posts, "attempts": attempts})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", posts, attempts
    server.shutdown()


@pytest.fixture
def mailbox() -> Iterator[tuple[int, Mailbox]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()


@pytest.fixture
def hanging() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hang"
    sock.close()


def test_alerts_fire_once_resolve_retry_rate_limit_and_never_delay_a_swap(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
    receiver: tuple[str, dict[str, list[Any]], dict[str, int]],
    mailbox: tuple[int, Mailbox],
    hanging: str,
) -> None:
    base, posts, attempts = receiver
    smtp_port, box = mailbox
    config = tmp_path / "config"
    (config / "secrets" / "alerts").mkdir(parents=True)
    (config / "secrets" / "alerts" / "hook").write_text(f"{base}/hook\n")
    unhealthy = {"condition": "component_unhealthy", "checks": 3}
    alerts = {
        "routes": [
            {
                "name": "oncall",
                "when": ["swap_aborted", unhealthy],
                "channels": [
                    {"kind": "webhook", "url": {"$secret": "alerts/hook"}},
                    {"kind": "slack", "url": f"{base}/slack"},
                    {"kind": "teams", "url": f"{base}/teams"},
                    {"kind": "discord", "url": f"{base}/discord"},
                    {
                        "kind": "email",
                        "host": "127.0.0.1",
                        "port": smtp_port,
                        "from": "oneiric@example.test",
                        "to": ["ops@example.test"],
                    },
                ],
            },
            {
                "name": "limited",
                "when": [unhealthy],
                "channels": [{"kind": "webhook", "url": f"{base}/limited"}],
                "rate": {"count": 1, "per": "1h"},
            },
            {
                "name": "flaky",
                "when": ["swap_aborted"],
                "channels": [
                    {"kind": "webhook", "url": f"{base}/flaky"},
                    {"kind": "webhook", "url": hanging},
                ],
            },
        ]
    }
    alerts_path = tmp_path / "alerts.json"
    alerts_path.write_text(json.dumps(alerts))
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    run = running(plan_path, "--alerts", str(alerts_path), env={"ONEIRIC_CONFIG": str(config)})
    run.wait_running(v1.digest)

    # component_unhealthy after 3 failed checks, sent once to every channel
    (tmp_path / "sick").touch()
    wait_for(lambda: len(box.messages) == 1 and "/discord" in posts, what="the alert")
    time.sleep(1.0)  # more failed checks: still one message each
    hook = posts["/hook"]
    assert [(m["condition"], m["subject"], m["status"]) for m in hook] == [
        ("component_unhealthy", CACHE, "firing")
    ]
    assert hook[0]["summary"] == "health check returned False"
    assert hook[0]["plan"]["digest"] == v1.digest
    text = f"[oneiric test] FIRING component_unhealthy {CACHE}: health check returned False"
    assert posts["/slack"] == [{"text": text}]
    assert posts["/discord"] == [{"content": text}]
    assert posts["/teams"][0]["@type"] == "MessageCard"
    assert posts["/teams"][0]["text"] == text
    rcpt, mail = box.messages[0]
    assert rcpt == ["ops@example.test"]
    assert mail["Subject"] == text
    assert json.loads(mail.get_content())["status"] == "firing"
    assert len(posts["/limited"]) == 1

    # resolved once healthy again; the rate-limited route drops its resolved message
    (tmp_path / "sick").unlink()
    wait_for(lambda: len(posts["/hook"]) == 2 and len(box.messages) == 2, what="resolved")
    assert posts["/hook"][1]["status"] == "resolved"
    assert posts["/slack"][1]["text"].startswith("[oneiric test] RESOLVED component_unhealthy")
    wait_for(
        lambda: any(e.get("event") == "alert dropped by the rate limit" for e in run.logs()),
        what="the rate limit",
    )
    assert len(posts["/limited"]) == 1

    # a swap that aborts fires; the hanging channel does not delay the next swap
    bad = plan(store("v2", tmp_path, fail_activate=True))
    write_plan(plan_path, bad)
    wait_for(lambda: len(posts.get("/hook", [])) == 3, what="swap_aborted")
    assert posts["/hook"][2]["condition"] == "swap_aborted"
    v3 = plan(store("v3", tmp_path))
    started = time.monotonic()
    write_plan(plan_path, v3)
    run.wait_running(v3.digest)
    assert time.monotonic() - started < 5.0  # the hanging channel waits 10 s per attempt
    wait_for(lambda: len(posts["/hook"]) == 4, what="swap_aborted resolved")
    assert (posts["/hook"][3]["condition"], posts["/hook"][3]["status"]) == (
        "swap_aborted",
        "resolved",
    )
    # /flaky failed twice, then took the message: retried with backoff, sent once per status
    wait_for(lambda: len(posts.get("/flaky", [])) == 2, what="the flaky channel")
    assert attempts["/flaky"] == 4
    failures = [e for e in run.logs() if e.get("event") == "alert send failed"]
    refused = [e for e in failures if e["route"] == "flaky" and "503" in e["error"]]
    assert [(e["status"], e["attempt"]) for e in refused] == [("firing", 1), ("resolved", 1)]
    assert run.stop() == 0


def test_bad_alerts_files_exit_2_naming_file_and_place(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path)))
    cases = {
        '{"routes": [{"name": "r", "when": ["plan_on_fire"], "channels": []}]}': (
            "routes[0]: when[0]: unknown condition 'plan_on_fire' (known: plan_rejected,"
        ),
        '{"routes": [{"name": "r", "when": ["dead_letter"], "channels": [{"kind": "pager"}]}]}': (
            "routes[0]: channels[0]: unknown channel 'pager' (known: webhook, slack, teams,"
        ),
        '{"routes": [{"name": "r", "when": ["dead_letter"], "channels": [{"kind": "slack"}]}]}': (
            "routes[0]: channels[0]: a slack channel needs url"
        ),
        "[]": 'expected {"routes": [...]} with at least one route',
    }
    for text, message in cases.items():
        path = tmp_path / "alerts.json"
        path.write_text(text)
        result = oneiric(
            "run", "--unsigned-plan", str(plan_path), "--state", str(tmp_path / "s"),
            "--alerts", str(path),
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert f"error: {path}: {message}" in result.stderr
        assert "Traceback" not in result.stderr
