"""Structured logs: one JSON object per line on stderr (structlog).

`LOG_LEVEL` (debug, info, warning, error) filters; without it, `oneiric run`
(a service: its log is its output) logs from info, and the one-shot commands
that activate components (`workflow`, `event`, `action`) from warning, so their
result is not buried (`-v` there: info).  Every
runtime event carries the plan digest and serial, and a component's domain,
key and provider when it concerns one.  Config is logged as the plan has it
(secrets are references there), never resolved.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from oneiric import _trace

LEVEL_ENV = "LOG_LEVEL"
OTLP_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OTEL_EXTRA = "pip install 'oneiric-runtime[otel]'"


def configure(default: str = "info", *, tracing: bool = False) -> None:
    """Set up JSON-lines logging from `default` or LOG_LEVEL; an unknown level is an error.

    Also OpenTelemetry traces, when `tracing` (`oneiric run --otel`) or an OTLP
    endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT):
    then log lines inside a span carry its trace_id and span_id.
    """
    name = os.environ.get(LEVEL_ENV, default).strip().lower()
    level = logging.getLevelNamesMapping().get(name.upper())
    if level is None:
        raise ValueError(
            f"{LEVEL_ENV}={name!r} is not a log level (use debug, info, warning or error)"
        )
    if tracing or any(os.environ.get(name) for name in OTLP_ENDPOINT_ENV):
        _start_tracing()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _start_tracing() -> None:
    try:
        from oneiric._ops import tracing
    except ImportError as exc:
        raise ValueError(
            f"OpenTelemetry tracing needs the otel extra ({exc.name} is missing): {OTEL_EXTRA}"
        ) from None
    if _trace.backend is None:
        tracing.install()


def _trace_ids(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Add the current span's trace_id and span_id (when tracing, inside a span)."""
    ids = _trace.ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event
