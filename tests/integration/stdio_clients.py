"""The real MCP clients the stdio tests drive besides the 2.x SDK's own `Client`: the
SDK's 1.x line (`streamablehttp_client`, which cannot share a venv with 2.x: it runs in
the 1.x server's image, on the host's network to reach loopback) and the TypeScript SDK
(tests/fixtures/ts_client/client.mjs, installed by scripts/install-node-clients.sh).
Each connects, lists tools and calls one tool; many calls run at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from testcontainers.core.container import DockerContainer

from tests.integration.conftest import ROOT, TEST_LABEL, WAIT

# [url, tool, arguments] per call, all at once -> [protocolVersion, tool names, text] each
V1_CLIENT = """
import asyncio, json, sys
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

async def use(url, tool, arguments):
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            done = await session.initialize()
            tools = await session.list_tools()
            said = await session.call_tool(tool, arguments)
            return [done.protocolVersion, [t.name for t in tools.tools], said.content[0].text]

async def main(calls):
    print(json.dumps(await asyncio.gather(*(use(*call) for call in calls))))

asyncio.run(main(json.loads(sys.argv[1])))
"""


def v1_calls(image: str, calls: list[tuple[str, str, dict[str, Any]]]) -> list[list[Any]]:
    """The calls made at once by SDK 1.x clients, one client each."""
    client = (
        DockerContainer(image)
        .with_kwargs(network_mode="host", entrypoint="python3", labels={TEST_LABEL: "1"})
        .with_command(["-c", V1_CLIENT, json.dumps(calls)])
    )
    client.start()
    try:
        wrapped = client.get_wrapped_container()
        code = wrapped.wait(timeout=WAIT)["StatusCode"]
        out = wrapped.logs(stdout=True, stderr=False).decode()
        assert code == 0, wrapped.logs().decode()[-3000:]
        return list(json.loads(out.strip().splitlines()[-1]))
    finally:
        client.stop()


def v1_client(image: str, url: str) -> list[Any]:
    """One SDK 1.x client calling `echo` on the test servers' fixture."""
    return v1_calls(image, [(url, "echo", {"text": "from sdk 1.x"})])[0]


@pytest.fixture(scope="module")
def ts_client() -> str:
    """client.mjs on the official TypeScript SDK, installed by its script when missing."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "install-node-clients.sh")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


async def ts_call(script: str, url: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One TypeScript SDK client: {server, tools, said, isError}."""
    node = await asyncio.create_subprocess_exec(
        "node", script, url, tool, json.dumps(arguments),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(node.communicate(), WAIT)
    assert node.returncode == 0, err.decode()[-3000:]
    return dict(json.loads(out.decode().strip().splitlines()[-1]))
