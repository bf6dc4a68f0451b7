"""Docker's attach stream without a server: the 8-byte frames cut anywhere, the upgrade's
answers, and DOCKER_HOST read as the SDK reads it (the real engine: tests/integration/
test_attach.py)."""

from __future__ import annotations

import asyncio
import ssl
import struct
from pathlib import Path

import pytest

from bridge.docker.attach import (
    STDERR,
    STDOUT,
    Attached,
    AttachFailed,
    attach,
)
from bridge.docker.endpoint import EndpointError, endpoint_from_env
from tests.pki import Authority, docker_cert_path


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


async def frames_of(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    attached = Attached(reader, writer=None)  # type: ignore[arg-type]
    return [f async for f in attached.frames()]


async def test_frames_cut_at_every_byte_come_out_whole() -> None:
    data = frame(STDOUT, b'{"id":1}\n') + frame(STDERR, b"warn\n") + frame(STDOUT, b"")
    for cut in range(len(data) + 1):
        got = await frames_of([data[:cut], data[cut:]])
        assert got == [(STDOUT, b'{"id":1}\n'), (STDERR, b"warn\n"), (STDOUT, b"")]


async def test_a_stream_cut_mid_frame_ends_without_the_partial_frame() -> None:
    data = frame(STDOUT, b"whole\n") + frame(STDOUT, b"partial")[:-3]
    assert await frames_of([data]) == [(STDOUT, b"whole\n")]


async def test_bytes_that_are_not_frames_end_the_stream() -> None:
    # A TTY's raw output: the first byte is no stream number.
    assert await frames_of([b"hello from a tty\n"]) == []


async def serve_once(answer: bytes, path: Path) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()

    return await asyncio.start_unix_server(handle, str(path))


@pytest.mark.parametrize(
    ("answer", "words", "gone"),
    [
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 35\r\n\r\n"
         b'{"message":"No such container: c1"}', "No such container: c1", True),
        (b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}", "cannot attach now", True),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", "attach is a POST", False),
        (b"HTTP/1.1 500 Oops\r\n\r\n", "HTTP 500", False),
    ],
)  # fmt: skip
async def test_a_refused_attach_says_why(
    tmp_path: Path, answer: bytes, words: str, gone: bool
) -> None:
    sock = tmp_path / "docker.sock"
    server = await serve_once(answer, sock)
    async with server:
        with pytest.raises(AttachFailed) as failed:
            await attach(endpoint_from_env({"DOCKER_HOST": f"unix://{sock}"}), "c1")
    assert words in failed.value.reason and failed.value.gone is gone


async def test_the_upgraded_connection_carries_stdin_and_frames(tmp_path: Path) -> None:
    sock = tmp_path / "docker.sock"
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
        line = await reader.readline()
        writer.write(frame(STDOUT, line))
        await writer.drain()
        writer.close()

    async with await asyncio.start_unix_server(handle, str(sock)):
        attached = await attach(endpoint_from_env({"DOCKER_HOST": f"unix://{sock}"}), "c/1")
        await attached.write(b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        got = [f async for f in attached.frames()]
        await attached.close()
    assert got == [(STDOUT, b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n')]
    request = seen[0].decode()
    assert request.startswith("POST /containers/c%2F1/attach?stream=1&stdin=1&stdout=1&stderr=1 ")
    assert "logs=" not in request  # old output is never replayed as if new
    assert "Upgrade: tcp" in request


def test_docker_host_is_read_as_the_sdk_reads_it() -> None:
    assert str(endpoint_from_env({})) == "unix:///var/run/docker.sock"
    assert str(endpoint_from_env({"DOCKER_HOST": "unix:///run/x.sock"})) == "unix:///run/x.sock"
    plain = endpoint_from_env({"DOCKER_HOST": "tcp://10.1.2.3"})
    assert (plain.host, plain.port, plain.tls) == ("10.1.2.3", 2375, None)
    # the SDK's legacy forms: two slashes after unix:, and host:port with no scheme
    legacy = endpoint_from_env({"DOCKER_HOST": "unix://home/u/.docker/run/docker.sock"})
    assert legacy.unix_path == "/home/u/.docker/run/docker.sock"
    bare = endpoint_from_env({"DOCKER_HOST": "10.0.0.5:2375"})
    assert (bare.host, bare.port, bare.tls) == ("10.0.0.5", 2375, None)
    v6 = endpoint_from_env({"DOCKER_HOST": "tcp://[fd00::5]:2375"})
    assert (v6.host, v6.port) == ("fd00::5", 2375)
    with pytest.raises(EndpointError, match="unix:// or tcp://"):
        endpoint_from_env({"DOCKER_HOST": "ssh://me@host"})


async def test_attach_over_tls_with_the_client_certificate_of_docker_cert_path(
    tmp_path: Path,
) -> None:
    """DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as the SDK reads them: the engine verified
    with ca.pem, and it sees our cert.pem (it requires one, as dockerd --tlsverify does)."""
    ca = Authority(tmp_path, "ca")
    server = ca.issue("dockerd", server=True)
    client = ca.issue("bridge", server=False)
    certs = docker_cert_path(tmp_path / "docker", ca.pem, client)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(server.cert, server.key)
    served.load_verify_locations(ca.pem)
    served.verify_mode = ssl.CERT_REQUIRED
    peers: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 UPGRADED\r\n\r\n" + frame(STDOUT, b"hi\n"))
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
    port = listener.sockets[0].getsockname()[1]
    env = {
        "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(certs),
    }
    async with listener:
        endpoint = endpoint_from_env(env)
        assert str(endpoint) == f"https://127.0.0.1:{port}"
        attached = await attach(endpoint, "c1")
        assert [f async for f in attached.frames()] == [(STDOUT, b"hi\n")]
        await attached.close()
        (certs / "ca.pem").write_bytes(Authority(tmp_path, "other").pem.read_bytes())
        with pytest.raises(AttachFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await attach(endpoint_from_env(env), "c1")  # the engine's CA, not another
    assert peers and peers[0]
