"""The metrics registry on its own: names, labels, and the pool threshold."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from bridge.core.model import ForwarderCounters, PortRange
from bridge.loop.metrics import ERROR_KINDS, AgentReading, Metrics, PoolUse, tier_use
from bridge.pool.allocator import PoolState
from bridge.pool.tiers import TierLayout, parse_tiers


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }


def snapshot(used: int, size: int = 100) -> AgentReading:
    return AgentReading(
        pool=PoolUse(size, used, size - used),
        services=used,
        forwarders={
            "n:a": ForwarderCounters(active=2, total=5, failed=1, bytes_in=10, bytes_out=20)
        },
        docker_connected=True,
        consul_reachable=False,
        ready=False,
    )


def test_every_error_kind_is_present_from_the_start_and_counts() -> None:
    m = Metrics(lambda: snapshot(1))
    s = samples(m)
    assert {s[("mcp_bridge_errors_total", (("kind", k),))] for k in ERROR_KINDS} == {0.0}
    m.error("store")
    m.error("store")
    assert samples(m)[("mcp_bridge_errors_total", (("kind", "store"),))] == 2


def test_pool_gauges_and_the_ninety_percent_threshold() -> None:
    at = samples(Metrics(lambda: snapshot(90)))
    assert at[("mcp_bridge_pool_near_exhaustion", ())] == 0  # 90% is not yet "over"
    assert at[("mcp_bridge_pool_usage_ratio", ())] == 0.9
    over = samples(Metrics(lambda: snapshot(91)))
    assert over[("mcp_bridge_pool_near_exhaustion", ())] == 1
    assert (over[("mcp_bridge_pool_used", ())], over[("mcp_bridge_pool_free", ())]) == (91, 9)


def test_forwarder_counters_are_read_at_scrape_time() -> None:
    snap = snapshot(1)
    m = Metrics(lambda: snap)
    key = ("mcp_bridge_forwarder_bytes_total", (("direction", "out"), ("service_id", "n:a")))
    assert samples(m)[key] == 20
    snap.forwarders["n:a"].bytes_out += 5  # the forwarder counts; nothing else to update
    s = samples(m)
    assert s[key] == 25
    assert s[("mcp_bridge_forwarder_connections_active", (("service_id", "n:a"),))] == 2
    assert s[("mcp_bridge_forwarder_upstream_failures_total", (("service_id", "n:a"),))] == 1
    assert s[("mcp_bridge_consul_reachable", ())] == 0


def test_use_per_tier_and_refusals_per_service() -> None:
    layout = TierLayout(PortRange(100, 119), parse_tiers("core=100-109"))
    pool = PoolState(layout.port_range, tiers=layout)
    for i in range(10):
        pool.allocate(f"c{i}", now=0, tier="core")
    pool.allocate("plain", now=0)
    reading = replace(snapshot(11), tiers=tier_use(pool))
    reading.forwarders["n:a"].refused_address = 7
    s = samples(Metrics(lambda: reading))
    assert s[("mcp_bridge_tier_size", (("tier", "core"),))] == 10
    assert s[("mcp_bridge_tier_near_exhaustion", (("tier", "core"),))] == 1
    assert s[("mcp_bridge_tier_used", (("tier", "untiered"),))] == 1
    assert s[("mcp_bridge_tier_near_exhaustion", (("tier", "untiered"),))] == 0
    address = ("mcp_bridge_forwarder_refused_total", (("reason", "address"), ("service_id", "n:a")))
    assert s[address] == 7
    limit = ("mcp_bridge_forwarder_refused_total", (("reason", "limit"), ("service_id", "n:a")))
    assert s[limit] == 0
    assert s[("mcp_bridge_forwarder_connections_total", (("service_id", "n:a"),))] == 5
    untiered = samples(Metrics(lambda: snapshot(1)))
    assert not [k for k in untiered if k[0].startswith("mcp_bridge_tier_")]
