"""Calls to an instance on the legacy HTTP+SSE transport (2024-11-05): one GET stream per
session, whose first event names where to POST; every answer and notification comes back
on the stream, matched to its call by id (progress by its token).

The same delivery rule as upstream.py: a POST that could not connect never delivered the
call (it may go elsewhere); a POST the server accepted did, so if the stream breaks
before the answer the call fails, naming the instance, and is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import aiohttp

from bridge.consul.catalog import Instance
from bridge.mcp.wire import LATEST_HANDSHAKE, sse_events

Tell = Callable[[dict[str, Any]], None]
OPEN_TIMEOUT = 10.0


class SseSession:
    def __init__(
        self, http: aiohttp.ClientSession, instance: Instance, headers: dict[str, str]
    ) -> None:
        self.http, self.instance, self.headers = http, instance, headers
        self.endpoint: str | None = None
        self._stream: aiohttp.ClientResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._tells: dict[Any, Tell] = {}  # progress token -> whom to tell
        self.broken: str | None = None

    async def open(self, not_delivered: type[Exception]) -> None:
        """The stream, and where to POST: whatever fails here carried no call."""
        where = self.instance.service_id
        try:
            stream = await self.http.get(
                self.instance.url, headers={**self.headers, "Accept": "text/event-stream"}
            )
        except (aiohttp.ClientError, OSError) as exc:
            raise not_delivered(f"{where}: cannot open the SSE stream: {exc}") from exc
        if stream.status != 200:
            stream.close()
            raise not_delivered(f"{where}: GET {self.instance.url}: HTTP {stream.status}")
        self._stream = stream
        events = sse_events(stream, None)
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                async for event, data in events:
                    if event == "endpoint":
                        self.endpoint = urljoin(self.instance.url, data.strip())
                        break
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            stream.close()
            raise not_delivered(f"{where}: no endpoint event: {exc}") from exc
        except BaseException:
            stream.close()
            raise
        if self.endpoint is None:
            stream.close()
            raise not_delivered(f"{where}: the SSE stream ended without an endpoint event")
        self._reader = asyncio.create_task(self._read(events))

    async def _read(self, events: Any) -> None:
        try:
            async for event, data in events:
                if event != "message":
                    continue
                said = json.loads(data)
                if not isinstance(said, dict):
                    continue
                if "method" not in said:
                    waiter = self._waiting.pop(said.get("id"), None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(said)
                elif "id" not in said:
                    token = (said.get("params") or {}).get("progressToken")
                    tell = self._tells.get(token)
                    if tell is not None:
                        tell(said)
            self.broken = "the SSE stream ended"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            self.broken = f"the SSE stream broke: {exc}"
        finally:
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError(self.broken or "the SSE stream ended"))
            self._waiting.clear()

    async def request(
        self,
        body: dict[str, Any],
        tell: Tell,
        not_delivered: type[Exception],
        failed: type[Exception],
    ) -> dict[str, Any]:
        where = self.instance.service_id
        if self.broken is not None or self.endpoint is None:
            raise not_delivered(f"{where}: {self.broken or 'not open'}")
        token = ((body.get("params") or {}).get("_meta") or {}).get("progressToken")
        waiter: asyncio.Future[dict[str, Any]] | None = None
        if "id" in body:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[body["id"]] = waiter
            if token is not None:
                self._tells[token] = tell
        try:
            try:
                async with self.http.post(
                    self.endpoint,
                    data=json.dumps(body),
                    headers={**self.headers, "Content-Type": "application/json"},
                ) as posted:
                    if posted.status >= 500:
                        raise failed(f"{where}: HTTP {posted.status}")
                    if posted.status >= 400:
                        text = (await posted.read())[:200].decode("utf-8", "replace")
                        raise failed(f"{where}: HTTP {posted.status} {text}")
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise not_delivered(f"{where}: cannot connect: {exc}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise failed(f"{where}: {type(exc).__name__}: {exc}") from exc
            if waiter is None:
                return {}
            try:
                return await waiter
            except ConnectionError as exc:
                raise failed(f"{where}: {exc}") from exc
        finally:
            if "id" in body:
                self._waiting.pop(body["id"], None)
            if token is not None:
                self._tells.pop(token, None)

    async def close(self) -> None:
        self.broken = self.broken or "closed"
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._stream is not None:
            self._stream.close()


def hello(request_id: int, client_info: dict[str, str]) -> dict[str, Any]:
    params = {"protocolVersion": LATEST_HANDSHAKE, "capabilities": {}, "clientInfo": client_info}
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}
