"""Test kit for the security suite: real keys, real signed bytes, a real HTTP server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from subprocess import Popen
from typing import IO, Any

from nacl.signing import SigningKey
from oneiric._delivery import dsse
from oneiric._delivery.keys import PublicKey
from oneiric._delivery.manifest import MANIFEST_PAYLOAD_TYPE, format_utc
from oneiric._delivery.trust import TRUST_PAYLOAD_TYPE, Trust, parse_trust, trust_bytes
from oneiric._plan.canonical import dumps
from oneiric._plan.model import Plan

ROOT = Path(__file__).resolve().parents[2]
PROD_PLAN = (ROOT / "golden" / "prod.plan.json").read_bytes()
DEV_PLAN = (ROOT / "golden" / "dev.plan.json").read_bytes()


def variant_plan(profile_suffix: str) -> bytes:
    """A valid, sealed prod plan that differs from PROD_PLAN (its profile)."""
    raw = json.loads(PROD_PLAN)
    raw.pop("digest")
    raw["profile"] += profile_suffix
    return Plan.model_validate(raw).to_bytes()


@dataclass(frozen=True)
class Key:
    signing: SigningKey
    public: PublicKey

    @classmethod
    def new(cls) -> Key:
        signing = SigningKey.generate()
        return cls(signing, PublicKey.from_raw(bytes(signing.verify_key)))

    @property
    def keyid(self) -> str:
        return self.public.keyid


def make_trust(keys: Iterable[Key], threshold: int, version: int = 1) -> tuple[Trust, bytes]:
    data = trust_bytes(version, threshold, [k.public for k in keys])
    return parse_trust(data, "test trust"), data


def payload_dict(
    *,
    target: str = "prod",
    serial: int = 1,
    expires: datetime | None = None,
    plan: bytes = PROD_PLAN,
    plan_url: str | None = None,
) -> dict[str, Any]:
    expires = expires or datetime.now(UTC) + timedelta(days=30)
    ref: dict[str, Any] = {
        "digest": "sha256:" + hashlib.sha256(plan).hexdigest(),
        "size": len(plan),
    }
    if plan_url is None:
        ref["data"] = base64.b64encode(plan).decode()
    else:
        ref["url"] = plan_url
    return {
        "format": "oneiric-manifest",
        "version": 1,
        "target": target,
        "serial": serial,
        "expires": format_utc(expires),
        "plan": ref,
    }


def envelope(
    payload: bytes | dict[str, Any],
    keys: Iterable[Key],
    payload_type: str = MANIFEST_PAYLOAD_TYPE,
) -> bytes:
    data = payload if isinstance(payload, bytes) else dumps(payload)
    return dsse.sign(payload_type, data, [(k.signing, k.keyid) for k in keys]).to_bytes()


def manifest(keys: Iterable[Key], **fields: Any) -> bytes:
    return envelope(payload_dict(**fields), keys)


def rotation(new_trust: bytes, keys: Iterable[Key]) -> bytes:
    return envelope(new_trust, keys, TRUST_PAYLOAD_TYPE)


def edit_envelope(data: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    raw = json.loads(data)
    change(raw)
    return json.dumps(raw).encode()


@dataclass
class Route:
    """What the server answers for one path."""

    body: bytes = b""
    etag: str | None = None
    status: int = 200
    stall: float = 0.0  # sleep this long after the headers, before any body byte
    drip: float = 0.0  # seconds between single bytes
    endless: bool = False  # stream `body` forever (no Content-Length)
    content_length: int | None = None  # declared length, if not len(body)


@dataclass
class Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose routes tests change on the fly."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written per path
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if route.etag and self.headers.get("If-None-Match") == route.etag:
                    self.send_response(304)
                    self.send_header("ETag", route.etag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.etag:
                    self.send_header("ETag", route.etag)
                if not route.endless:
                    length = route.content_length
                    self.send_header(
                        "Content-Length", str(len(route.body) if length is None else length)
                    )
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._body(route)

            def _body(self, route: Route) -> None:
                if route.stall:
                    time.sleep(route.stall)
                if route.drip:
                    for index in range(len(route.body)):
                        self.wfile.write(route.body[index : index + 1])
                        self.wfile.flush()
                        server.sent[self.path] = index + 1
                        time.sleep(route.drip)
                    return
                total = 0
                deadline = time.monotonic() + 20
                while True:
                    self.wfile.write(route.body)
                    total += len(route.body)
                    server.sent[self.path] = total
                    if not route.endless or time.monotonic() > deadline:
                        return

        return Handler


def run(
    program: str, *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m program args` as a real process; bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=cwd or ROOT,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        text=True,
        capture_output=True,
        timeout=60,
    )


def spawn(program: str, *args: str | Path, env: dict[str, str] | None = None) -> Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", program, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


class Lines:
    """Lines of a child's stream, read by a thread, waited for with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout} s; saw:\n{''.join(self.seen)}")
