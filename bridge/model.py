"""The plain data types every module speaks. No I/O, no adapters."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


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


class ExposeMode(enum.StrEnum):
    AUTO = "auto"
    PROXY = "proxy"  # a pool port on the host, forwarded to the container
    PUBLISHED = "published"  # the host port the container publishes itself
    INTERNAL = "internal"  # the container's own address and port, no host port


class CheckKind(enum.StrEnum):
    MCP = "mcp"  # the bridge speaks MCP to the server and reports to a TTL check
    HTTP = "http"  # native Consul HTTP check
    TCP = "tcp"  # native Consul TCP check
    DOCKER = "docker"  # the container's own HEALTHCHECK, mirrored to a TTL check
    NONE = "none"
    # No `script`: labels must never make Consul run commands.


class Transport(enum.StrEnum):
    STREAMABLE_HTTP = "streamable-http"
    SSE = "sse"


@dataclass(frozen=True, slots=True)
class PortBinding:
    host_ip: str
    host_port: int


@dataclass(frozen=True, slots=True)
class Container:
    """One container as one Docker listing row describes it (no per-container inspect)."""

    id: str
    name: str  # without the leading "/"
    image: str
    state: str  # Docker's State: running, exited, created, paused, restarting, dead
    labels: Mapping[str, str]
    exposed_tcp: frozenset[int]  # container TCP ports, exposed or published
    published: Mapping[int, tuple[PortBinding, ...]]  # container TCP port -> host bindings
    networks: Mapping[str, str]  # network name -> the container's IP on it ("" if none)
    health: str | None = None  # healthy / unhealthy / starting, from a HEALTHCHECK

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    kind: CheckKind
    path: str = "/health"  # for http checks
    interval: float = 10.0
    timeout: float = 2.0
    deregister_after: float = 600.0


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What a managed container's labels ask for, validated; ports not yet resolved."""

    container: Container
    name: str  # Consul service name
    port: int  # the container port the MCP server listens on
    expose: ExposeMode  # never AUTO here: resolved from what the container publishes
    host_port: int | None  # preferred pool port (proxy mode)
    network: str | None  # the network whose address to use (internal, proxy); None if none
    address: str | None  # the container's IP on that network
    transport: Transport
    path: str
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]  # from mcp.meta.<key>
    check: CheckSpec


@dataclass(frozen=True, slots=True)
class LabelError:
    """Why a container that asked to be managed is not: one label, one value, one rule."""

    container: str
    label: str
    value: str
    reason: str

    def __str__(self) -> str:
        # Label names come from the container too: shorten and quote both, one line.
        label = self.label if len(self.label) <= 80 else self.label[:77] + "..."
        shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
        return f"container {self.container}: label {label!r}={shown!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Registration:
    """One Consul service instance, as the bridge wants it (or found it)."""

    service_id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...]
    meta: Mapping[str, str] = field(default_factory=dict)
    checks: tuple[Mapping[str, object], ...] = ()
