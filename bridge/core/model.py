"""The plain data types every module speaks, and the naming rules they share. No I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.core.access import Access

# Meta `managed_by` of every service the bridge registers: with `bridge_node`, the mark
# of what is ours to change in Consul.
MANAGED_BY = "mcp-bridge"

# Check defaults, for labels that leave them out.
DEFAULT_CHECK_PATH = "/health"
DEFAULT_CHECK_INTERVAL = 10.0
DEFAULT_CHECK_TIMEOUT = 2.0
DEFAULT_DEREGISTER_AFTER = 600.0


def service_id(node_id: str, container_name: str) -> str:
    # Keyed on the name, not the id: a re-created container keeps its service id.
    return f"{node_id}:{container_name}"


def parse_service_id(sid: str) -> tuple[str, str]:
    """The inverse of service_id: (node id, container name). Node ids hold no ':'."""
    node, sep, name = sid.partition(":")
    if not sep:
        raise ValueError(f"not a service id of this bridge: {sid!r}")
    return node, name


def container_of(sid: str) -> str:
    """The container name in a service id (for log fields)."""
    return sid.partition(":")[2] or sid


def check_id(sid: str, kind: CheckKind) -> str:
    return f"{sid}:{kind.value}"


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
    STDIO = "stdio"  # stdin/stdout of the container's process, served by the bridge


@dataclass(frozen=True, slots=True)
class Stdin:
    """How a container was created with respect to stdin, from its inspect: what decides
    whether the bridge can serve it over stdio. Fixed at creation, so read once per
    container id (the listing does not carry it)."""

    open: bool  # OpenStdin: `docker run -i`, compose `stdin_open: true`
    tty: bool  # Tty: `-t`; a terminal mangles the JSON lines
    once: bool  # StdinOnce: the first attach to detach would close the server's stdin
    # On the host's network the listing shows no ports even for an HTTP server: then
    # open stdin alone does not make it a stdio server.
    host_network: bool = False


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
    # From one inspect, for the containers whose transport may be stdio; None: not read.
    stdin: Stdin | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True, slots=True)
class CheckSpec:
    kind: CheckKind
    path: str = DEFAULT_CHECK_PATH  # for http checks
    interval: float = DEFAULT_CHECK_INTERVAL
    timeout: float = DEFAULT_CHECK_TIMEOUT
    deregister_after: float = DEFAULT_DEREGISTER_AFTER


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What a managed container's labels ask for, validated; ports not yet resolved."""

    container: Container
    name: str  # Consul service name
    port: int  # the container port the MCP server listens on; 0 for stdio
    expose: ExposeMode  # never AUTO here: resolved from what the container publishes
    host_port: int | None  # preferred pool port (proxy mode)
    network: str | None  # the network whose address to use (internal, proxy); None if none
    address: str | None  # the container's IP on that network
    transport: Transport
    path: str
    tags: tuple[str, ...]
    meta: tuple[tuple[str, str], ...]  # from mcp.meta.<key>
    check: CheckSpec
    tools: bool = True  # keep the tool inventory (mcp.tools)
    tier: str = ""  # the pool block a proxy port comes from ("": the untiered part)
    access: Access = field(default_factory=Access)  # who may connect (proxy mode)


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


def published_binding(spec: ServiceSpec) -> tuple[str, int] | None:
    """The host address and port Docker publishes the MCP port on, if it does."""
    bindings = spec.container.published.get(spec.port, ())
    if not bindings:
        return None
    # Prefer an all-interfaces IPv4 binding: that is what `-p 8080:80` gives.
    best = sorted(bindings, key=lambda b: (b.host_ip not in ("", "0.0.0.0"), ":" in b.host_ip))[0]
    return best.host_ip, best.host_port


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    """One Docker event, reduced to what says "look at this container again"."""

    container_id: str
    action: str
    name: str | None  # the container's name at the time of the event
    old_name: str | None = None  # for rename events
    time: float | None = field(default=None, compare=False)  # when, per Docker (epoch s)


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes
    modify_index: int
    session: str | None = None  # the session holding its lock, if any


PODMAN = "Podman"


@dataclass(frozen=True, slots=True)
class EngineVersion:
    version: str  # e.g. 28.5.2, or Podman's 5.4.2
    api: str  # the Docker API version it speaks, e.g. 1.51
    name: str = "Docker Engine"  # or PODMAN: its Docker-compatible API

    @property
    def podman(self) -> bool:
        return self.name == PODMAN

    @property
    def major(self) -> int:
        """The Docker Engine's major version; 0 for Podman, whose numbers are its own."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() and not self.podman else 0

    def __str__(self) -> str:
        return f"{self.name} {self.version} (API {self.api})"


@dataclass(frozen=True, slots=True)
class ForwardTarget:
    """Where one proxy-mode service's listener forwards to."""

    listen_port: int
    address: str
    port: int
    access: Access = field(default_factory=Access)


@dataclass(frozen=True, slots=True)
class StdioTarget:
    """One stdio service as the bridge serves it: its pool port, and the container whose
    process it attaches to (by id: a re-created container is another process)."""

    listen_port: int
    container_id: str
    container: str  # the name, for logs
    path: str
    access: Access = field(default_factory=Access)


@dataclass(frozen=True, slots=True)
class StdioReading:
    """One served stdio service now, for status and metrics; counts since it was served."""

    state: str  # serving, or why not (attaching, not attached: ..., handshake failed: ...)
    processes: int  # processes attached to: more than one means the server restarted
    sessions: int  # handshake-era sessions open
    in_flight: int  # requests sent to the process and not answered yet
    requests: int
    answered: int
    failed: int  # answered by the bridge: the process ended, timed out
    stray_answers: int  # answers to ids the bridge does not know: dropped
    skipped_lines: int  # stdout lines that were not JSON-RPC
    refused: int  # requests refused by mcp.allow / mcp.max_connections
    stderr: tuple[str, ...] = ()  # the process's last stderr lines


@dataclass(slots=True)
class ForwarderCounters:
    active: int = 0
    total: int = 0  # accepted
    refused_address: int = 0  # source not in the allow list
    refused_limit: int = 0  # max_connections reached
    failed: int = 0  # upstream could not be reached, or no descriptors for a pipe
    bytes_in: int = 0  # client -> container
    bytes_out: int = 0  # container -> client


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One check the bridge reports itself (a TTL check in Consul)."""

    service_id: str
    service: str
    container: str
    check_id: str
    kind: CheckKind  # MCP or DOCKER
    url: str  # MCP endpoint, through the registered address and port
    transport: str
    interval: float
    timeout: float
    tools: bool = True  # keep the server's tool inventory (label mcp.tools)
    stdio: bool = False  # probed in-process through the attached stdio server


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __len__(self) -> int:
        return self.high - self.low + 1

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


def parse_port(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return port


def parse_port_range(value: Any) -> PortRange:
    if isinstance(value, PortRange):
        return value
    low_text, sep, high_text = str(value).partition("-")
    if not sep:
        raise ValueError("expected LOW-HIGH, e.g. 11100-11999")
    low, high = parse_port(low_text), parse_port(high_text)
    if low > high:
        raise ValueError(f"expected LOW-HIGH with LOW <= HIGH, got {low} > {high}")
    return PortRange(low, high)


def tools_key(prefix: str, node_id: str, service_id: str) -> str:
    """The KV key of a service's tool inventory: written by its bridge (mcp/checks.py),
    read by `services --tools` (consul/catalog.py)."""
    return f"{prefix}/{node_id}/{service_id}/tools"
