"""The metrics as a real Prometheus server sees them: scraped, stored, queried after a swap."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ophttp import CACHE, free_port, get, http_url, require, store
from planbuild import plan
from rtprocess import running, wait_for, write_plan

__all__ = ["running"]  # a fixture


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, _, body = get(f"{self.url}api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus on 127.0.0.1 scraping `target` every 500 ms."""
    binary = require("prometheus", "prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> Prometheus:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
            "scrape_configs:\n"
            f"  - job_name: oneiric\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
        procs.append(proc)
        server = Prometheus(f"http://127.0.0.1:{port}/")

        def ready() -> bool:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                return get(server.url + "-/ready")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=60, what="prometheus ready")
        return server

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(20)


@pytest.mark.slow
def test_prometheus_scrapes_the_runtime_and_sees_a_swap(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
    prometheus,  # type: ignore[no-untyped-def]
) -> None:
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    run = running(plan_path, "--http", "127.0.0.1:0", "--app", "rtcomponents:metered_app")
    url = http_url(run)
    run.wait_running(v1.digest)
    server = prometheus(url.removeprefix("http://").rstrip("/"))

    def scraped(expr: str, want: float) -> bool:
        return server.value(expr) == want

    wait_for(lambda: scraped('up{job="oneiric"}', 1), timeout=30, what="a successful scrape")
    wait_for(
        lambda: scraped(f'oneiric_plan_info{{digest="{v1.digest}"}}', 1), timeout=30, what="v1"
    )
    assert server.value(f'oneiric_component_calls_total{{component="{CACHE}",outcome="ok"}}') == 7
    assert (
        server.value(f'oneiric_component_calls_total{{component="{CACHE}",outcome="error"}}') == 3
    )

    v2 = plan(store("v2", tmp_path))
    write_plan(plan_path, v2)
    run.wait_running(v2.digest)
    wait_for(
        lambda: scraped('oneiric_swaps_total{outcome="applied"}', 1), timeout=30, what="the swap"
    )
    assert server.value(f'oneiric_plan_info{{digest="{v2.digest}"}}') == 1
    assert server.value('oneiric_swap_duration_seconds_count{outcome="applied"}') == 1
    assert server.value('oneiric_swap_duration_seconds_bucket{outcome="applied",le="+Inf"}') == 1
    assert server.value(f'oneiric_component_healthy{{component="{CACHE}"}}') == 1
    assert server.value("oneiric_ready") == 1
    # a counter over generations: the swap did not reset it (rate() stays truthful)
    assert server.value(f'oneiric_component_calls_total{{component="{CACHE}",outcome="ok"}}') == 7
    wait_for(
        lambda: server.value(f'sum(oneiric_component_health_checks_total{{component="{CACHE}"}})'),
        timeout=30,
        what="health checks counted",
    )
    assert run.stop() == 0
