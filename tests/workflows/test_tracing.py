"""OpenTelemetry traces: spans of swaps and component phases, workflow runs and nodes,
event deliveries (joined to an event's W3C traceparent), trace ids in log lines; and once
end to end, `oneiric event emit` exporting OTLP/HTTP to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from oneiric import _trace
from oneiric._cli import logs
from oneiric._flows.events import EventBus
from oneiric._flows.host import activated
from oneiric._flows.store import FlowStore
from oneiric._flows.workflows import Workflows
from oneiric._lifecycle.runtime import Runtime, SwapAborted
from oneiric._ops import tracing
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from test_events import handler
from test_workflows import diamond
from wfkit import ROOT, build_plan, oneiric

sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from planbuild import component, plan

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class Traced:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider: TracerProvider = tracing.install(self.exporter, set_global=False)

    def spans(self) -> list[ReadableSpan]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    found = Traced()
    yield found
    tracing.uninstall(found.provider)
    assert _trace.backend is None


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.anyio
async def test_swap_and_component_phase_spans(traced: Traced, tmp_path: Path) -> None:
    runtime = Runtime()
    cache = "adapter:cache"
    await runtime.apply(plan(component(cache, "v1")))
    await runtime.apply(plan(component(cache, "v2")))
    with pytest.raises(SwapAborted):
        await runtime.apply(plan(component(cache, "v3", config={"fail_activate": True})))
    await runtime.stop()

    swaps = traced.named("oneiric.swap")
    assert [s.attributes["oneiric.outcome"] for s in swaps] == ["applied", "applied", "aborted"]
    assert swaps[2].status.status_code == StatusCode.ERROR
    assert "refuses to activate" in (swaps[2].status.description or "")
    second = swaps[1]
    assert second.attributes["oneiric.changed"] == 1
    by_phase = {
        name: [s for s in traced.named(name) if parent_of(s) == second.context.span_id]
        for name in (
            "oneiric.activate",
            "oneiric.health",
            "oneiric.bind",
            "oneiric.drain",
            "oneiric.cleanup",
        )
    }
    assert {name: len(spans) for name, spans in by_phase.items()} == {
        "oneiric.activate": 1,
        "oneiric.health": 2,  # before bind, and probation
        "oneiric.bind": 1,
        "oneiric.drain": 1,
        "oneiric.cleanup": 1,
    }
    activate = by_phase["oneiric.activate"][0]
    assert activate.attributes["oneiric.component"] == cache
    assert activate.attributes["oneiric.provider"] == "v2"
    assert by_phase["oneiric.cleanup"][0].attributes["oneiric.provider"] == "v1"
    failed = [
        s for s in traced.named("oneiric.activate") if parent_of(s) == swaps[2].context.span_id
    ]
    assert failed[0].status.status_code == StatusCode.ERROR
    # stop: outside any swap, drain and cleanup are root spans
    assert [parent_of(s) for s in traced.named("oneiric.cleanup")][-1] is None


@pytest.mark.anyio
async def test_workflow_run_node_spans_with_retries_as_events(
    traced: Traced, tmp_path: Path, wf_log: str
) -> None:
    stack = diamond(b={"fail_times": 1}, nodes="    node b { retry 2 backoff 10ms }")
    flow_plan, _ = build_plan(tmp_path, stack)
    store = FlowStore(tmp_path / "state")
    async with activated(flow_plan, Workflows.task_ids(flow_plan)) as runtime:
        record = await Workflows(flow_plan, runtime, store, cancel_poll_s=None).run("w")
    assert record.status == "succeeded"
    (run,) = traced.named("oneiric.workflow.run")
    assert run.attributes["oneiric.workflow"] == "w"
    assert run.attributes["oneiric.run"] == record.id
    assert run.attributes["oneiric.outcome"] == "succeeded"
    nodes = {s.attributes["oneiric.node"]: s for s in traced.named("oneiric.workflow.node")}
    assert sorted(nodes) == ["a", "b", "c", "d"]
    assert all(parent_of(s) == run.context.span_id for s in nodes.values())
    assert nodes["b"].attributes["oneiric.attempts"] == 2
    (retry,) = nodes["b"].events
    assert retry.name == "retry"
    assert retry.attributes is not None
    assert retry.attributes["attempt"] == 1
    assert "failing on purpose" in str(retry.attributes["error"])
    assert not nodes["a"].events


@pytest.mark.anyio
async def test_event_delivery_joins_the_traceparent_and_logs_carry_ids(
    traced: Traced, tmp_path: Path, wf_log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = handler("h", "order.created", "    retry 2 backoff 10ms\n", fail_times=1)
    flow_plan, _ = build_plan(tmp_path, stack)
    logs.configure("warning")
    store = FlowStore(tmp_path / "state")
    async with activated(flow_plan, EventBus.handler_ids(flow_plan)) as runtime:
        bus = EventBus(flow_plan, runtime, store)
        delivery = await bus.emit("order.created", {"id": 1}, {"traceparent": TRACEPARENT})
        untraced = await bus.emit("order.created", {"id": 2})
    assert delivery.ok
    assert untraced.ok
    first, second = traced.named("oneiric.event.deliver")
    assert f"{first.context.trace_id:032x}" == TRACE_ID
    assert f"{parent_of(first):016x}" == PARENT_ID
    assert first.attributes["oneiric.topic"] == "order.created"
    assert first.attributes["oneiric.handler"] == "h"
    assert first.attributes["oneiric.outcome"] == "delivered"
    assert [e.name for e in first.events] == ["retry"]
    assert f"{second.context.trace_id:032x}" != TRACE_ID  # no traceparent: a new trace
    warning = json.loads(capsys.readouterr().err.splitlines()[0])
    assert warning["event"] == "handler attempt failed"
    assert warning["trace_id"] == TRACE_ID
    assert warning["span_id"] == f"{first.context.span_id:016x}"
    structlog.reset_defaults()


class Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: decodes each export request (protobuf)."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        Receiver.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_event_emit_exports_otlp_http_to_a_receiver(tmp_path: Path, wf_log: str) -> None:
    _, plan_path = build_plan(tmp_path, handler("h", "order.created"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = oneiric(
            "event", "emit", "order.created", "--payload", '{"id": 7}',
            "--header", f"traceparent={TRACEPARENT}",
            "--unsigned-plan", str(plan_path), "--state", str(tmp_path / "state"),
            env={
                "WF_LOG": wf_log,
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_SERVICE_NAME": "shop-events",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
            },
        )  # fmt: skip
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    spans = {}
    resources = []
    for request in Receiver.received:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            resources.append(attributes)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans[span.name] = span
    assert resources
    assert all(r["service.name"] == "shop-events" for r in resources)
    assert all(r["deployment.environment"] == "test" for r in resources)
    deliver = spans["oneiric.event.deliver"]
    assert deliver.trace_id.hex() == TRACE_ID
    assert deliver.parent_span_id.hex() == PARENT_ID
    assert "oneiric.swap" in spans  # the command activated its handler: a swap from no plan
