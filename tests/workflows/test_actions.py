"""Built-in actions against a real HTTP server on 127.0.0.1, and through the CLI."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from oneiric.actions import ActionError
from oneiric.actions.compress import compress, decompress
from oneiric.actions.http import request
from oneiric.actions.webhook import notify
from wfkit import build_plan, oneiric


class Recorder(BaseHTTPRequestHandler):
    """Answers by path: /json, /fail/N (500 for the first N posts), /missing (404)."""

    seen: list[dict[str, Any]] = []
    failures: dict[str, int] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {"method": self.command, "path": self.path, "body": body, "headers": dict(self.headers)}
        )
        if self.path.startswith("/fail/"):
            left = self.failures.setdefault(self.path, int(self.path.rsplit("/", 1)[1]))
            if left:
                self.failures[self.path] = left - 1
                self.send_response(500)
                self.end_headers()
                return
        if self.path.startswith("/missing"):
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps({"path": self.path, "got": body.decode()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    Recorder.failures = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.anyio
async def test_http_request(server: str) -> None:
    answer = await request(
        {"url": "/json?q=1", "method": "post", "json": {"a": 1}, "headers": {"X-Id": "7"}},
        base_url=server,
        headers={"X-Id": "config", "X-App": "shop"},
    )
    assert answer["status"] == 200
    assert answer["json"] == {"path": "/json?q=1", "got": '{"a":1}'}
    sent = Recorder.seen[-1]
    assert sent["method"] == "POST"
    assert sent["headers"]["X-Id"] == "7"
    assert sent["headers"]["X-App"] == "shop"
    with pytest.raises(ActionError, match="HTTP 404"):
        await request({"url": f"{server}/missing"})
    assert (await request({"url": f"{server}/missing"}, raise_for_status=False))["status"] == 404
    with pytest.raises(ActionError, match="larger than 10 bytes"):
        await request({"url": f"{server}/json"}, max_bytes=10)
    with pytest.raises(ActionError, match='needs "url"'):
        await request({})
    with pytest.raises(ActionError, match="ConnectError"):
        await request({"url": "http://127.0.0.1:9/"})


@pytest.mark.anyio
async def test_webhook_routes_by_channel_then_level_and_retries(server: str) -> None:
    routes = {"ops": f"{server}/ops", "error": f"{server}/fail/2", "default": f"{server}/all"}
    sent = await notify(
        {
            "text": "disk 91%",
            "title": "db-1",
            "level": "warning",
            "channel": "ops",
            "fields": {"host": "db-1"},
        },
        routes=routes,
    )
    assert sent == {"route": "ops", "status": 200, "attempts": 1}
    assert json.loads(Recorder.seen[-1]["body"]) == {
        "text": "[WARNING] db-1\ndisk 91%\n• host: db-1"
    }
    retried = await notify({"text": "down", "level": "error"}, routes=routes, backoff=0.01)
    assert retried == {"route": "error", "status": 200, "attempts": 3}
    fallback = await notify({"text": "fyi"}, routes=routes, format="discord")
    assert fallback["route"] == "default"
    assert json.loads(Recorder.seen[-1]["body"]) == {"content": "[INFO]\nfyi"}
    with pytest.raises(ActionError, match=r'route "default" failed after 1 attempt: HTTP 404'):
        await notify({"text": "x"}, url=f"{server}/missing")
    with pytest.raises(ActionError, match="no webhook route"):
        await notify({"text": "x", "channel": "nowhere"}, routes={"ops": f"{server}/ops"})


def test_compress_round_trip_and_bomb_refused() -> None:
    text = "hello " * 1000
    for fmt in ("gzip", "zlib", "bz2", "xz"):
        packed = compress({"data": text, "format": fmt})
        assert packed["size_in"] == 6000
        assert packed["size_out"] < 200
        unpacked = decompress({"data": packed["data"], "format": fmt})
        assert base64.b64decode(unpacked["data"]).decode() == text
    assert gzip.decompress(base64.b64decode(compress({"data": text})["data"])).decode() == text
    bomb = base64.b64encode(gzip.compress(b"\0" * 2_000_000)).decode()
    with pytest.raises(ActionError, match="exceeds 1000000 bytes"):
        decompress({"data": bomb}, max_output=1_000_000)
    with pytest.raises(ActionError, match="not base64"):
        decompress({"data": "***"})
    with pytest.raises(ActionError, match='unknown format "zip"'):
        compress({"data": "x", "format": "zip"})


def test_action_invoke_command_line(tmp_path: Path, server: str) -> None:
    stack = (
        '  action fetch "http" {\n    impl "oneiric.actions.http:request"\n'
        f'    config {{ base_url = "{server}", timeout = 2s }}\n  }}'
    )
    _, plan = build_plan(tmp_path, stack)
    common = ["--unsigned-plan", str(plan), "--state", str(tmp_path / "state")]
    fetched = oneiric(
        "action", "invoke", "fetch", "--payload", '{"url": "/json"}', *common, "--format", "json"
    )
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["result"]["json"]["path"] == "/json"
    builtin = oneiric("action", "invoke", "compress", "--payload", '{"data": "aaaa"}')
    assert builtin.returncode == 0
    assert json.loads(builtin.stdout)["size_in"] == 4
    hook = oneiric(
        "action",
        "invoke",
        "webhook.notify",
        "--payload",
        json.dumps({"text": "deployed", "url": f"{server}/hook"}),
    )
    assert hook.returncode == 0, hook.stderr
    assert Recorder.seen[-1]["path"] == "/hook"
    for args, message in {
        (
            "action",
            "invoke",
            "fetc",
            *common,
        ): 'no action "fetc" in the plan; did you mean "fetch"?',
        ("action", "invoke", "fetch", "--payload", "[1,", *common): "--payload is not valid JSON",
        ("action", "invoke", "fetch", "--payload", '{"url": "/missing"}', *common): "HTTP 404",
        ("action", "invoke", "compress", "--payload", "[]"): "must be a JSON object",
    }.items():
        result = oneiric(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr
