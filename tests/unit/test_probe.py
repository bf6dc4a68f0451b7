"""The MCP probe against a local aiohttp server playing each kind of answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.probe import probe

INIT_RESULT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "serverInfo": {"name": "demo", "version": "4.5.6"},
}


class Server:
    def __init__(self) -> None:
        self.mode = "json"
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.sse_queue: asyncio.Queue[str] = asyncio.Queue()

    async def mcp(self, request: web.Request) -> web.StreamResponse:
        self.calls.append((request.method, request.path, dict(request.headers)))
        if request.method == "DELETE":
            return web.Response(status=200)
        body = await request.json()
        if body.get("method") == "notifications/initialized":
            return web.Response(status=202)
        assert body["method"] == "initialize"
        assert "text/event-stream" in request.headers["Accept"]
        answer = {"jsonrpc": "2.0", "id": body["id"], "result": INIT_RESULT}
        if self.mode == "json":
            return web.json_response(answer, headers={"Mcp-Session-Id": "abc"})
        if self.mode == "sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b": comment\n\nevent: message\ndata: ")
            await response.write(json.dumps(answer).encode() + b"\n\n")
            return response
        if self.mode == "json-in-pieces":
            # One JSON body, sent in two writes with a pause: the probe must read to EOF.
            text = json.dumps(answer).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(text)
            await response.prepare(request)
            await response.write(text[:40])
            await asyncio.sleep(0.05)
            await response.write(text[40:])
            return response
        if self.mode == "error":
            return web.json_response(
                {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad params"}}
            )
        if self.mode == "http500":
            return web.Response(status=500, text="boom")
        if self.mode == "html":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if self.mode == "odd":
            return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"capabilities": {}}})
        if self.mode == "slow":
            await asyncio.sleep(0.6)
            return web.json_response(answer)
        if self.mode == "hang":
            await asyncio.sleep(3)
        raise AssertionError(self.mode)

    async def legacy_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: /messages?session_id=s1\n\n")
        answer = await self.sse_queue.get()
        await response.write(f"event: message\ndata: {answer}\n\n".encode())
        return response

    async def legacy_post(self, request: web.Request) -> web.Response:
        assert request.query["session_id"] == "s1"
        body = await request.json()
        await self.sse_queue.put(
            json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": INIT_RESULT})
        )
        return web.Response(status=202)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str, aiohttp.ClientSession]]:
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/mcp", state.mcp)
    app.router.add_get("/sse", state.legacy_stream)
    app.router.add_post("/messages", state.legacy_post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()
    yield state, f"http://127.0.0.1:{port}", session
    await session.close()
    await runner.cleanup()


Fixture = tuple[Server, str, aiohttp.ClientSession]


async def test_json_answer_passes_with_meta_and_ends_the_session(server: Fixture) -> None:
    state, base, session = server
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.status == "passing", result.output
    assert result.meta == {
        "mcp_server_name": "demo",
        "mcp_server_version": "4.5.6",
        "mcp_protocol_version": "2025-06-18",
    }
    assert "demo" in result.output
    methods = [(m, h.get("Mcp-Session-Id")) for m, _, h in state.calls]
    assert methods == [("POST", None), ("POST", "abc"), ("DELETE", "abc")]


async def test_json_answer_in_pieces_passes(server: Fixture) -> None:
    state, base, session = server
    state.mode = "json-in-pieces"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.status == "passing", result.output


async def test_sse_answer_passes(server: Fixture) -> None:
    state, base, session = server
    state.mode = "sse"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.status == "passing", result.output
    assert [m for m, _, _ in state.calls] == ["POST"]  # no session id: nothing to end


async def test_legacy_sse_transport_passes(server: Fixture) -> None:
    _, base, session = server
    result = await probe(session, base + "/sse", "sse", 2.0)
    assert result.status == "passing", result.output
    assert result.meta["mcp_server_name"] == "demo"


@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [
        ("error", "critical", "JSON-RPC error -32602: bad params"),
        ("http500", "critical", "HTTP 500"),
        ("html", "critical", "unexpected Content-Type 'text/html'"),
        ("odd", "warning", "lacks mcp_server_name, mcp_protocol_version"),
        ("slow", "warning", "slow"),
        ("hang", "critical", "no answer to MCP initialize within 1s"),
    ],
)
async def test_bad_answers_say_why(server: Fixture, mode: str, status: str, words: str) -> None:
    state, base, session = server
    state.mode = mode
    result = await probe(session, base + "/mcp", "streamable-http", 1.0)
    assert (result.status, words in result.output) == (status, True), result.output


async def test_nothing_listening_is_critical_with_the_reason() -> None:
    async with aiohttp.ClientSession() as session:
        result = await probe(session, "http://127.0.0.1:9/mcp", "streamable-http", 2.0)
    assert result.status == "critical"
    assert "cannot reach http://127.0.0.1:9/mcp" in result.output
