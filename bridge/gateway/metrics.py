"""The gateway's Prometheus metrics, served at its /metrics.

Calls by outcome and their latency are counted where they happen; calls in flight,
breaker states and the union's size are read from the gateway when scraped, so they
cannot drift from what it does. One registry per gateway (tests run several).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.consul.catalog import Instance
from bridge.gateway.breaker import State

if TYPE_CHECKING:
    from bridge.gateway.backend import GatewayServer

PREFIX = "mcp_bridge_gateway"
BREAKER_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            f"{PREFIX}_calls",
            "Tool calls by upstream instance and how they ended",
            ["service", "instance", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            f"{PREFIX}_call_seconds",
            "Tool call latency through the gateway, by upstream instance",
            ["service", "instance"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Each instance's series, kept: looking a labelled child up costs a lock and a
        # dict on every call, and every call is counted.
        self._kept: dict[tuple[str, str], _Series] = {}  # by (service, instance)

    def observe(self, instance: Instance, outcome: str, seconds: float) -> None:
        sid = instance.service_id
        series = self._kept.get((instance.service, sid))
        if series is None:  # (an id can come back under another service's name)
            latency = self.seconds.labels(instance.service, sid)
            series = self._kept[(instance.service, sid)] = _Series(instance.service, latency, {})
        counter = series.calls.get(outcome)
        if counter is None:
            counter = series.calls[outcome] = self.calls.labels(instance.service, sid, outcome)
        counter.inc()
        series.seconds.observe(seconds)

    def forget(self, alive: set[str]) -> None:
        """Instances gone from Consul: their series go too (ids churn with containers)."""
        for key in [k for k in self._kept if k[1] not in alive]:
            series, sid = self._kept.pop(key), key[1]
            for outcome in series.calls:
                self.calls.remove(series.service, sid, outcome)
            self.seconds.remove(series.service, sid)

    def watch(self, server: Callable[[], GatewayServer], consul_up: Callable[[], bool]) -> None:
        self.registry.register(_Live(server, consul_up))

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(slots=True)
class _Series:
    service: str
    seconds: Histogram  # the instance's labelled child
    calls: dict[str, Counter]  # by outcome


class _Live(Collector):
    def __init__(self, server: Callable[[], GatewayServer], consul_up: Callable[[], bool]) -> None:
        self._server = server
        self._consul_up = consul_up

    def collect(self) -> Iterator[Metric]:
        server = self._server()
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_in_flight", "Calls under way per upstream instance", labels=["instance"]
        )
        breaker = GaugeMetricFamily(
            f"{PREFIX}_breaker_state",
            "Each instance's breaker: 0 closed, 1 half-open, 2 open (ejected)",
            labels=["instance"],
        )
        for instance, breaker_of in server.balancer.breakers.items():
            breaker.add_metric([instance], BREAKER_VALUE[breaker_of.state])
        for instance, n in server.balancer.in_flight.items():
            in_flight.add_metric([instance], n)
        tools = GaugeMetricFamily(f"{PREFIX}_tools", "Tools in the union the gateway offers")
        tools.add_metric([], len(server.offered))
        up = GaugeMetricFamily(f"{PREFIX}_consul_up", "1 while Consul answers the gateway")
        up.add_metric([], 1 if self._consul_up() else 0)
        yield from (in_flight, breaker, tools, up)
