"""`oneiric run --http`: deliveries of the app's event buses, by route and outcome, and
their retries, scraped from /metrics of a real runtime process."""

from __future__ import annotations

from pathlib import Path

import wftasks
from ophttp import get, http_url
from prometheus_client.parser import text_string_to_metric_families
from rtprocess import running, wait_for
from test_events import handler
from wfkit import HERE, build_plan

__all__ = ["running"]  # a fixture


def test_in_process_deliveries_and_retries_are_metrics(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    stack = "\n".join(
        [
            handler("fails", "t", "    priority 2\n    retry 2 backoff 10ms\n", fail_times=5),
            handler("flaky", "t", "    priority 1\n    retry 3 backoff 10ms\n", fail_times=2),
            handler("ok", "u"),
        ]
    )
    _, path = build_plan(tmp_path, stack)
    log = str(tmp_path / "calls.jsonl")
    run = running(
        path,
        "--http",
        "127.0.0.1:0",
        "--app",
        "wftasks:emitting_app",
        env={"WF_LOG": log, "PYTHONPATH": str(HERE)},
    )
    url = http_url(run)
    wait_for(lambda: wftasks.calls(log, "emitted"), what="the app's events")
    status, _, body = get(url + "metrics")
    assert status == 200
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name.startswith("oneiric_event_")
    }
    assert found == {
        ("oneiric_event_deliveries_total", (("outcome", "dead_lettered"), ("route", "t"))): 1,
        ("oneiric_event_deliveries_total", (("outcome", "delivered"), ("route", "t"))): 1,
        ("oneiric_event_deliveries_total", (("outcome", "delivered"), ("route", "u"))): 2,
        ("oneiric_event_retries_total", (("route", "t"),)): 1 + 2,
        ("oneiric_event_dead_letters_total", (("handler", "fails"), ("topic", "t"))): 1,
        ("oneiric_event_dead_letters_unresolved", (("handler", "fails"), ("topic", "t"))): 1,
    }
    assert body.count(b"# TYPE oneiric_event_deliveries_total ") == 1
    assert run.stop() == 0
