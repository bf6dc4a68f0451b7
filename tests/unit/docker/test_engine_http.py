"""The Docker adapter's own HTTP (bridge/docker/http.py, engine.py) against a fake engine
served by aiohttp on a unix socket, as DOCKER_HOST=unix://… names it: what is asked, how
the event stream is cut into events, and what each fault becomes. The real engines' answers
are the engines suites' (tests/engines, tests/integration)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web

from bridge.core.model import ContainerEvent
from bridge.core.protocols import DockerUnavailable, EventQueue, StreamEnded
from bridge.docker.engine import DockerEngine
from bridge.docker.http import MAX_EVENT
from tests.unit.docker.test_docker_parse import CID, event, row


def inspected(cid: str) -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": "/c",
        "Config": {"Labels": {"mcp.enable": "true"}, "OpenStdin": True},
        "State": {"Status": "running", "Running": True, "StartedAt": "2026-12-07T01:00:00Z"},
        "NetworkSettings": {"Ports": {}},
    }


class FakeEngine:
    """Docker's answers to the five GETs, and a hand on the event stream."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.containers = {CID: row(), "b" * 64: row(Id="b" * 64)}
        self.fail: tuple[int, str] | None = None
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()  # None ends the stream
        self.stream_open = asyncio.Event()

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.asked.append(request.path_qs)
        if self.fail is not None:
            status, text = self.fail
            return web.json_response({"message": text}, status=status)
        response: web.StreamResponse = await handler(request)
        return response

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"Version": "20.10.24", "ApiVersion": "1.41"})

    async def listing(self, request: web.Request) -> web.Response:
        filters = json.loads(request.query.get("filters", "{}"))
        ids = filters.get("id")
        rows = [r for cid, r in self.containers.items() if ids is None or cid in ids]
        return web.json_response(rows)

    async def inspect(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self.containers:
            return web.json_response({"message": f"No such container: {cid}"}, status=404)
        return web.json_response(inspected(cid))

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.stream_open.set()
        while (chunk := await self.chunks.get()) is not None:
            await response.write(chunk)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/version", self.version)
        app.router.add_get("/containers/json", self.listing)
        app.router.add_get("/containers/{cid}/json", self.inspect)
        app.router.add_get("/events", self.events)
        return app


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[FakeEngine, DockerEngine]]:
    fake = FakeEngine()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    sock = tmp_path / "docker.sock"
    await web.UnixSite(runner, str(sock)).start()
    adapter = DockerEngine(f"unix://{sock}", timeout=5)
    try:
        yield fake, adapter
    finally:
        await adapter.close()
        await fake.chunks.put(None)
        await runner.cleanup()


async def test_a_listing_and_a_look_ask_what_the_sdk_asked(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    assert {c.id for c in await adapter.list()} == {CID, "b" * 64}
    assert fake.asked == ["/version", "/containers/json?all=1"]  # unversioned paths
    fake.asked.clear()
    found = await adapter.list([CID, "gone"])  # a few: one inspect each, a gone one left out
    assert [c.id for c in found] == [CID] and found[0].stdin is not None
    assert fake.asked == [f"/containers/{CID}/json", "/containers/gone/json"]
    fake.asked.clear()
    many = [CID, "b" * 64, "c", "d", "e"]  # more than INSPECT_AT_MOST: one filtered listing
    assert {c.id for c in await adapter.list(many)} == {CID, "b" * 64}
    (asked,) = fake.asked
    query = parse_qs(urlsplit(asked).query)
    assert query["all"] == ["1"] and json.loads(query["filters"][0]) == {"id": sorted(many)}
    assert await adapter.started_at(CID) == "2026-12-07T01:00:00Z"
    assert await adapter.started_at("gone") == ""
    assert await adapter.ping() is False  # no /_ping here: an answer, not a fault


async def test_events_are_cut_at_their_newlines_however_they_arrive(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    queue: EventQueue = asyncio.Queue()
    stream = await adapter.events(queue)
    assert fake.stream_open.is_set()  # open before events() returns: none after it missed
    (asked,) = [a for a in fake.asked if a.startswith("/events")]
    filters = json.loads(parse_qs(urlsplit(asked).query)["filters"][0])
    assert filters == {"type": ["container", "network"]}
    one, two = (json.dumps(event(a, name="c")).encode() + b"\n" for a in ("start", "die"))
    await fake.chunks.put(one[:7])  # an event split across chunks,
    await fake.chunks.put(one[7:] + b"\n" + two)  # then a blank line and one whole
    first, second = await queue.get(), await queue.get()
    assert isinstance(first, ContainerEvent) and isinstance(second, ContainerEvent)
    assert (first.action, second.action) == ("start", "die")
    await fake.chunks.put(None)  # the engine ends the stream: said once, as such
    ended = await queue.get()
    assert isinstance(ended, StreamEnded) and str(ended) == "end of stream"
    stream.close()


async def test_an_event_that_cannot_be_read_ends_the_stream_and_says_why(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    queue: EventQueue = asyncio.Queue()
    stream = await adapter.events(queue)
    await fake.chunks.put(b"{not json}\n")
    ended = await queue.get()
    assert isinstance(ended, StreamEnded) and "JSONDecodeError" in str(ended)
    stream.close()
    await fake.chunks.put(None)  # the fake's first stream, which waits on its queue, ends
    await asyncio.sleep(0.05)
    stream = await adapter.events(queue)  # the watch connects again
    await fake.chunks.put(b"x" * (MAX_EVENT + 1))  # no newline, ever: not held without end
    ended = await queue.get()
    assert isinstance(ended, StreamEnded) and "over" in str(ended)
    stream.close()


async def test_a_closed_stream_says_nothing_more(engine: tuple[FakeEngine, DockerEngine]) -> None:
    fake, adapter = engine
    queue: EventQueue = asyncio.Queue()
    stream = await adapter.events(queue)
    stream.close()
    await fake.chunks.put(json.dumps(event("start")).encode() + b"\n")
    await asyncio.sleep(0.05)
    assert queue.empty()


async def test_faults_become_docker_unavailable_and_the_next_call_starts_afresh(
    engine: tuple[FakeEngine, DockerEngine], tmp_path: Path
) -> None:
    fake, adapter = engine
    fake.fail = (500, "the engine\nbroke")
    with pytest.raises(DockerUnavailable, match="HTTP 500: the engine broke") as failed:
        await adapter.list()
    assert "\n" not in str(failed.value)  # one log line
    with pytest.raises(DockerUnavailable, match="HTTP 500"):
        await adapter.events(asyncio.Queue())
    fake.fail = None
    assert len(await adapter.list()) == 2  # a new session, the version asked again
    assert fake.asked[-2:] == ["/version", "/containers/json?all=1"]

    nobody = DockerEngine(f"unix://{tmp_path / 'none.sock'}", timeout=5)
    with pytest.raises(DockerUnavailable, match=r"none\.sock"):
        await nobody.version()
    with pytest.raises(DockerUnavailable, match="unix:// or tcp://"):
        await DockerEngine("ssh://me@host").version()
    await nobody.close()
