"""`mcp-bridge client-config --format`, each used by a real client: a stdio server served by
a real agent behind BRIDGE_SERVE_TOKEN_FILE, advertised on the host's own address (not
loopback, so mcp-remote needs `--allow-http`); the CLI as a user runs it; then the SDK's
client over HTTP with the `mcp-json` entry, with the `vscode` entry once VS Code's input is
filled in, and the SDK's stdio client launching the `claude-desktop` command as written
(`npx` finds the mcp-remote installed by scripts/install-node-clients.sh)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bridge.core.net import detect_advertise_address
from tests.integration.agent_process import ROOT
from tests.integration.conftest import Bridge, bridge_world
from tests.integration.stdio_clients import ts_client
from tests.integration.test_mcp_eras import settled_check
from tests.integration.test_stdio_agent import run_stdio

pytestmark = pytest.mark.usefixtures("services")
__all__ = ["ts_client"]  # a fixture, found by name: it installs the Node clients


@pytest.fixture
def world(
    docker_client: docker.DockerClient, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Bridge, str]]:
    token = f"s3cret-{secrets.token_hex(8)}"
    (tmp_path / "token").write_text(token + "\n")
    env = {
        "BRIDGE_SERVE_TOKEN_FILE": str(tmp_path / "token"),
        "BRIDGE_ADVERTISE_ADDRESS": detect_advertise_address(),
    }
    with bridge_world(docker_client, tmp_path, request, env) as bridge:
        yield bridge, token


def client_config(bridge: Bridge, fmt: str, service: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "client-config", "--format", fmt, "--service", service],
        env={**os.environ, **bridge.agent.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def over_http(url: str, headers: dict[str, str]) -> str:
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        said = await client.call_tool("echo", {"text": "over http"})
        return str(said.content[0].text)  # type: ignore[union-attr]


async def through_mcp_remote(command: dict[str, Any], node_clients: Path) -> str:
    server = StdioServerParameters(
        command=command["command"],
        args=command["args"],
        env={**os.environ, **command.get("env", {})},
        cwd=node_clients,  # where `npx mcp-remote` finds the one installed for the tests
    )
    async with Client(server) as client:
        said = await client.call_tool("echo", {"text": "through mcp-remote"})
        return str(said.content[0].text)  # type: ignore[union-attr]


def test_each_format_is_used_by_a_real_client(
    world: tuple[Bridge, str], mcp_server_image: str, ts_client: str
) -> None:
    bridge, token = world
    address = bridge.agent.env["BRIDGE_ADVERTISE_ADDRESS"]
    assert address not in ("127.0.0.1", "localhost"), "needs a non-loopback address"
    bridge.agent.start()
    # a stdio server, served by its bridge behind the token
    run_stdio(bridge, mcp_server_image, "time", name=f"{bridge.tag}time")
    settled_check(bridge, "time", "passing")
    service = f"{bridge.tag}time"

    plain = client_config(bridge, "mcp-json", service)["mcpServers"][service]
    assert plain["type"] == "http" and plain["url"].startswith(f"http://{address}:")
    assert plain["headers"] == {"Authorization": f"Bearer {token}"}
    assert asyncio.run(over_http(plain["url"], plain["headers"])) == "over http"

    vscode = client_config(bridge, "vscode", service)
    entry = vscode["servers"][service]
    assert token not in json.dumps(vscode)  # asked for, not written down
    (asked,) = vscode["inputs"]
    filled = {  # what VS Code does with the value it was given
        k: v.replace(f"${{input:{asked['id']}}}", token) for k, v in entry["headers"].items()
    }
    assert entry["type"] == "http"
    assert asyncio.run(over_http(entry["url"], filled)) == "over http"
    unfilled = httpx2.post(entry["url"], headers=entry["headers"], json={}, timeout=10)
    assert unfilled.status_code == 401  # the input is what lets it in

    desktop = client_config(bridge, "claude-desktop", service)["mcpServers"][service]
    assert desktop["command"] == "npx" and "--allow-http" in desktop["args"]
    assert token not in " ".join(desktop["args"])  # in its environment only
    node_clients = Path(ts_client).parent
    said = asyncio.run(through_mcp_remote(desktop, node_clients))
    assert said == "through mcp-remote"
