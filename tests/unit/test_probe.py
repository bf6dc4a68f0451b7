"""The MCP probe against a local aiohttp server playing each kind of answer, era by era.

Every branch of the negotiation is a row: what the server says to `server/discover` and
to `initialize`, and what the probe must conclude, say, and send.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge import probe as probe_module
from bridge.mcp_wire import CLIENT_CAPABILITIES_KEY, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY
from bridge.probe import probe

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


@pytest.fixture
async def server() -> AsyncIterator[Fixture]:
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
    yield state, f"http://127.0.0.1:{port}", session
    await session.close()
    await runner.cleanup()


HANDSHAKE_CALLS = ["server/discover", "initialize", "notifications/initialized", "DELETE"]


@pytest.mark.parametrize(
    ("discover", "initialize", "status", "words", "calls", "protocol"),
    [
        (
            "modern",
            "ok",
            "passing",
            "MCP 2026-07-28 OK: server/discover",
            ["server/discover"],
            MODERN,
        ),
        ("modern-sse", "ok", "passing", "by modern-demo 7.0", ["server/discover"], MODERN),
        # Handshake-era servers, each way they can say they do not know server/discover.
        (
            "method-not-found",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32601)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "missing-session",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32600)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "plain-400",
            "ok",
            "passing",
            "(server/discover: HTTP 400)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "initialize-like",
            "ok",
            "passing",
            "without a modern revision",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        ("handshake-versions", "ok", "passing", "initialize", HANDSHAKE_CALLS, "2025-06-18"),
        (
            "method-not-found",
            "sse",
            "passing",
            "by demo 4.5.6",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        (
            "method-not-found",
            "pieces",
            "passing",
            "by demo",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        # A -32022 naming only handshake-era revisions, or none: the handshake.
        (
            "unsupported-handshake-only",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32022)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        (
            "unsupported-no-data",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32022)",
            HANDSHAKE_CALLS,
            "2025-06-18",
        ),
        # No Mcp-Session-Id (a stateless server): nothing to confirm, nothing to end.
        (
            "method-not-found",
            "stateless",
            "passing",
            "by demo 4.5.6",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        # A -32022 to initialize is modern evidence: discover again.
        (
            "method-not-found",
            "modern-after-all",
            "passing",
            "server/discover",
            ["server/discover", "initialize", "server/discover"],
            MODERN,
        ),
        # Failures, each with its reason.
        (
            "method-not-found",
            "error",
            "critical",
            "initialize failed: JSON-RPC error -32602: bad params",
            ["server/discover", "initialize"],
            None,
        ),
        (
            "method-not-found",
            "odd",
            "warning",
            "lacks mcp_server_name",
            ["server/discover", "initialize"],
            "2025-11-25",
        ),
        (
            "method-not-found",
            "slow",
            "warning",
            "slow (timeout 1s)",
            ["server/discover", "initialize"],
            "2025-06-18",
        ),
        (
            "disjoint",
            "ok",
            "critical",
            "only protocol revisions this bridge does not know: 2099-01-01",
            ["server/discover"],
            None,
        ),
        # Refusing the very modern revision it names, and no handshake-era one: no
        # revision is left to try (initialize would be refused too).
        (
            "refuses-what-it-names",
            "ok",
            "critical",
            "server refused protocol revision 2026-07-28, naming only 2026-07-28",
            ["server/discover"],
            None,
        ),
        ("http500", "ok", "critical", "HTTP 500", ["server/discover"], None),
        (
            "html",
            "ok",
            "critical",
            "unexpected Content-Type 'text/html'",
            ["server/discover"],
            None,
        ),
        ("hang", "ok", "critical", "no answer to MCP within 1s", ["server/discover"], None),
        # MCP authorization: up, but closed to the bridge.
        ("unauthorized", "ok", "warning", "MCP authorization required", ["server/discover"], None),
        (
            "method-not-found",
            "unauthorized",
            "warning",
            "HTTP 401",
            ["server/discover", "initialize"],
            None,
        ),
        # A 401 without a WWW-Authenticate challenge is not MCP authorization: a failure.
        ("unauthorized-bare", "ok", "critical", "HTTP 401", ["server/discover"], None),
        (
            "method-not-found",
            "unauthorized-bare",
            "critical",
            "POST http://127.0.0.1",
            ["server/discover", "initialize"],
            None,
        ),
    ],
)
async def test_negotiation(
    server: Fixture,
    discover: str,
    initialize: str,
    status: str,
    words: str,
    calls: list[str],
    protocol: str | None,
) -> None:
    state, base, session = server
    state.discover, state.initialize = discover, initialize
    result = await probe(session, base + "/mcp", "streamable-http", 1.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls
    assert result.meta.get("mcp_protocol_version") == protocol
    if status == "critical":
        assert "MCP authorization" not in result.output


DISCOVERS = ["server/discover", "server/discover"]


@pytest.mark.parametrize(
    ("retry", "initialize", "status", "words", "calls", "protocol"),
    [
        ("modern", "ok", "passing", "OK: server/discover", DISCOVERS, MODERN),
        # The retry refused too, naming no handshake-era revision: nothing left to try.
        (
            "refuse",
            "ok",
            "critical",
            "server refused protocol revision 2026-07-28, naming only 2026-07-28",
            DISCOVERS,
            None,
        ),
        # The retry says "I do not know server/discover" after all: the handshake.
        (
            "method-not-found",
            "ok",
            "passing",
            "(server/discover: JSON-RPC error -32601)",
            [*DISCOVERS, *HANDSHAKE_CALLS[1:]],
            "2025-06-18",
        ),
        # ... and a -32022 to its initialize: the one corrective discover is spent.
        (
            "method-not-found",
            "modern-after-all",
            "critical",
            "initialize failed: JSON-RPC error -32022",
            [*DISCOVERS, "initialize"],
            None,
        ),
    ],
)
async def test_an_unsupported_version_error_naming_a_known_revision_is_retried_there(
    server: Fixture,
    monkeypatch: pytest.MonkeyPatch,
    retry: str,
    initialize: str,
    status: str,
    words: str,
    calls: list[str],
    protocol: str | None,
) -> None:
    # As if the bridge knew a newer modern revision than the server.
    monkeypatch.setattr(probe_module, "LATEST_MODERN", "2027-01-01")
    monkeypatch.setattr(probe_module, "MODERN_VERSIONS", (MODERN, "2027-01-01"))
    state, base, session = server
    state.discover, state.retry, state.initialize = "only-older-modern", retry, initialize
    result = await probe(session, base + "/mcp", "streamable-http", 1.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls
    discovers = [b for b in state.bodies if b["method"] == "server/discover"]
    versions = [b["params"]["_meta"][PROTOCOL_VERSION_KEY] for b in discovers]
    assert versions == ["2027-01-01", MODERN]
    assert result.meta.get("mcp_protocol_version") == protocol


async def test_modern_meta_comes_from_the_server_info_stamp(server: Fixture) -> None:
    _, base, session = server
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.meta == {
        "mcp_server_name": "modern-demo",
        "mcp_server_version": "7.0",
        "mcp_protocol_version": MODERN,
    }
    assert result.listens  # it announces tool list changes


async def test_handshake_meta_and_the_session_is_ended(server: Fixture) -> None:
    state, base, session = server
    state.discover = "method-not-found"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.meta == {
        "mcp_server_name": "demo",
        "mcp_server_version": "4.5.6",
        "mcp_protocol_version": "2025-06-18",  # what the server answered, not what was asked
    }
    # After initialize: the agreed revision and the session on every request.
    for headers in state.headers[2:]:
        assert headers["MCP-Protocol-Version"] == "2025-06-18"
        assert headers["Mcp-Session-Id"] == "abc"
    assert not result.listens


@pytest.mark.parametrize("discover", ["modern", "method-not-found"])
async def test_tools_are_listed_across_pages_in_either_era(server: Fixture, discover: str) -> None:
    state, base, session = server
    state.discover = discover
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert result.status == "passing", result.output
    assert result.tools == [
        {"name": "a", "inputSchema": {"type": "object"}, "title": "First"},
        {"name": "b", "description": "second", "inputSchema": {"type": "object"}},
        {"name": "c", "title": "Third", "inputSchema": {"type": "object"}},
    ]
    assert result.output.endswith("; 3 tools")
    assert state.calls.count("tools/list") == 2
    if discover == "method-not-found":
        assert state.calls[-1] == "DELETE"  # listed inside the session, then ended


async def test_tools_are_not_listed_unless_asked(server: Fixture) -> None:
    state, base, session = server
    result = await probe(session, base + "/mcp", "streamable-http", 2.0)
    assert result.tools is None and "tools/list" not in state.calls
    assert result.tools_declared is True  # declared, though not listed


async def test_the_probe_says_whether_the_server_declares_tools(server: Fixture) -> None:
    state, base, session = server
    state.discover = "no-tools"
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert (result.status, result.tools_declared, result.tools) == ("passing", False, None)
    assert "tools/list" not in state.calls
    state.discover = "unauthorized"  # no answer read: no word on tools either way
    result = await probe(session, base + "/mcp", "streamable-http", 2.0, want_tools=True)
    assert (result.status, result.tools_declared) == ("warning", None)


async def test_a_cancelled_probe_ends_at_once_without_a_goodbye(server: Fixture) -> None:
    # A check being stopped is waited for by the pass: no DELETE to a server maybe gone.
    state, base, session = server
    state.discover, state.tools = "method-not-found", "hang"
    task = asyncio.create_task(
        probe(session, base + "/mcp", "streamable-http", 5.0, want_tools=True)
    )
    await asyncio.wait_for(state.tools_asked.wait(), 5)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.1)
    assert "DELETE" not in state.calls


async def test_legacy_sse_transport_passes_and_lists_tools(server: Fixture) -> None:
    state, base, session = server
    result = await probe(session, base + "/sse", "sse", 2.0, want_tools=True)
    assert result.status == "passing", result.output
    assert result.meta["mcp_server_name"] == "demo"
    assert [t["name"] for t in result.tools or []] == ["a", "b", "c"]
    assert state.calls == ["initialize", "tools/list"]


@pytest.mark.parametrize(
    ("legacy", "status", "words", "calls"),
    [
        # As in streamable-http: a 401 with a challenge is a protected server ...
        ("unauthorized", "warning", "MCP authorization required at http://", []),
        ("post-unauthorized", "warning", "WWW-Authenticate: Bearer", ["initialize"]),
        # ... without one, or any other HTTP error, a failure.
        ("unauthorized-bare", "critical", "/sse: HTTP 401", []),
        ("http500", "critical", "/sse: HTTP 500", []),
    ],
)
async def test_legacy_sse_http_errors_are_judged_as_in_streamable_http(
    server: Fixture, legacy: str, status: str, words: str, calls: list[str]
) -> None:
    state, base, session = server
    state.legacy = legacy
    result = await probe(session, base + "/sse", "sse", 2.0)
    assert (result.status, words in result.output) == (status, True), result.output
    assert state.calls == calls


async def test_nothing_listening_is_critical_with_the_reason() -> None:
    async with aiohttp.ClientSession() as session:
        result = await probe(session, "http://127.0.0.1:9/mcp", "streamable-http", 2.0)
    assert result.status == "critical"
    assert "cannot reach http://127.0.0.1:9/mcp" in result.output
