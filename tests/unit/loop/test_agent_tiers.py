"""Tiers through the whole agent (fakes, tests/fakes.py): a tier fills, warns and
recovers on its own, and a reconfiguration never moves a held port."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from tests.agent_world import NO_CHECK, STALE_AFTER, make_world

CORE = {**NO_CHECK, "mcp.tier": "core"}


async def test_a_full_tier_makes_its_containers_wait_warns_once_and_recovers(
    tmp_path: Path,
) -> None:
    world = await make_world(tmp_path, port_range="11100-11107", port_tiers="core=11100-11101")
    try:
        with capture_logs() as logs:
            for name in ("mcp-a", "mcp-b", "mcp-c"):
                await world.on(world.run(name, labels=CORE))
            await world.on(world.run("mcp-plain"))
        assert world.ports() == {"mcp-a": 11100, "mcp-b": 11101, "mcp-plain": 11102}
        reason = world.agent.view.waiting["mcp-c"].reason
        assert "core" in reason and "exhausted" in reason and "11100-11101" in reason
        warned = [e for e in logs if e["event"] == "pool_nearly_exhausted"]
        assert [(e.get("tier"), e["used"], e["size"]) for e in warned] == [("core", 2, 2)]

        await world.on(world.docker.remove("mcp-a"))
        world.clock.now += STALE_AFTER
        with capture_logs() as logs:
            await world.full_pass()
            await world.full_pass()
        assert world.ports()["mcp-c"] == 11100
        assert world.agent.view.waiting == {}
        # Freed and taken again in one pass: still full, so neither a second warning
        # nor a relief.
        assert not [e for e in logs if e["event"].startswith("pool_")]

        await world.on(world.docker.remove("mcp-b"))
        world.clock.now += STALE_AFTER
        with capture_logs() as logs:
            await world.full_pass()
        relieved = [e for e in logs if e["event"] == "pool_pressure_relieved"]
        assert [(e.get("tier"), e["used"]) for e in relieved] == [("core", 1)]
    finally:
        await world.agent.close()


async def test_new_tiers_keep_a_held_port_and_report_it_once(tmp_path: Path) -> None:
    world = await make_world(tmp_path, port_range="11100-11107", port_tiers="core=11100-11101")
    await world.on(world.run("mcp-a", labels=CORE))
    assert world.ports() == {"mcp-a": 11100}
    await world.agent.close()

    # The same store and containers; core now lies elsewhere in the range.
    world = await make_world(
        tmp_path,
        docker=world.docker,
        consul=world.consul,
        port_range="11100-11107",
        port_tiers="core=11104-11105",
    )
    try:
        with capture_logs() as logs:
            await world.full_pass()
            await world.full_pass()
        assert world.ports() == {"mcp-a": 11100}, "a held port was moved"
        reported = [e for e in logs if e["event"] == "port_outside_tier"]
        assert [e["container"] for e in reported] == ["mcp-a"]
        assert "11100" in reported[0]["reason"] and "11104-11105" in reported[0]["reason"]
        assert world.agent.view.managed["mcp-a"].note == reported[0]["reason"]
        # A new container of that tier gets a port of the new block.
        await world.on(world.run("mcp-b", labels=CORE))
        assert world.ports()["mcp-b"] in (11104, 11105)
    finally:
        await world.agent.close()
