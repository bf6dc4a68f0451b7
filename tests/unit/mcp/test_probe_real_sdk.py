"""The probe, the tool listing and the change stream against real servers on the official
MCP SDK (tests/fixtures/mcp_server.py as loopback processes: no containers needed), and
`client-config`'s entries opened by the SDK's own client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from mcp.client import Client

from bridge.consul.catalog import Instance, client_config
from bridge.mcp.probe import probe
from bridge.mcp.tools import listen_for_changes
from bridge.mcp.wire import CLIENT_INFO, RpcError, post, request

FIXTURE = Path(__file__).parents[2] / "fixtures" / "mcp_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(**env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(FIXTURE)],
        env={**os.environ, "MCP_HOST": "127.0.0.1", "MCP_PORT": str(port), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}/mcp"
        if proc.poll() is not None:
            raise AssertionError(f"fixture server exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("fixture server did not listen within 30 s")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """One of each: both eras (the SDK's default), modern only, protected, dynamic tools."""
    started = {
        "both": start(),
        "modern": start(MCP_ERAS="modern"),
        "protected": start(MCP_AUTH_TOKEN="s3cret"),
        "dynamic": start(MCP_DYNAMIC_TOOLS="1"),
    }
    yield {name: url for name, (_, url) in started.items()}
    for proc, _ in started.values():
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("kind", ["both", "modern"])
async def test_a_current_sdk_server_passes_on_the_modern_revision(
    servers: dict[str, str], http: aiohttp.ClientSession, kind: str
) -> None:
    result = await probe(http, servers[kind], "streamable-http", 5.0, want_tools=True)
    assert result.status == "passing", result.output
    assert result.meta == {
        "mcp_server_name": "fixture-mcp",
        "mcp_server_version": "1.0.0",
        "mcp_protocol_version": "2026-07-28",
    }
    assert "MCP 2026-07-28 OK: server/discover" in result.output
    assert [t["name"] for t in result.tools or []] == ["echo"]
    assert result.tools and result.tools[0]["inputSchema"]["properties"]["text"]


async def test_the_modern_only_server_really_refuses_the_handshake(
    servers: dict[str, str], http: aiohttp.ClientSession
) -> None:
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": CLIENT_INFO}
    with pytest.raises(RpcError) as refused:
        await post(http, servers["modern"], request("initialize", 1, hello))
    assert refused.value.code == -32022


async def test_a_protected_server_is_reported_as_such(
    servers: dict[str, str], http: aiohttp.ClientSession
) -> None:
    result = await probe(http, servers["protected"], "streamable-http", 5.0)
    assert result.status == "warning"
    assert "MCP authorization required" in result.output and "resource_metadata" in result.output


async def test_a_changed_tool_list_is_heard_at_once(
    servers: dict[str, str], http: aiohttp.ClientSession
) -> None:
    url = servers["dynamic"]
    heard = asyncio.Event()
    listener = asyncio.create_task(listen_for_changes(http, url, "2026-07-28", heard.set))
    try:
        await asyncio.sleep(0.3)  # the stream is acknowledged before anything is sent on it
        async with Client(url) as client:
            await client.call_tool("add_tool", {"name": "late"})
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        listener.cancel()
    result = await probe(http, url, "streamable-http", 5.0, want_tools=True)
    assert "late" in [t["name"] for t in result.tools or []]


async def test_client_config_entries_open_in_the_sdks_client(servers: dict[str, str]) -> None:
    def instance(service: str, url: str, health: str) -> Instance:
        host, _, rest = url.removeprefix("http://").partition(":")
        port, _, path = rest.partition("/")
        return Instance(
            service, f"n1:{service}", "n1", host, int(port), health, "streamable-http",
            "/" + path, "2026-07-28", 1, "n1", url,
        )  # fmt: skip

    config = client_config(
        [
            instance("both", servers["both"], "passing"),
            instance("modern", servers["modern"], "passing"),
            instance("broken", "http://127.0.0.1:9/mcp", "critical"),
        ]
    )
    assert set(config["mcpServers"]) == {"both", "modern"}
    for entry in config["mcpServers"].values():
        assert entry["type"] == "http"
        async with Client(entry["url"]) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
