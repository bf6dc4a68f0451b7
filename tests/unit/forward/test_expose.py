"""The TCP forwarder against real loopback sockets (no containers needed)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bridge.core.model import ForwardTarget
from bridge.forward import relay
from bridge.forward.listeners import Forwarder, ForwarderSet
from bridge.forward.relay import PIPE_SIZE

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.write_eof()
        await w.drain()
        w.close()

    server, port = await serve(handle)
    yield port
    server.close()


async def forward(port: int) -> Forwarder:
    f = Forwarder("test:svc", "127.0.0.1", ForwardTarget(free_port(), "127.0.0.1", port))
    await f.start()
    return f


async def test_bulk_both_ways_byte_exact_with_half_close(echo: int) -> None:
    f = await forward(echo)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    payload = os.urandom(20 * 1024 * 1024)

    async def send() -> None:
        w.write(payload)
        await w.drain()
        w.write_eof()  # half-close: the echo still answers everything

    sender = asyncio.create_task(send())
    got = hashlib.sha256()
    total = 0
    while data := await r.read(1 << 20):
        got.update(data)
        total += len(data)
    await sender
    assert total == len(payload) and got.digest() == hashlib.sha256(payload).digest()
    w.close()
    await asyncio.sleep(0.05)
    assert f.counters.bytes_in == f.counters.bytes_out == len(payload)
    assert (f.counters.active, f.counters.total) == (0, 1)
    await f.close()


async def test_server_half_close_reaches_the_client() -> None:
    # What the server got after its own EOF, to check here: an assert inside the handler
    # would be swallowed by asyncio and could never fail the test.
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"greeting")
        w.write_eof()  # done talking, still listening
        received.set_result(await r.read())
        w.close()

    server, port = await serve(handle)
    f = await forward(port)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    assert await asyncio.wait_for(r.read(), 5) == b"greeting"  # EOF after it
    w.write(b"still sending after the server's EOF")
    await w.drain()
    w.write_eof()
    assert await asyncio.wait_for(received, 5) == b"still sending after the server's EOF"
    w.close()
    await f.close()
    server.close()


async def test_client_disconnecting_mid_stream_frees_everything(echo: int) -> None:
    f = await forward(echo)
    for _ in range(20):
        r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
        w.write(os.urandom(1_000_000))
        await r.read(1000)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()  # RST in the middle of the stream
    for _ in range(100):
        if f.counters.active == 0:
            break
        await asyncio.sleep(0.02)
    assert f.counters.active == 0 and not f.links
    await f.close()


async def test_upstream_reset_closes_the_client_promptly() -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(10)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.transport.abort()

    server, port = await serve(handle)
    f = await forward(port)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    w.write(b"0123456789")
    await w.drain()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        async with asyncio.timeout(5):  # a liveness bound, not a timing assertion
            data = await r.read(100)
            if data == b"":
                raise asyncio.IncompleteReadError(b"", 1)
    await f.close()
    server.close()


async def test_dead_upstream_closes_the_client_and_counts_a_failure() -> None:
    f = await forward(free_port())  # nothing listens there
    async with asyncio.timeout(10):
        # The reset may come before the client's own connect has completed.
        with contextlib.suppress(ConnectionResetError):
            r, _w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
            assert await r.read(100) == b""
    assert f.counters.failed == 1
    await f.close()


async def test_two_hundred_concurrent_connections(echo: int) -> None:
    f = await forward(echo)

    async def one(i: int) -> bool:
        r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
        message = f"hello {i} ".encode() * 100
        w.write(message)
        await w.drain()
        data = await r.readexactly(len(message))
        w.close()
        return data == message

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert all(results)
    assert f.counters.total == 200
    await f.close()


async def test_backpressure_bounds_what_the_forwarder_buffers() -> None:
    """An upstream that never reads: the forwarder must stop reading the client."""
    stalled: list[asyncio.StreamWriter] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        stalled.append(w)
        await asyncio.sleep(3600)

    server, port = await serve(handle)
    f = await forward(port)
    _r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    chunk = b"x" * 1_000_000
    for _ in range(64):  # offer 64 MB; socket buffers take a few MB, the rest must wait
        w.write(chunk)
        try:
            await asyncio.wait_for(w.drain(), 0.2)
        except TimeoutError:
            break
    await asyncio.sleep(0.3)
    (link,) = f.links
    # All it holds is one pipe's worth per direction, in the kernel; nothing in Python.
    assert link.buffered <= 2 * PIPE_SIZE, f"forwarder holds {link.buffered} bytes"
    assert f.counters.bytes_in < 32_000_000, "it kept reading although nobody drained"
    w.transport.abort()
    await f.close()
    server.close()


async def test_manager_opens_retargets_and_closes(echo: int) -> None:
    manager = ForwarderSet("127.0.0.1")
    port = free_port()
    assert await manager.sync({"n:a": ForwardTarget(port, "127.0.0.1", echo)}) == {}
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    w.close()
    # A port someone else holds is an error for that service only.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    errors = await manager.sync(
        {
            "n:a": ForwardTarget(port, "127.0.0.1", echo),
            "n:b": ForwardTarget(taken, "127.0.0.1", echo),
        }
    )
    assert list(errors) == ["n:b"] and "cannot listen" in errors["n:b"]
    assert set(manager.forwarders) == {"n:a"}
    blocker.close()
    await manager.sync({})
    assert not manager.forwarders
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    await manager.close()


async def test_server_that_speaks_first_loses_nothing() -> None:
    banner = os.urandom(300_000)  # more than one pipe's worth

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(banner)
        await w.drain()
        w.close()

    server, port = await serve(handle)
    f = await forward(port)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    assert await r.read() == banner
    w.close()
    await f.close()
    server.close()


def open_fds() -> int:
    """Descriptors open, less the empty pipes the relay keeps for reuse (bounded)."""
    return len(os.listdir("/proc/self/fd")) - 2 * len(relay._SPARE_PIPES)


async def test_finished_and_reset_connections_leave_no_descriptor_behind(echo: int) -> None:
    f = await forward(echo)
    before = open_fds()
    for i in range(50):
        r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
        w.write(b"x" * 100_000)
        await r.readexactly(1000)
        if i % 2:
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        else:
            w.write_eof()
            await r.read()
            w.close()
    for _ in range(200):
        if f.counters.active == 0 and open_fds() <= before:
            break
        await asyncio.sleep(0.02)
    # Each connection held two sockets and two pipes; all of them are closed again.
    assert f.counters.active == 0 and not f.links
    assert open_fds() <= before, f"{open_fds() - before} descriptors leaked"
    await f.close()


async def test_closing_the_forwarder_resets_open_connections(echo: int) -> None:
    f = await forward(echo)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    await f.close()
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError):
            assert await r.read() == b""
    assert not f.links


async def test_pipes_grow_for_bulk_and_stay_small_for_chatter(echo: int) -> None:
    f = await forward(echo)
    r, w = await asyncio.open_connection("127.0.0.1", f.target.listen_port)
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    (link,) = f.links
    assert all(p.capacity < PIPE_SIZE for p in link.pumps), "a quiet connection grew its pipes"
    w.write(os.urandom(8 * 1024 * 1024))
    await r.readexactly(8 * 1024 * 1024)
    # Root may always grow a pipe; an unprivileged agent may be refused by the pipe budget.
    if os.geteuid() == 0:
        assert all(p.capacity == PIPE_SIZE for p in link.pumps)
    w.close()
    await f.close()


async def test_a_scoped_sync_touches_only_its_scope(echo: int) -> None:
    # A pass over one container hands over only that container's targets: the others
    # must stay open (and must not cost a walk over all of them).
    manager = ForwarderSet("127.0.0.1")
    a, b = free_port(), free_port()
    await manager.sync(
        {"n:a": ForwardTarget(a, "127.0.0.1", echo), "n:b": ForwardTarget(b, "127.0.0.1", echo)}
    )
    assert await manager.sync({}, scope={"n:a"}) == {}
    assert set(manager.forwarders) == {"n:b"}
    await manager.sync({"n:a": ForwardTarget(a, "127.0.0.1", echo)}, scope={"n:a"})
    assert set(manager.forwarders) == {"n:a", "n:b"}
    await manager.sync({})  # unscoped: exactly what is given
    assert not manager.forwarders
    await manager.close()


async def test_short_connections_reuse_a_bounded_set_of_pipes(echo: int) -> None:
    manager = ForwarderSet("127.0.0.1")
    port = free_port()
    await manager.sync({"n:a": ForwardTarget(port, "127.0.0.1", echo)})
    for _ in range(3 * relay.SPARE_PIPES):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.write_eof()
        assert await r.read() == b""
        w.close()
    assert 0 < len(relay._SPARE_PIPES) <= relay.SPARE_PIPES
    await manager.close()
    assert not relay._SPARE_PIPES, "the agent stopping closes them"
