"""`oneiric run --manifest` over HTTP with ETag polling, with real keys and signatures."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from planbuild import component, plan
from rtprocess import oneiric, running, wait_for

__all__ = ["running"]
CACHE = "adapter:cache"


class ManifestServer:
    """Serves one manifest with a strong ETag; counts 200s and 304s; can go away."""

    def __init__(self) -> None:
        self.body = b""
        self.ok = 0
        self.not_modified = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                etag = '"' + hashlib.sha256(server.body).hexdigest() + '"'
                if self.headers.get("If-None-Match") == etag:
                    server.not_modified += 1
                    self.send_response(304)
                    self.end_headers()
                    return
                server.ok += 1
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prod.dsse.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ManifestServer]:
    srv = ManifestServer()
    yield srv
    srv.close()


def sign(tmp: Path, key: Path, name: str, plan_bytes: bytes, serial: int) -> bytes:
    plan_path = tmp / f"{name}.plan.json"
    plan_path.write_bytes(plan_bytes)
    out = tmp / f"{name}.dsse.json"
    signed = oneiric_c(
        "sign",
        str(plan_path),
        "--key",
        str(key),
        "--serial",
        str(serial),
        "--expires",
        "1d",
        "--out",
        str(out),
    )
    assert signed.returncode == 0, signed.stderr
    return out.read_bytes()


def oneiric_c(*args: str):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "oneiricc", *args], capture_output=True, text=True, timeout=60
    )


def test_signed_manifest_polled_over_http(tmp_path: Path, server: ManifestServer, running) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "ci.key"
    assert oneiric_c("keygen", "--out", str(key)).returncode == 0
    trust = tmp_path / "trust.json"
    made = oneiric_c(
        "trust", "init", "--key", f"{key}.pub", "--threshold", "1", "--out", str(trust)
    )
    assert made.returncode == 0, made.stderr
    v1, v2 = (plan(component(CACHE, p), target="prod") for p in ("v1", "v2"))
    server.body = sign(tmp_path, key, "v1", v1.to_bytes(), serial=1)
    run = running(
        ["--manifest", server.url, "--trust", str(trust), "--target", "prod"],
        "--poll-interval",
        "200ms",
    )
    status = run.wait_running(v1.digest, watching=False)
    assert status["plan"]["serial"] == 1

    wait_for(lambda: server.not_modified >= 2, what="conditional GETs answered 304")
    server.body = sign(tmp_path, key, "v2", v2.to_bytes(), serial=2)
    assert run.wait_running(v2.digest, watching=False)["plan"]["serial"] == 2

    # A replayed older manifest (serial 1) is refused; v2 keeps running.
    server.body = sign(tmp_path, key, "v1-again", v1.to_bytes(), serial=1)
    wait_for(lambda: (run.status() or {}).get("rejected") == 1, what="rollback rejected")
    assert "rollback" in run.status()["last_problem"]["error"]  # type: ignore[index]

    # The server goes away: the last known good plan keeps serving.
    server.close()
    wait_for(lambda: (run.status() or {}).get("unreachable", 0) >= 1, what="unreachable")
    assert run.wait_running(v2.digest, watching=False)["components"][CACHE]["provider"] == "v2"
    assert run.stop() == 0
    stopped = oneiric("status", "--state", str(run.state))
    assert stopped.returncode == 1
    assert "not running (last seen" in stopped.stdout


def refused_run(tmp_path: Path, manifest: Path, trust: Path, *extra: str):  # type: ignore[no-untyped-def]
    state = tmp_path / "state"
    result = oneiric(
        "run", "--manifest", str(manifest), "--trust", str(trust), "--state", str(state), *extra
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "manifests").exists() or not any((state / "manifests").glob("*/*"))
    return result


def test_unsigned_or_untrusted_manifest_refuses_to_start(tmp_path: Path) -> None:
    key, other = tmp_path / "a.key", tmp_path / "b.key"
    for k in (key, other):
        assert oneiric_c("keygen", "--out", str(k)).returncode == 0
    trust = tmp_path / "trust.json"
    oneiric_c("trust", "init", "--key", f"{other}.pub", "--threshold", "1", "--out", str(trust))
    signed = sign(tmp_path, key, "v1", plan(component(CACHE), target="prod").to_bytes(), serial=1)
    untrusted = refused_run(tmp_path, tmp_path / "v1.dsse.json", trust, "--target", "prod")
    assert "unknown-key" in untrusted.stderr

    # The same envelope with its signature removed: an unsigned manifest.
    envelope = json.loads(signed)
    envelope["signatures"] = []
    unsigned = tmp_path / "unsigned.dsse.json"
    unsigned.write_text(json.dumps(envelope))
    result = refused_run(tmp_path, unsigned, trust, "--target", "prod")
    assert "threshold" in result.stderr


def test_run_pinned_to_a_target_refuses_another_targets_manifest(tmp_path: Path) -> None:
    """A validly signed dev manifest offered to a machine pinned to prod: refused, not stored."""
    key = tmp_path / "ci.key"
    assert oneiric_c("keygen", "--out", str(key)).returncode == 0
    trust = tmp_path / "trust.json"
    oneiric_c("trust", "init", "--key", f"{key}.pub", "--threshold", "1", "--out", str(trust))
    sign(tmp_path, key, "dev", plan(component(CACHE), target="dev").to_bytes(), serial=1)
    result = refused_run(tmp_path, tmp_path / "dev.dsse.json", trust, "--target", "prod")
    assert "target" in result.stderr
    unpinned = oneiric("run", "--manifest", str(tmp_path / "dev.dsse.json"), "--trust", str(trust))
    assert unpinned.returncode == 2
    assert "--any-target" in unpinned.stderr
    assert "gives up target pinning" in " ".join(oneiric("run", "--help").stdout.split())
