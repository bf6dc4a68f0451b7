"""One bridge per node id: a second bridge wrongly started with the same BRIDGE_NODE_ID
touches nothing in Consul and says so (log, status, readiness); the first one restarted is
not a second bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.consul.ownership import owner_key
from bridge.core.findings import Level
from bridge.core.model import service_id
from bridge.surface.doctor import check_node_id
from tests.agent_world import World, make_world
from tests.fakes import FakeConsul

NODE = "host-a"


@pytest.fixture
async def twins(tmp_path: Path) -> AsyncIterator[tuple[World, World]]:
    """Two bridges with one node id, on two hosts of one cluster (each its own state)."""
    first_consul, second_consul = FakeConsul(NODE), FakeConsul(NODE)
    second_consul.share_kv(first_consul)
    first = await make_world(tmp_path / "first", consul=first_consul, node_id=NODE)
    second = await make_world(tmp_path / "second", consul=second_consul, node_id=NODE)
    yield first, second
    await first.agent.close()
    await second.agent.close()


async def test_the_second_bridge_on_a_node_id_touches_nothing_and_says_who_holds_it(
    twins: tuple[World, World],
) -> None:
    first, second = twins
    await first.on(first.run("mcp-a"))
    assert service_id(NODE, "mcp-a") in first.consul.services
    kv_before = dict(first.consul.kv)

    second.run("mcp-b")
    with capture_logs() as logs:
        second.agent.triggers.request_full()
        assert await second.agent.step() is None  # the pass fails, and is retried
        await second.agent.step()
        assert second.agent.claim is not None
        await second.agent.claim.check()  # as keep() does every third of the session TTL
    assert second.consul.services == {} and second.consul.writes == []
    assert first.consul.kv == kv_before, "the second bridge wrote to the first's keys"
    conflicts = [e for e in logs if e["event"] == "node_id_conflict"]
    assert len(conflicts) == 1, "one event per thing that happened"
    assert "host" in conflicts[0]["holder"] and "instance" in conflicts[0]["holder"]

    report = await second.agent.status()
    assert report["node_id_conflict"] and not report["ready"]
    assert (await first.agent.status())["node_id_conflict"] is None
    assert second.metric("mcp_bridge_errors_total", kind="node_id_conflict") >= 1

    # The first bridge stops (its session ends): the second, checking as it does every
    # third of its session's TTL, takes the node id over and relists at once.
    second.agent.session.ttl = 1  # checks every third of a second
    regained = asyncio.Event()

    def on_regained() -> None:
        regained.set()
        second.agent.triggers.request_full()

    keeping = asyncio.create_task(second.agent.claim.keep(on_regained=on_regained))
    await first.agent.close()
    await asyncio.wait_for(regained.wait(), 10)
    keeping.cancel()
    await second.settle()
    assert service_id(NODE, "mcp-b") in second.consul.services
    assert (await second.agent.status())["node_id_conflict"] is None


async def test_a_restarted_bridge_takes_its_node_id_back_from_its_old_session(
    tmp_path: Path,
) -> None:
    consul = FakeConsul(NODE)
    before = await make_world(tmp_path, consul=consul, node_id=NODE)
    await before.on(before.run("mcp-a"))
    old_session = before.agent.session.id
    # Killed: no close, so its session (and lock) live on until the TTL.
    assert before.agent.pool is not None
    await before.agent.pool.close()
    assert consul.locks[owner_key("mcp-bridge", NODE)] == old_session

    after = await make_world(tmp_path, consul=consul, docker=before.docker, node_id=NODE)
    try:
        await after.full_pass()
        assert after.agent.claim is not None and after.agent.claim.conflict is None
        assert consul.locks[owner_key("mcp-bridge", NODE)] == after.agent.session.id
        assert old_session not in consul.sessions
        assert service_id(NODE, "mcp-a") in consul.services
    finally:
        await after.agent.close()


async def test_a_lost_session_is_made_anew_and_the_node_id_claimed_again(
    tmp_path: Path,
) -> None:
    world = await make_world(tmp_path, consul=FakeConsul(NODE), node_id=NODE)
    try:
        await world.full_pass()
        claim, lost = world.agent.claim, world.agent.session.id
        assert claim is not None and lost is not None
        await world.consul.session_destroy(lost)  # Consul restarted without its data
        assert not world.agent.triggers.take().full
        await claim.check()
        assert claim.held and world.agent.session.id != lost
        # Its other locks (the fleet's users/) went too: a full pass takes them again.
        assert world.agent.triggers.take().full
        assert world.consul.locks[owner_key("mcp-bridge", NODE)] == world.agent.session.id
    finally:
        await world.agent.close()


async def test_doctor_tells_this_bridge_from_another_on_the_node_id(tmp_path: Path) -> None:
    consul = FakeConsul(NODE)
    this = await make_world(tmp_path / "this", consul=consul, node_id=NODE)
    other = await make_world(tmp_path / "other", consul=FakeConsul(NODE), node_id=NODE)
    try:
        free = await check_node_id(consul, this.agent.settings.state_file)
        assert free.level is Level.OK and "free" in free.detail
        await this.full_pass()
        mine = await check_node_id(consul, this.agent.settings.state_file)
        assert mine.level is Level.OK and "held by this bridge" in mine.detail
        theirs = await check_node_id(consul, other.agent.settings.state_file)
        assert theirs.level is Level.FAIL and "another bridge" in theirs.detail
        unknown = await check_node_id(consul, tmp_path / "nowhere" / "state.db")
        assert unknown.level is Level.WARN  # no state here: maybe this host's own bridge
    finally:
        await this.agent.close()
        await other.agent.close()


async def test_a_token_without_session_rights_registers_and_warns_once(tmp_path: Path) -> None:
    consul = FakeConsul(NODE)
    consul.refuse_sessions = True
    world = await make_world(tmp_path, consul=consul, node_id=NODE)
    try:
        with capture_logs() as logs:
            await world.on(world.run("mcp-a"))
            await world.on(world.run("mcp-b"))
        assert {service_id(NODE, "mcp-a"), service_id(NODE, "mcp-b")} <= set(consul.services)
        assert [e["event"] for e in logs].count("node_id_unclaimed") == 1
        assert consul.session_attempts == 1, "asked again on every pass"
        assert owner_key("mcp-bridge", NODE) not in consul.kv
    finally:
        await world.agent.close()
