"""The MCP project's reference stdio servers from npm (server-everything, server-memory),
run as a user runs them (`docker run -d -i`, no label) and used through the agent by the
SDK's client in both eras: tools, progress, several clients at once; and a server killed
mid-call, whose waiting clients get an error at once instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from mcp import Client

from bridge.mcp.wire import modern_request
from tests.integration.conftest import Bridge, wait_for
from tests.integration.test_stdio_agent import FAST_CHECKS, passing, url_of

pytestmark = pytest.mark.usefixtures("services")

EVERYTHING = "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
MEMORY = "/app/node_modules/@modelcontextprotocol/server-memory/dist/index.js"
FILESYSTEM = "/app/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"


def run_npm(bridge: Bridge, image: str, name: str, command: list[str] | None = None) -> Any:
    return bridge.docker.containers.run(
        image,
        command=command,
        name=bridge.tag + name,
        detach=True,
        stdin_open=True,
        labels=bridge.labels(FAST_CHECKS, enable="true"),
    )


def text_of(result: Any) -> str:
    return str(result.content[0].text)


def test_server_everything_through_the_bridge_in_both_eras_with_progress(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "everything")
    check = passing(bridge, "everything")
    assert "ping answered" in check["Output"], check["Output"]  # a handshake-only server
    service = bridge.service("everything")
    assert service is not None
    assert service["Meta"]["mcp_server_name"] == "mcp-servers/everything"
    url = url_of(bridge, "everything")

    async def use(mode: str, n: int) -> tuple[str, str, int]:
        steps: list[float] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            steps.append(done)

        async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
            said = await client.call_tool("echo", {"message": f"client {n}"})
            total = await client.call_tool("get-sum", {"a": n, "b": 3})
            await client.call_tool(
                "trigger-long-running-operation",
                {"duration": 1, "steps": 3},
                progress_callback=progress,
            )
            return text_of(said), text_of(total), len(steps)

    async def main() -> list[tuple[str, str, int]]:
        return await asyncio.gather(*(use(("auto", "legacy")[n % 2], n) for n in range(4)))

    results = asyncio.run(main())
    for n, (said, total, steps) in enumerate(results):
        assert f"client {n}" in said and str(n + 3) in total
        assert steps == 3, f"client {n} got {steps} progress notifications"


def test_server_memory_keeps_what_one_client_stored_for_the_next(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "memory", ["node", MEMORY])
    passing(bridge, "memory")
    url = url_of(bridge, "memory")

    async def main() -> str:
        entity = {"name": "bridge", "entityType": "tool", "observations": ["serves stdio"]}
        async with Client(url, mode="legacy") as client:
            await client.call_tool("create_entities", {"entities": [entity]})
        async with Client(url) as client:  # another client, the other era: one process
            return text_of(await client.call_tool("read_graph", {}))

    assert "serves stdio" in asyncio.run(main())


def test_server_filesystem_reads_the_directory_it_was_given(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "files", ["node", FILESYSTEM, "/app"])
    passing(bridge, "files")

    async def main() -> tuple[set[str], str]:
        async with Client(url_of(bridge, "files")) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            said = await client.call_tool("list_directory", {"path": "/app"})
            return names, text_of(said)

    names, listing = asyncio.run(main())
    assert {"read_text_file", "list_directory"} <= names
    assert "node_modules" in listing


def test_a_server_killed_mid_call_answers_every_waiting_client_at_once(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    bridge.agent.start()
    container = run_npm(bridge, mcp_server_npm_image, "killed")
    passing(bridge, "killed")
    url = url_of(bridge, "killed")

    async def waiting(mode: str) -> str:
        async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
            try:
                await client.call_tool(
                    "trigger-long-running-operation", {"duration": 600, "steps": 2}
                )
            except Exception as exc:  # the bridge's JSON-RPC error, as the SDK raises it
                return str(exc)
            return "answered"

    async def main() -> list[str]:
        calls = [asyncio.create_task(waiting(m)) for m in ("auto", "legacy", "legacy")]
        await asyncio.to_thread(
            wait_for, "calls in flight", lambda: _in_flight(bridge, "killed") >= 3
        )
        container.kill(signal="SIGKILL")
        # Bounded only so that a hang fails the test instead of stalling the run.
        return await asyncio.wait_for(asyncio.gather(*calls), 120)

    said = asyncio.run(main())
    assert all("output ended" in s for s in said), said


def _in_flight(bridge: Bridge, name: str) -> int:
    for m in bridge.agent.status()["managed"]:
        if m["container"] == bridge.tag + name and m.get("stdio"):
            return int(m["stdio"]["in_flight"])
    return 0


def test_a_late_answer_from_before_a_bridge_sigkill_never_reaches_a_new_client(
    bridge: Bridge, mcp_server_npm_image: str
) -> None:
    """The process outlives the bridge and answers a call sent before the SIGKILL: the
    new bridge drops that answer (its ids are new), and its own clients get their own."""
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "late")
    passing(bridge, "late")
    url = url_of(bridge, "late")

    async def call_then_vanish() -> None:
        async with Client(url, mode="legacy") as client:
            await client.call_tool("trigger-long-running-operation", {"duration": 8, "steps": 1})

    async def first() -> None:
        task = asyncio.create_task(call_then_vanish())
        await asyncio.to_thread(
            wait_for, "the call in flight", lambda: _in_flight(bridge, "late") >= 1
        )
        await asyncio.to_thread(bridge.agent.kill)
        with contextlib.suppress(Exception):  # its bridge is gone: the client fails
            await asyncio.wait_for(task, 30)

    asyncio.run(first())
    bridge.agent.start()
    wait_for("served again", lambda: (s := _stdio(bridge, "late")) and s["state"] == "serving")

    async def second() -> list[str]:
        async def one(n: int) -> str:
            async with Client(url) as client:
                return text_of(await client.call_tool("echo", {"message": f"new {n}"}))

        return await asyncio.gather(*(one(n) for n in range(4)))

    said = asyncio.run(second())
    assert [f"new {n}" in s for n, s in enumerate(said)] == [True] * 4, said
    # The old call's answer came 8 s after it was sent, to the new bridge's attach: it
    # was dropped and counted, not delivered.
    wait_for("the late answer", lambda: (s := _stdio(bridge, "late")) and s["stray_answers"])
    assert [e["handshake"] for e in bridge.agent.events("stdio_attached")] == ["done", "kept"]


def _stdio(bridge: Bridge, name: str) -> dict[str, Any] | None:
    for m in bridge.agent.status()["managed"]:
        if m["container"] == bridge.tag + name:
            return m.get("stdio")  # type: ignore[no-any-return]
    return None


@pytest.mark.parametrize("era", ["handshake", "modern"])
def test_a_client_that_cancels_mid_call_is_heard_by_the_server(
    bridge: Bridge, mcp_server_npm_image: str, era: str
) -> None:
    """The server's SDK writes no answer for a request it was told is cancelled: so an
    answer the bridge no longer expects (a stray) would mean the cancellation never got
    there. Handshake era: `notifications/cancelled`; 2026-07-28: closing the response."""
    bridge.agent.start()
    run_npm(bridge, mcp_server_npm_image, "cancel")
    passing(bridge, "cancel")
    url = url_of(bridge, "cancel")
    slow = {"name": "trigger-long-running-operation", "arguments": {"duration": 3, "steps": 1}}

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            if era == "handshake":
                session = await _initialize(http, url)
                headers = {**JSON_HEADERS, "Mcp-Session-Id": session}
                body = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": slow}
                call = asyncio.create_task(_post(http, url, body, headers))
                await asyncio.to_thread(
                    wait_for, "in flight", lambda: _in_flight(bridge, "cancel") >= 1
                )
                cancel = {"requestId": 5, "reason": "the user gave up"}
                note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel}
                await _post(http, url, note, headers)
                answer = await asyncio.wait_for(call, 30)
                assert answer["error"]["code"] == -32800, answer  # cancelled, at once
            else:
                body, headers = modern_request("tools/call", "2026-07-28", 5, slow)
                call = asyncio.create_task(_post(http, url, body, {**JSON_HEADERS, **headers}))
                await asyncio.to_thread(
                    wait_for, "in flight", lambda: _in_flight(bridge, "cancel") >= 1
                )
                call.cancel()  # the client closes its stream
                with contextlib.suppress(asyncio.CancelledError):
                    await call
        await asyncio.sleep(5)  # past the operation's end: an unheard cancel would answer

    asyncio.run(main())
    wait_for("nothing in flight", lambda: _in_flight(bridge, "cancel") == 0)
    stdio = _stdio(bridge, "cancel")
    assert stdio is not None and stdio["stray_answers"] == 0, stdio


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


async def _post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        return dict(await response.json()) if response.status == 200 else {}


async def _initialize(http: aiohttp.ClientSession, url: str) -> str:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    async with http.post(url, json=body, headers=JSON_HEADERS) as response:
        session = response.headers["Mcp-Session-Id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await _post(http, url, done, {**JSON_HEADERS, "Mcp-Session-Id": session})
    return session
