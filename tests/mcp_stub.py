"""An MCP server on aiohttp for the probe's unit tests (tests/unit/mcp/test_probe.py): it plays
each kind of answer, era by era, as a test tells it, and records what it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bridge.mcp.wire import CLIENT_CAPABILITIES_KEY, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY

MODERN = "2026-07-28"
INIT_RESULT = {
    "protocolVersion": "2025-06-18",
    "capabilities": {"tools": {}},
    "serverInfo": {"name": "demo", "version": "4.5.6"},
}
DISCOVER_RESULT = {
    "_meta": {SERVER_INFO_KEY: {"name": "modern-demo", "version": "7.0"}},
    "cacheScope": "public",
    "capabilities": {"tools": {"listChanged": True}},
    "supportedVersions": [MODERN],
    "ttlMs": 0,
    "resultType": "complete",
}
TOOLS = [
    {"name": "b", "description": "second", "inputSchema": {"type": "object"}, "extra": 1},
    {"name": "a", "annotations": {"title": "First"}, "inputSchema": {"type": "object"}},
    {"name": "c", "title": "Third", "inputSchema": {"type": "object"}},
]


def rpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


@dataclass
class Server:
    discover: str = "modern"
    initialize: str = "ok"
    retry: str = "modern"  # only-older-modern: the answer at the revision it names
    tools: str = "ok"
    legacy: str = "ok"  # the legacy SSE transport
    calls: list[str] = field(default_factory=list)  # method, or "DELETE"
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    sse_queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    tools_asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def mcp(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        if request.method == "DELETE":
            self.calls.append("DELETE")
            return web.Response(status=200)
        body = await request.json()
        self.bodies.append(body)
        method = body.get("method")
        self.calls.append(method)
        assert "text/event-stream" in request.headers["Accept"]
        if method == "notifications/initialized":
            return web.Response(status=202)
        if method == "server/discover":
            return await self.answer_discover(request, body)
        if method == "initialize":
            return await self.answer_initialize(request, body)
        if method == "tools/list":
            return await self.answer_tools(body)
        raise AssertionError(method)

    async def answer_discover(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        rid, mode = body["id"], self.discover
        envelope = body["params"]["_meta"]
        assert request.headers["MCP-Protocol-Version"] == envelope[PROTOCOL_VERSION_KEY]
        assert request.headers["Mcp-Method"] == "server/discover"
        assert CLIENT_CAPABILITIES_KEY in envelope
        if mode == "modern":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": DISCOVER_RESULT})
        if mode == "modern-sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            answer = {"jsonrpc": "2.0", "id": rid, "result": DISCOVER_RESULT}
            await response.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
            return response
        if mode == "only-older-modern":  # knows only MODERN; the probe asked a newer one
            if envelope[PROTOCOL_VERSION_KEY] != MODERN or self.retry == "refuse":
                data = {"supported": [MODERN], "requested": envelope[PROTOCOL_VERSION_KEY]}
                error = rpc_error(rid, -32022, "Unsupported protocol version", data)
                return web.json_response(error, status=400)
            if self.retry == "method-not-found":
                return web.json_response(rpc_error(rid, -32601, "Method not found"))
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": DISCOVER_RESULT})
        if mode == "refuses-what-it-names":  # -32022 naming the very revision asked
            data = {"supported": [MODERN], "requested": envelope[PROTOCOL_VERSION_KEY]}
            return web.json_response(rpc_error(rid, -32022, "Unsupported", data), status=400)
        if mode == "unsupported-handshake-only":  # names only handshake-era revisions
            data = {"supported": ["2025-06-18"], "requested": MODERN}
            return web.json_response(rpc_error(rid, -32022, "Unsupported", data), status=400)
        if mode == "unsupported-no-data":
            return web.json_response(rpc_error(rid, -32022, "Unsupported"), status=400)
        if mode == "no-tools":
            result = {**DISCOVER_RESULT, "capabilities": {}}
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})
        if mode == "method-not-found":
            return web.json_response(rpc_error(rid, -32601, "Method not found"))
        if mode == "missing-session":  # a stateful handshake-era server
            error = rpc_error("server-error", -32600, "Bad Request: Missing session ID")
            return web.json_response(error, status=400)
        if mode == "plain-400":
            return web.Response(status=400, text="Bad Request")
        if mode == "initialize-like":  # a stub that answers everything as initialize
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": INIT_RESULT})
        if mode == "handshake-versions":  # answers discover but advertises no modern revision
            result = {**DISCOVER_RESULT, "supportedVersions": ["2025-06-18"]}
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})
        if mode == "disjoint":
            data = {"supported": ["2099-01-01"], "requested": MODERN}
            return web.json_response(rpc_error(rid, -32022, "Unsupported", data), status=400)
        if mode == "unauthorized":
            return web.Response(
                status=401,
                headers={"WWW-Authenticate": 'Bearer resource_metadata="http://x/.well-known"'},
                text='{"error": "invalid_token"}',
                content_type="application/json",
            )
        if mode == "unauthorized-bare":  # 401 without a challenge: not MCP authorization
            return web.Response(status=401, text="no")
        if mode == "http500":
            return web.Response(status=500, text="boom")
        if mode == "html":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if mode == "hang":
            await asyncio.sleep(3)
        raise AssertionError(mode)

    async def answer_initialize(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.StreamResponse:
        rid, mode = body["id"], self.initialize
        assert body["params"]["protocolVersion"] == "2025-11-25"
        assert "MCP-Protocol-Version" not in request.headers  # not before a revision is agreed
        answer = {"jsonrpc": "2.0", "id": rid, "result": INIT_RESULT}
        if mode == "ok":
            return web.json_response(answer, headers={"Mcp-Session-Id": "abc"})
        if mode == "stateless":  # no Mcp-Session-Id: no session to confirm or end
            return web.json_response(answer)
        if mode == "sse":
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b": comment\n\nevent: message\ndata: ")
            await response.write(json.dumps(answer).encode() + b"\n\n")
            return response
        if mode == "pieces":  # one JSON body in two writes: the probe must read to EOF
            text = json.dumps(answer).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(text)
            await response.prepare(request)
            await response.write(text[:40])
            await asyncio.sleep(0.05)
            await response.write(text[40:])
            return response
        if mode == "error":
            return web.json_response(rpc_error(rid, -32602, "bad params"))
        if mode == "odd":
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": {"capabilities": {}}})
        if mode == "slow":
            await asyncio.sleep(0.6)
            return web.json_response(answer)
        if mode == "modern-after-all":  # the era flipped under a slow start
            self.discover = "modern"
            data = {"supported": [MODERN], "requested": "2025-11-25"}
            return web.json_response(rpc_error(rid, -32022, "Unsupported", data), status=400)
        if mode == "unauthorized":
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        if mode == "unauthorized-bare":
            return web.Response(status=401)
        raise AssertionError(mode)

    async def answer_tools(self, body: dict[str, Any]) -> web.Response:
        self.tools_asked.set()
        if self.tools == "hang":
            await asyncio.sleep(5)
        cursor = (body.get("params") or {}).get("cursor")
        page = TOOLS[:2] if cursor is None else TOOLS[2:]
        result: dict[str, Any] = {"tools": page}
        if cursor is None:
            result["nextCursor"] = "page-2"
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    async def legacy_stream(self, request: web.Request) -> web.StreamResponse:
        if self.legacy == "unauthorized":
            challenge = {"WWW-Authenticate": 'Bearer resource_metadata="http://x/.well-known"'}
            return web.Response(status=401, headers=challenge, text="login first")
        if self.legacy in ("unauthorized-bare", "http500"):
            return web.Response(status=401 if self.legacy == "unauthorized-bare" else 500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: endpoint\ndata: /messages?session_id=s1\n\n")
        while True:
            answer = await self.sse_queue.get()
            await response.write(f"event: message\ndata: {answer}\n\n".encode())

    async def legacy_post(self, request: web.Request) -> web.Response:
        assert request.query["session_id"] == "s1"
        body = await request.json()
        self.calls.append(body["method"])
        if self.legacy == "post-unauthorized":
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        result = INIT_RESULT if body["method"] == "initialize" else {"tools": TOOLS}
        await self.sse_queue.put(json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}))
        return web.Response(status=202)


Fixture = tuple[Server, str, aiohttp.ClientSession]


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Fixture]:
    """The server on a loopback port: its state, its base URL, and a client session."""
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/mcp", state.mcp)
    app.router.add_get("/sse", state.legacy_stream)
    app.router.add_post("/messages", state.legacy_post)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()
    try:
        yield state, f"http://127.0.0.1:{port}", session
    finally:
        await session.close()
        await runner.cleanup()
