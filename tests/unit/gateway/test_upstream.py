"""The gateway's calls to one instance (bridge/gateway/upstream.py) against small HTTP
servers on loopback: the modern envelope and an SSE answer with progress; a handshake
session begun once, begun again after a 404 and ended with the client's; a port nobody
listens on is not delivered, a connection that breaks after the request is."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.consul.catalog import Instance
from bridge.gateway.upstream import Failed, NotDelivered, Upstreams
from bridge.mcp.wire import PROTOCOL_VERSION_KEY
from tests.integration.conftest import free_tcp_port
from tests.unit.mcp.test_stdio_modern_adapt import wait_until


def instance(url: str, protocol: str) -> Instance:
    return Instance(
        service="s", service_id="h1:s", node="n", address="127.0.0.1", port=1, health="passing",
        transport="streamable-http", path="/mcp", protocol=protocol, tools=None,
        bridge_node="n", url=url,
    )  # fmt: skip


class Peer:
    """Answers as an MCP server would; `forget` drops its sessions (a restart)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.sessions: set[str] = set()
        self.mode = "ok"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.method == "POST" else None
        self.seen.append((request.method, dict(request.headers), body))
        if self.mode == "break":
            assert request.transport is not None
            request.transport.close()  # the request arrived; no answer ever comes
            return web.Response()
        if self.mode == "cut":  # a JSON answer that stops short of its Content-Length
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 500
            await response.prepare(request)
            await response.write(b'{"jsonrpc": "2.0", "id": ')
            assert request.transport is not None
            request.transport.close()
            return response
        if self.mode == "gzip":  # compressed whole, with its (compressed) length
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": {"text": "z" * 5000}}
            packed = gzip.compress(json.dumps(answer).encode())
            return web.Response(body=packed, headers={
                "Content-Type": "application/json", "Content-Encoding": "gzip",
            })  # fmt: skip
        if self.mode == "json":  # one JSON answer, and a cookie no client may get back
            answer = {"jsonrpc": "2.0", "id": body["id"], "result": {"content": []}}
            return web.json_response(answer, headers={"Set-Cookie": "who=client-1; Path=/"})
        if self.mode == "500" or (
            self.mode == "init500" and body and body.get("method") == "initialize"
        ):
            return web.Response(status=500, text="boom")
        if request.method == "DELETE":
            self.sessions.discard(request.headers.get("Mcp-Session-Id", ""))
            return web.Response()
        if body.get("method") == "initialize":
            sid = f"s{len(self.sessions) + 1}"
            self.sessions.add(sid)
            result = {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "serverInfo": {"name": "p"},
            }
            return web.json_response(
                {"jsonrpc": "2.0", "id": body["id"], "result": result},
                headers={"Mcp-Session-Id": sid},
            )
        given = request.headers.get("Mcp-Session-Id")
        if given is not None and given not in self.sessions:
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "no session"}},
                status=404,
            )
        if "id" not in body:
            return web.Response(status=202)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
        answer = {
            "jsonrpc": "2.0",
            "id": body["id"],
            "result": {"content": [], "echo": body["params"]},
        }
        for message in (progress, answer):
            await response.write(f"data: {json.dumps(message)}\n\n".encode())
        return response


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    p = Peer()
    app = web.Application()
    app.router.add_route("*", "/mcp", p.handle)
    async with TestServer(app) as server:
        yield p, str(server.make_url("/mcp"))


def call(rid: Any = "client-1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "echo"}}


async def test_a_modern_call_carries_the_envelope_and_its_progress_is_told(
    peer: tuple[Peer, str],
) -> None:
    server, url = peer
    upstreams = Upstreams(token="t0k")
    told: list[dict[str, Any]] = []
    served = instance(url, "2026-07-28")
    served.served = True  # a bridge's stdio endpoint: the fleet's token goes to it
    answer = await upstreams.call(served, call(), "s", told.append)
    await upstreams.call(instance(url, "2026-07-28"), call(), "s", lambda _: None)
    await upstreams.close()
    assert "Authorization" not in server.seen[1][1]  # never to anyone else
    assert answer["id"] == "client-1" and "result" in answer
    assert [m["method"] for m in told] == ["notifications/progress"]
    _, headers, body = server.seen[0]
    assert body["params"]["_meta"][PROTOCOL_VERSION_KEY] == "2026-07-28"
    assert headers["Mcp-Method"] == "tools/call" and headers["Authorization"] == "Bearer t0k"
    assert body["id"] != "client-1"  # the gateway's own id upstream


async def test_a_handshake_session_is_begun_once_again_after_a_404_and_ended(
    peer: tuple[Peer, str],
) -> None:
    server, url = peer
    upstreams = Upstreams()
    where = instance(url, "2025-06-18")
    for n in range(2):
        assert "result" in await upstreams.call(where, call(n), "client-session", lambda _: None)
    methods = [b["method"] for m, _, b in server.seen if m == "POST"]
    assert methods == ["initialize", "notifications/initialized", "tools/call", "tools/call"]
    server.sessions.clear()  # the instance restarted: it knows no session
    assert "result" in await upstreams.call(where, call(3), "client-session", lambda _: None)
    methods = [b["method"] for m, _, b in server.seen if m == "POST"][4:]
    assert methods == ["tools/call", "initialize", "notifications/initialized", "tools/call"]
    upstreams.end("client-session")  # on the side
    await wait_until(lambda: server.seen[-1][0] == "DELETE")
    assert not server.sessions
    await upstreams.close()


async def test_nobody_listening_is_not_delivered_and_a_broken_answer_is_failed(
    peer: tuple[Peer, str],
) -> None:
    server, url = peer
    upstreams = Upstreams()
    with pytest.raises(NotDelivered):
        await upstreams.call(
            instance(f"http://127.0.0.1:{free_tcp_port()}/mcp", "2026-07-28"),
            call(),
            "s",
            lambda _: None,
        )
    server.mode = "break"
    with pytest.raises(Failed, match="h1:s"):
        await upstreams.call(instance(url, "2026-07-28"), call(), "s", lambda _: None)
    server.mode = "500"
    with pytest.raises(Failed, match="HTTP 500"):
        await upstreams.call(instance(url, "2026-07-28"), call(), "s", lambda _: None)
    server.mode = "init500"  # the session could not be opened: the call was never sent
    with pytest.raises(NotDelivered, match="opening a session"):
        await upstreams.call(instance(url, "2025-06-18"), call(), "s", lambda _: None)
    await upstreams.close()


async def test_a_json_answer_is_read_whole_compressed_or_not_cut_short_is_failed_no_cookie_kept(
    peer: tuple[Peer, str],
) -> None:
    """An instance's cookie would go back with every later client's calls: none is kept."""
    server, url = peer
    url = url.replace("127.0.0.1", "localhost")  # a jar keeps no cookies of an IP address
    upstreams = Upstreams()
    server.mode = "json"
    for n in (1, 2):
        answer = await upstreams.call(instance(url, "2026-07-28"), call(n), "s", lambda _: None)
        assert answer == {"jsonrpc": "2.0", "id": n, "result": {"content": []}}
    assert all("Cookie" not in headers for _, headers, _ in server.seen)
    server.mode = "gzip"  # its length is the compressed one: read whole all the same
    answer = await upstreams.call(instance(url, "2026-07-28"), call(3), "s", lambda _: None)
    assert answer["result"] == {"text": "z" * 5000}
    server.mode = "cut"
    with pytest.raises(Failed, match="h1:s"):
        await upstreams.call(instance(url, "2026-07-28"), call(), "s", lambda _: None)
    await upstreams.close()


class LegacyPeer:
    """The 2024-11-05 HTTP+SSE transport: GET /sse names where to POST; every answer and
    notification comes back on the stream."""

    def __init__(self) -> None:
        self.streams: dict[str, web.StreamResponse] = {}
        self.posted: list[dict[str, Any]] = []
        self.done = asyncio.Event()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sid = f"s{len(self.streams) + 1}"
        self.streams[sid] = response
        await response.write(f"event: endpoint\ndata: /messages?session={sid}\n\n".encode())
        await self.done.wait()
        return response

    async def message(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.posted.append(body)
        stream = self.streams[request.query["session"]]
        answers: list[dict[str, Any]] = []
        if body.get("method") == "initialize":
            answers = [
                {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "result": {
                        "protocolVersion": "2024-11-05",
                        "capabilities": {},
                        "serverInfo": {"name": "old"},
                    },
                }
            ]
        elif body.get("method") == "tools/call":
            token = body["params"]["_meta"]["progressToken"]
            answers = [
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": 1},
                },
                {
                    "jsonrpc": "2.0",
                    "id": body["id"],
                    "result": {"content": [{"type": "text", "text": "old said"}]},
                },
            ]
        for answer in answers:
            await stream.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
        return web.Response(status=202)


async def test_a_legacy_sse_instance_is_called_on_its_stream() -> None:
    peer = LegacyPeer()
    app = web.Application()
    app.router.add_get("/sse", peer.stream)
    app.router.add_post("/messages", peer.message)
    async with TestServer(app) as server:
        where = instance(str(server.make_url("/sse")), "2024-11-05")
        where.transport = "sse"
        upstreams = Upstreams()
        told: list[dict[str, Any]] = []
        ask = {
            "jsonrpc": "2.0",
            "id": "c",
            "method": "tools/call",
            "params": {"name": "echo", "_meta": {"progressToken": "p"}},
        }
        for _ in range(2):  # one stream, one initialize, for the session
            answer = await upstreams.call(where, ask, "session", told.append)
            assert answer["id"] == "c" and answer["result"]["content"][0]["text"] == "old said"
        assert [m["params"]["progressToken"] for m in told] == ["p", "p"]  # the client's own
        sent = [
            b["params"]["_meta"]["progressToken"]
            for b in peer.posted
            if b.get("method") == "tools/call"
        ]
        assert len(set(sent)) == 2 and "p" not in sent  # the gateway's, one per call
        assert [b["method"] for b in peer.posted] == [
            "initialize",
            "notifications/initialized",
            "tools/call",
            "tools/call",
        ]
        upstreams.end("session")
        await upstreams.close()
        peer.done.set()
