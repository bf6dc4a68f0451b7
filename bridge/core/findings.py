"""Findings: one fact about this host or its services, ok, WARN or FAIL, with what to do.

`mcp-bridge doctor` prints them (surface/doctor.py); the agent runs the one that needs no
service at start (the ephemeral range) and logs it, so the pure core holds both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from bridge.core.model import PortRange

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    detail: str


def ephemeral_overlap(port_range: PortRange, ephemeral_text: str) -> PortRange | None:
    """The part of the pool range the kernel may hand to outgoing connections, if any."""
    low, high = (int(x) for x in ephemeral_text.split()[:2])
    lo, hi = max(low, port_range.low), min(high, port_range.high)
    return PortRange(lo, hi) if lo <= hi else None


def check_ephemeral(port_range: PortRange, source: Path = EPHEMERAL_RANGE_FILE) -> Finding:
    try:
        text = source.read_text()
    except OSError as exc:
        return Finding(Level.WARN, "ephemeral range", f"cannot read {source}: {exc}")
    overlap = ephemeral_overlap(port_range, text)
    if overlap is None:
        return Finding(
            Level.OK,
            "ephemeral range",
            f"pool {port_range} is clear of the kernel's {'-'.join(text.split())}",
        )
    return Finding(
        Level.WARN,
        "ephemeral range",
        f"pool {port_range} overlaps the kernel's ephemeral ports ({overlap}): outgoing"
        f" connections may take pool ports; move BRIDGE_PORT_RANGE or {source}",
    )
