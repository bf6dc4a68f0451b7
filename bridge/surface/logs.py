"""structlog set-up: one event per line, `console` for people, `json` for machines."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from bridge.core.config import LogFormat, LogLevel


def configure_logging(
    fmt: LogFormat = LogFormat.CONSOLE,
    level: LogLevel = LogLevel.INFO,
    stream: TextIO | None = None,
) -> None:
    renderer: structlog.typing.Processor
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.value.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
