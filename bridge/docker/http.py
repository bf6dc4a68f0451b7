"""The Engine API's few GETs the bridge needs, over aiohttp on the event loop.

Why not the Docker SDK: it blocks, so each call took a worker thread, and the hop there
and back with requests' own work cost 0.66-0.78 ms for an inspect that aiohttp answers in
0.24-0.26 (scripts/inspect_cost.py; docs/benchmarks.md, "The Docker API on the loop"); the
event stream held a thread of its own. The bridge reads four endpoints, so it speaks them
itself, to the endpoint the stdio attach uses too (endpoint.py: DOCKER_HOST and the TLS
files read once, one way).

Paths carry no API version: an engine answers an unversioned path at its own current
version, which is what the SDK negotiated (Engine 29 refuses anything below 1.44), and
Podman's compatible API answers them alike.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.docker.endpoint import Endpoint

MAX_EVENT = 8 * 1024 * 1024  # one event's JSON; a longer line is not an event we can use


class EngineError(Exception):
    """The engine could not be reached, or answered with an error."""


class StatusError(EngineError):
    """The engine answered, with an error status: the connection itself is fine."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotFound(StatusError):
    """404: no such container (removed meanwhile)."""


class EngineHTTP:
    """One aiohttp session to the engine; made on the loop that uses it.

    `retire` closes it once the calls under way on it are done: closing an aiohttp session
    aborts the connections in use, and one call's fault must not fail the others."""

    def __init__(self, endpoint: Endpoint, timeout: float | None) -> None:
        connector: aiohttp.BaseConnector
        if endpoint.unix_path is not None:
            connector = aiohttp.UnixConnector(path=endpoint.unix_path)
            self._base = "http://docker"
        else:
            host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
            connector = aiohttp.TCPConnector(ssl=endpoint.tls or True)
            self._base = f"{'https' if endpoint.tls else 'http'}://{host}:{endpoint.port}"
        # No total time for the event stream (it lives as long as the engine), only for
        # making its connection.
        limit = aiohttp.ClientTimeout(total=timeout, sock_connect=timeout or 30.0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=limit)
        self._busy = 0
        self._retired = False

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The decoded JSON answer to GET `path`; NotFound for 404, EngineError otherwise."""
        body = await self._read(path, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise EngineError(_say(exc)) from exc

    async def _read(self, path: str, params: Mapping[str, str] | None) -> bytes:
        self._busy += 1
        try:
            async with self._session.get(self._base + path, params=params) as response:
                body = await response.read()
                _check(response.status, body)
                return body
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise EngineError(_say(exc)) from exc
        finally:
            self._busy -= 1
            if self._retired and not self._busy:
                await self._session.close()

    async def inspect(self, container_id: str) -> Any:
        return await self.get(f"/containers/{quote(container_id, safe='')}/json")

    async def containers(self, filters: Mapping[str, list[str]] | None) -> Any:
        params = {"all": "1"}
        if filters:
            params["filters"] = json.dumps(filters)
        return await self.get("/containers/json", params)

    async def open(self, path: str, params: Mapping[str, str]) -> aiohttp.ClientResponse:
        """GET a streamed answer: returned once the engine has answered 200, its body
        still to come (read it with `json_lines`, close it when done)."""
        try:
            response = await self._session.get(self._base + path, params=params)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise EngineError(_say(exc)) from exc
        if response.status != 200:
            try:
                body = await response.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                body = b""
            finally:
                response.close()
            _check(response.status, body)
            raise StatusError(response.status, "not the stream asked for")
        return response

    async def retire(self) -> None:
        """Close once idle: now, or when the last call under way ends."""
        self._retired = True
        if not self._busy:
            await self._session.close()

    async def close(self) -> None:
        await self._session.close()


async def json_lines(response: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """The JSON documents of a streamed answer, one per line (the event stream), each
    decoded as it comes. Ends when the engine ends it; raises EngineError on a fault."""
    pending = bytearray()
    try:
        async for chunk in response.content.iter_any():
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                line = bytes(pending[:end])
                del pending[: end + 1]
                if line.strip():
                    yield json.loads(line)
            if len(pending) > MAX_EVENT:
                raise EngineError(f"a line of the stream is over {MAX_EVENT} bytes")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise EngineError(_say(exc)) from exc


def _check(status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode("utf-8", "replace")
    message = " ".join(message.split())[:300] or "no detail"  # one line, short
    if status == 404:
        raise NotFound(status, message)
    raise StatusError(status, message)


def _say(exc: BaseException) -> str:
    """One line naming the fault: TLS failures carry CERTIFICATE_VERIFY_FAILED and the
    like in their text, which the operator needs."""
    if isinstance(exc, EngineError):
        return str(exc)
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text}"
