"""Real stdio MCP servers in containers, attached and served as Streamable HTTP by the
bridge's stdio endpoint (bridge/mcp/stdio/), used by the official SDK's own clients: the
2.x `Client` in both eras, the 1.x line's `streamablehttp_client`, and the TypeScript
SDK's client (scripts/install-node-clients.sh), several at once.
The endpoint on its own, without the agent (test_stdio_agent.py has the agent): the
attach, the shared process, the one handshake and the era translation with real peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from mcp import Client

from bridge.docker.attach import attach
from bridge.docker.endpoint import endpoint_from_env
from bridge.mcp.stdio.endpoint import ServeRules, StdioEndpoint
from bridge.mcp.stdio.handshake import handshake, own_channel, round_trip
from bridge.mcp.stdio.process import StdioServer
from tests.integration.conftest import free_tcp_port
from tests.integration.stdio_clients import ts_call, ts_client, v1_client
from tests.integration.test_attach import started

pytestmark = pytest.mark.usefixtures("services")
__all__ = ["ts_client"]  # a fixture, found by name


@asynccontextmanager
async def served(image: str, **env: str) -> AsyncIterator[tuple[str, StdioServer, Any]]:
    """The image run with `-i`, attached, its handshake done, served on a loopback port."""
    container = started(image, MCP_TRANSPORT="stdio", **env)
    runner: web.AppRunner | None = None
    try:
        stream = await attach(endpoint_from_env(), container.get_wrapped_container().id)
        server = StdioServer(stream, max_message=4 << 20, request_timeout=60)
        reading = asyncio.create_task(server.run())
        own = own_channel(server)
        shook = await asyncio.wait_for(handshake(server, own), 60)
        endpoint = StdioEndpoint(ServeRules())
        endpoint.serve(server, shook)
        app = web.Application()
        endpoint.add_routes(app)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        port = free_tcp_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}/mcp", server, (shook, own)
        assert "result" in await round_trip(server, own, shook)
        await endpoint.gone()  # its sessions' streams end (clients may leave them open)
        reading.cancel()
    finally:
        if runner is not None:
            await runner.cleanup()
        container.stop()


async def use(url: str, mode: str, who: int) -> list[str]:
    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        tools = await client.list_tools()
        said = await client.call_tool("echo", {"text": f"client {who}"})
        return [t.name for t in tools.tools] + [said.content[0].text]  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_many_clients_share_one_sdk2_server_in_either_era(
    mcp_server_image: str, mode: str
) -> None:
    async with served(mcp_server_image) as (url, server, (shook, _)):
        assert shook.era == "modern"  # the SDK 2.x server answers server/discover
        results = await asyncio.gather(*(use(url, mode, n) for n in range(8)))
        assert results == [["echo", f"client {n}"] for n in range(8)]
        assert not server.mux.pending and server.counters.stray_answers == 0


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_handshake_only_server_serves_clients_of_both_eras(
    mcp_server_v1_image: str, mode: str
) -> None:
    async with served(mcp_server_v1_image) as (url, server, (shook, _)):
        assert shook.era == "handshake"  # SDK 1.x: no server/discover
        results = await asyncio.gather(*(use(url, mode, n) for n in range(4)))
        assert results == [["echo", f"client {n}"] for n in range(4)]
        assert not server.mux.pending


@pytest.mark.parametrize("server_image", ["mcp_server_image", "mcp_server_v1_image"])
async def test_the_sdk_1x_client_uses_either_server(
    server_image: str, mcp_server_v1_image: str, request: pytest.FixtureRequest
) -> None:
    image = request.getfixturevalue(server_image)
    async with served(image) as (url, server, _):
        said = await asyncio.to_thread(v1_client, mcp_server_v1_image, url)
        assert said[1:] == [["echo"], "from sdk 1.x"]
        assert said[0].startswith("20")  # the handshake revision it was answered with
        assert not server.mux.pending


@pytest.mark.parametrize("server_image", ["mcp_server_image", "mcp_server_v1_image"])
async def test_the_typescript_sdk_client_uses_either_server(
    server_image: str, ts_client: str, request: pytest.FixtureRequest
) -> None:
    image = request.getfixturevalue(server_image)
    async with served(image) as (url, server, _):
        said = await asyncio.gather(
            *(ts_call(ts_client, url, "echo", {"text": f"ts client {n}"}) for n in range(4))
        )
        assert [(s["tools"], s["said"]) for s in said] == [
            (["echo"], f"ts client {n}") for n in range(4)
        ]
        assert not server.mux.pending
