"""A stub Consul on a real socket and a virtual clock, for py-consul's own client in
unit tests (tests/unit/consul/test_consul_retry.py, test_consul_explain.py): requests answered
from a script, each request's arrival time kept, and nothing waiting for real."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bridge.consul.client import ConsulClient

LEADER = '"127.0.0.1:8300"'  # what the stub answers on LEADER_PATH
LEADER_PATH = "/v1/status/leader"


@dataclass
class VirtualTime:
    """`sleep` and `clock` for ConsulClient, and for the stub's handlers. Time moves only
    when every task `run` drives is waiting on it (the stub's delayed answers count for
    the request that waits for them), straight to the earliest wake-up."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)
    _heap: list[tuple[float, int, asyncio.Future[None]]] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=itertools.count)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self.now + max(0.0, seconds), next(self._seq), woken))
        await woken

    async def run(self, *calls: Awaitable[Any]) -> list[Any]:
        """Drive `calls` to their ends; each one's result or exception."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20  # real seconds: a stuck test fails, never hangs
        while not all(t.done() for t in tasks):
            assert loop.time() < deadline, "the calls neither ended nor waited"
            if self._heap and len(self._heap) >= sum(not t.done() for t in tasks):
                when, _, woken = heapq.heappop(self._heap)
                self.now = max(self.now, when)
                woken.set_result(None)
            await asyncio.sleep(0.001)  # real: sockets move
        return [t.exception() or t.result() for t in tasks]


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = LEADER
    retry_after: str | None = None
    delay: float = 0.0  # virtual seconds before answering

    @classmethod
    def limited(cls, retry_after: str | None = None, delay: float = 0.0) -> Answer:
        return cls(429, "rate limit exceeded", retry_after, delay)


@dataclass
class StubConsul:
    """Answers each path from its script (then 200 with a leader, or `{}` for a listing);
    notes when (on the virtual clock) each request came."""

    time: VirtualTime
    script: dict[str, list[Answer]] = field(default_factory=dict)
    came: list[tuple[float, str]] = field(default_factory=list)

    def at(self, path: str) -> list[float]:
        return [t for t, p in self.came if p == path]

    async def handle(self, request: web.Request) -> web.Response:
        self.came.append((self.time.now, request.path))
        queue = self.script.get(request.path) or []
        default = Answer() if request.path == LEADER_PATH else Answer(body="{}")
        answer = queue.pop(0) if queue else default
        if answer.delay:
            await self.time.sleep(answer.delay)
        headers = {"Retry-After": answer.retry_after} if answer.retry_after else {}
        return web.Response(
            status=answer.status,
            text=answer.body,
            headers={"X-Consul-Index": "1", "Content-Type": "application/json", **headers},
        )


Client = Callable[..., ConsulClient]


@contextlib.asynccontextmanager
async def serving(
    stub: StubConsul, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


async def ask_leader(
    stub: tuple[StubConsul, Client], vt: VirtualTime, answers: list[Answer], **options: Any
) -> tuple[Any, list[float]]:
    """One `leader()` call against scripted answers: its result (or error), and when each
    try reached the stub."""
    consul_stub, client = stub
    consul_stub.script[LEADER_PATH] = answers
    (result,) = await vt.run(client(**options).leader())
    return result, consul_stub.at(LEADER_PATH)
