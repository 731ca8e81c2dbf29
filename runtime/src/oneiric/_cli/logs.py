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

import structlog

LEVEL_ENV = "LOG_LEVEL"


def configure(default: str = "info") -> None:
    """Set up JSON-lines logging from `default` or LOG_LEVEL; an unknown level is an error."""
    name = os.environ.get(LEVEL_ENV, default).strip().lower()
    level = logging.getLevelNamesMapping().get(name.upper())
    if level is None:
        raise ValueError(
            f"{LEVEL_ENV}={name!r} is not a log level (use debug, info, warning or error)"
        )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
