"""A served stdio server under many and slow clients: 1,000 handshake sessions open at
once on one process, each served, the next one refused with 503 and nothing else
disturbed; and clients that trickle their requests and never finish, or never read
their answers, leave everyone else served."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from tests.integration.conftest import Bridge
from tests.integration.test_stdio_agent import passing, run_stdio, url_of

pytestmark = pytest.mark.usefixtures("services")

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "load"}}


async def _open(http: aiohttp.ClientSession, url: str) -> tuple[int, str | None]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT}
    async with http.post(url, json=body, headers=JSON_HEADERS) as response:
        return response.status, response.headers.get("Mcp-Session-Id")


async def _echo(http: aiohttp.ClientSession, url: str, session: str, text: str) -> str:
    body = {
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}},
    }  # fmt: skip
    headers = {**JSON_HEADERS, "Mcp-Session-Id": session}
    async with http.post(url, json=body, headers=headers) as response:
        answer = await response.json()
        return str(answer["result"]["content"][0]["text"])


@pytest.mark.bridge_env({"BRIDGE_STDIO_MAX_SESSIONS": "1000"})
def test_a_thousand_sessions_on_one_process_and_the_next_refused(
    bridge: Bridge, mcp_server_image: str
) -> None:
    bridge.agent.start()
    run_stdio(bridge, mcp_server_image, "many")
    passing(bridge, "many")
    url = url_of(bridge, "many")

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as http:
            opened = await asyncio.gather(*(_open(http, url) for _ in range(1000)))
            assert {status for status, _ in opened} == {200}
            sessions = [s for _, s in opened if s]
            assert len(set(sessions)) == 1000  # each its own, none reused
            status, _ = await _open(http, url)
            assert status == 503  # the limit, said at once
            sample = sessions[::50]
            said = await asyncio.gather(
                *(_echo(http, url, s, f"s{n}") for n, s in enumerate(sample))
            )
            assert said == [f"s{n}" for n in range(len(sample))]

    asyncio.run(main())
    stdio = next(m["stdio"] for m in bridge.agent.status()["managed"] if m.get("stdio"))
    assert stdio["sessions"] == 1000 and stdio["in_flight"] == 0


def test_clients_that_trickle_or_never_read_leave_the_others_served(
    bridge: Bridge, mcp_server_image: str
) -> None:
    bridge.agent.start()
    run_stdio(bridge, mcp_server_image, "slow")
    passing(bridge, "slow")
    url = url_of(bridge, "slow")
    port = int(url.split(":")[2].split("/")[0])
    stuck: list[socket.socket] = []
    for n in range(40):
        s = socket.create_connection(("127.0.0.1", port))
        if n % 2:  # headers, then a body that never comes
            s.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100000\r\n\r\n{"jsonrpc":'
            )
        else:  # a request sent whole, its answer never read, the window left shut
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            big = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}'
            s.sendall(
                f"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Accept: application/json\r\nContent-Length: {len(big)}\r\n\r\n{big}".encode()
            )
        stuck.append(s)

    async def main() -> list[str]:
        async with aiohttp.ClientSession() as http:
            opened = await asyncio.gather(*(_open(http, url) for _ in range(8)))
            return await asyncio.gather(
                *(_echo(http, url, s or "", f"ok {n}") for n, (_, s) in enumerate(opened))
            )

    try:
        assert asyncio.run(asyncio.wait_for(main(), 60)) == [f"ok {n}" for n in range(8)]
    finally:
        for s in stuck:
            s.close()
