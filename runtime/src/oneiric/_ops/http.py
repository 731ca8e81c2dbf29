"""`oneiric run --http HOST:PORT`: probes, metrics, the status document and page.

Served by uvicorn (h11) from a plain ASGI callable on the supervisor's event
loop, as one of its tasks.  Read-only: GET and HEAD only; nothing that
changes state is served over HTTP.

    GET /healthz   200 while the process and its event loop answer
    GET /readyz    200 when a plan is applied and every component is healthy,
                   else 503 with the reasons as JSON
    GET /metrics   Prometheus exposition (prometheus_client; OpenMetrics when asked)
    GET /status    the status document (as status.json, with the event consumers,
                   workers and `workflow serve` runtimes of the state directory,
                   as `oneiric status --format json`), as JSON
    GET /          the status page (HTML, refreshes itself)

Imported only when `--http` is given (or under profile serverless with $PORT,
the plan's profile or ONEIRIC_PROFILE).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import anyio
import structlog
import uvicorn
from prometheus_client.exposition import choose_encoder

from oneiric._flows import events
from oneiric._lifecycle import snapshots
from oneiric._lifecycle.supervisor import Supervisor
from oneiric._ops import page
from oneiric._ops.metrics import EventCounts, Metrics, readiness_problems

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"


class App:
    """The ASGI application: routes five read-only paths."""

    def __init__(self, supervisor: Supervisor, metrics: Metrics) -> None:
        self.supervisor = supervisor
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method not in ("GET", "HEAD"):
            await _send(
                send,
                405,
                b"text/plain",
                b"read-only: GET and HEAD only\n",
                method,
                [(b"allow", b"GET, HEAD")],
            )
            return
        status, content_type, body = self.route(path, _header(scope, b"accept"))
        await _send(send, status, content_type, body, method)

    def route(self, path: str, accept: str) -> tuple[int, bytes, bytes]:
        supervisor = self.supervisor
        if path == "/healthz":
            return 200, b"text/plain", b"ok\n"
        if path == "/readyz":
            problems = readiness_problems(supervisor)
            body = {"ready": not problems, "reasons": problems}
            return (503 if problems else 200), JSON, _json(body)
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return 200, content_type.encode(), encoder(self.metrics.registry)
        if path == "/status":
            return 200, JSON, _json(self.status())
        if path == "/":
            html = page.render(self.status(), supervisor, self.metrics)
            return 200, b"text/html; charset=utf-8", html.encode()
        return 404, b"text/plain", b"not found (try /, /healthz, /readyz, /metrics, /status)\n"

    def status(self) -> dict[str, Any]:
        data = self.supervisor.status()
        data["ready"] = not readiness_problems(self.supervisor)
        data["health"] = self.supervisor.health
        data["expires_at"] = self.supervisor.expires_at
        data["applied_at"] = self.supervisor.applied_at
        data.update(snapshots.fleet(self.supervisor.settings.state))
        return data


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


async def _send(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    method: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


class Address:
    """HOST:PORT as given to --http; bare PORT or :PORT means loopback."""

    def __init__(self, text: str) -> None:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = "", text
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f'--http "{text}": expected HOST:PORT (for example 127.0.0.1:8080)')
        self.host, self.port = host, int(port)

    def bind(self) -> socket.socket:
        """Listen now (so a taken port fails `oneiric run` at once, exit 2)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the supervisor owns SIGTERM/SIGINT/SIGHUP


def service(sock: socket.socket) -> Callable[[Supervisor], Awaitable[None]]:
    """A supervisor service serving the HTTP surface on the listening `sock`.

    Counts this process's event deliveries (the app's event buses) from now on, so
    none made before the service task starts is missed.
    """
    counts = EventCounts()
    events.OBSERVERS.append(counts)

    async def serve(supervisor: Supervisor) -> None:
        metrics = Metrics(supervisor, counts)
        supervisor.observers.append(metrics)
        config = uvicorn.Config(
            App(supervisor, metrics),
            lifespan="off",
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        host, port = sock.getsockname()[:2]
        structlog.get_logger("oneiric.http").info(
            "http listening", url=f"http://{_url(host)}:{port}/"
        )
        try:
            await server.serve(sockets=[sock])
        finally:
            events.OBSERVERS.remove(counts)
            server.should_exit = True
            with anyio.CancelScope(shield=True):
                if server.started:
                    await server.shutdown(sockets=[sock])
            sock.close()

    return serve


def _url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
