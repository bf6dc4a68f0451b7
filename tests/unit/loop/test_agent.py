"""The agent's behaviour, in-process, against the in-memory fakes of Docker, Consul and the
forwarders (tests/fakes.py): the real agent, passes, pool and store; no servers, no root.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.core.model import (
    AllocKind,
    AllocState,
    ContainerEvent,
    EngineVersion,
    PortBinding,
    service_id,
)
from bridge.docker.engine import watch
from bridge.mcp.checks import CheckRunner
from tests.agent_world import NO_CHECK, STALE_AFTER, World, make_world
from tests.builders import NODE, own_service
from tests.fakes import FakeConsul, FakeDocker
from tests.unit.mcp.test_tools import FakeProbe, ReceivedWrites


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path)
    yield w
    await w.agent.close()


async def test_a_full_pass_registers_each_container_once_and_repeats_change_nothing(
    world: World,
) -> None:
    world.run("mcp-a")
    world.run("mcp-b")
    await world.full_pass()
    assert world.ports() == {"mcp-a": 11100, "mcp-b": 11101}
    assert set(world.forwarders.open) == {service_id(NODE, "mcp-a"), service_id(NODE, "mcp-b")}
    assert world.agent.view.ready
    writes = list(world.consul.writes)
    for _ in range(3):
        await world.full_pass()
    assert world.consul.writes == writes, "a repeated pass wrote to Consul again"


async def test_probation_keeps_unknown_own_services_until_a_complete_listing(
    world: World,
) -> None:
    old, foreign = own_service("mcp-old", 11103), own_service("mcp-x", 11102, node="other")
    world.consul.services = {old.service_id: old, foreign.service_id: foreign}
    world.docker.down = "connection refused"
    world.agent.triggers.request_full()
    assert await world.agent.step() is None  # Docker away: the pass fails
    assert old.service_id in world.consul.services
    world.docker.down = None
    world.agent.triggers.on_event(world.run("mcp-a"))
    result = await world.agent.step()
    # No pass over a few containers comes before the first complete listing succeeded.
    assert result is not None and result.scope.full
    assert set(world.ports()) == {"mcp-a"}
    assert foreign.service_id in world.consul.services, "another bridge's service touched"


async def test_a_scoped_pass_touches_only_the_containers_it_looked_at(world: World) -> None:
    world.run("mcp-a")
    world.run("mcp-b")
    await world.full_pass()
    b = world.docker.by_name("mcp-b")
    world.docker.containers[b.id] = replace(b, labels={**NO_CHECK, "mcp.tags": "x"})
    writes = len(world.consul.writes)
    event = world.run("mcp-c")
    await world.on(event)
    assert world.docker.listings[-1] == frozenset({event.container_id})
    assert world.forwarders.scopes[-1] == frozenset({service_id(NODE, "mcp-c")})
    assert world.consul.writes[writes:] == [("register", service_id(NODE, "mcp-c"))]
    last = world.agent.view.last_pass  # where the pass's time went, for /v1/status
    assert (last["full"], last["containers"], last["registered"]) == (False, 1, 1)
    steps = ["look", "labels", "pool", "forwarders", "apply", "checks", "records"]
    assert list(last["steps_s"]) == steps and all(t >= 0 for t in last["steps_s"].values())
    await world.full_pass()  # the full pass sees b's new labels
    assert world.consul.services[service_id(NODE, "mcp-b")].tags == ("mcp", "x")


async def test_rename_moves_the_service_to_the_new_name(world: World) -> None:
    await world.on(world.run("mcp-a"))
    await world.on(world.docker.rename("mcp-a", "mcp-renamed"))
    assert set(world.ports()) == {"mcp-renamed"}
    assert world.allocation_state("mcp-a") is AllocState.ORPHANED
    assert world.allocation_state("mcp-renamed") is AllocState.ACTIVE


async def test_stop_keeps_the_port_and_remove_frees_it_after_stale_after(world: World) -> None:
    await world.on(world.run("mcp-a"))
    port = world.ports()["mcp-a"]
    await world.on(world.docker.stop("mcp-a"))
    assert world.ports() == {}
    assert world.allocation_state("mcp-a") is AllocState.HELD
    world.clock.now += 10 * STALE_AFTER  # a stopped container is not gone
    await world.full_pass()
    await world.on(world.docker.start("mcp-a"))
    assert world.ports() == {"mcp-a": port}
    await world.on(world.docker.remove("mcp-a"))
    assert world.allocation_state("mcp-a") is AllocState.ORPHANED
    world.clock.now += STALE_AFTER - 1
    await world.full_pass()
    assert world.allocation_state("mcp-a") is AllocState.ORPHANED
    world.clock.now += 1
    with capture_logs() as logs:
        await world.full_pass()
    assert world.allocation_state("mcp-a") is None
    assert [e["port"] for e in logs if e["event"] == "port_released"] == [port]


async def test_exhaustion_then_recovery_once_a_port_is_released(world: World) -> None:
    for name in ("mcp-a", "mcp-b", "mcp-c", "mcp-d", "mcp-e"):
        world.run(name)
    with capture_logs() as logs:
        await world.full_pass()
        await world.full_pass()
    assert set(world.ports()) == {"mcp-a", "mcp-b", "mcp-c", "mcp-d"}
    waiting = world.agent.view.waiting["mcp-e"]
    assert "exhausted" in waiting.reason and "11100-11103" in waiting.reason
    assert [e["container"] for e in logs if e["event"] == "container_waiting"] == ["mcp-e"]
    assert world.metric("mcp_bridge_errors_total", kind="pool_exhausted") == 1
    freed = world.ports()["mcp-b"]
    await world.on(world.docker.remove("mcp-b"))
    assert "mcp-e" not in world.ports()  # orphaned ports are not free yet
    world.clock.now += STALE_AFTER
    await world.full_pass()
    assert world.ports()["mcp-e"] == freed
    assert world.agent.view.waiting == {}


async def test_passes_that_events_wake_during_an_outage_keep_one_retry_timer(
    world: World,
) -> None:
    world.consul.down = True
    timers = []
    for name in ("mcp-a", "mcp-b", "mcp-c"):  # each event wakes a pass, which fails
        world.agent.triggers.on_event(world.run(name))
        assert await world.agent.step() is None
        timers.append(world.agent.triggers.retry)
    assert all(t is not None for t in timers)
    assert [t.cancelled() for t in timers if t is not None] == [True, True, False]
    world.consul.down = False
    assert await world.agent.step() is not None
    assert set(world.ports()) == {"mcp-a", "mcp-b", "mcp-c"}


async def test_a_failed_apply_becomes_a_full_pass_and_nothing_is_lost(world: World) -> None:
    await world.on(world.run("mcp-a"))
    sid = service_id(NODE, "mcp-b")
    world.consul.refuse[sid] = 1
    world.agent.triggers.on_event(world.run("mcp-b"))
    with capture_logs() as logs:
        assert await world.agent.step() is None
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "consul_register_failed",
        "reconcile_failed",
    ]
    assert not world.agent.view.ready and world.agent.view.failures == 1
    assert "mcp-b" not in world.ports()
    result = await world.agent.step()  # what the retry timer wakes
    assert result is not None and result.scope.full
    assert world.ports() == {"mcp-a": 11100, "mcp-b": 11101}
    assert world.agent.view.ready
    # The event's time was kept across the failure: both registrations were measured.
    assert world.metric("mcp_bridge_event_to_registered_seconds_count") == 2


async def test_label_errors_and_waiting_reasons_are_logged_once(world: World) -> None:
    world.run("mcp-bad", labels={"mcp.port": "nope"})
    world.forwarders.taken.add(11100)
    world.run("mcp-a")
    with capture_logs() as logs:
        for _ in range(3):
            await world.full_pass()
    events = [(e["event"], e["container"]) for e in logs if "container" in e]
    assert events.count(("container_skipped", "mcp-bad")) == 1
    assert events.count(("container_waiting", "mcp-a")) == 1
    assert world.metric("mcp_bridge_errors_total", kind="labels") == 1
    assert world.metric("mcp_bridge_errors_total", kind="forwarder") == 1
    assert "cannot listen" in world.agent.view.waiting["mcp-a"].reason
    assert "mcp-a" not in world.ports(), "registered a port nothing listens on"
    world.forwarders.taken.clear()
    await world.full_pass()
    assert "mcp-a" in world.ports()


async def test_a_lost_store_is_rebuilt_from_what_live_containers_hold(tmp_path: Path) -> None:
    docker, consul = FakeDocker(), FakeConsul(NODE)
    docker.run("mcp-a", labels=NO_CHECK)
    docker.run("mcp-p", labels=NO_CHECK, published={8080: (PortBinding("0.0.0.0", 11101),)})
    # Consul still holds what the previous agent registered on a pool port; no store.
    consul.services[service_id(NODE, "mcp-a")] = own_service("mcp-a", 11102)
    with capture_logs() as logs:
        world = await make_world(tmp_path, docker=docker, consul=consul)
    try:
        assert any(e["event"] == "state_store_created" for e in logs)
        assert world.agent.pool is not None
        held = {a.owner: (a.port, a.kind) for a in world.agent.pool.state.allocations()}
        assert held == {"mcp-a": (11102, AllocKind.POOL), "mcp-p": (11101, AllocKind.EXTERNAL)}
        await world.full_pass()
        assert world.ports() == {"mcp-a": 11102, "mcp-p": 11101}
    finally:
        await world.agent.close()


async def test_probe_meta_reregisters_the_service_with_the_servers_identity(
    world: World,
) -> None:
    await world.on(world.run("mcp-a"))
    sid = service_id(NODE, "mcp-a")
    world.agent._on_probe_meta(sid, {"mcp_server_name": "weather", "mcp_protocol_version": "x"})
    await world.settle()
    assert world.consul.services[sid].meta["mcp_server_name"] == "weather"


async def test_the_watch_reconnects_after_a_lost_stream_and_asks_for_a_relist() -> None:
    docker = FakeDocker()
    seen: list[str] = []
    task = asyncio.create_task(
        watch(
            docker,
            on_event=lambda e: seen.append(e.action),
            on_connected=lambda engine: seen.append(f"connected to {engine.version}"),
            on_lost=lambda why: seen.append(f"lost: {why}"),
        )
    )
    for _ in range(100):
        await asyncio.sleep(0.001)
        if docker.queue is not None:
            break
    docker.run("mcp-a")
    docker.drop_stream("engine restarted")
    for _ in range(1000):
        await asyncio.sleep(0.001)
        if len(seen) == 4:
            break
    task.cancel()
    connected = "connected to 20.10.24"
    assert seen == [connected, "start", "lost: engine restarted", connected]


async def test_a_network_event_gets_a_second_look_when_the_listing_lags_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.loop.triggers.NETWORK_SECOND_LOOK", 0.01)
    labels = {**NO_CHECK, "mcp.expose": "internal", "mcp.network": "backend"}
    await world.on(world.run("mcp-a", labels=labels))
    assert "mcp-a" in world.agent.view.skipped  # not on that network yet
    container = world.docker.by_name("mcp-a")
    # The engine says "connected" before its listing shows the new network.
    await world.on(ContainerEvent(container.id, "network_connect", None))
    assert "mcp-a" in world.agent.view.skipped
    world.docker.containers[container.id] = replace(
        container, networks={"bridge": "172.17.0.2", "backend": "172.20.0.9"}
    )
    await asyncio.sleep(0.05)
    await world.settle()
    assert world.consul.services[service_id(NODE, "mcp-a")].address == "172.20.0.9"


async def test_podmans_health_event_gets_a_second_look_when_it_comes_before_the_result(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.loop.triggers.NETWORK_SECOND_LOOK", 0.01)
    await world.on(world.run("mcp-a", labels={"mcp.check": "docker"}))
    container = replace(world.docker.by_name("mcp-a"), health="starting")
    world.docker.containers[container.id] = container
    # Podman 4.3 says `health_status` (no result) before its inspect has the result.
    await world.on(ContainerEvent(container.id, "health_status", "mcp-a"))
    assert world.agent.view.health_of("mcp-a") == "starting"
    world.docker.containers[container.id] = replace(container, health="healthy")
    await asyncio.sleep(0.05)
    await world.settle()
    assert world.agent.view.health_of("mcp-a") == "healthy"


async def test_tool_records_go_with_their_service_and_orphans_after_a_full_listing(
    world: World,
) -> None:
    base = "mcp-bridge/n1/"
    world.consul.kv = {
        f"{base}n1:mcp-a/tools": b"{}",  # a running MCP server's: kept
        f"{base}n1:mcp-crashed/tools": b"{}",  # left by a crash: goes once listed
        "mcp-bridge/n2/n2:mcp-x/tools": b"{}",  # another bridge's: never touched
        "elsewhere/key": b"{}",
    }
    world.run("mcp-a", labels={})  # the default check is mcp: it keeps tools
    world.docker.down = "connection refused"
    world.agent.triggers.request_full()
    await world.agent.step()
    assert len(world.consul.kv) == 5, "deleted before a complete listing"  # and the owner lock
    world.docker.down = None
    await world.full_pass()
    assert set(world.consul.kv) == {
        f"{base}owner",  # the node id's lock, not a record
        f"{base}n1:mcp-a/tools",
        "mcp-bridge/n2/n2:mcp-x/tools",
        "elsewhere/key",
    }
    await world.on(world.docker.remove("mcp-a"))
    assert f"{base}n1:mcp-a/tools" not in world.consul.kv


async def test_a_withdrawn_services_record_is_deleted_only_once_its_check_has_stopped(
    tmp_path: Path,
) -> None:
    consul = ReceivedWrites(NODE)
    world = await make_world(
        tmp_path, consul=consul, checks=partial(CheckRunner, prober=FakeProbe())
    )
    key = f"mcp-bridge/{NODE}/{service_id(NODE, 'mcp-a')}/tools"
    try:
        await world.on(world.run("mcp-a", labels={}))  # the default check is mcp: tools
        await asyncio.wait_for(consul.received.wait(), 5)  # its check is writing the record
        world.agent.triggers.on_event(world.docker.remove("mcp-a"))
        withdrawal = asyncio.create_task(world.settle())
        await asyncio.sleep(0.05)
        consul.land.set()  # the write lands while the pass runs, or before it deletes
        await asyncio.wait_for(withdrawal, 5)
        for _ in range(20):
            await asyncio.sleep(0)
        assert service_id(NODE, "mcp-a") not in consul.services
        assert key not in consul.kv, "the check wrote the record again after the pass"
    finally:
        await world.agent.close()


async def test_internal_registrations_on_engine_28_warn_that_other_hosts_are_filtered(
    world: World,
) -> None:
    world.agent.view.engine = EngineVersion("28.5.2", "1.51")
    with capture_logs() as logs:
        await world.on(world.run("mcp-in", labels={**NO_CHECK, "mcp.expose": "internal"}))
        await world.on(world.run("mcp-px", labels=NO_CHECK))
    warned = [e for e in logs if e["event"] == "internal_address_filtered"]
    assert [e["container"] for e in warned] == ["mcp-in"]
    assert "allow-direct-routing" in warned[0]["hint"]


async def test_status_answers_at_once_when_consul_holds_its_checks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An agent cut from its servers may hold /v1/agent/checks while a sync times out.
    await world.on(world.run("mcp-a"))
    never = asyncio.Event()

    async def held() -> None:
        await never.wait()

    monkeypatch.setattr(world.consul, "checks", held)
    monkeypatch.setattr("bridge.loop.view.STATUS_CHECKS_WAIT", 0.05)
    report = await asyncio.wait_for(world.agent.status(), 5)
    assert [m["container"] for m in report["managed"]] == ["mcp-a"]
    assert report["managed"][0]["check_status"] is None
