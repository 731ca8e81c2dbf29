"""`oneiric run --http`: probes, metrics, the status document, read-only, errors."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from conftest_paths import RUNTIME_TESTS
from ophttp import CACHE, free_port, get, get_json, http_url, store
from planbuild import plan
from prometheus_client.parser import text_string_to_metric_families
from rtprocess import oneiric, running, wait_for, write_plan

__all__ = ["running"]  # a fixture


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The /metrics exposition parsed by prometheus_client's own parser."""
    status, headers, body = get(url + "metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_probes_metrics_status_and_a_swap(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    run = running(plan_path, "--http", "127.0.0.1:0", "--app", "rtcomponents:metered_app")
    url = http_url(run)
    assert url.startswith("http://127.0.0.1:")
    run.wait_running(v1.digest)
    wait_for(lambda: run.events_of("metered"), what="the app's calls")

    assert get(url + "healthz")[:3:2] == (200, b"ok\n")
    assert get_json(url + "readyz") == (200, {"ready": True, "reasons": []})
    code, status = get_json(url + "status")
    assert code == 200
    assert status["plan"]["digest"] == v1.digest
    assert status["components"][CACHE]["calls"] == 10
    assert status["health"][CACHE]["healthy"] is True

    # what `oneiric event consume` writes every second (redis_events.Connection.as_json)
    consumers = run.state / "consumers"
    consumers.mkdir()
    (consumers / "c1.json").write_text(
        json.dumps(
            {
                "pid": 1,
                "consumer": "c1",
                "plan": v1.digest,
                "written_at": 0,
                "state": "running",
                "broker": {
                    "url": "redis://127.0.0.1:1/0",
                    "connected": True,
                    "last_error": None,
                    "last_error_at": None,
                    "reconnects": 2,
                    "delivered": 5,
                    "dead_lettered": 1,
                    "claimed": 0,
                },
            }
        )
    )
    # what `oneiric remote-sync --watch` writes after each poll (security._write_sync_counts)
    (run.state / "remote-sync.json").write_text(
        json.dumps({"pid": 1, "source": "x", "written_at": 7.0, "counts": {"accepted": 3}})
    )
    before = samples(url)
    assert before[("oneiric_remote_syncs_total", (("outcome", "accepted"),))] == 3
    assert before[("oneiric_remote_syncs_total", (("outcome", "error"),))] == 0
    assert before[("oneiric_remote_sync_last_poll_timestamp_seconds", ())] == 7.0
    c1 = ("consumer", "c1")
    assert before[("oneiric_event_deliveries_total", (c1, ("outcome", "delivered")))] == 5
    assert before[("oneiric_event_deliveries_total", (c1, ("outcome", "dead_lettered")))] == 1
    assert before[("oneiric_event_broker_reconnects_total", (c1,))] == 2
    assert before[("oneiric_event_broker_connected", (c1,))] == 1
    # Its heartbeat is decades old: not running, and no connection samples for it.
    assert before[("oneiric_process_up", (("kind", "consumer"), ("name", "c1")))] == 0
    assert not [k for k in before if k[0] == "oneiric_connection_up"]
    (served,) = get_json(url + "status")[1]["consumers"]
    assert (served["name"], served["alive"], served["state"]) == ("c1", False, "not running")
    page = get(url)[2].decode()
    assert "<tr id='consumers-c1'><td><code>c1</code></td><td>1</td><td class=not-running>" in page
    assert "<p id=connections class=muted>none held by this runtime</p>" in page
    comp = (("component", CACHE),)
    assert before[("oneiric_component_calls_total", (*comp, ("outcome", "ok")))] == 7
    assert before[("oneiric_component_calls_total", (*comp, ("outcome", "error")))] == 3
    assert before[("oneiric_component_inflight_calls", comp)] == 0
    assert before[("oneiric_component_healthy", comp)] == 1
    assert before[("oneiric_ready", ())] == 1
    info = {k[1]: v for k, v in before.items() if k[0] == "oneiric_plan_info"}
    assert list(info) == [
        (("digest", v1.digest), ("profile", "default"), ("serial", ""), ("target", "test"))
    ]
    assert ("oneiric_swaps_total", (("outcome", "applied"),)) not in before  # start is no swap
    assert before[("process_cpu_seconds_total", ())] > 0

    v2 = plan(store("v2", tmp_path))
    write_plan(plan_path, v2)
    run.wait_running(v2.digest)
    after = samples(url)
    assert after[("oneiric_swaps_total", (("outcome", "applied"),))] == 1
    assert after[("oneiric_swap_duration_seconds_count", (("outcome", "applied"),))] == 1
    assert after[("oneiric_source_syncs_total", (("outcome", "changed"),))] >= 1
    # calls survive the swap: counted over every generation of the component
    assert after[("oneiric_component_calls_total", (*comp, ("outcome", "ok")))] == 7
    assert (
        after[("oneiric_component_generation", comp)]
        > before[("oneiric_component_generation", comp)]
    )
    assert next(k[1] for k in after if k[0] == "oneiric_plan_info")[0] == ("digest", v2.digest)

    # unhealthy: /readyz says why with 503; metrics follow
    (tmp_path / "sick").touch()
    code, body = wait_for(lambda: (r := get_json(url + "readyz"))[0] == 503 and r, what="503")
    assert body == {"ready": False, "reasons": [f"{CACHE}: health check returned False"]}
    assert samples(url)[("oneiric_component_healthy", comp)] == 0
    os.unlink(tmp_path / "sick")
    wait_for(lambda: get_json(url + "readyz")[0] == 200, what="ready again")

    # the page, read-only, not found
    code, headers, page = get(url)
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert v2.digest.encode() in page
    post = urllib.request.Request(url + "status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "GET, HEAD"
    assert get(url + "nope")[0] == 404
    assert run.stop() == 0


def test_serverless_profile_listens_on_port_on_every_interface(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path))
    write_plan(plan_path, v1)
    port = free_port()
    run = running(plan_path, env={"ONEIRIC_PROFILE": "serverless", "PORT": str(port)})
    assert http_url(run) == f"http://0.0.0.0:{port}/"
    run.wait_running(v1.digest, watching=False)
    assert get_json(f"http://127.0.0.1:{port}/readyz") == (200, {"ready": True, "reasons": []})
    assert run.stop() == 0


def test_a_serverless_plan_listens_on_port_without_the_env_var(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    """The plan's own profile (`profile serverless` in the target) decides, once applied."""
    plan_path = tmp_path / "plan.json"
    v1 = plan(store("v1", tmp_path), profile="serverless")
    write_plan(plan_path, v1)
    port = free_port()
    run = running(plan_path, env={"PORT": str(port)})
    assert http_url(run) == f"http://0.0.0.0:{port}/"
    status = run.wait_running(v1.digest, watching=False)
    assert status["profile"] == "serverless"
    assert get_json(f"http://127.0.0.1:{port}/readyz") == (200, {"ready": True, "reasons": []})
    assert run.stop() == 0

    # ONEIRIC_PROFILE overrides the plan's profile: no HTTP surface, the watcher runs
    override = running(plan_path, env={"PORT": str(port), "ONEIRIC_PROFILE": "default"})
    override.wait_running(v1.digest, watching=True)
    assert "http listening" not in override.stderr.read_text()
    assert override.stop() == 0


def test_a_serverless_plan_whose_port_is_taken_stops_with_exit_1(tmp_path: Path) -> None:
    import socket

    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path), profile="serverless"))
    env = {"PYTHONPATH": str(RUNTIME_TESTS)}
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = oneiric(
            "run",
            "--unsigned-plan",
            str(plan_path),
            "--state",
            str(tmp_path / "s"),
            env={**env, "PORT": str(port)},
        )
    assert busy.returncode == 1, busy.stderr
    assert f"error: profile serverless, $PORT {port}: cannot listen: " in busy.stderr
    assert "Address already in use" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_openmetrics_when_asked(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path)))
    run = running(plan_path, "--http", "0")
    url = http_url(run)
    status, headers, body = get(url + "metrics", accept="application/openmetrics-text")
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    assert run.stop() == 0


def test_http_address_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path)))
    env = {"PYTHONPATH": str(RUNTIME_TESTS)}
    common = ["run", "--unsigned-plan", str(plan_path), "--state", str(tmp_path / "s")]
    bad = oneiric(*common, "--http", "localhost:http", env=env)
    assert bad.returncode == 2
    assert 'error: --http "localhost:http": expected HOST:PORT' in bad.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = oneiric(*common, "--http", f"127.0.0.1:{port}", env=env)
    assert busy.returncode == 2
    assert f"error: --http 127.0.0.1:{port}: cannot listen: Address already in use" in busy.stderr
    assert "Traceback" not in bad.stderr + busy.stderr


def test_a_run_without_http_or_otel_imports_no_server_metrics_or_tracing_library(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
) -> None:
    plan_path = tmp_path / "plan.json"
    write_plan(plan_path, plan(store("v1", tmp_path)))
    heavy = {"uvicorn", "h11", "prometheus_client", "opentelemetry", "httpx", "smtplib"}
    for extra, expected in (
        ((), set()),
        (("--http", "0"), {"uvicorn", "h11", "prometheus_client"}),
        (("--otel",), {"opentelemetry"}),
    ):
        run = running(plan_path, "--app", "rtcomponents:modules_app", *extra)
        found = wait_for(lambda run=run: run.events_of("modules"), what="the module list")
        assert heavy & set(json.loads(found[0][1])) == expected, extra
        assert run.stop() == 0
        run.events.write_text("")
