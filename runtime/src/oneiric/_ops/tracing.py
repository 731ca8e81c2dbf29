"""OpenTelemetry traces for the runtime (extra `oneiric-runtime[otel]`).

`install()` builds a TracerProvider (resource from OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, service name "oneiric" when unset), exports with
OTLP over HTTP (OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
and the other standard OTEL_* variables) through a batch processor, and plugs
it into `oneiric._trace`, whose hooks the lifecycle, delivery and flow code
call.  Imported only when tracing is configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace as otel
from opentelemetry.propagate import inject as otel_inject
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from oneiric import _trace

_W3C = TraceContextTextMapPropagator()


class _Span(_trace.Span):
    def __init__(self, span: otel.Span) -> None:
        self._span = span

    def set(self, key: str, value: str | int | float | bool) -> None:
        self._span.set_attribute(key, value)

    def fail(self, message: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))

    def event(self, name: str, **attributes: str | int | float | bool) -> None:
        self._span.add_event(name, attributes)


class OtelBackend:
    """`oneiric._trace.Backend` on an OpenTelemetry tracer."""

    def __init__(self, tracer: otel.Tracer) -> None:
        self.tracer = tracer

    def span(
        self, name: str, attributes: _trace.Attributes, headers: Mapping[str, str] | None
    ) -> AbstractContextManager[_trace.Span]:
        return self._span(name, attributes, headers)

    @contextmanager
    def _span(
        self, name: str, attributes: _trace.Attributes, headers: Mapping[str, str] | None
    ) -> Iterator[_trace.Span]:
        parent = _W3C.extract(dict(headers)) if headers and "traceparent" in headers else None
        with self.tracer.start_as_current_span(name, context=parent, attributes=attributes) as sp:
            yield _Span(sp)

    def record(
        self, name: str, start_ns: int, attributes: _trace.Attributes, error: str | None
    ) -> None:
        span = self.tracer.start_span(name, start_time=start_ns, attributes=attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def event(self, name: str, attributes: _trace.Attributes) -> None:
        otel.get_current_span().add_event(name, dict(attributes))

    def inject(self, headers: dict[str, str]) -> None:
        otel_inject(headers)

    def ids(self) -> tuple[str, str] | None:
        context = otel.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return otel.format_trace_id(context.trace_id), otel.format_span_id(context.span_id)


def install(exporter: SpanExporter | None = None, *, set_global: bool = True) -> TracerProvider:
    """Trace from now on; `exporter` defaults to OTLP over HTTP (protobuf)."""
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = "oneiric"
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        otel.set_tracer_provider(provider)  # application code using the API joins our traces
    _trace.backend = OtelBackend(provider.get_tracer("oneiric"))
    return provider


def uninstall(provider: TracerProvider) -> None:
    """Flush what is buffered and stop tracing."""
    _trace.backend = None
    provider.shutdown()
