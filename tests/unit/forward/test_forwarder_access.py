"""Access control in the forwarder, with real loopback sockets: 127.0.0.2 and 127.0.0.3 are
two clients (all of 127/8 is this host), the upstream counts who reached it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from bridge.core.access import Access
from bridge.core.model import ForwardTarget
from bridge.forward.listeners import ForwarderSet
from tests.unit.forward.test_expose import free_port

ALLOWED, REFUSED = "127.0.0.2", "127.0.0.3"


class Upstream:
    """An echo server that remembers every connection it was handed."""

    def __init__(self) -> None:
        self.reached = 0
        self.port = 0
        self.server: asyncio.Server | None = None

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.reached += 1
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = up.server.sockets[0].getsockname()[1]
    yield up
    up.server.close()


async def connect(source: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def refused(source: str, port: int) -> bool:
    """True when the forwarder closed the connection before any byte came back (the
    reset may even beat the connect's completion to the client)."""
    try:
        r, w = await connect(source, port)
    except ConnectionResetError:
        return True
    try:
        w.write(b"hello")
        await w.drain()
        return await asyncio.wait_for(r.read(5), 5) == b""
    except ConnectionResetError:
        return True
    finally:
        w.close()


async def echoes(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    w.write(b"ping")
    await w.drain()
    return await asyncio.wait_for(r.readexactly(4), 5) == b"ping"


async def open_forwarder(upstream: Upstream, access: Access) -> tuple[ForwarderSet, int]:
    manager = ForwarderSet("127.0.0.1")
    port = free_port()
    target = ForwardTarget(port, "127.0.0.1", upstream.port, access)
    assert await manager.sync({"n:a": target}) == {}
    return manager, port


async def test_a_source_outside_the_allow_list_never_reaches_the_container(
    upstream: Upstream,
) -> None:
    manager, port = await open_forwarder(upstream, Access(allow=(f"{ALLOWED}/32",)))
    r, w = await connect(ALLOWED, port)
    assert await echoes(r, w)
    for _ in range(3):
        assert await refused(REFUSED, port)
    counters = manager.counters()["n:a"]
    assert (counters.total, counters.refused_address, counters.refused_limit) == (1, 3, 0)
    assert upstream.reached == 1
    w.close()
    await manager.close()


async def test_the_limit_refuses_the_one_too_many_and_frees_up(upstream: Upstream) -> None:
    manager, port = await open_forwarder(upstream, Access(max_connections=2))
    first = await connect(ALLOWED, port)
    second = await connect(REFUSED, port)
    assert await echoes(*first) and await echoes(*second)
    assert await refused(ALLOWED, port)
    assert upstream.reached == 2
    first[1].close()
    await first[1].wait_closed()
    for _ in range(50):  # the forwarder sees the close on its next turn
        if manager.counters()["n:a"].active < 2:
            break
        await asyncio.sleep(0.02)
    third = await connect(ALLOWED, port)
    assert await echoes(*third)
    counters = manager.counters()["n:a"]
    assert (counters.total, counters.refused_limit, counters.active) == (3, 1, 2)
    second[1].close()
    third[1].close()
    await manager.close()


async def test_new_rules_apply_to_new_connections_at_once(upstream: Upstream) -> None:
    manager, port = await open_forwarder(upstream, Access())
    old = await connect(REFUSED, port)
    assert await echoes(*old)
    narrowed = ForwardTarget(port, "127.0.0.1", upstream.port, Access(allow=(f"{ALLOWED}/32",)))
    assert await manager.sync({"n:a": narrowed}) == {}
    assert await refused(REFUSED, port)
    assert await echoes(*old), "a connection already open finishes where it is"
    r, w = await connect(ALLOWED, port)
    assert await echoes(r, w)
    w.close()
    old[1].close()
    await manager.close()


async def test_a_refused_client_gets_a_reset_not_a_hang(upstream: Upstream) -> None:
    manager, port = await open_forwarder(upstream, Access(allow=(f"{ALLOWED}/32",)))

    def blocking_client() -> None:
        with socket.socket() as s:
            s.bind((REFUSED, 0))
            s.settimeout(5)  # a hang would end in TimeoutError, not a reset
            # The reset may beat the end of connect() to the client, or come after it.
            with pytest.raises(ConnectionResetError):
                s.connect(("127.0.0.1", port))
                s.recv(10)

    await asyncio.to_thread(blocking_client)
    await manager.close()
