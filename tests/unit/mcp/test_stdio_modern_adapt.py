"""2026-07-28 clients of a handshake-only server, for what that revision does per request
and the server does per connection (bridge/mcp/stdio/connection.py, listen.py): a request
that opts in to logs gets the server's log messages at its level while it runs, and no
one else's news; `resourceSubscriptions` of a listen stream are subscribed on the shared
connection while it is open; a server request made for such a client is refused with the
reason, at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.mcp.stdio.endpoint import ServeRules, StdioEndpoint
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.process import StdioServer
from bridge.mcp.wire import LOG_LEVEL_KEY, SUBSCRIPTION_ID_KEY
from tests.unit.mcp.test_stdio_endpoint import modern
from tests.unit.mcp.test_stdio_process import FakeProcess, Handler, echo_server

SHOOK = Handshake(
    "handshake",
    "2025-11-25",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {"tools": {}, "logging": {}, "resources": {"subscribe": True}},
        "serverInfo": {"name": "s"},
    },
)


async def wait_until(predicate: Any, seconds: float = 10) -> None:
    """Polled, bounded: a regression fails here instead of hanging the run."""
    for _ in range(int(seconds * 100)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {seconds:g}s")


def headers(method: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
    }


def log(level: str, data: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": level, "data": data},
    }


def tool_call(level: str | None = None) -> dict[str, Any]:
    body = modern("tools/call")
    body["params"]["name"] = "work"
    if level is not None:
        body["params"]["_meta"][LOG_LEVEL_KEY] = level
    return body


async def events(response: Any) -> list[dict[str, Any]]:
    if response.content_type == "application/json":
        return [await response.json()]
    return [
        json.loads(line[5:])
        for line in (await response.text()).splitlines()
        if line.startswith("data:")
    ]


async def serve(
    handle: Handler, capabilities: dict[str, Any] | None = None
) -> tuple[FakeProcess, StdioEndpoint, web.Application]:
    process = FakeProcess(handle)
    server = StdioServer(process, max_message=1 << 20, request_timeout=30)
    asyncio.create_task(server.run())  # noqa: RUF006 - ends with the process
    endpoint = StdioEndpoint(ServeRules())
    shook = SHOOK
    if capabilities is not None:
        shook = Handshake(
            "handshake", SHOOK.version, {**SHOOK.result, "capabilities": capabilities}
        )
    endpoint.serve(server, shook)
    app = web.Application()
    endpoint.add_routes(app)
    return process, endpoint, app


def logging_server(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool that logs at two levels while it works, and the connection's other news."""
    if message.get("method") == "tools/call":
        return [
            log("debug", "detail"),
            log("error", "trouble"),
            {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
            {"jsonrpc": "2.0", "method": "notifications/elicitation/complete", "params": {}},
            {"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}},
        ]
    return echo_server(message)


async def test_a_request_opted_in_to_logs_gets_them_at_its_level_while_it_runs() -> None:
    process, endpoint, app = await serve(logging_server)
    async with TestClient(TestServer(app)) as client:
        opted = await client.post("/mcp", json=tool_call("warning"), headers=headers("tools/call"))
        said = await events(opted)
        plain = await client.post("/mcp", json=tool_call(), headers=headers("tools/call"))
        unsaid = await events(plain)
        json_only = {**headers("tools/call"), "Accept": "application/json"}
        unstreamed = await client.post("/mcp", json=tool_call("debug"), headers=json_only)
        assert (await unstreamed.json())["id"] == 7
    assert [e.get("params", {}).get("data") for e in said[:-1]] == ["trouble"]  # not debug
    assert said[-1]["id"] == 7 and said[-1]["result"]["resultType"] == "complete"
    assert [e["id"] for e in unsaid] == [7]  # not opted in: no logs, and never other news
    asks = [m["params"] for m in process.seen if m.get("method") == "logging/setLevel"]
    # its level while it ran, then back to quiet; none for a client that cannot stream
    assert asks == [{"level": "warning"}, {"level": "info"}]
    calls = [m for m in process.seen if m.get("method") == "tools/call"]
    assert all(LOG_LEVEL_KEY not in c["params"].get("_meta", {}) for c in calls)  # not its era
    assert not endpoint.connection.shared.levels  # let go of when the request ended
    process.exit()


async def test_a_level_the_server_refuses_leaves_the_request_served_without_logs() -> None:
    def refusing(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") == "logging/setLevel":
            return [
                {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "no"}}
            ]
        return logging_server(message)

    process, endpoint, app = await serve(refusing)
    async with TestClient(TestServer(app)) as client:
        for level in ("debug", "loud"):  # refused by the server; unknown to the revision
            response = await client.post(
                "/mcp", json=tool_call(level), headers=headers("tools/call")
            )
            said = await events(response)
            assert [e.get("id") for e in said] == [7] and "result" in said[0]  # no logs
    assert not endpoint.connection.shared.levels
    assert len([m for m in process.seen if m.get("method") == "tools/call"]) == 2
    process.exit()


async def test_a_server_without_logging_is_not_asked_for_a_level() -> None:
    process, _, app = await serve(logging_server, capabilities={"tools": {}})
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/mcp", json=tool_call("debug"), headers=headers("tools/call"))
        assert [e.get("id") for e in await events(response)] == [7]
    assert not [m for m in process.seen if m.get("method") == "logging/setLevel"]
    process.exit()


async def test_a_client_gone_while_its_level_is_set_leaves_nothing_behind() -> None:
    def slow_level(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [] if message.get("method") == "logging/setLevel" else logging_server(message)

    process, endpoint, app = await serve(slow_level)
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        posting = asyncio.ensure_future(
            client.post("/mcp", json=tool_call("debug"), headers=headers("tools/call"))
        )
        await wait_until(lambda: any(m.get("method") == "logging/setLevel" for m in process.seen))
        posting.cancel()  # the client leaves before the server answered the level
        await asyncio.gather(posting, return_exceptions=True)
        await wait_until(lambda: not endpoint.connection.shared.levels)
    process.exit()


async def test_a_server_request_for_a_modern_client_is_refused_with_the_reason() -> None:
    def asking(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") == "tools/call":
            asking.call_id = message["id"]  # type: ignore[attr-defined]
            return [
                {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}}
            ]
        if message.get("id") == "s1" and "error" in message:  # refused: the tool says so
            text = message["error"]["message"]
            result = {"content": [{"type": "text", "text": text}], "isError": True}
            return [{"jsonrpc": "2.0", "id": asking.call_id, "result": result}]  # type: ignore[attr-defined]
        return []

    process, _, app = await serve(asking)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/mcp", json=tool_call(), headers=headers("tools/call"))
        (answer,) = await events(response)
    assert answer["result"]["isError"] is True
    assert "connect in the handshake era" in answer["result"]["content"][0]["text"]
    process.exit()


async def test_resource_subscriptions_of_a_listen_stream_are_held_while_it_is_open() -> None:
    process, endpoint, app = await serve(echo_server)
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        body = modern("subscriptions/listen")
        body["params"]["notifications"] = {"resourceSubscriptions": ["a://1", 5, "a://1"]}
        response = await client.post("/mcp", json=body, headers=headers("subscriptions/listen"))
        came: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def read() -> None:
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    came.put_nowait(json.loads(line[5:]))

        reader = asyncio.create_task(read())
        acknowledged = await asyncio.wait_for(came.get(), 10)
        for uri in ("a://2", "a://1"):
            update = {"uri": uri}
            process.say(
                {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": update}
            )
        updated = await asyncio.wait_for(came.get(), 10)
        response.close()  # the client leaves: the server is told, in the background
        reader.cancel()
        await wait_until(
            lambda: any(m.get("method") == "resources/unsubscribe" for m in process.seen)
        )
    assert acknowledged["params"]["notifications"] == {"resourceSubscriptions": ["a://1"]}
    assert updated["params"] == {
        "uri": "a://1",
        "_meta": {SUBSCRIPTION_ID_KEY: 7},
    }  # a://2: nobody's
    asked = [(m["method"], m["params"]) for m in process.seen if "resources/" in m["method"]]
    assert asked == [
        ("resources/subscribe", {"uri": "a://1"}),
        ("resources/unsubscribe", {"uri": "a://1"}),
    ]
    assert not endpoint.connection.shared.subscribers
    process.exit()
