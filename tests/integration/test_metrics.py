"""/metrics of a real agent: what it counts after real containers, connections and errors."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Bridge, wait_for


def scrape(bridge: Bridge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(bridge.agent.http + "/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# Two ports: one container uses 50% of the pool, two use 100% (past the 90% warning).
@pytest.mark.bridge_env({"BRIDGE_PORT_RANGE": "21992-21993", "BRIDGE_STALE_AFTER": "1s"})
def test_metrics_follow_registrations_traffic_errors_and_pool_use(bridge: Bridge) -> None:
    bridge.agent.start()
    first = bridge.run(
        "a", labels=bridge.labels(enable="true", port="8080", expose="proxy", check="none")
    )
    service = wait_for("a registered", lambda: bridge.service("a"))
    m = scrape(bridge)
    assert value(m, "mcp_bridge_registrations_total") >= 1
    assert value(m, "mcp_bridge_event_to_registered_seconds_count") >= 1
    assert value(m, "mcp_bridge_reconcile_duration_seconds_count", full="true") >= 1
    assert (value(m, "mcp_bridge_pool_size"), value(m, "mcp_bridge_pool_used")) == (2, 1)
    assert value(m, "mcp_bridge_pool_free") == 1
    assert value(m, "mcp_bridge_pool_near_exhaustion") == 0
    assert value(m, "mcp_bridge_ready") == 1

    # Traffic through the forwarder is counted per service.
    sid = f"{bridge.agent.node_id}:{bridge.tag}a"
    with socket.create_connection(("127.0.0.1", service["Port"]), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        while conn.recv(65536):
            pass
    m = wait_for(
        "bytes counted",
        lambda: (
            (m := scrape(bridge))
            and value(m, "mcp_bridge_forwarder_bytes_total", service_id=sid, direction="out") > 0
            and m
        ),
    )
    assert value(m, "mcp_bridge_forwarder_bytes_total", service_id=sid, direction="in") == 18
    assert value(m, "mcp_bridge_forwarder_connections_total", service_id=sid) == 1

    # A bad label is an error of kind "labels", counted once however often it is seen.
    assert value(m, "mcp_bridge_errors_total", kind="labels") == 0
    bridge.run("bad", labels=bridge.labels(enable="true", port="not-a-port"))
    passes = wait_for("skipped", lambda: (s := bridge.agent.status())["skipped"] and s)["passes"]
    wait_for("a few more passes", lambda: bridge.agent.status()["passes"] >= passes + 3)
    m = scrape(bridge)
    assert value(m, "mcp_bridge_errors_total", kind="labels") == 1

    # The second port fills the pool past 90%: a gauge to alert on, and one warning event.
    bridge.run("b")
    wait_for("b registered", lambda: bridge.service("b"))
    m = scrape(bridge)
    assert value(m, "mcp_bridge_pool_near_exhaustion") == 1
    assert value(m, "mcp_bridge_pool_usage_ratio") == 1.0
    (warning,) = bridge.agent.events("pool_nearly_exhausted")
    assert (warning["used"], warning["size"], warning["free"]) == (2, 2, 0)

    # A third container finds the pool exhausted: counted once, while it waits.
    bridge.run("c")
    wait_for("c waits", lambda: bridge.agent.status()["waiting"])
    m = scrape(bridge)
    assert value(m, "mcp_bridge_errors_total", kind="pool_exhausted") == 1

    # Withdrawn: deregistration counted; the port frees after stale_after, c gets it.
    first.remove(force=True)
    wait_for("c registered", lambda: bridge.service("c"))
    m = scrape(bridge)
    assert value(m, "mcp_bridge_deregistrations_total") >= 1
