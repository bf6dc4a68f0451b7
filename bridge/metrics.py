"""Prometheus metrics for one agent, served at /metrics.

Counters and histograms are updated where things happen. Values the agent already holds
(pool use, forwarder counters, services) are read when scraped by a custom collector, so
keeping them costs nothing between scrapes and they can never drift from the truth.

Each agent has its own registry: several agents in one process (tests) don't collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.model import ForwarderCounters
from bridge.pool.allocator import PoolState

if TYPE_CHECKING:
    from bridge.status import View

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

    @classmethod
    def of(
        cls,
        view: View,
        pool: PoolState | None,
        forwarders: Mapping[str, ForwarderCounters],
    ) -> AgentReading:
        return cls(
            pool=None
            if pool is None
            else PoolUse(pool.capacity, pool.used_count(), pool.free_count()),
            services=len(view.registered),
            forwarders=forwarders,
            docker_connected=view.docker_connected,
            consul_reachable=view.consul_reachable,
            ready=view.ready,
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
        moved = CounterMetricFamily(
            f"{PREFIX}_forwarder_bytes",
            "Bytes relayed; direction in = client to container, out = container to client.",
            labels=["service_id", "direction"],
        )
        for sid, c in sorted(snap.forwarders.items()):
            active.add_metric([sid], c.active)
            total.add_metric([sid], c.total)
            failed.add_metric([sid], c.failed)
            moved.add_metric([sid, "in"], c.bytes_in)
            moved.add_metric([sid, "out"], c.bytes_out)
        yield from (active, total, failed, moved)


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
    """One event when pool use crosses POOL_WARN_RATIO, one when it falls back: a gauge
    to alert on is in the metrics; the log says it once, not on every pass."""

    def __init__(self) -> None:
        self.high = False

    def note(self, state: PoolState) -> None:
        used, size = state.used_count(), state.capacity
        high = used > POOL_WARN_RATIO * size
        if high == self.high:
            return
        self.high = high
        (log.warning if high else log.info)(
            "pool_nearly_exhausted" if high else "pool_pressure_relieved",
            used=used,
            size=size,
            free=state.free_count(),
            range=str(state.port_range),
            threshold=POOL_WARN_RATIO,
        )
