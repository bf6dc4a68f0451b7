"""Prometheus metrics for one agent, served at /metrics.

Counters and histograms are updated where things happen. Values the agent already holds
(pool use, forwarder counters, services) are read when scraped by a custom collector, so
keeping them costs nothing between scrapes and they can never drift from the truth.

Each agent has its own registry: several agents in one process (tests) don't collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.core.model import ForwarderCounters, StdioReading
from bridge.pool.allocator import PoolState
from bridge.pool.tiers import tier_label

if TYPE_CHECKING:
    from bridge.loop.view import View

log = structlog.get_logger("bridge.agent")

PREFIX = "mcp_bridge"
POOL_WARN_RATIO = 0.9

# Kinds of error counted in mcp_bridge_errors_total{kind=...}.
ERROR_KINDS = (
    "consul_unavailable",  # Consul did not answer (after retries)
    "consul_rejected",  # Consul answered 4xx: ACL, bad definition
    "docker",  # listing or the event stream failed
    "labels",  # a container's labels are invalid (counted once per new reason)
    "pool_exhausted",  # no free port for a container
    "store",  # the state file could not be written
    "forwarder",  # a proxy port could not be opened
    "node_id_conflict",  # another bridge holds this BRIDGE_NODE_ID
    "reconcile",  # a pass failed for any other reason
)


@dataclass(frozen=True, slots=True)
class PoolUse:
    size: int
    used: int
    free: int


@dataclass(frozen=True, slots=True)
class AgentReading:
    """What the agent holds now, read at scrape time."""

    pool: PoolUse | None
    services: int
    forwarders: Mapping[str, ForwarderCounters]
    docker_connected: bool
    consul_reachable: bool
    ready: bool
    tiers: Mapping[str, PoolUse] = field(default_factory=dict)  # each tier, and "untiered"
    stdio: Mapping[str, StdioReading] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        view: View,
        pool: PoolState | None,
        forwarders: Mapping[str, ForwarderCounters],
        stdio: Mapping[str, StdioReading] | None = None,
    ) -> AgentReading:
        return cls(
            pool=None
            if pool is None
            else PoolUse(pool.capacity, pool.used_count(), pool.free_count()),
            tiers={} if pool is None else tier_use(pool),
            services=len(view.registered),
            forwarders=forwarders,
            docker_connected=view.docker_connected,
            consul_reachable=view.consul_reachable,
            ready=view.ready,
            stdio=stdio or {},
        )


class _Live(Collector):
    def __init__(self, read: Callable[[], AgentReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        snap = self._read()
        yield _gauge("services", "Services this agent has registered in Consul.", snap.services)
        yield _gauge("docker_connected", "1 while events flow.", snap.docker_connected)
        yield _gauge("consul_reachable", "1 while Consul answers.", snap.consul_reachable)
        yield _gauge("ready", "1 when /readyz says ready.", snap.ready)
        if snap.pool is not None:
            pool = snap.pool
            yield _gauge("pool_size", "Ports in BRIDGE_PORT_RANGE less reserved ones.", pool.size)
            yield _gauge("pool_used", "Ports held (active, held or orphaned).", pool.used)
            yield _gauge("pool_free", "Ports that can be handed out.", pool.free)
            ratio = pool.used / pool.size if pool.size else 1.0
            yield _gauge("pool_usage_ratio", "pool_used / pool_size.", ratio)
            yield _gauge(
                "pool_near_exhaustion",
                f"1 when more than {POOL_WARN_RATIO:.0%} of the pool is used: alert on this.",
                ratio > POOL_WARN_RATIO,
            )
        if snap.tiers:
            yield from _tier_families(snap.tiers)
        active = GaugeMetricFamily(
            f"{PREFIX}_forwarder_connections_active",
            "Open connections through a proxy-mode forwarder.",
            labels=["service_id"],
        )
        total = CounterMetricFamily(
            f"{PREFIX}_forwarder_connections",
            "Connections accepted by a proxy-mode forwarder.",
            labels=["service_id"],
        )
        failed = CounterMetricFamily(
            f"{PREFIX}_forwarder_upstream_failures",
            "Connections whose upstream could not be reached.",
            labels=["service_id"],
        )
        refused = CounterMetricFamily(
            f"{PREFIX}_forwarder_refused",
            "Connections refused at once by a proxy-mode forwarder; reason address = source"
            " not in the allow list, limit = max_connections reached.",
            labels=["service_id", "reason"],
        )
        moved = CounterMetricFamily(
            f"{PREFIX}_forwarder_bytes",
            "Bytes relayed; direction in = client to container, out = container to client.",
            labels=["service_id", "direction"],
        )
        for sid, c in sorted(snap.forwarders.items()):
            active.add_metric([sid], c.active)
            total.add_metric([sid], c.total)
            failed.add_metric([sid], c.failed)
            refused.add_metric([sid, "address"], c.refused_address)
            refused.add_metric([sid, "limit"], c.refused_limit)
            moved.add_metric([sid, "in"], c.bytes_in)
            moved.add_metric([sid, "out"], c.bytes_out)
        yield from (active, total, failed, refused, moved)
        yield from _stdio_families(snap.stdio)


def _stdio_families(readings: Mapping[str, StdioReading]) -> Iterator[Metric]:
    """Per served stdio service (mcp/stdio/served.py)."""
    label = ["service_id"]
    sessions = GaugeMetricFamily(
        f"{PREFIX}_stdio_sessions", "Handshake-era sessions open.", labels=label
    )
    in_flight = GaugeMetricFamily(
        f"{PREFIX}_stdio_requests_in_flight", "Requests sent to the process, not answered yet.",
        labels=label,
    )  # fmt: skip
    attached = GaugeMetricFamily(
        f"{PREFIX}_stdio_attached", "1 while a process is attached and served.", labels=label
    )
    requests = CounterMetricFamily(
        f"{PREFIX}_stdio_requests",
        "Requests sent to the process, by outcome: answered by it; failed = answered by the"
        " bridge with an error (the process ended, timed out); refused = by mcp.allow or"
        " mcp.max_connections, never sent.",
        labels=["service_id", "outcome"],
    )
    processes = CounterMetricFamily(
        f"{PREFIX}_stdio_processes",
        "Processes attached to (one per start of the container: above 1, it restarted).",
        labels=label,
    )
    skipped = CounterMetricFamily(
        f"{PREFIX}_stdio_skipped_lines", "Output lines that were not JSON-RPC.", labels=label
    )
    stray = CounterMetricFamily(
        f"{PREFIX}_stdio_stray_answers",
        "Answers to ids the bridge does not know (dropped, never delivered).", labels=label,
    )  # fmt: skip
    for sid, r in sorted(readings.items()):
        sessions.add_metric([sid], r.sessions)
        in_flight.add_metric([sid], r.in_flight)
        attached.add_metric([sid], r.state == "serving")
        requests.add_metric([sid, "answered"], r.answered)
        requests.add_metric([sid, "failed"], r.failed)
        requests.add_metric([sid, "refused"], r.refused)
        processes.add_metric([sid], r.processes)
        skipped.add_metric([sid], r.skipped_lines)
        stray.add_metric([sid], r.stray_answers)
    yield from (sessions, in_flight, attached, requests, processes, skipped, stray)


def tier_use(pool: PoolState) -> dict[str, PoolUse]:
    if not pool.layout.tiered:  # no BRIDGE_PORT_TIERS: the pool metrics say it all
        return {}
    return {
        tier_label(t): PoolUse(pool.capacity_of(t), pool.used_count(t), pool.free_count(t))
        for t in pool.layout.tiers
    }


def _tier_families(tiers: Mapping[str, PoolUse]) -> Iterator[Metric]:
    size = GaugeMetricFamily(
        f"{PREFIX}_tier_size", "Ports of a tier, less reserved.", labels=["tier"]
    )
    used = GaugeMetricFamily(f"{PREFIX}_tier_used", "Ports of a tier held.", labels=["tier"])
    free = GaugeMetricFamily(f"{PREFIX}_tier_free", "Ports of a tier free.", labels=["tier"])
    near = GaugeMetricFamily(
        f"{PREFIX}_tier_near_exhaustion",
        f"1 when more than {POOL_WARN_RATIO:.0%} of a tier is used: alert on this.",
        labels=["tier"],
    )
    for name, use in sorted(tiers.items()):
        size.add_metric([name], use.size)
        used.add_metric([name], use.used)
        free.add_metric([name], use.free)
        near.add_metric([name], float(use.used > POOL_WARN_RATIO * use.size))
    yield from (size, used, free, near)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(value))


class Metrics:
    def __init__(self, read: Callable[[], AgentReading]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.registrations = Counter(
            f"{PREFIX}_registrations", "Services registered (or updated) in Consul.", registry=r
        )
        self.deregistrations = Counter(
            f"{PREFIX}_deregistrations", "Services withdrawn from Consul.", registry=r
        )
        self.errors = Counter(
            f"{PREFIX}_errors", "Errors by kind.", labelnames=["kind"], registry=r
        )
        for kind in ERROR_KINDS:
            self.errors.labels(kind)  # present at 0, so rate() works from the start
        self.event_to_registered = Histogram(
            f"{PREFIX}_event_to_registered_seconds",
            "From a container's Docker event to its service registered in Consul.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Duration of one reconcile pass.",
            labelnames=["full"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        r.register(_Live(read))

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PoolPressure:
    """One event when pool use (the whole pool's, and each tier's) crosses
    POOL_WARN_RATIO, one when it falls back: a gauge to alert on is in the metrics; the
    log says it once, not on every pass."""

    def __init__(self) -> None:
        self.high: dict[str | None, bool] = {}  # None: the whole pool

    def note(self, state: PoolState) -> None:
        tiers = [None, *state.layout.tiers] if state.layout.tiered else [None]
        for tier in tiers:
            used, size = state.used_count(tier), state.capacity_of(tier)
            high = used > POOL_WARN_RATIO * size
            if high == self.high.get(tier, False):
                continue
            self.high[tier] = high
            where = {} if tier is None else {"tier": tier_label(tier)}
            (log.warning if high else log.info)(
                "pool_nearly_exhausted" if high else "pool_pressure_relieved",
                used=used,
                size=size,
                free=state.free_count(tier),
                range=str(state.port_range if tier is None else state.layout[tier]),
                threshold=POOL_WARN_RATIO,
                **where,
            )
