"""The served set (bridge/mcp/stdio/served.py) and its check (check.py) against in-memory
processes: one handshake per process, none for a process whose handshake was kept (a
restarted bridge), attached again when a process ends, the check a round trip that is
critical while nothing is attached, and the access rules before anything is read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.core.access import Access
from bridge.core.model import StdioTarget
from bridge.loop.stdio import KeptHandshakes
from bridge.mcp.stdio.check import CHANGES, probe_served
from bridge.mcp.stdio.http import ServeRules
from bridge.mcp.stdio.served import AttachRefused, StdioSet, StdioSettings
from bridge.pool.store import StoreError
from tests.integration.conftest import free_tcp_port
from tests.unit.mcp.test_stdio_process import FakeProcess

SID = "n1:mcp-s"
TOOLS = [{"name": "echo", "inputSchema": {"type": "object"}}]


def handshake_only(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A handshake-era server: no server/discover; ping, initialize and tools/list."""
    rid, method = message.get("id"), message.get("method")
    if rid is None:
        return []
    if method == "initialize":
        result = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "mem", "version": "1.0"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    else:
        return [{"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}}]
    return [{"jsonrpc": "2.0", "id": rid, "result": result}]


class Engine:
    """Attach and inspect, as the loop's stdio parts give them: each attach is the
    process whose StartedAt `started` says; `gone` refuses as for a removed container,
    `down` as an engine that does not answer, `stopped` as a stopped container;
    `initialize_after`: seconds before a process answers `initialize`."""

    def __init__(self) -> None:
        self.processes: list[FakeProcess] = []
        self.started = "t1"
        self.gone = self.down = self.stopped = False
        self.fail_once: Exception | None = None
        self.initialize_after = 0.0
        self.serve_with: Any = handshake_only  # how each process answers
        self.tools_capability: dict[str, Any] = {}  # what the server declares of tools

    async def attach(self, cid: str) -> FakeProcess:
        if self.gone:
            raise AttachRefused("no such container", gone=True)
        process = FakeProcess(self._handler())
        self.processes.append(process)
        return process

    def _handler(self) -> Any:
        def handle(message: dict[str, Any]) -> list[dict[str, Any]]:
            answers = self.serve_with(message)
            if message.get("method") == "initialize":
                answers[0]["result"]["capabilities"]["tools"] = self.tools_capability
            if message.get("method") == "initialize" and self.initialize_after:
                loop = asyncio.get_running_loop()
                process = self.processes[-1]
                for answer in answers:
                    loop.call_later(self.initialize_after, process.say, answer)
                return []
            return answers

        return handle

    async def identify(self, cid: str) -> str:
        if self.fail_once is not None:
            exc, self.fail_once = self.fail_once, None
            raise exc
        if self.down:
            raise AttachRefused("Docker at the local socket: connection refused")
        if self.stopped:
            raise AttachRefused("the container is not running", gone=True)
        return self.started

    def initializes(self) -> int:
        return sum(m.get("method") == "initialize" for p in self.processes for m in p.seen)


def target(port: int, access: Access | None = None, container: str = "c1") -> StdioTarget:
    return StdioTarget(port, container, "mcp-s", "/mcp", access or Access())


async def wait_until(predicate: Any, seconds: float = 10) -> None:
    """Polled, bounded: a regression fails here instead of hanging the run."""
    for _ in range(int(seconds * 100)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still not true after {seconds:g}s")


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    yield Engine()


def stdio_set(engine: Engine, kept: KeptHandshakes) -> StdioSet:
    settings = StdioSettings("127.0.0.1", ServeRules(), request_timeout=30)
    return StdioSet(settings, engine.attach, engine.identify, kept)  # type: ignore[arg-type]


async def test_one_handshake_per_process_and_the_check_is_a_round_trip(engine: Engine) -> None:
    kept = KeptHandshakes()
    served_set = stdio_set(engine, kept)
    port = free_tcp_port()
    assert await served_set.sync({SID: target(port)}) == {}
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    for _ in range(3):
        result = await probe_served(served, 2.0, want_tools=True)
        assert result.status == "passing", result.output
    assert result.meta["mcp_server_name"] == "mem"
    assert result.meta["mcp_protocol_version"] == "2025-11-25"
    assert result.tools == TOOLS
    assert not result.listens and result.watch is None  # it announces no tool changes
    process = engine.processes[0]
    assert [m["method"] for m in process.seen if m.get("method") == "ping"] == ["ping"] * 3
    assert engine.initializes() == 1

    # The process ends: critical at once, then the next one is attached and shaken hands with.
    engine.started = "t2"
    process.exit()
    await wait_until(lambda: len(engine.processes) == 2 and served.state == "serving")
    assert engine.initializes() == 2
    assert (await probe_served(served, 2.0, want_tools=False)).status == "passing"
    await served_set.close()


async def test_tool_list_changes_of_the_process_are_heard_until_it_ends(engine: Engine) -> None:
    engine.tools_capability = {"listChanged": True}
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    result = await probe_served(served, 2.0, want_tools=True)
    assert result.listens and result.watch is not None and result.tools == TOOLS
    heard: list[str] = []
    watching = asyncio.create_task(result.watch(lambda: heard.append("changed")))
    server = served.server
    assert server is not None
    await wait_until(lambda: any(key[:2] == CHANGES for key in server.mux.clients))
    process = engine.processes[0]
    process.say({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"})
    process.say({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    await wait_until(lambda: heard)
    assert heard == ["changed"]  # tools only
    engine.started = "t2"
    process.exit()  # the watch ends with the process: its caller lists the next one's
    await asyncio.wait_for(watching, 5)
    assert not any(key[:2] == CHANGES for key in server.mux.clients)
    await served_set.close()


def modern_listening(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A 2026-07-28 server: list changes only on a `subscriptions/listen` stream."""
    rid, method = message.get("id"), message.get("method")
    if method == "server/discover":
        result = {
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {"listChanged": True}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "new", "version": "2"}},
        }
        return [{"jsonrpc": "2.0", "id": rid, "result": result}]
    if method == "tools/list":
        return [{"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}}]
    if method == "subscriptions/listen":  # acknowledged, then a change; the stream stays
        meta = {"_meta": {"io.modelcontextprotocol/subscriptionId": rid}}
        acknowledged = {"notifications": {"toolsListChanged": True}, **meta}
        return [
            {
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": acknowledged,
            },
            {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": meta},
        ]
    return []


async def test_a_modern_servers_tool_changes_are_asked_for_and_heard(engine: Engine) -> None:
    engine.serve_with = modern_listening
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    result = await probe_served(served, 2.0, want_tools=True)
    assert result.listens and result.watch is not None
    heard: list[str] = []
    watching = asyncio.create_task(result.watch(lambda: heard.append("changed")))
    await wait_until(lambda: heard)
    listens = [m for m in engine.processes[0].seen if m.get("method") == "subscriptions/listen"]
    assert listens[0]["params"]["notifications"] == {"toolsListChanged": True}
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    await served_set.close()


async def test_the_watch_follows_the_service_when_its_container_is_replaced(
    engine: Engine,
) -> None:
    engine.tools_capability = {"listChanged": True}
    served_set = stdio_set(engine, KeptHandshakes())
    port = free_tcp_port()
    await served_set.sync({SID: target(port)})
    await wait_until(lambda: served_set.served[SID].state == "serving")
    find = lambda: served_set.served.get(SID)  # noqa: E731 - as the agent's probe finds it
    result = await probe_served(find(), 2.0, want_tools=True, find=find)
    assert result.watch is not None
    heard: list[str] = []
    watching = asyncio.create_task(result.watch(lambda: heard.append("changed")))
    await wait_until(
        lambda: any(key[:2] == CHANGES for key in engine_server(served_set).mux.clients)
    )
    await served_set.sync({SID: target(port, container="c2")})  # re-created: a new Served
    await asyncio.wait_for(watching, 5)  # the old one's watch ends with it, and
    again = asyncio.create_task(result.watch(lambda: heard.append("changed")))  # the next
    await wait_until(lambda: served_set.served[SID].state == "serving")
    await wait_until(
        lambda: any(key[:2] == CHANGES for key in engine_server(served_set).mux.clients)
    )
    engine.processes[-1].say({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    await wait_until(lambda: heard)
    again.cancel()
    await asyncio.gather(again, return_exceptions=True)
    await served_set.close()


def engine_server(served_set: StdioSet) -> Any:
    server = served_set.served[SID].server
    assert server is not None
    return server


async def test_a_restarted_bridge_serves_a_live_process_without_a_second_initialize(
    engine: Engine,
) -> None:
    kept = KeptHandshakes()  # what the store keeps across the restart (test_processes.py)
    first = stdio_set(engine, kept)
    port = free_tcp_port()
    await first.sync({SID: target(port)})
    await wait_until(lambda: first.served[SID].state == "serving")
    await first.close()  # the agent stops; the process runs on

    second = stdio_set(engine, kept)
    await second.sync({SID: target(port)})
    served = second.served[SID]
    await wait_until(lambda: served.state == "serving")
    assert engine.initializes() == 1
    assert (await probe_served(served, 2.0, want_tools=False)).status == "passing"
    await second.close()


async def test_nothing_attached_is_critical_and_a_removed_container_ends_the_loop(
    engine: Engine,
) -> None:
    engine.gone = True
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: "no such container" in served.state)
    result = await probe_served(served, 2.0, want_tools=True)
    assert result.status == "critical" and "no such container" in result.output
    assert (await probe_served(None, 2.0, want_tools=False)).status == "critical"
    await served_set.close()


async def test_a_port_in_use_is_an_error_for_the_pass(engine: Engine) -> None:
    served_set = stdio_set(engine, KeptHandshakes())
    port = free_tcp_port()
    await served_set.sync({SID: target(port)})
    other = stdio_set(engine, KeptHandshakes())
    errors = await other.sync({"n1:mcp-t": target(port)})
    assert "cannot listen" in errors["n1:mcp-t"]
    await served_set.close()
    await other.close()


async def test_the_allow_list_refuses_before_anything_is_read(engine: Engine) -> None:
    served_set = stdio_set(engine, KeptHandshakes())
    port = free_tcp_port()
    await served_set.sync({SID: target(port, Access(allow=("10.0.0.0/8",)))})
    await wait_until(lambda: served_set.served[SID].state == "serving")
    seen = len(engine.processes[0].seen)
    async with aiohttp.ClientSession() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with http.post(f"http://127.0.0.1:{port}/mcp", json=body) as response:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == -32003
    assert len(engine.processes[0].seen) == seen
    assert served_set.refused == {SID: 1}
    await served_set.close()


async def test_readings_count_across_processes_and_keep_a_crashed_servers_stderr(
    engine: Engine,
) -> None:
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    await probe_served(served, 2.0, want_tools=False)
    engine.processes[0].say(b"Traceback: it broke\n", stream=2)
    await wait_until(lambda: served.reading().stderr)
    first = served.reading()
    assert (first.processes, first.answered, first.in_flight) == (
        1,
        3,
        0,
    )  # discover (refused), initialize, ping
    engine.started = "t2"
    engine.processes[0].exit()
    await wait_until(lambda: len(engine.processes) == 2 and served.state == "serving")
    await probe_served(served, 2.0, want_tools=False)
    after = served.reading()
    assert after.processes == 2 and after.answered == 6  # and as many for the next process
    assert served_set.readings() == {SID: after}
    await served_set.close()


async def test_a_stream_broken_while_the_engine_is_away_keeps_the_handshake(
    engine: Engine,
) -> None:
    """An engine restarted with live-restore: the attach stream ends, the process lives."""
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    engine.down = True
    engine.processes[0].exit()
    await wait_until(lambda: "connection refused" in served.state)
    engine.down = False
    await wait_until(lambda: served.state == "serving" and len(engine.processes) == 2)
    assert engine.initializes() == 1  # the same process (t1): its handshake was kept
    await served_set.close()


async def test_a_close_in_the_middle_of_the_handshake_lets_it_finish_and_keeps_it(
    engine: Engine,
) -> None:
    engine.initialize_after = 0.3
    kept = KeptHandshakes()
    first = stdio_set(engine, kept)
    port = free_tcp_port()
    await first.sync({SID: target(port)})
    await wait_until(lambda: engine.initializes() == 1)
    await first.close()  # while initialize is unanswered
    second = stdio_set(engine, kept)
    await second.sync({SID: target(port)})
    await wait_until(lambda: second.served[SID].state == "serving")
    assert engine.initializes() == 1
    await second.close()


async def test_a_process_sent_initialize_without_its_answer_kept_is_served_anyway(
    engine: Engine,
) -> None:
    """The bridge was killed after sending `initialize`: the next one sends it again (it
    cannot serve without an answer), and a server that refuses it is served all the same."""
    kept = KeptHandshakes()
    await kept.mark_sent("c1", "t1")

    def refusing(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") == "initialize":
            error = {"code": -32600, "message": "already initialized"}
            return [{"jsonrpc": "2.0", "id": message["id"], "error": error}]
        return handshake_only(message)

    engine._handler = lambda: refusing  # type: ignore[method-assign]
    served_set = stdio_set(engine, kept)
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    assert (await probe_served(served, 2.0, want_tools=True)).tools == TOOLS
    await served_set.close()


async def test_a_stopped_container_is_looked_at_again_until_it_runs(engine: Engine) -> None:
    engine.stopped = True
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: "not running" in served.state)
    assert engine.processes == []  # nothing attached, nothing sent
    engine.stopped = False
    await wait_until(lambda: served.state == "serving")
    assert engine.initializes() == 1
    await served_set.close()


async def test_an_unexpected_failure_does_not_end_serving(engine: Engine) -> None:
    engine.fail_once = RuntimeError("a bug")
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: served.state == "serving")
    assert served.running
    await served_set.close()


class EndsAtOnce(FakeProcess):
    """An attach stream that ends before anything is said (a proxy that answers 200 but
    hands nothing over), while the process itself runs on."""

    async def frames(self) -> Any:
        return
        yield


async def test_a_stream_that_ends_at_once_is_not_attached_again_in_a_tight_loop(
    engine: Engine,
) -> None:
    attaches = 0

    async def attach(cid: str) -> FakeProcess:
        nonlocal attaches
        attaches += 1
        return EndsAtOnce(handshake_only)

    engine.attach = attach  # type: ignore[method-assign]
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    await asyncio.sleep(1.2)
    await served_set.close()
    assert 1 <= attaches <= 4  # 0.5 s, then 1 s, ... not thousands


async def test_a_server_whose_answers_break_the_handshake_is_left_alone(engine: Engine) -> None:
    def odd(message: dict[str, Any]) -> list[dict[str, Any]]:
        if message.get("method") == "server/discover":  # supportedVersions not a list
            return [{"jsonrpc": "2.0", "id": message["id"], "result": {"supportedVersions": 5}}]
        return handshake_only(message)

    engine._handler = lambda: odd  # type: ignore[method-assign]
    served_set = stdio_set(engine, KeptHandshakes())
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: "handshake failed" in served.state)
    await asyncio.sleep(0.8)
    assert len(engine.processes) == 1 and engine.initializes() == 0  # not asked again
    await served_set.close()


class BrokenStore:
    """A store that cannot be read for now (locked, a disk fault)."""

    def __init__(self) -> None:
        self.broken = True

    async def get(self, container_id: str, started_at: str) -> str | None:
        if self.broken:
            raise StoreError("database is locked")
        return None

    async def put(self, container_id: str, started_at: str, text: str) -> None:
        pass

    async def forget(self, container_id: str, started_at: str) -> None:
        pass

    async def keep_only(self, container_ids: set[str]) -> None:
        pass


async def test_kept_handshakes_that_cannot_be_read_send_nothing_until_they_can(
    engine: Engine,
) -> None:
    kept = KeptHandshakes()
    store = BrokenStore()
    kept.store = store  # type: ignore[assignment]
    served_set = stdio_set(engine, kept)
    await served_set.sync({SID: target(free_tcp_port())})
    served = served_set.served[SID]
    await wait_until(lambda: "locked" in served.state)
    assert engine.initializes() == 0  # not known whether it was initialized: nothing sent
    store.broken = False
    await wait_until(lambda: served.state == "serving")
    assert engine.initializes() == 1
    await served_set.close()
