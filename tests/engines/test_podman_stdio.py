"""Stdio servers on Podman 4.3 and 5.4: its attach endpoint (Docker's, upgraded to a raw
stream) carries stdin and stdout/stderr apart, and a server killed mid-call answers every
waiting client at once. Unlike Docker, an attach that ends closes the server's stdin (conmon
is not asked to leave it open), so a bridge that restarts ends the process it was attached
to: the whole agent registers a real stdio MCP server run with `--restart=always`, serves it
in both protocol eras, and after `podman restart` and after a SIGKILL of the bridge serves
the restarted process again, on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bridge.docker.attach import STDOUT, attach
from bridge.docker.endpoint import Endpoint
from bridge.mcp.stdio.mux import PROCESS_ENDED
from tests.engines.dind import PODMAN, Engine, running
from tests.integration.conftest import IMAGE, WAIT, Bridge, bridge_world, build_image, wait_for
from tests.integration.test_attach import ECHO, SILENT, killed_mid_call
from tests.integration.test_stdio_agent import FAST_CHECKS, passing, url_of, use_all


@pytest.fixture(scope="module", params=list(PODMAN))
def engine(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient, mcp_server_image: str
) -> Iterator[Engine]:
    build_image(request.param)
    with running(request.param, docker_client) as started:
        started.load(docker_client, mcp_server_image)
        yield started


def endpoint(engine: Engine) -> Endpoint:
    return Endpoint(host="127.0.0.1", port=engine.port)


def run_i(engine: Engine, command: list[str]) -> Any:
    """As `podman run -d -i`: stdin open, not StdinOnce."""
    assert engine.client is not None
    return engine.client.containers.run(IMAGE, command, detach=True, stdin_open=True)


async def test_attach_carries_stdin_and_both_outputs_and_its_end_closes_stdin(
    engine: Engine,
) -> None:
    container = run_i(engine, ECHO)
    try:
        attached = await attach(endpoint(engine), container.id)
        out, err = b"", b""
        await attached.write(b"round 0\n")
        async with asyncio.timeout(WAIT):
            async for stream, payload in attached.frames():
                if stream == STDOUT:
                    out += payload
                else:
                    err += payload
                if out.endswith(b"\n") and err.endswith(b"\n"):
                    break
        assert (out, err) == (b"round 0\n", b"err round 0\n")
        await attached.close()
        # Docker would leave stdin open (tests/integration/test_attach.py); Podman closes
        # it, and the shell's `read` loop ends with the container.
        wait_for("the process ended", lambda: container.reload() or container.status != "running")
    finally:
        container.remove(force=True)


async def test_a_server_killed_mid_call_answers_every_client_at_once(engine: Engine) -> None:
    container = run_i(engine, SILENT)
    try:
        server, _, answers = await killed_mid_call(endpoint(engine), container.id, container)
        assert [a["error"]["code"] for a in answers] == [PROCESS_ENDED] * 3
        assert not server.mux.pending
    finally:
        container.remove(force=True)


@pytest.fixture
def world(engine: Engine, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Bridge]:
    assert engine.client is not None
    env = {"DOCKER_HOST": engine.url, "BRIDGE_RESYNC_INTERVAL": "10m"}
    with bridge_world(engine.client, tmp_path, request, env) as bridge:
        bridge.agent.start()
        yield bridge


def test_a_stdio_server_is_served_again_after_its_restart_and_the_bridges(
    world: Bridge, mcp_server_image: str
) -> None:
    container = world.docker.containers.run(
        mcp_server_image,
        name=world.tag + "s",
        detach=True,
        stdin_open=True,
        environment={"MCP_TRANSPORT": "stdio"},
        labels=world.labels(FAST_CHECKS, enable="true", transport="stdio"),
        restart_policy={"Name": "always"},  # Podman ends it when the bridge's attach ends
    )
    check = passing(world, "s")
    assert "over stdio" in check["Output"], check["Output"]
    url = url_of(world, "s")
    use_all(url)
    container.restart(timeout=2)
    wait_for("attached again", lambda: len(world.agent.events("stdio_attached")) >= 2)
    passing(world, "s")
    assert url_of(world, "s") == url  # the same port
    use_all(url, 2)

    world.agent.kill()  # SIGKILL: the attach ends with the process, and the server's stdin
    world.agent.start()
    wait_for("attached by the new agent", lambda: len(world.agent.events("stdio_attached")) >= 3)
    passing(world, "s")
    assert url_of(world, "s") == url
    use_all(url, 2)
    # the server's process was restarted (a new handshake), not attached to again
    assert world.agent.events("stdio_attached")[-1]["handshake"] == "done"
