"""Every kind of stdio server used by every kind of client, through one agent at once.

Servers: the official Python SDK 2.x (both eras) and 1.x (handshake only) on stdio, the
reference servers `mcp-server-time` and `mcp-server-git` (PyPI), `server-everything` and
`server-memory` (npm). Clients: the SDK 2.x `Client` negotiating the era itself and held to
the handshake era, SDK 1.x `streamablehttp_client`, and the TypeScript SDK's client. All
24 pairs run concurrently against the registered addresses: each lists the server's tools
and calls one, and gets its own answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from mcp import Client

from tests.integration.conftest import Bridge
from tests.integration.stdio_clients import ts_call, ts_client, v1_calls
from tests.integration.test_stdio_agent import FAST_CHECKS, passing, url_of
from tests.integration.test_stdio_reference import MEMORY

pytestmark = pytest.mark.usefixtures("services")
__all__ = ["ts_client"]  # a fixture, found by name


@dataclass(frozen=True)
class Kind:
    """A stdio server, and one call whose answer shows it served this client."""

    name: str
    image: str  # the fixture's name
    tool: str
    arguments: dict[str, Any]
    answer: str  # in the call's text
    has: str  # one of its tools
    command: list[str] | None = None
    sdk_fixture: bool = False  # the test servers' image: stdio by environment and label


def _kinds() -> list[Kind]:
    def echo(text: str) -> dict[str, Any]:
        return {"text": text}

    return [
        Kind("sdk2", "mcp_server_image", "echo", echo("sdk2 said"), "sdk2 said", "echo",
             sdk_fixture=True),
        Kind("sdk1", "mcp_server_v1_image", "echo", echo("sdk1 said"), "sdk1 said", "echo",
             sdk_fixture=True),
        Kind("time", "mcp_server_time_image", "get_current_time", {"timezone": "UTC"}, "UTC",
             "convert_time"),
        Kind("git", "mcp_server_git_image", "git_log", {"repo_path": "/repo", "max_count": 1},
             "A first commit", "git_status"),
        Kind("everything", "mcp_server_npm_image", "echo", {"message": "everything said"},
             "everything said", "get-sum"),
        Kind("memory", "mcp_server_npm_image", "read_graph", {}, "entities", "create_entities",
             command=["node", MEMORY]),
    ]  # fmt: skip


KINDS = _kinds()


def run(bridge: Bridge, kind: Kind, image: str) -> None:
    labels = {**FAST_CHECKS}
    if kind.sdk_fixture:
        labels["transport"] = "stdio"
    bridge.docker.containers.run(
        image,
        command=kind.command,
        name=bridge.tag + kind.name,
        detach=True,
        stdin_open=True,  # `docker run -d -i`: the reference images need nothing else
        environment={"MCP_TRANSPORT": "stdio"} if kind.sdk_fixture else None,
        labels=bridge.labels(labels, enable="true"),
    )


async def sdk2(url: str, kind: Kind, mode: str) -> tuple[list[str], str]:
    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        tools = await client.list_tools()
        said = await client.call_tool(kind.tool, kind.arguments)
        assert not said.is_error, said
        return [t.name for t in tools.tools], str(said.content[0].text)  # type: ignore[union-attr]


def test_each_client_kind_uses_each_server_kind_at_once(
    bridge: Bridge, ts_client: str, request: pytest.FixtureRequest
) -> None:
    bridge.agent.start()
    for kind in KINDS:
        run(bridge, kind, request.getfixturevalue(kind.image))
    for kind in KINDS:
        passing(bridge, kind.name)
    urls = {kind.name: url_of(bridge, kind.name) for kind in KINDS}
    v1_image = request.getfixturevalue("mcp_server_v1_image")

    async def main() -> dict[tuple[str, str], tuple[list[str], str]]:
        jobs: dict[tuple[str, str], Any] = {}
        for kind in KINDS:
            url = urls[kind.name]
            jobs[("sdk2 auto", kind.name)] = sdk2(url, kind, "auto")
            jobs[("sdk2 legacy", kind.name)] = sdk2(url, kind, "legacy")
            jobs[("typescript", kind.name)] = ts_call(ts_client, url, kind.tool, kind.arguments)
        calls = [(urls[k.name], k.tool, k.arguments) for k in KINDS]
        jobs[("sdk1", "all")] = asyncio.to_thread(v1_calls, v1_image, calls)
        done = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
        results: dict[tuple[str, str], tuple[list[str], str]] = {}
        for (client, server), got in done.items():
            if client == "typescript":
                assert not got["isError"], got
                results[(client, server)] = (got["tools"], got["said"])
            elif client == "sdk1":
                for kind, (version, tools, said) in zip(KINDS, got, strict=True):
                    assert version.startswith("20"), version  # a handshake revision
                    results[("sdk1", kind.name)] = (tools, said)
            else:
                results[(client, server)] = got
        return results

    results = asyncio.run(main())
    assert len(results) == 4 * len(KINDS)
    for (client, server), (tools, said) in results.items():
        kind = next(k for k in KINDS if k.name == server)
        assert kind.has in tools, (client, server, tools)
        assert kind.answer in said, (client, server, said)
