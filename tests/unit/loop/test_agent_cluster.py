"""Cluster port scope, the agents in-process: hosts sharing one (fake) Consul KV give a
service the same port everywhere; a second instance on one host waits; a host keeps its
running containers' ports while Consul is away, and only new names wait. Node scope's
pool rules hold over the fleet's registry: preferred and reserved ports, the bind test,
wrap-around and exhaustion; a refused second instance changes nothing in KV."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.core.model import ContainerEvent, KVEntry, service_id
from bridge.core.protocols import ConsulUnavailable
from tests.agent_world import NO_CHECK, STALE_AFTER, World, make_world
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


async def test_a_renamed_container_keeps_its_services_port_at_once(tmp_path: Path) -> None:
    # The bind test sees the bridge's own listeners, as the real one does: during the
    # pool step the old name's forwarder still listens on the port.
    listening: set[int] = set()
    a = await make_world(
        tmp_path,
        consul=FakeConsul("host-a"),
        node_id="host-a",
        port_scope="cluster",
        port_range="11100-11109",
        is_free=lambda port: port not in listening,
    )
    try:

        async def on(event: ContainerEvent) -> None:
            await a.on(event)
            listening.clear()
            listening.update(t.listen_port for t in a.forwarders.open.values())

        await on(a.run("mcp-weather-1", labels=SHARED))
        port = a.ports()["mcp-weather-1"]
        await on(a.docker.rename("mcp-weather-1", "mcp-weather-2"))
        assert a.ports() == {"mcp-weather-2": port}, "waited for the old name to go stale"
        assert a.allocation_state("mcp-weather-1") is None
        await a.full_pass()
        registry = await a.agent.fleet.read()  # type: ignore[union-attr]
        assert registry.users["weather"]["host-a"][0] == "mcp-weather-2"  # the lock follows
        assert registry.services["weather"][0] == port
        # A stopped instance is not gone: a second one still waits for it.
        await on(a.docker.stop("mcp-weather-2"))
        await on(a.run("mcp-weather-3", labels=SHARED))
        assert "one instance" in a.agent.view.waiting["mcp-weather-3"].reason
    finally:
        await a.agent.close()


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


async def test_an_unreadable_registry_is_counted_as_consul_not_as_an_exhausted_pool(
    hosts: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = hosts

    readable = a.consul.kv_read

    async def unreadable(prefix: str) -> list[KVEntry]:
        if "/ports/" in prefix:  # the fleet's registry only: the rest of Consul answers
            raise ConsulUnavailable(f"GET /v1/kv/{prefix}: 500 No cluster leader")
        return await readable(prefix)

    monkeypatch.setattr(a.consul, "kv_read", unreadable)
    await a.on(a.run("mcp-new", labels=NO_CHECK))
    waiting = a.agent.view.waiting["mcp-new"]
    assert waiting.reason.startswith("cluster port registry unavailable")
    assert waiting.kind == "consul_unavailable"
    assert a.metric("mcp_bridge_errors_total", kind="consul_unavailable") == 1
    assert a.metric("mcp_bridge_errors_total", kind="pool_exhausted") == 0

    # Consul back, and no event to say so: the agent looks again by itself, soon.
    monkeypatch.setattr(a.consul, "kv_read", readable)
    assert await a.settle() == 0, "nothing was pending yet"
    await asyncio.sleep(0.6)  # the first retry comes after 0.5 s
    await a.settle()
    assert "mcp-new" in a.ports()
    assert a.agent.view.waiting == {}


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


# ---- node scope's pool rules, in cluster scope (tests/unit/loop/test_agent.py, test_ports.py) ----


@asynccontextmanager
async def two_hosts(
    tmp_path: Path, *, busy_on_a: AbstractSet[int] = frozenset(), **settings: str
) -> AsyncIterator[tuple[World, World]]:
    """Two bridges of one fleet (one KV); `busy_on_a`: ports host a's bind test finds taken."""
    a_consul, b_consul = FakeConsul("host-a"), FakeConsul("host-b")
    b_consul.share_kv(a_consul)
    values = {"port_scope": "cluster", "port_range": "11100-11103", **settings}

    def a_is_free(port: int) -> bool:
        return port not in busy_on_a

    a = await make_world(
        tmp_path / "a", consul=a_consul, node_id="host-a", is_free=a_is_free, **values
    )
    b = await make_world(tmp_path / "b", consul=b_consul, node_id="host-b", **values)
    try:
        yield a, b
    finally:
        await a.agent.close()
        await b.agent.close()


def named(name: str, **more: str) -> dict[str, str]:
    return {**NO_CHECK, "mcp.name": name, **{f"mcp.{k}": v for k, v in more.items()}}


async def cursor_of(world: World, tier: str = "") -> int | None:
    assert world.agent.fleet is not None
    return (await world.agent.fleet.read()).cursors.get(tier, (None, 0))[0]


async def release(world: World, container: str) -> None:
    """Remove a container; its host drops its use after BRIDGE_STALE_AFTER, and the fleet's
    port is released BRIDGE_STALE_AFTER after that (on the host's own full passes)."""
    await world.on(world.docker.remove(container))
    world.clock.now += STALE_AFTER
    await world.full_pass()  # the local allocation goes, then the use; the service idle
    world.clock.now += STALE_AFTER
    await world.full_pass()  # released at the end of this pass


async def test_a_preferred_port_is_given_when_free_without_moving_the_fleets_cursor(
    tmp_path: Path,
) -> None:
    async with two_hosts(tmp_path, port_range="11100-11109") as (a, b):
        await a.on(a.run("mcp-a", labels=named("a")))
        await b.on(b.run("mcp-p", labels=named("p", host_port="11105")))
        await a.on(a.run("mcp-p", labels=named("p", host_port="11105")))
        await b.on(b.run("mcp-b", labels=named("b")))
        assert b.ports() == {"mcp-p": 11105, "mcp-b": 11101}, "the preferred port moved it"
        assert a.ports() == {"mcp-a": 11100, "mcp-p": 11105}
        assert await cursor_of(a) == 11101


async def test_a_preferred_port_another_service_holds_falls_back_to_the_cursor(
    tmp_path: Path,
) -> None:
    async with two_hosts(tmp_path, port_range="11100-11109") as (a, b):
        await b.on(b.run("mcp-p", labels=named("p", host_port="11105")))
        await a.on(a.run("mcp-q", labels=named("q", host_port="11105")))
        assert a.ports() == {"mcp-q": 11100}, "no wait: the next port after the cursor"
        assert a.agent.view.waiting == {}
        assert await cursor_of(a) == 11100
        await a.on(a.run("mcp-r", labels=named("r")))
        assert a.ports()["mcp-r"] == 11101


async def test_reserved_ports_are_never_handed_out_in_cluster_scope(tmp_path: Path) -> None:
    async with two_hosts(tmp_path, reserved_ports="11100,11102") as (a, b):
        await a.on(a.run("mcp-a", labels=named("a")))
        await b.on(b.run("mcp-b", labels=named("b")))
        await a.on(a.run("mcp-c", labels=named("c")))
        assert a.ports() == {"mcp-a": 11101} and b.ports() == {"mcp-b": 11103}
        reason = a.agent.view.waiting["mcp-c"].reason
        assert "exhausted" in reason and "2 reserved" in reason
        # A reserved mcp.host_port is a label error, as in node scope.
        await b.on(b.run("mcp-r", labels=named("r", host_port="11100")))
        assert "reserved" in b.agent.view.skipped["mcp-r"].reason
        registry = await a.agent.fleet.read()  # type: ignore[union-attr]
        assert not {11100, 11102} & set(registry.ports)


async def test_a_port_whose_bind_test_fails_is_skipped_and_tried_after_the_wrap(
    tmp_path: Path,
) -> None:
    busy = {11100}
    async with two_hosts(tmp_path, busy_on_a=busy) as (a, b):
        await a.on(a.run("mcp-a", labels=named("a")))
        assert a.ports() == {"mcp-a": 11101}, "a busy port handed out"
        await a.on(a.run("mcp-p", labels=named("p", host_port="11100")))
        assert a.ports()["mcp-p"] == 11102, "a busy preferred port: the next after the cursor"
        busy.clear()  # not remembered: tried again when the cursor comes round
        await b.on(b.run("mcp-b", labels=named("b")))
        await a.on(a.run("mcp-c", labels=named("c")))
        assert b.ports() == {"mcp-b": 11103}
        assert a.ports()["mcp-c"] == 11100


async def test_a_released_port_is_reused_only_after_the_fleets_cursor_wraps(
    tmp_path: Path,
) -> None:
    async with two_hosts(tmp_path) as (a, b):
        await a.on(a.run("mcp-a", labels=named("a")))
        await b.on(b.run("mcp-b", labels=named("b")))
        await a.on(a.run("mcp-c", labels=named("c")))
        assert b.ports() == {"mcp-b": 11101}
        await release(b, "mcp-b")
        assert "b" not in (await b.agent.fleet.read()).services  # type: ignore[union-attr]
        # 11101 is free, but the cursor goes on: 11103, then wraps past 11100 to 11101.
        await b.on(b.run("mcp-d", labels=named("d")))
        await a.on(a.run("mcp-e", labels=named("e")))
        assert b.ports() == {"mcp-d": 11103}
        assert a.ports()["mcp-e"] == 11101


async def test_cluster_exhaustion_names_the_range_and_recovers_the_pass_after_a_release(
    tmp_path: Path,
) -> None:
    async with two_hosts(tmp_path) as (a, b):
        for name in ("mcp-a", "mcp-b"):
            await a.on(a.run(name, labels=named(name[4:])))
        for name in ("mcp-c", "mcp-d"):
            await b.on(b.run(name, labels=named(name[4:])))
        a.run("mcp-e", labels=named("e"))
        with capture_logs() as logs:
            await a.full_pass()
            await a.full_pass()
        assert set(a.ports()) == {"mcp-a", "mcp-b"}
        reason = a.agent.view.waiting["mcp-e"].reason
        # Node scope's shape: "port pool 11100-11103 exhausted: all 4 ports are taken (...)".
        assert reason.startswith("cluster port registry 11100-11103 exhausted: all 4 ports")
        assert "4 claimed by services of the fleet" in reason
        assert [e["container"] for e in logs if e["event"] == "container_waiting"] == ["mcp-e"]
        assert a.metric("mcp_bridge_errors_total", kind="pool_exhausted") == 1

        freed = b.ports()["mcp-c"]
        await b.on(b.docker.remove("mcp-c"))
        b.clock.now += STALE_AFTER
        await b.full_pass()  # b drops its use: the service is idle from now on
        a.clock.now += 2 * STALE_AFTER
        await a.full_pass()  # claims before it releases: mcp-e still waits
        assert "c" not in (await a.agent.fleet.read()).services  # type: ignore[union-attr]
        assert "mcp-e" in a.agent.view.waiting
        await a.full_pass()
        assert a.ports()["mcp-e"] == freed
        assert a.agent.view.waiting == {}


async def test_cluster_exhaustion_of_a_tier_names_the_tier(tmp_path: Path) -> None:
    tiers = {"port_range": "11100-11109", "port_tiers": "core=11100-11101"}
    async with two_hosts(tmp_path, **tiers) as (a, b):
        await a.on(a.run("mcp-a", labels=named("a", tier="core")))
        await b.on(b.run("mcp-b", labels=named("b", tier="core")))
        await a.on(a.run("mcp-c", labels=named("c", tier="core")))
        await a.on(a.run("mcp-plain", labels=named("plain")))
        assert a.ports() == {"mcp-a": 11100, "mcp-plain": 11102}
        reason = a.agent.view.waiting["mcp-c"].reason
        assert reason.startswith("cluster port registry tier core (11100-11101) exhausted")


async def test_a_refused_second_instance_changes_nothing_in_kv(
    hosts: tuple[World, World],
) -> None:
    a, _ = hosts
    await a.on(a.run("mcp-weather-1", labels=SHARED))
    writes = len(a.consul.kv_writes)
    await a.on(a.run("mcp-weather-2", labels=SHARED))
    for _ in range(3):
        await a.full_pass()
    assert "one instance" in a.agent.view.waiting["mcp-weather-2"].reason
    assert a.consul.kv_writes[writes:] == [], "a refused instance wrote to the registry"
    registry = await a.agent.fleet.read()  # type: ignore[union-attr]
    assert registry.users["weather"]["host-a"][0] == "mcp-weather-1"

    # Once the first is gone the second takes the port over, and the host's use with it:
    # stopped, it keeps the port (its allocation holds it), as the first did.
    port = a.ports()["mcp-weather-1"]
    await a.on(a.docker.remove("mcp-weather-1"))
    a.clock.now += STALE_AFTER
    await a.full_pass()
    assert a.ports() == {"mcp-weather-2": port}
    registry = await a.agent.fleet.read()  # type: ignore[union-attr]
    assert registry.users["weather"]["host-a"][0] == "mcp-weather-2"
    await a.on(a.docker.stop("mcp-weather-2"))
    a.clock.now += 10 * STALE_AFTER
    await a.full_pass()
    await a.full_pass()
    registry = await a.agent.fleet.read()  # type: ignore[union-attr]
    assert "host-a" in registry.users["weather"] and registry.services["weather"][1] is None
