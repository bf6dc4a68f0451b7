"""`subscriptions/listen` from a 2026-07-28 client of a handshake-only server
(bridge/mcp/stdio/listen.py): what the server declared is granted and acknowledged first,
its list-change notifications follow, and the stream ends with the result when the
process does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.mcp.stdio.endpoint import ServeRules, StdioEndpoint
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.process import StdioServer
from bridge.mcp.wire import SUBSCRIPTION_ID_KEY
from tests.unit.mcp.test_stdio_endpoint import modern
from tests.unit.mcp.test_stdio_process import FakeProcess, echo_server

SHOOK = Handshake(
    "handshake",
    "2025-11-25",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {"listChanged": True}, "resources": {}},
        "serverInfo": {"name": "s"},
    },
)
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "subscriptions/listen",
}


async def test_list_changes_reach_a_modern_listener_until_the_process_ends() -> None:
    process = FakeProcess(echo_server)
    server = StdioServer(process, max_message=1 << 20, request_timeout=30)
    reading = asyncio.create_task(server.run())
    endpoint = StdioEndpoint(ServeRules())
    endpoint.serve(server, SHOOK)
    app = web.Application()
    endpoint.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        body: dict[str, Any] = modern("subscriptions/listen")
        body["params"]["notifications"] = {"toolsListChanged": True, "resourcesListChanged": True}
        response = await client.post("/mcp", data=json.dumps(body), headers=HEADERS)
        assert response.status == 200
        came: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def read() -> None:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    came.put_nowait(json.loads(line[5:]))

        reader = asyncio.create_task(read())
        events = [await came.get()]  # acknowledged: listening from now on
        process.say({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        process.say({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"})
        events.append(await came.get())
        process.exit()
        await asyncio.wait_for(reader, 10)
        while not came.empty():
            events.append(came.get_nowait())
    await reading
    assert events[0] == {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "notifications": {"toolsListChanged": True},  # resources: not declared
            "_meta": {SUBSCRIPTION_ID_KEY: 7},  # every frame names its subscription
        },
    }
    assert events[1] == {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {SUBSCRIPTION_ID_KEY: 7}},
    }
    ended = {"resultType": "complete", "_meta": {SUBSCRIPTION_ID_KEY: 7}}
    assert events[2:] == [{"jsonrpc": "2.0", "id": 7, "result": ended}]
    assert not server.mux.clients  # its channel closed
