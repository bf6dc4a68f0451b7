"""A container's stdin and stdout over Docker's attach API, on the event loop.

`POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1` upgrades the HTTP
connection to a raw stream: what the bridge writes goes to the container's stdin, and
without a TTY what the container writes comes back as frames, each an 8-byte header
(stream: 1 stdout, 2 stderr; then the payload's length, big-endian) and its payload. A frame
may be split across reads and one read may hold several; `readexactly` takes care of both.

Why not the SDK's `attach_socket`: it is a blocking socket (an `ssl.SSLSocket` over TLS,
which asyncio cannot drive), so each attached container would hold a thread. Here the
upgrade is one request on an asyncio connection to the engine's endpoint (endpoint.py,
the engine's other calls use it too): unix socket, TCP and TLS alike, and 500 attached
containers are 500 sockets, not 500 threads.

Closing the attach connection does not close the server's stdin for a container run with
`docker run -d -i` (OpenStdin, not StdinOnce): the bridge may attach again later. The
stream ends when the container stops; an attach to a stopped container is held by the
engine until the container starts again (as `docker start -a` uses it), so the bridge
attaches to running containers and drops the attach when it sees one stop.
Output written while nobody is attached is lost, and `logs=1` would replay old output as
if new, so it is never asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import struct
from collections.abc import AsyncIterator, Mapping
from urllib.parse import quote

from bridge.docker.endpoint import Endpoint

STDOUT, STDERR = 1, 2
HEADER = struct.Struct(">BxxxL")
MAX_HEAD = 64 * 1024  # the engine's answer to the upgrade: a status line and a few headers
ATTACH_WAIT = 10.0  # seconds for the connection and the upgrade; the stream itself has none


class AttachFailed(Exception):
    """The engine would not attach; `reason` says why in words for `status`."""

    def __init__(self, reason: str, *, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gone = gone  # the container is not there, or not running: not the engine's fault


class Attached:
    """One attach connection: `write` to the container's stdin, `frames` from its output."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()  # backpressure: a server that stops reading slows us

    async def frames(self) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, payload) until the container's output ends (it stopped, or the
        connection went). A stream number other than stdout or stderr ends it too: the
        engine sent something that is not the multiplexed stream (a TTY's raw bytes)."""
        while True:
            try:
                head = await self._reader.readexactly(HEADER.size)
                stream, size = HEADER.unpack(head)
                payload = await self._reader.readexactly(size) if size else b""
            except (asyncio.IncompleteReadError, OSError, ssl.SSLError):
                return  # the connection went (ConnectionError is an OSError too)
            if stream not in (0, STDOUT, STDERR):
                return
            yield stream, payload

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        self.abort()  # still open: unsent data held it (close waits to send it first)

    def abort(self) -> None:
        """Drop the connection now, unsent data and all: a closed transport with data it
        cannot send would wait for the peer forever, and the reader with it."""
        self._writer.transport.abort()


async def attach(endpoint: Endpoint, container_id: str) -> Attached:
    """Attach to a running container's stdin, stdout and stderr (never its old logs)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(ATTACH_WAIT):
            if endpoint.unix_path is not None:
                reader, writer = await asyncio.open_unix_connection(endpoint.unix_path)
            else:
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, ssl=endpoint.tls,
                    server_hostname=endpoint.host if endpoint.tls else None,
                )  # fmt: skip
            path = f"/containers/{quote(container_id, safe='')}/attach"
            writer.write(
                f"POST {path}?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
                "Host: docker\r\nContent-Length: 0\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode("ascii")
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
    except BaseException as exc:
        if writer is not None:  # connected, then failed or cancelled: no socket left open
            writer.close()
        if isinstance(exc, asyncio.LimitOverrunError):
            raise AttachFailed(f"attach to {endpoint}: the engine's answer is too long") from exc
        if isinstance(exc, OSError | ssl.SSLError | TimeoutError | asyncio.IncompleteReadError):
            raise AttachFailed(f"attach to {endpoint}: {type(exc).__name__}: {exc}") from exc
        raise
    status, headers = _status(head)
    if status in (101, 200):  # 101 with the upgrade; engines that hijack without it say 200
        return Attached(reader, writer)
    detail = await _error_body(reader, headers)
    writer.close()
    if status == 404:
        raise AttachFailed(f"no such container: {detail}", gone=True)
    if status == 409:  # e.g. paused
        raise AttachFailed(f"the engine cannot attach now: {detail}", gone=True)
    if status in (403, 405):
        # A socket proxy that lets GETs through only: everything else keeps working.
        raise AttachFailed(
            f"the Docker API refused attach (HTTP {status}: {detail}); attach is a POST: a"
            " socket proxy in front of the engine must allow POST /containers/*/attach"
        )
    raise AttachFailed(f"attach: HTTP {status}: {detail}")


def _status(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    try:
        return int(parts[1]), headers
    except (IndexError, ValueError):
        return 0, headers


async def _error_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> str:
    """The engine's message ({"message": ...}), best effort and short."""
    with contextlib.suppress(Exception):
        length = int(headers.get("content-length", "0"))
        if 0 < length <= MAX_HEAD:
            data = await asyncio.wait_for(reader.readexactly(length), 2.0)
            text = data.decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                return str(json.loads(text).get("message", text))[:300]
            return text[:300]
    return "no detail"
