"""The shared stdio process on its asyncio side (bridge/mcp/stdio/process.py, handshake.py)
against an in-memory server: answers to the right channel under concurrency, nobody left
hanging when the process ends, banners and stderr kept out of the protocol, one handshake
per process and a health round trip the server itself answers. The real attach and real
servers: tests/integration/test_stdio_process.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.mcp.stdio import process as process_module
from bridge.mcp.stdio.handshake import Handshake, handshake, own_channel, round_trip
from bridge.mcp.stdio.http import PER_CONNECTION
from bridge.mcp.stdio.lines import encode
from bridge.mcp.stdio.mux import PROCESS_ENDED, TIMED_OUT
from bridge.mcp.stdio.process import Inbox, StdioServer

Handler = Callable[[dict[str, Any]], list[dict[str, Any]]]


class FakeProcess:
    """A stdio server: what is written to it is handled, what it says comes out framed."""

    def __init__(self, handle: Handler) -> None:
        self.handle = handle
        self.seen: list[dict[str, Any]] = []
        self._out: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

    async def write(self, data: bytes) -> None:
        for line in data.splitlines():
            message = json.loads(line)
            self.seen.append(message)
            for said in self.handle(message):
                self.say(said)

    def say(self, message: dict[str, Any] | bytes, stream: int = 1) -> None:
        self._out.put_nowait((stream, message if isinstance(message, bytes) else encode(message)))

    def exit(self) -> None:
        self._out.put_nowait(None)

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        while (frame := await self._out.get()) is not None:
            yield frame

    async def close(self) -> None:
        pass

    def abort(self) -> None:
        self.exit()


def echo_server(message: dict[str, Any]) -> list[dict[str, Any]]:
    """tools/call answered with its own params; the per-connection requests with {}."""
    if "id" in message and message.get("method") == "tools/call":
        return [{"jsonrpc": "2.0", "id": message["id"], "result": message["params"]}]
    if "id" in message and message.get("method") in PER_CONNECTION:
        return [{"jsonrpc": "2.0", "id": message["id"], "result": {}}]
    return []


def started(handle: Handler, **kw: Any) -> tuple[FakeProcess, StdioServer, asyncio.Task[None]]:
    process = FakeProcess(handle)
    server = StdioServer(process, max_message=1 << 20, request_timeout=kw.pop("timeout", 60), **kw)
    return process, server, asyncio.create_task(server.run())


def call(rid: Any, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": arguments}


async def test_concurrent_clients_with_one_id_each_get_their_own_answer() -> None:
    _, server, task = started(echo_server)
    channels = [server.open(f"c{n}") for n in range(20)]
    answers = await asyncio.gather(
        *(server.request(ch, call(n, who=ch.key, n=n)) for ch in channels for n in range(3))
    )
    assert [(a["id"], a["result"]) for a in answers] == [
        (n, {"who": f"c{c}", "n": n}) for c in range(20) for n in range(3)
    ]
    assert not server.mux.pending
    server._stream.exit()  # type: ignore[attr-defined]
    await task


async def test_a_second_request_with_an_id_in_flight_is_refused() -> None:
    _, server, task = started(lambda m: [])
    channel = server.open("a")
    first = asyncio.create_task(server.request(channel, call(1)))
    await asyncio.sleep(0)
    second = await server.request(channel, call(1))
    assert second["error"]["code"] == -32600 and not first.done()
    server._stream.exit()  # type: ignore[attr-defined]
    assert (await first)["error"]["code"] == PROCESS_ENDED
    await task


async def test_the_process_ending_mid_call_answers_every_waiter_at_once() -> None:
    process, server, task = started(lambda m: [])  # a server that never answers
    channel = server.open("a")
    calls = [asyncio.create_task(server.request(channel, call(n))) for n in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    process.exit()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert {a["error"]["code"] for a in answers} == {PROCESS_ENDED}
    assert sorted(a["id"] for a in answers) == list(range(5))
    await task
    late = await server.request(channel, call(9))  # after the end: answered, not queued
    assert late["error"]["code"] == PROCESS_ENDED and server.ended.is_set()


async def test_banners_are_skipped_and_stderr_never_enters_the_protocol() -> None:
    said: list[str] = []
    process, server, task = started(echo_server, on_skipped=said.append)
    process.say(b"Starting server v1.2 on stdio\n")
    process.say(b'{"jsonrpc":"2.0","id":1,"result":{}}\n', stream=2)  # on stderr: not an answer
    process.say(b"another banner\n")
    answer = await server.request(server.open("a"), call(1, x=1))
    assert answer["result"] == {"x": 1}
    assert said == ["Starting server v1.2 on stdio"]  # once per container, the first
    assert server.counters.skipped_lines == 2 and server.counters.stderr_lines == 1
    assert list(server.stderr) == ['{"jsonrpc":"2.0","id":1,"result":{}}']
    process.exit()
    await task


async def test_a_request_past_its_time_is_answered_and_cancelled() -> None:
    process, server, task = started(lambda m: [], timeout=0.2)
    answer = await asyncio.wait_for(server.request(server.open("a"), call(3)), 5)
    assert answer["error"]["code"] == TIMED_OUT and answer["id"] == 3
    cancelled = [m for m in process.seen if m.get("method") == "notifications/cancelled"]
    assert cancelled and cancelled[0]["params"]["requestId"] == process.seen[0]["id"]
    process.exit()
    await task


def handshake_only(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A server of the handshake era: no server/discover."""
    method, rid = message.get("method"), message.get("id")
    if method == "server/discover":
        return [{"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "nope"}}]
    if method == "initialize":
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "old", "version": "1"},
        }
        return [{"jsonrpc": "2.0", "id": rid, "result": result}]
    if method == "ping":
        return [{"jsonrpc": "2.0", "id": rid, "result": {}}]
    return []


def modern(message: dict[str, Any]) -> list[dict[str, Any]]:
    if message.get("method") == "server/discover":
        result = {
            "supportedVersions": ["2025-11-25", "2026-07-28"],
            "capabilities": {"tools": {"listChanged": True}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "new", "version": "2"}},
        }
        return [{"jsonrpc": "2.0", "id": message["id"], "result": result}]
    return []


@pytest.mark.parametrize(
    ("handle", "era", "version", "name", "check_method"),
    [
        (handshake_only, "handshake", "2025-06-18", "old", "ping"),
        (modern, "modern", "2026-07-28", "new", "server/discover"),
    ],
)
async def test_one_handshake_per_process_and_a_check_the_server_answers(
    handle: Handler, era: str, version: str, name: str, check_method: str
) -> None:
    process, server, task = started(handle)
    channel = own_channel(server)
    shook: Handshake = await handshake(server, channel)
    assert (shook.era, shook.version, shook.server_info["name"]) == (era, version, name)
    for _ in range(3):
        answer = await round_trip(server, channel, shook)
        assert "result" in answer
    methods = [m.get("method") for m in process.seen]
    assert methods.count("initialize") == (1 if era == "handshake" else 0)
    assert methods.count("notifications/initialized") == (1 if era == "handshake" else 0)
    assert methods[-3:] == [check_method] * 3
    process.exit()
    await task


class StuckStdin(FakeProcess):
    """A server that stopped reading its stdin: every write blocks."""

    async def write(self, data: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass  # as a real transport with unsent data: a close does not end the reader


async def test_a_server_that_stops_reading_cannot_stall_anyone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review finding: writes under one lock with no timeout let a stuck stdin hang the
    reader, the timeouts and every client. Writes go through one writer now, and a write
    stuck for WRITE_WAIT ends the attach, answering everyone."""
    monkeypatch.setattr("bridge.mcp.stdio.process.WRITE_WAIT", 0.3)
    process = StuckStdin(echo_server)
    server = StdioServer(process, max_message=1 << 20, request_timeout=60)
    task = asyncio.create_task(server.run())
    calls = [server.request(server.open(f"c{n}"), call(1)) for n in range(3)]
    answers = await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert {a["error"]["code"] for a in answers} == {PROCESS_ENDED}
    await asyncio.wait_for(task, 5)


async def test_one_odd_line_does_not_end_the_session_for_everyone() -> None:
    """Review finding: a line nested deeper than Python's recursion limit raised out of
    the reader, and a lone surrogate could not be encoded: both ended the shared process
    for every client while it still ran."""
    process, server, task = started(echo_server)
    process.say(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    surrogate = b'{"jsonrpc":"2.0","id":"x","method":"\\ud800/odd","params":{}}\n'
    process.say(surrogate)  # a server request the bridge refuses, naming the method
    answer = await asyncio.wait_for(server.request(server.open("a"), call(1, ok=True)), 5)
    assert answer["result"] == {"ok": True} and not server.ended.is_set()
    assert server.counters.skipped_lines == 1
    refusal = [m for m in process.seen if m.get("id") == "x"]
    assert refusal and refusal[0]["error"]["code"] == -32001
    process.exit()
    await task


async def test_a_shutdown_mid_read_still_answers_everyone() -> None:
    """Review finding: a cancel while the end's reason was being asked skipped the end."""
    _, server, task = started(lambda m: [])
    waiting = asyncio.create_task(server.request(server.open("a"), call(1)))
    await asyncio.sleep(0.05)
    task.cancel()
    answer = await asyncio.wait_for(waiting, 5)
    assert answer["error"]["code"] == PROCESS_ENDED and server.ended.is_set()


async def test_the_bridges_own_channel_takes_no_server_request() -> None:
    """Review finding: the bridge's channel declared sampling, so a server request made
    while only the health check was in flight went to a queue nobody reads."""
    process, server, task = started(lambda m: [])
    own = own_channel(server)
    checking = asyncio.create_task(
        server.request(own, {"jsonrpc": "2.0", "id": 1, "method": "ping"})
    )
    await asyncio.sleep(0.05)
    process.say({"jsonrpc": "2.0", "id": 9, "method": "sampling/createMessage", "params": {}})
    await asyncio.sleep(0.05)
    refusal = [m for m in process.seen if m.get("id") == 9]
    assert refusal and refusal[0]["error"]["code"] == -32001 and own.queue.empty()
    process.exit()
    await task
    assert (await checking)["error"]["code"] == PROCESS_ENDED


async def test_no_client_can_send_a_second_initialize() -> None:
    process, server, task = started(handshake_only)
    answer = await server.request(
        server.open("a"), {"jsonrpc": "2.0", "id": 1, "method": "initialize"}
    )
    assert answer["error"]["code"] == -32600
    assert [m for m in process.seen if m.get("method") == "initialize"] == []
    process.exit()
    await task


class StuckProcess(FakeProcess):
    """A server that stopped reading its stdin: every write waits forever."""

    async def write(self, data: bytes) -> None:
        await asyncio.Event().wait()


async def test_a_server_that_stops_reading_refuses_new_requests_instead_of_hoarding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_module, "OUTBOX_LIMIT", 1000)
    process = StuckProcess(echo_server)
    server = StdioServer(process, max_message=1 << 20, request_timeout=60)
    task = asyncio.create_task(server.run())
    channel = server.open("c")
    waiting = [
        asyncio.create_task(server.request(channel, call(n, blob="x" * 300))) for n in range(6)
    ]
    await asyncio.sleep(0.05)
    refused = await asyncio.wait_for(server.request(channel, call(99)), 5)
    assert refused["error"]["code"] == process_module.OVERLOADED
    assert "not reading its input" in refused["error"]["message"]
    process.exit()
    await task
    assert all("error" in a for a in await asyncio.gather(*waiting))  # none left hanging


async def test_notifications_are_refused_too_once_the_server_stops_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(process_module, "OUTBOX_LIMIT", 500)
    process = StuckProcess(echo_server)
    server = StdioServer(process, max_message=1 << 20, request_timeout=60)
    task = asyncio.create_task(server.run())
    channel = server.open("c")
    note = {"jsonrpc": "2.0", "method": "notifications/x", "params": {"blob": "y" * 300}}
    sent = [await server.send(channel, note) for _ in range(4)]
    assert sent[:2] == [True, True] and sent[-1] is False  # past the cap: not queued
    process.exit()
    await task


async def test_an_error_that_is_not_an_object_still_reaches_its_client() -> None:
    def odd(message: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"jsonrpc": "2.0", "id": message["id"], "error": "no"}] if "id" in message else []

    process, server, task = started(odd)
    channel = server.open("c")
    answer = await asyncio.wait_for(server.request(channel, call(1)), 5)
    assert answer["error"] == "no"
    process.exit()
    await task


async def test_an_inbox_wakes_its_reader_for_a_message_or_the_end_of_the_request() -> None:
    """Inbox.until: at once when a message waits or the request is done, else at the first
    of the two; what it hooked onto the request is let go of either way."""
    inbox, loop = Inbox(), asyncio.get_running_loop()
    request: asyncio.Future[dict[str, Any]] = loop.create_future()
    waiting = asyncio.ensure_future(inbox.until(request))
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait({"method": "notifications/progress"})
    await asyncio.wait_for(waiting, 5)  # woken by the message
    assert request.remove_done_callback(inbox._poke) == 0  # and unhooked, still pending
    await asyncio.wait_for(inbox.until(request), 5)  # one waits: at once
    assert inbox.get_nowait() == {"method": "notifications/progress"}
    waiting = asyncio.ensure_future(inbox.until(request))
    await asyncio.sleep(0)
    request.set_result({"id": 1})
    await asyncio.wait_for(waiting, 5)  # woken by the request's end
    await asyncio.wait_for(inbox.until(request), 5)  # done already: at once
    cancelled = asyncio.ensure_future(inbox.until(loop.create_future()))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    inbox.put_nowait({"method": "later"})  # a reader that left is not woken, nor broken
    assert inbox.qsize() == 1
