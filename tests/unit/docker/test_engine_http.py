"""The Docker adapter's own HTTP (bridge/docker/http.py, engine.py) against a fake engine
served by aiohttp on a unix socket, as DOCKER_HOST=unix://… names it: what is asked, how
the event stream is cut into events, and what each fault becomes. The real engines' answers
are the engines suites' (tests/engines, tests/integration)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from bridge.core.model import ContainerEvent
from bridge.core.protocols import DockerUnavailable, EventQueue, EventStream, StreamEnded
from bridge.docker.engine import DockerEngine
from bridge.docker.http import MAX_EVENT
from tests.pki import Authority, docker_cert_path
from tests.unit.docker.test_docker_parse import CID, event, row


def inspected(cid: str) -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": "/c",
        "Config": {"Labels": {"mcp.enable": "true"}, "OpenStdin": True},
        "State": {"Status": "running", "Running": True, "StartedAt": "2026-12-07T01:00:00Z"},
        "NetworkSettings": {"Ports": {}},
    }


async def got(queue: EventQueue) -> ContainerEvent | StreamEnded:
    return await asyncio.wait_for(queue.get(), 5)  # a lost StreamEnded fails, not hangs


async def opened(adapter: DockerEngine) -> tuple[EventQueue, EventStream]:
    queue: EventQueue = asyncio.Queue()
    return queue, await adapter.events(queue)


class FakeEngine:
    """Docker's answers to the four GETs, and a hand on the event stream."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.containers = {CID: row(), "b" * 64: row(Id="b" * 64)}
        self.fail: dict[str, tuple[int, str]] = {}  # path: (status, message); 0 hangs up
        self.delay: dict[str, float] = {}  # path: seconds before answering
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()  # None ends the stream
        self.stream_open = asyncio.Event()
        self.url = ""

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.asked.append(request.path_qs)
        await asyncio.sleep(self.delay.get(request.path, 0))
        if (failing := self.fail.get(request.path)) is not None:
            status, text = failing
            if not status:
                assert request.transport is not None
                request.transport.abort()  # the connection drops: no answer at all
            return web.json_response({"message": text}, status=status or 500)
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
    fake.url = f"unix://{sock}"
    adapter = DockerEngine(fake.url, timeout=5)
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


async def test_events_are_cut_at_their_newlines_however_they_arrive(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    queue, stream = await opened(adapter)
    assert fake.stream_open.is_set()  # open before events() returns: none after it missed
    (asked,) = [a for a in fake.asked if a.startswith("/events")]
    filters = json.loads(parse_qs(urlsplit(asked).query)["filters"][0])
    assert filters == {"type": ["container", "network"]}
    one, two = (json.dumps(event(a, name="c")).encode() + b"\n" for a in ("start", "die"))
    await fake.chunks.put(one[:7])  # an event split across chunks,
    await fake.chunks.put(one[7:] + b"\n" + two)  # then a blank line and one whole
    first, second = await got(queue), await got(queue)
    assert isinstance(first, ContainerEvent) and isinstance(second, ContainerEvent)
    assert (first.action, second.action) == ("start", "die")
    await fake.chunks.put(None)  # the engine ends the stream: said once, as such
    ended = await got(queue)
    assert isinstance(ended, StreamEnded) and str(ended) == "end of stream"
    stream.close()


async def test_an_event_that_cannot_be_read_ends_the_stream_and_says_why(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    queue, stream = await opened(adapter)
    await fake.chunks.put(b"{not json}\n")
    ended = await got(queue)
    assert isinstance(ended, StreamEnded) and "JSONDecodeError" in str(ended)
    stream.close()
    await fake.chunks.put(None)  # the fake's first stream, which waits on its queue, ends
    await asyncio.sleep(0.05)
    stream = await adapter.events(queue)  # the watch connects again
    await fake.chunks.put(b"x" * (MAX_EVENT + 1))  # no newline, ever: not held without end
    ended = await got(queue)
    assert isinstance(ended, StreamEnded) and "over" in str(ended)
    stream.close()


async def test_a_closed_stream_says_nothing_more(engine: tuple[FakeEngine, DockerEngine]) -> None:
    fake, adapter = engine
    queue, stream = await opened(adapter)
    stream.close()
    await fake.chunks.put(json.dumps(event("start")).encode() + b"\n")
    await asyncio.sleep(0.05)
    assert queue.empty()


async def test_the_stream_has_no_time_limit_but_the_calls_do(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, _ = engine
    quick = DockerEngine(fake.url, timeout=0.2)
    try:
        queue, stream = await opened(quick)
        await asyncio.sleep(0.5)  # quiet for longer than a call may take
        await fake.chunks.put(json.dumps(event("start")).encode() + b"\n")
        assert isinstance(await got(queue), ContainerEvent)
        stream.close()
        fake.delay["/version"] = 0.5
        with pytest.raises(DockerUnavailable, match="Timeout"):
            await quick.version()
    finally:
        await quick.close()


async def test_an_error_answer_keeps_the_session_and_spares_calls_under_way(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    await adapter.version()
    session = adapter._http
    fake.delay["/containers/json"] = 0.3
    fake.fail[f"/containers/{CID}/json"] = (500, "the engine\nbroke")
    listing = asyncio.ensure_future(adapter.list())
    await asyncio.sleep(0.05)
    with pytest.raises(DockerUnavailable, match="HTTP 500: the engine broke") as failed:
        await adapter.started_at(CID)
    assert "\n" not in str(failed.value)  # one log line
    assert len(await listing) == 2
    assert adapter._http is session  # the engine answered: nothing to read again
    with pytest.raises(DockerUnavailable, match="HTTP 500"):
        fake.fail["/events"] = (500, "no")
        await adapter.events(asyncio.Queue())


async def test_a_dropped_connection_makes_a_new_session_and_spares_calls_under_way(
    engine: tuple[FakeEngine, DockerEngine],
) -> None:
    fake, adapter = engine
    assert not (await adapter.version()).podman
    session = adapter._http
    assert session is not None
    fake.delay["/containers/json"] = 0.3
    fake.fail[f"/containers/{CID}/json"] = (0, "")
    listing = asyncio.ensure_future(adapter.list())
    await asyncio.sleep(0.05)
    with pytest.raises(DockerUnavailable, match="Docker at unix://"):
        await adapter.started_at(CID)
    assert adapter._podman is None  # the next session may reach another engine: asked again
    assert adapter._http is None  # the next call reads DOCKER_HOST and the TLS files again
    assert len(await listing) == 2  # under way on the old session: answered
    assert session._session.closed  # then that session closed
    del fake.fail[f"/containers/{CID}/json"]
    assert await adapter.started_at(CID)
    assert adapter._http is not None and adapter._http is not session


async def test_no_engine_or_an_unusable_docker_host_is_docker_unavailable(tmp_path: Path) -> None:
    nobody = DockerEngine(f"unix://{tmp_path / 'none.sock'}", timeout=5)
    with pytest.raises(DockerUnavailable, match=r"none\.sock"):
        await nobody.version()
    with pytest.raises(DockerUnavailable, match=r"none\.sock"):
        await nobody.events(asyncio.Queue())
    await nobody.close()
    with pytest.raises(DockerUnavailable, match="unix:// or tcp://"):
        await DockerEngine("ssh://me@host").version()


async def test_over_tls_only_ca_pem_vouches_for_the_engine_and_mended_files_need_no_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, other = Authority(tmp_path / "ours", "ours"), Authority(tmp_path / "other", "other")
    server, client = other.issue("dockerd", server=True), ours.issue("bridge", server=False)
    certs = docker_cert_path(tmp_path / "docker", ours.pem, client)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(server.cert, server.key)
    runner = web.AppRunner(FakeEngine().app())
    await runner.setup()
    port = unused_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=served).start()
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    monkeypatch.setenv("SSL_CERT_FILE", str(other.pem))  # a bundle that would vouch for it
    adapter = DockerEngine(f"tcp://127.0.0.1:{port}", timeout=5)
    try:
        with pytest.raises(DockerUnavailable, match="CERTIFICATE_VERIFY_FAILED") as failed:
            await adapter.version()
        assert f"tcp://127.0.0.1:{port}" in str(failed.value) and "\n" not in str(failed.value)
        (certs / "ca.pem").write_bytes(other.pem.read_bytes())  # mended: read again, no restart
        assert (await adapter.version()).version == "20.10.24"
        assert len(await adapter.list()) == 2
    finally:
        await adapter.close()
        await runner.cleanup()
