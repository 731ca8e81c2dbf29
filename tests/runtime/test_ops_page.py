"""The status page in a real headless Chromium: what it shows before and after a swap,
that it refreshes itself, and a screenshot of each kept as a test artefact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest_paths import ROOT
from oneiric._flows.store import FlowStore
from ophttp import CACHE, http_url, store
from planbuild import plan
from rtprocess import running, wait_for, write_plan
from webdriver import chromium

__all__ = ["running"]  # a fixture

ARTEFACTS = Path(os.environ.get("ONEIRIC_TEST_ARTEFACTS", ROOT / "test-artefacts"))
DAG = [  # fetch -> (pack, label) -> send
    {"name": "fetch", "task": "fetch", "depends_on": []},
    {"name": "pack", "task": "pack", "depends_on": ["fetch"]},
    {"name": "label", "task": "label", "depends_on": ["fetch"]},
    {"name": "send", "task": "send", "depends_on": ["pack", "label"]},
]


def record_flows(state: Path) -> str:
    """A failed run (a retried node, a failed one, a skipped one) and a dead letter, written
    through the flow store the workflow and event commands use."""
    store = FlowStore(state)
    try:
        assert store.create_run("run-1", "ship", None, DAG, "{}", "test")
        for name, status, attempts, error in (
            ("fetch", "succeeded", 2, None),
            ("pack", "succeeded", 1, None),
            ("label", "failed", 3, "printer on fire"),
        ):
            store.node_started("run-1", name, attempts, 1.0)
            store.node_finished("run-1", name, status, attempts, "null", error, 1.0, 1.5)
        store.finish_run("run-1", "failed", "label: printer on fire", [("send", "skipped")])
        store.add_dead_letter("ev-1", "order.placed", "event:notify", "{}", {}, "smtp down", 3)
    finally:
        store.close()
    return "run-1"


PAGE = """
const text = (s) => { const e = document.querySelector(s); return e ? e.textContent : null; };
return {
  digest: text('#plan-digest'),
  ready: text('#plan-state'),
  provider: text('#components .provider'),
  health: text('#components td:nth-child(5)'),
  swaps: [...document.querySelectorAll('#swaps tr td:nth-child(2)')].map(e => e.textContent),
  nodes: Object.fromEntries([...document.querySelectorAll('svg g.node')]
    .map(g => [g.dataset.node, g.dataset.state])),
  edges: document.querySelectorAll('svg line').length,
  run: text('.run .failed'),
  letters: [...document.querySelectorAll('#dead-letters tr td:nth-child(2)')]
    .map(e => e.textContent),
  scripts: document.scripts.length,
  external: [...document.querySelectorAll('link,img,script[src],iframe')].length,
  refresh: document.querySelector('meta[http-equiv=refresh]').content,
  navigations: performance.getEntriesByType('navigation').length,
  loadedAt: performance.timeOrigin,
};
"""


@pytest.mark.slow
def test_status_page_in_headless_chromium_before_and_after_a_swap(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
) -> None:
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    run = running(plan_path, "--http", "127.0.0.1:0")
    url = http_url(run)
    run.wait_running(v1.digest)
    record_flows(run.state)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with chromium(tmp_path) as browser:
        browser.open(url)
        before = browser.js(PAGE)
        assert before["digest"] == v1.digest
        assert before["ready"] == "running (ready)"
        assert before["provider"] == "v1"
        assert before["health"] == "healthy"
        assert before["swaps"] == []
        assert before["nodes"] == {
            "fetch": "succeeded",
            "pack": "succeeded",
            "label": "failed",
            "send": "skipped",
        }
        assert before["edges"] == 4
        assert before["run"] == "failed"
        assert before["letters"] == ["order.placed"]
        assert (before["scripts"], before["external"], before["refresh"]) == (0, 0, "2")
        png = browser.screenshot(ARTEFACTS / "status-page-before-swap.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")

        v2 = plan(store("v2", tmp_path))
        write_plan(plan_path, v2)
        run.wait_running(v2.digest)

        # No navigation by the test: the page reloads itself and shows the new plan.
        def refreshed() -> dict[str, object] | None:
            now = browser.js(PAGE)
            return now if now["digest"] == v2.digest else None

        after = wait_for(refreshed, timeout=20, what="the page to refresh onto v2")
        assert after["loadedAt"] > before["loadedAt"]
        assert after["provider"] == "v2"
        assert after["swaps"] == ["applied"]
        assert after["health"] == "healthy"
        png = browser.screenshot(ARTEFACTS / "status-page-after-swap.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 10_000  # a rendered page, not a blank one
    (ARTEFACTS / "status-page.json").write_text(json.dumps({"before": before, "after": after}))
    assert run.stop() == 0
    assert CACHE in (tmp_path / "state" / "status.json").read_text()
