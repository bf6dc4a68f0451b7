"""Cluster port scope, the agents in-process: hosts sharing one (fake) Consul KV give a
service the same port everywhere; a second instance on one host waits; a host keeps its
running containers' ports while Consul is away, and only new names wait."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.model import service_id
from tests.agent_world import NO_CHECK, World, make_world
from tests.fakes import FakeConsul

SHARED = {**NO_CHECK, "mcp.name": "weather"}


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[tuple[World, World]]:
    a_consul, b_consul = FakeConsul("host-a"), FakeConsul("host-b")
    b_consul.share_kv(a_consul)
    settings = {"port_scope": "cluster", "port_range": "11100-11109"}
    a = await make_world(tmp_path / "a", consul=a_consul, node_id="host-a", **settings)
    b = await make_world(tmp_path / "b", consul=b_consul, node_id="host-b", **settings)
    yield a, b
    await a.agent.close()
    await b.agent.close()


async def test_a_service_gets_one_port_on_every_host(hosts: tuple[World, World]) -> None:
    a, b = hosts
    await a.on(a.run("mcp-other", labels=NO_CHECK))  # takes the first port on host a
    await b.on(b.run("mcp-weather-b", labels=SHARED))
    await a.on(a.run("mcp-weather-a", labels=SHARED))
    port_b = b.consul.services[service_id("host-b", "mcp-weather-b")].port
    port_a = a.consul.services[service_id("host-a", "mcp-weather-a")].port
    assert port_a == port_b, "one service, two ports"
    assert a.ports()["mcp-other"] != port_a, "one port, two services"
    registry = await a.agent.fleet.read()  # type: ignore[union-attr]
    assert registry.services["weather"][0] == port_a
    assert set(registry.users["weather"]) == {"host-a", "host-b"}


async def test_a_second_instance_on_one_host_waits_and_says_why(
    hosts: tuple[World, World],
) -> None:
    a, _ = hosts
    await a.on(a.run("mcp-weather-1", labels=SHARED))
    await a.on(a.run("mcp-weather-2", labels=SHARED))
    assert set(a.ports()) == {"mcp-weather-1"}
    why = a.agent.view.waiting["mcp-weather-2"].reason
    assert "held on this host by mcp-weather-1" in why and "one instance" in why


async def test_running_containers_keep_their_ports_while_consul_is_away(
    hosts: tuple[World, World],
) -> None:
    a, _ = hosts
    await a.on(a.run("mcp-weather-a", labels=SHARED))
    port = a.ports()["mcp-weather-a"]
    a.consul.down = True
    await a.on(a.run("mcp-new", labels=NO_CHECK))  # a new name: needs the registry
    a.consul.down = False
    await a.full_pass()
    assert a.ports()["mcp-weather-a"] == port
    assert "mcp-new" in a.ports()  # and gets its port once Consul is back


async def test_a_service_nobody_runs_is_released_after_stale_after(
    hosts: tuple[World, World],
) -> None:
    a, _ = hosts
    await a.on(a.run("mcp-weather-a", labels=SHARED))
    await a.on(a.docker.remove("mcp-weather-a"))
    a.clock.now += 60  # STALE_AFTER: the local allocation goes at the next full pass
    await a.full_pass()
    fleet = a.agent.fleet
    assert fleet is not None
    assert "weather" in (await fleet.read()).services  # idle now; released later
    a.clock.now += 60
    await a.full_pass()
    assert "weather" not in (await fleet.read()).services


async def test_cluster_scope_claims_inside_the_tier(tmp_path: Path) -> None:
    a_consul, b_consul = FakeConsul("host-a"), FakeConsul("host-b")
    b_consul.share_kv(a_consul)
    settings = {
        "port_scope": "cluster",
        "port_range": "11100-11119",
        "port_tiers": "core=11110-11114",
    }
    a = await make_world(tmp_path / "a", consul=a_consul, node_id="host-a", **settings)
    b = await make_world(tmp_path / "b", consul=b_consul, node_id="host-b", **settings)
    try:
        await a.on(a.run("mcp-plain", labels=NO_CHECK))
        core = {**NO_CHECK, "mcp.name": "search", "mcp.tier": "core"}
        await a.on(a.run("mcp-search-a", labels=core))
        await b.on(b.run("mcp-search-b", labels=core))
        await b.on(b.run("mcp-more", labels={**NO_CHECK, "mcp.tier": "core"}))
        port = a.consul.services[service_id("host-a", "mcp-search-a")].port
        assert port == b.consul.services[service_id("host-b", "mcp-search-b")].port == 11110
        assert b.ports()["mcp-more"] == 11111, "next after the tier's own cursor"
        assert a.ports()["mcp-plain"] == 11100, "the untiered rest"
        registry = await a.agent.fleet.read()  # type: ignore[union-attr]
        assert {t: p for t, (p, _) in registry.cursors.items()} == {"": 11100, "core": 11111}
    finally:
        await a.agent.close()
        await b.agent.close()
