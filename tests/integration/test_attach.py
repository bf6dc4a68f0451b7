"""Docker's attach API for real (bridge/docker/attach.py): stdin written, stdout and stderr
apart, an attach that comes and goes without closing the server's stdin, the stream's end
when the container stops, a real MCP server (the SDK fixture on stdio) answering
`initialize` through it, and a server killed mid-call with clients waiting. TCP and TLS:
tests/unit/docker/test_attach_frames.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from testcontainers.core.container import DockerContainer

from bridge.docker.attach import STDOUT, AttachFailed, attach
from bridge.docker.endpoint import Endpoint, endpoint_from_env
from bridge.mcp.stdio.lines import Lines, encode
from bridge.mcp.stdio.mux import PROCESS_ENDED
from bridge.mcp.stdio.process import Channel, StdioServer
from tests.integration.conftest import IMAGE, TEST_LABEL, WAIT

pytestmark = pytest.mark.usefixtures("services")

# A line on stdin comes back on stdout, and marked on stderr.
ECHO = ["sh", "-c", 'while read -r line; do echo "$line"; echo "err $line" >&2; done']


def started(image: str, command: list[str] | None = None, **env: str) -> DockerContainer:
    """As `docker run -d -i`: stdin open and not StdinOnce. Without `detach`, the SDK's
    create sets StdinOnce (as `docker run -i` without -d), and the first attach to end
    would close the server's stdin."""
    container = DockerContainer(image).with_kwargs(
        stdin_open=True, detach=True, labels={TEST_LABEL: "1"}
    )
    if command is not None:
        container.with_command(command)
    for key, value in env.items():
        container.with_env(key, value)
    return container.start()


@pytest.fixture
def echo() -> Iterator[Any]:
    container = started(IMAGE, ECHO)
    try:
        yield container.get_wrapped_container()
    finally:
        container.stop()


async def round_trip(endpoint: Endpoint, container_id: str, line: bytes) -> tuple[bytes, bytes]:
    """Write one line, read until it is back on stdout and on stderr."""
    attached = await attach(endpoint, container_id)
    out, err = b"", b""
    try:
        await attached.write(line + b"\n")
        async with asyncio.timeout(WAIT):
            async for stream, payload in attached.frames():
                if stream == STDOUT:
                    out += payload
                else:
                    err += payload
                if out.endswith(b"\n") and err.endswith(b"\n"):
                    break
    finally:
        await attached.close()
    return out, err


async def test_stdin_in_stdout_and_stderr_apart(echo: Any) -> None:
    out, err = await round_trip(endpoint_from_env(), echo.id, b'{"jsonrpc":"2.0","id":1}')
    assert out == b'{"jsonrpc":"2.0","id":1}\n'
    assert err == b'err {"jsonrpc":"2.0","id":1}\n'


async def test_an_attach_that_ends_leaves_the_servers_stdin_open(echo: Any) -> None:
    endpoint = endpoint_from_env()
    for n in range(3):
        out, _ = await round_trip(endpoint, echo.id, f"round {n}".encode())
        assert out == f"round {n}\n".encode()
    echo.reload()
    assert echo.status == "running"


async def test_the_stream_ends_when_the_container_stops(echo: Any) -> None:
    """What tells the bridge its server process is gone, at once."""
    attached = await attach(endpoint_from_env(), echo.id)
    await asyncio.to_thread(echo.stop, timeout=1)
    async with asyncio.timeout(WAIT):
        assert [f async for f in attached.frames()] == []
    await attached.close()


async def test_an_attach_to_a_stopped_container_waits_for_its_start(echo: Any) -> None:
    """The engine holds the attach until the container runs again (`docker start -a`
    works this way): nothing the restarted server says first is lost."""
    await asyncio.to_thread(echo.stop, timeout=1)
    attached = await attach(endpoint_from_env(), echo.id)
    await asyncio.to_thread(echo.start)
    await attached.write(b"after the start\n")
    async with asyncio.timeout(WAIT):
        async for stream, payload in attached.frames():
            if stream == STDOUT:
                assert payload == b"after the start\n"
                break
    await attached.close()


async def test_a_missing_container_is_refused_by_name() -> None:
    with pytest.raises(AttachFailed) as missing:
        await attach(endpoint_from_env(), "no-such-container-here")
    assert missing.value.gone and "no such container" in missing.value.reason


async def test_a_real_stdio_mcp_server_answers_initialize_through_attach(
    mcp_server_image: str,
) -> None:
    container = started(mcp_server_image, MCP_TRANSPORT="stdio")
    try:
        attached = await attach(endpoint_from_env(), container.get_wrapped_container().id)
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "attach-test", "version": "0"},
            },
        }
        lines = Lines(max_message=4 << 20)
        answers: list[dict[str, Any]] = []
        # Written once: stdin is a pipe, so a server not reading yet finds it when it does.
        await attached.write(encode(initialize))
        async with asyncio.timeout(WAIT):
            async for stream, payload in attached.frames():
                if stream == STDOUT:
                    answers += [m for m in lines.feed(payload) if m.get("id") == 1]
                if answers:
                    break
        await attached.close()
    finally:
        container.stop()
    result = answers[0]["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"]["name"]


async def test_killing_the_server_mid_call_answers_every_client_at_once() -> None:
    """A server that reads and never answers, killed (SIGKILL) while three clients wait:
    each gets a JSON-RPC error at once, none is left hanging, and a request after the
    end is answered too, not queued."""
    container = started(IMAGE, SILENT)
    try:
        endpoint, cid = endpoint_from_env(), container.get_wrapped_container().id
        server, channels, answers = await killed_mid_call(
            endpoint, cid, container.get_wrapped_container()
        )
        assert [a["error"]["code"] for a in answers] == [PROCESS_ENDED] * 3
        assert [a["id"] for a in answers] == [1, 1, 1]
        late = await server.request(channels[0], {"jsonrpc": "2.0", "id": 2, "method": "x"})
        assert late["error"]["code"] == PROCESS_ENDED and not server.mux.pending
    finally:
        container.stop()


# A server that reads and never answers.
SILENT = ["sh", "-c", "while read -r line; do :; done"]


async def killed_mid_call(
    endpoint: Endpoint, container_id: str, container: Any
) -> tuple[StdioServer, list[Channel], list[dict[str, Any]]]:
    """Three clients each wait on a call to a server attached at `endpoint`; the container
    is killed (SIGKILL): the server, its channels and every answer, once reading ended."""
    stream = await attach(endpoint, container_id)
    server = StdioServer(stream, max_message=1 << 20, request_timeout=300)
    reading = asyncio.create_task(server.run())
    channels = [server.open(f"client {n}") for n in range(3)]
    calls = [
        asyncio.create_task(server.request(ch, {"jsonrpc": "2.0", "id": 1, "method": "x"}))
        for ch in channels
    ]
    await asyncio.sleep(0.5)
    assert not any(c.done() for c in calls)
    await asyncio.to_thread(container.kill)
    async with asyncio.timeout(WAIT):
        answers = await asyncio.gather(*calls)
        await reading
    return server, channels, list(answers)
