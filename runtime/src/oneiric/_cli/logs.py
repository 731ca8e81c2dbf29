"""Structured logs: one JSON object per line on stderr (structlog).

`LOG_LEVEL` (debug, info, warning, error; default info) filters.  Every
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


def configure() -> None:
    """Set up JSON-lines logging; an unknown LOG_LEVEL is a configuration error."""
    name = os.environ.get(LEVEL_ENV, "info").strip().lower()
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
