"""The stdio endpoint's HTTP side against an in-memory server (bridge/mcp/stdio/endpoint.py):
hostile and malformed requests get their status and JSON-RPC error and disturb nothing;
handshake sessions are the client's own (404 once unknown or ended); 2026-07-28 requests
are checked as the revision says; nothing is served while no process is attached. Real
servers and the SDK's clients: tests/integration/test_stdio_serve.py."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.mcp.stdio.endpoint import ServeRules, StdioEndpoint
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.process import StdioServer
from bridge.mcp.wire import CLIENT_CAPABILITIES_KEY, PROTOCOL_VERSION_KEY
from tests.unit.mcp.test_stdio_process import FakeProcess, Handler, echo_server

SHOOK = Handshake(
    "handshake",
    "2025-06-18",
    {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}},
)
JSON_ONLY = {"Content-Type": "application/json", "Accept": "application/json"}
HUGE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"s": "y" * 2000}}).encode()


def initialize(rid: int = 1) -> dict[str, Any]:
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}
    return {"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": params}


def call(rid: int = 2, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


@asynccontextmanager
async def serving(
    handle: Handler, rules: ServeRules | None = None
) -> AsyncIterator[tuple[TestClient, StdioEndpoint]]:
    """An endpoint over an in-memory server that answers as `handle` says."""
    process = FakeProcess(handle)
    server = StdioServer(process, max_message=1 << 20, request_timeout=30)
    reading = asyncio.create_task(server.run())
    endpoint = StdioEndpoint(rules or ServeRules())
    endpoint.serve(server, SHOOK)
    app = web.Application()
    endpoint.add_routes(app)
    # As the agent serves it (served.py): a client that leaves cancels its handler.
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        yield client, endpoint
    process.exit()
    await reading


@pytest.fixture
async def world(request: pytest.FixtureRequest) -> AsyncIterator[tuple[TestClient, StdioEndpoint]]:
    async with serving(echo_server, getattr(request, "param", None)) as served:
        yield served


async def post(client: TestClient, body: Any, **headers: str) -> tuple[int, Any, Any]:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    response = await client.post("/mcp", data=data, headers={**JSON_ONLY, **headers})
    text = await response.text()
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return response.status, parsed, response.headers


async def session_of(client: TestClient) -> str:
    status, body, headers = await post(client, initialize())
    assert status == 200 and body["result"]["serverInfo"] == {"name": "s"}
    assert body["result"]["protocolVersion"] == "2025-06-18"  # what the server negotiated
    return str(headers["Mcp-Session-Id"])


async def test_a_session_of_its_own_for_each_client(world: Any) -> None:
    client, endpoint = world
    first, second = await session_of(client), await session_of(client)
    assert first != second and len(first) >= 40  # 256 random bits, url-safe
    for sid in (first, second):
        status, body, _ = await post(client, call(2, who=sid), **{"Mcp-Session-Id": sid})
        assert status == 200 and body == {"jsonrpc": "2.0", "id": 2, "result": {"who": sid}}
    assert len(endpoint.sessions) == 2


async def test_an_ended_or_unknown_session_is_404_and_a_missing_one_400(world: Any) -> None:
    client, _ = world
    sid = await session_of(client)
    response = await client.delete("/mcp", headers={"Mcp-Session-Id": sid})
    assert response.status == 200
    status, body, _ = await post(client, call(), **{"Mcp-Session-Id": sid})
    assert status == 404 and body["error"]["message"] == "session not found"
    assert (await post(client, call(), **{"Mcp-Session-Id": "guess"}))[0] == 404
    assert (await post(client, call()))[0] == 400


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {}, 400, -32700),
        (b"[]", {}, 400, -32600),  # a batch
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', {}, 400, -32600),
        (b'{"id":1,"method":"ping"}', {}, 400, -32600),  # not JSON-RPC 2.0
        (b'"a string"', {}, 400, -32600),
        (json.dumps(initialize()).encode(), {"Content-Type": "text/plain"}, 415, -32600),
        (HUGE, {}, 413, -32600),
        (json.dumps(initialize()).encode(), {"Origin": "http://evil.example"}, 403, -32600),
    ],
)  # fmt: skip
async def test_hostile_or_malformed_requests_get_their_status_and_error(
    world: Any, body: bytes, headers: dict[str, str], status: int, code: int
) -> None:
    client, endpoint = world
    endpoint.rules = ServeRules(max_message=1000)
    got, answer, _ = await post(client, body, **headers)
    assert (got, answer["error"]["code"]) == (status, code)
    assert await session_of(client)  # nothing else disturbed


@pytest.mark.parametrize("world", [ServeRules(token="s3cret")], indirect=True)
async def test_a_bearer_token_is_required_where_one_is_set(world: Any) -> None:
    client, _ = world
    status, _, headers = await post(client, initialize())
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await post(client, initialize(), Authorization="Bearer wrong")
    assert status == 401
    status, body, _ = await post(client, initialize(), Authorization="Bearer s3cret")
    assert status == 200 and "result" in body


@pytest.mark.parametrize(
    "world", [ServeRules(allowed_origins=frozenset({"http://localhost:6274"}))], indirect=True
)
async def test_only_allowed_origins_and_requests_without_one_pass(world: Any) -> None:
    client, _ = world
    assert (await post(client, initialize(), Origin="http://localhost:6274"))[0] == 200
    assert (await post(client, initialize(), Origin="http://localhost:6275"))[0] == 403
    assert (await post(client, initialize()))[0] == 200


@pytest.mark.parametrize("world", [ServeRules(max_sessions=2)], indirect=True)
async def test_sessions_beyond_the_limit_are_refused_with_a_reason(world: Any) -> None:
    client, _ = world
    await session_of(client)
    await session_of(client)
    status, body, _ = await post(client, initialize())
    assert status == 503 and "2 sessions" in body["error"]["message"]


def modern(method: str, rid: int = 7, version: str = "2026-07-28") -> dict[str, Any]:
    meta = {PROTOCOL_VERSION_KEY: version, CLIENT_CAPABILITIES_KEY: {}}
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {"_meta": meta}}


async def test_modern_requests_are_checked_then_served(world: Any) -> None:
    client, _ = world
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}
    status, body, _ = await post(client, modern("server/discover"), **headers)
    assert status == 200 and body["result"]["supportedVersions"] == ["2026-07-28"]
    assert body["result"]["resultType"] == "complete"
    wrong_method = {**headers, "Mcp-Method": "tools/list"}
    status, body, _ = await post(client, modern("server/discover"), **wrong_method)
    assert (status, body["error"]["code"]) == (400, -32020)
    old = modern("server/discover", version="2025-06-18")
    status, body, _ = await post(client, old, **headers)
    assert (status, body["error"]["code"]) == (400, -32020)  # header and envelope disagree
    status, body, _ = await post(
        client, modern("tools/call", version="2099-01-01"),
        **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"},
    )  # fmt: skip
    assert status == 400 and body["error"]["code"] == -32020
    call_headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
    status, body, _ = await post(client, modern("tools/call"), **call_headers)
    assert status == 200 and body["id"] == 7 and body["result"]["resultType"] == "complete"
    assert PROTOCOL_VERSION_KEY not in body["result"].get("_meta", {})  # the envelope stayed out


async def test_nothing_is_served_while_no_process_is_attached(world: Any) -> None:
    client, endpoint = world
    sid = await session_of(client)
    await endpoint.gone()
    status, body, _ = await post(client, call(), **{"Mcp-Session-Id": sid})
    assert status == 503 and body["error"]["code"] == -32000 and body["id"] == 2
    status, _, _ = await post(client, initialize())
    assert status == 503


async def test_a_cancelled_request_ends_its_own_response() -> None:
    """Review finding: a client's notifications/cancelled removed the pending entry but
    left its POST waiting forever."""
    async with serving(lambda m: []) as (client, endpoint):  # a server that never answers
        server = endpoint.server
        assert server is not None
        process = server._stream  # type: ignore[attr-defined]
        sid = await session_of(client)
        waiting = asyncio.create_task(post(client, call(5), **{"Mcp-Session-Id": sid}))
        await asyncio.sleep(0.1)
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}}
        assert (await post(client, cancel, **{"Mcp-Session-Id": sid}))[0] == 202
        status, body, _ = await asyncio.wait_for(waiting, 5)
        assert status == 200 and body["error"]["code"] == -32800 and body["id"] == 5
        sent = [m for m in process.seen if m.get("method") == "notifications/cancelled"]
        assert sent and sent[0]["params"]["requestId"] == process.seen[0]["id"]
        assert not server.mux.pending and len(server.mux.clients) == 1  # the session's own


async def test_initialize_in_the_modern_era_never_reaches_the_server(world: Any) -> None:
    """Review finding: a 2026-07-28 `initialize` went through to the live process."""
    client, endpoint = world
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "initialize"}
    status, body, _ = await post(client, modern("initialize"), **headers)
    assert (status, body["error"]["code"]) == (404, -32601)
    assert endpoint.server is not None
    seen = endpoint.server._stream.seen  # type: ignore[attr-defined]
    assert [m for m in seen if m.get("method") == "initialize"] == []


async def test_a_large_body_in_many_chunks_is_read_whole(world: Any) -> None:
    """Review finding: one read() returned only what had arrived, so a body sent in
    chunks was cut short (400) and an oversize one was not told 413."""
    client, endpoint = world
    sid = await session_of(client)
    endpoint.rules = ServeRules(max_message=400_000)
    data = json.dumps(call(3, text="z" * 300_000)).encode()

    async def chunks(blob: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(blob), 1000):
            yield blob[start : start + 1000]

    headers = {**JSON_ONLY, "Mcp-Session-Id": sid}
    response = await client.post("/mcp", data=chunks(data), headers=headers)
    assert response.status == 200 and (await response.json())["result"]["text"] == "z" * 300_000
    response = await client.post("/mcp", data=chunks(data + b" " * 200_000), headers=headers)
    assert response.status == 413


async def raw_post(client: TestClient, head: str, parts: list[bytes], *, stop: bool) -> bytes:
    """A POST written by hand, in `parts` a moment apart; the reply as it came. `stop`:
    the client then stops sending (half-closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"POST /mcp HTTP/1.1\r\nHost: t\r\n{head}\r\n".encode())
    for part in parts:
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.01)
    if stop:
        writer.write_eof()
    # The answer, not the connection's end: a server may linger reading what is left.
    try:
        head_of_reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except asyncio.IncompleteReadError:
        writer.close()
        return b""  # closed without an answer
    length = int(head_of_reply.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    reply = head_of_reply + await asyncio.wait_for(reader.readexactly(length), 10)
    writer.close()
    return reply


async def test_a_body_with_its_length_is_read_whole_and_a_short_or_long_one_refused(
    world: Any,
) -> None:
    """The usual body (Content-Length) is read in one read of exactly that: arriving in
    pieces it is still read whole; announced over the limit it is refused before a byte is
    read (it used to wait for the whole of it first); a client that stops short of its
    length is let go of, not waited for; a compressed one is read whole uncompressed."""
    client, endpoint = world
    sid = await session_of(client)
    endpoint.rules = ServeRules(max_message=400_000)
    data = json.dumps(call(3, text="z" * 300_000)).encode()
    head = (
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Mcp-Session-Id: {sid}\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    )
    pieces = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
    reply = await raw_post(client, head, pieces, stop=False)
    assert reply.startswith(b"HTTP/1.1 200") and b'"text": "' + b"z" * 1000 in reply
    too_long = head.replace(f"Content-Length: {len(data)}", "Content-Length: 400001")
    assert (await raw_post(client, too_long, [], stop=False)).startswith(b"HTTP/1.1 413")
    # A client that stops short and half-closes has left: no answer, and no hang.
    assert await raw_post(client, head, [data[:1000]], stop=True) == b""
    packed = gzip.compress(data)  # compressed: its length is not the body's
    gz_head = head.replace(f"Content-Length: {len(data)}", f"Content-Length: {len(packed)}")
    reply = await raw_post(client, gz_head + "Content-Encoding: gzip\r\n", [packed], stop=False)
    assert reply.startswith(b"HTTP/1.1 200") and b"z" * 1000 in reply
    assert await session_of(client)  # nothing else disturbed


async def test_progress_that_came_with_the_answer_is_streamed_before_it() -> None:
    """Review finding: progress queued in the same moment as the answer was dropped."""

    def with_progress(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") != "tools/call":
            return []
        token = message["params"]["_meta"]["progressToken"]
        notes = [
            {"jsonrpc": "2.0", "method": "notifications/progress",
             "params": {"progressToken": token, "progress": n}}
            for n in (1, 2, 3)
        ]  # fmt: skip
        return [*notes, {"jsonrpc": "2.0", "id": message["id"], "result": {}}]

    async with serving(with_progress) as (client, _):
        sid = await session_of(client)
        body = call(4, _meta={"progressToken": "p"})
        headers = {**JSON_ONLY, "Accept": "application/json, text/event-stream"}
        response = await client.post(
            "/mcp", data=json.dumps(body), headers={**headers, "Mcp-Session-Id": sid}
        )
        events = [
            json.loads(line.removeprefix("data: "))
            for line in (await response.text()).splitlines()
            if line.startswith("data: ")
        ]
    assert [e.get("params", {}).get("progress") for e in events[:3]] == [1, 2, 3]
    assert {e["params"]["progressToken"] for e in events[:3]} == {"p"}
    assert events[3] == {"jsonrpc": "2.0", "id": 4, "result": {}}


async def test_an_idle_session_stream_says_keep_alive_and_carries_list_changes(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a GET stream whose client had gone lived on until the next
    notification; a comment line now and then makes the write fail instead."""
    monkeypatch.setattr("bridge.mcp.stdio.endpoint.KEEP_ALIVE", 0.05)
    client, endpoint = world
    sid = await session_of(client)
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid}
    async with client.get("/mcp", headers=headers) as response:
        assert response.status == 200
        assert await asyncio.wait_for(response.content.readline(), 5) == b": keep-alive\n"
        process = endpoint.server._stream  # type: ignore[union-attr]
        process.say({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        lines = []
        while not lines or not lines[-1].startswith(b"data:"):
            lines.append(await asyncio.wait_for(response.content.readline(), 5))
        assert b"notifications/tools/list_changed" in lines[-1]
    assert (await client.get("/mcp", headers={"Accept": "application/json"})).status == 406


async def test_log_levels_and_subscriptions_are_shared_out_among_sessions(world: Any) -> None:
    client, endpoint = world
    a, b = await session_of(client), await session_of(client)
    seen = endpoint.server._stream.seen  # type: ignore[union-attr]

    async def ask(sid: str, method: str, **params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 9, "method": method, "params": params}
        status, answer, _ = await post(client, body, **{"Mcp-Session-Id": sid})
        assert status == 200 and answer == {"jsonrpc": "2.0", "id": 9, "result": {}}, answer

    await ask(a, "logging/setLevel", level="error")
    await ask(b, "logging/setLevel", level="info")
    await ask(a, "logging/setLevel", level="warning")  # info still wanted: nothing sent
    await ask(a, "resources/subscribe", uri="file:///x")
    await ask(b, "resources/subscribe", uri="file:///x")
    await ask(a, "resources/unsubscribe", uri="file:///x")
    sent = [
        (m["method"], m["params"])
        for m in seen
        if m.get("method", "").startswith(("logging", "resources"))
    ]
    assert sent == [
        ("logging/setLevel", {"level": "error"}),
        ("logging/setLevel", {"level": "info"}),
        ("resources/subscribe", {"uri": "file:///x"}),
    ]
    assert (await client.delete("/mcp", headers={"Mcp-Session-Id": b})).status == 200
    for _ in range(100):  # asked in the background, not in the DELETE's way
        sent = [
            (m["method"], m["params"])
            for m in seen
            if m.get("method", "").startswith(("logging", "resources"))
        ]
        if len(sent) == 5:
            break
        await asyncio.sleep(0.02)
    assert sent[-2:] == [
        ("logging/setLevel", {"level": "warning"}),
        ("resources/unsubscribe", {"uri": "file:///x"}),
    ]


async def test_one_stream_per_session(world: Any) -> None:
    client, _ = world
    sid = await session_of(client)
    headers = {"Accept": "text/event-stream", "Mcp-Session-Id": sid}
    async with client.get("/mcp", headers=headers) as first:
        assert first.status == 200
        await asyncio.sleep(0.05)
        second = await client.get("/mcp", headers=headers)
        assert second.status == 409


async def test_shared_requests_stay_off_the_modern_path_to_a_handshake_server(world: Any) -> None:
    """Review finding: a 2026-07-28 setLevel or unsubscribe reached a handshake server
    past the sharing, acting for every session."""
    client, endpoint = world
    for method in ("logging/setLevel", "resources/unsubscribe"):
        headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
        status, body, _ = await post(client, modern(method), **headers)
        assert (status, body["error"]["code"]) == (404, -32601)
    seen = endpoint.server._stream.seen  # type: ignore[union-attr]
    assert not [m for m in seen if str(m.get("method")).startswith(("logging", "resources"))]


async def test_a_session_idle_too_long_is_404_on_its_next_use_and_let_go_of() -> None:
    async with serving(echo_server, ServeRules(session_idle=0.05)) as (client, endpoint):
        sid = await session_of(client)
        assert (await post(client, call(2, x=1), **{"Mcp-Session-Id": sid}))[0] == 200
        await asyncio.sleep(0.1)
        status, body, _ = await post(client, call(3, x=1), **{"Mcp-Session-Id": sid})
        assert status == 404 and body["error"]["code"] == -32001
        assert len(endpoint.sessions) == 0 and not endpoint.sessions.expired
        assert endpoint.server is not None
        assert (sid, "session") not in endpoint.server._channels  # its channel closed


async def test_a_session_in_use_does_not_expire_under_its_client() -> None:
    """Idle means unused: a stream held open, or a request under way, is use, and the
    idle time counts from when they end."""

    def slow(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [] if message.get("method") == "tools/call" else echo_server(message)

    async with serving(slow, ServeRules(session_idle=0.1)) as (client, endpoint):
        sid = await session_of(client)
        headers = {"Mcp-Session-Id": sid, "Accept": "text/event-stream"}
        stream = await client.get("/mcp", headers=headers)
        await asyncio.sleep(0.3)  # the stream held well past the idle time
        stream.close()
        await asyncio.sleep(0.02)
        status, _, _ = await post(
            client, {"jsonrpc": "2.0", "method": "x"}, **{"Mcp-Session-Id": sid}
        )
        assert status == 202  # its reconnect or next request finds it
        call_headers = {**JSON_ONLY, "Mcp-Session-Id": sid}
        pending = asyncio.create_task(client.post("/mcp", json=call(9), headers=call_headers))
        await asyncio.sleep(0.3)  # a request under way past the idle time
        assert len(endpoint.sessions) == 1
        status, _, _ = await post(
            client, {"jsonrpc": "2.0", "method": "x"}, **{"Mcp-Session-Id": sid}
        )
        assert status == 202
        pending.cancel()
