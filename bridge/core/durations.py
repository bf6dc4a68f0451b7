"""Go-style durations (`10s`, `1m30s`, `500ms`), as Consul and Docker write them."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+")

# Bounds keep every parsed value meaningful to Consul and to asyncio timers.
MAX_SECONDS = 366 * 24 * 3600.0


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """Seconds in `text`, a Go duration without sign; `0` alone is allowed, as in Go."""
    value = text.strip()
    if value == "0":
        return 0.0
    if len(value) > 64 or not _WHOLE.fullmatch(value):
        raise DurationError(f"expected a duration such as 10s, 1m30s or 500ms, got {text!r}")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    if seconds > MAX_SECONDS:
        raise DurationError(f"duration {text!r} is longer than a year")
    return seconds


def format_duration(seconds: float) -> str:
    """A Go duration Consul accepts; milliseconds are the finest grain anybody needs here."""
    ms = round(seconds * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
