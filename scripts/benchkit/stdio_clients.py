"""The clients of the stdio benchmark: one JSON-RPC call at a time per worker, over a raw
stdio stream (the pipe to a child process, or Docker's attach stream: the limits) or over
Streamable HTTP in the handshake era (mcp-bridge, supergateway, mcp-proxy: the era all
three serve). Small and the same for every path, so the paths, not the clients, differ."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

VERSION = "2025-11-25"
INIT: dict[str, Any] = {
    "protocolVersion": VERSION,
    "capabilities": {},
    "clientInfo": {"name": "bench-stdio", "version": "0"},
}
ECHO = {"name": "echo", "arguments": {"message": "x" * 64}}


class Lines:
    """A stdio server as a stream of lines: many callers, ids of their own, one reader."""

    def __init__(
        self, write: Callable[[bytes], Awaitable[None]], lines: AsyncIterator[bytes]
    ) -> None:
        self._write, self._lines = write, lines
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for line in self._lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            waiter = self._waiting.pop(message.get("id"), None) if "id" in message else None
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        body = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            body["params"] = params
        await self._write(json.dumps(body).encode() + b"\n")
        return await future

    async def notify(self, method: str) -> None:
        await self._write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")

    async def start(self) -> None:
        await self.call("initialize", INIT)
        await self.notify("notifications/initialized")

    def close(self) -> None:
        self._reader.cancel()


async def pipe_lines(process: asyncio.subprocess.Process) -> AsyncIterator[bytes]:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        yield line


async def frame_lines(frames: AsyncIterator[tuple[int, bytes]]) -> AsyncIterator[bytes]:
    """Docker's attach frames (stdout only) as lines."""
    partial = b""
    async for stream, payload in frames:
        if stream != 1:
            continue
        partial += payload
        *lines, partial = partial.split(b"\n")
        for line in lines:
            yield line


class HttpSession:
    """One handshake-era client session: initialize, then calls, JSON or SSE answers."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.session_id: str | None = None
        self._ids = itertools.count(1)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": VERSION,
        }
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        return headers

    async def _post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        async with self.http.post(self.url, json=body, headers=self._headers()) as response:
            if response.status >= 400:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")
            if "Mcp-Session-Id" in response.headers:
                self.session_id = response.headers["Mcp-Session-Id"]
            if "id" not in body:
                return None
            if response.content_type == "text/event-stream":
                async for raw in response.content:
                    line = raw.decode().strip()
                    if line.startswith("data:"):
                        message = json.loads(line[5:])
                        if message.get("id") == body["id"]:
                            return dict(message)
                raise RuntimeError("the SSE stream ended without the answer")
            return dict(await response.json())

    async def start(self) -> None:
        await self._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INIT})
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        answer = await self._post(body)
        assert answer is not None
        return answer


Call = Callable[[], Awaitable[dict[str, Any]]]


async def run_workers(calls: list[Call], calls_each: int) -> tuple[float, list[float]]:
    """One loop of `calls_each` sequential calls per worker, all at once; (calls per
    second, every call's latency in seconds)."""
    latencies: list[float] = []

    async def worker(call: Call) -> None:
        for _ in range(calls_each):
            t0 = time.perf_counter()
            answer = await call()
            latencies.append(time.perf_counter() - t0)
            if "result" not in answer:
                raise RuntimeError(f"not answered: {str(answer)[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in calls))
    return len(calls) * calls_each / (time.perf_counter() - started), latencies
