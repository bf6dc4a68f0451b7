"""The agent with stdio containers, against the fakes: one inspect per container for its
stdin settings, registration on a pool port, the served set kept equal to the services,
and a served port that cannot be bound held back from Consul."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.model import Stdin, service_id
from tests.agent_world import NO_CHECK, World, make_world
from tests.builders import NODE

PIPE = Stdin(open=True, tty=False, once=False)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await make_world(tmp_path)
    yield w
    await w.agent.close()


def run_stdio(world: World, name: str, stdin: Stdin = PIPE) -> None:
    world.run(name, exposed=(), stdin=stdin)


async def test_a_stdio_container_is_registered_and_served_on_a_pool_port(world: World) -> None:
    run_stdio(world, "mcp-time")
    world.run("mcp-web")  # HTTP, forwarded
    await world.full_pass()
    assert sorted(world.ports().values()) == [11100, 11101]
    sid = service_id(NODE, "mcp-time")
    reg = world.consul.services[sid]
    assert reg.meta["container_transport"] == "stdio"
    assert reg.meta["transport"] == "streamable-http"
    served = world.stdio.open[sid]
    assert served.listen_port == reg.port and served.path == "/mcp"
    assert served.container_id == world.docker.by_name("mcp-time").id
    # Each goes to its own: the forwarder does not listen for the stdio server.
    assert set(world.forwarders.open) == {service_id(NODE, "mcp-web")}


async def test_stdin_settings_are_read_once_per_container(world: World) -> None:
    run_stdio(world, "mcp-time")
    world.run("mcp-web")
    for _ in range(3):
        await world.full_pass()
    # Only the container without a port was a stdio candidate, and it was asked once.
    assert world.docker.inspected == [world.docker.by_name("mcp-time").id]


async def test_a_removed_stdio_container_is_withdrawn_and_no_longer_served(world: World) -> None:
    run_stdio(world, "mcp-time")
    await world.full_pass()
    await world.on(world.docker.remove("mcp-time"))
    assert world.ports() == {} and world.stdio.open == {}


async def test_a_stdio_container_without_open_stdin_is_a_label_error(world: World) -> None:
    world.run(
        "mcp-closed",
        exposed=(),
        stdin=Stdin(open=True, tty=True, once=False),
        labels={**NO_CHECK, "mcp.transport": "stdio"},
    )
    await world.full_pass()
    assert world.ports() == {}
    status = await world.agent.status()
    skipped = {s["container"]: s for s in status["skipped"]}
    assert "TTY" in skipped["mcp-closed"]["reason"]


async def test_a_port_that_cannot_be_served_keeps_the_service_out_of_consul(
    world: World,
) -> None:
    world.stdio.taken.add(11100)
    run_stdio(world, "mcp-time")
    await world.full_pass()
    assert world.ports() == {}
    world.stdio.taken.clear()
    await world.full_pass()
    assert world.ports() == {"mcp-time": 11100}
