"""The plain data types every module speaks. No I/O, no adapters."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class AllocState(enum.StrEnum):
    """Lifecycle of one host-port allocation.

    A port is *free* when no allocation holds it, so "free" is not a state here.
    """

    ACTIVE = "active"  # the owner container is running
    HELD = "held"  # the owner container exists but is stopped: it keeps its port
    ORPHANED = "orphaned"  # the owner container no longer exists: released after stale_after


class AllocKind(enum.StrEnum):
    POOL = "pool"  # handed out by the pool
    EXTERNAL = "external"  # published by the container itself; recorded so it is never handed out


@dataclass(frozen=True, slots=True)
class Allocation:
    port: int
    owner: str  # the container name: stable across re-creation, unlike its id
    state: AllocState
    kind: AllocKind
    allocated_at: float  # unix time
    updated_at: float
    missing_since: float | None = None  # when the owner was first seen gone


@dataclass(frozen=True, slots=True)
class LiveClaim:
    """A port that something alive says it holds; the input of a pool rebuild.

    The agent builds these from Docker (published ports, container state) and from the
    `host_port` meta of its own Consul services, so a lost store costs no running
    container its port.
    """

    owner: str
    port: int
    kind: AllocKind
    running: bool
