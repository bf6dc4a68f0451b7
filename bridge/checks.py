"""Runs the checks the bridge reports itself (TTL checks): `mcp` and `docker`.

One task per service. Probes run concurrently but bounded (a semaphore), each limited by
the label's timeout, all on the event loop through aiohttp, so nothing blocks. Every
interval the result goes to the service's TTL check, which also keeps the TTL fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping

import aiohttp
import structlog

from bridge.model import CheckKind, CheckTarget
from bridge.probe import ProbeResult, probe
from bridge.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable

log = structlog.get_logger("bridge.checks")

PROBE_CONCURRENCY = 32

# (session, url, transport, timeout) -> result; the real one is probe.probe.
Prober = Callable[[aiohttp.ClientSession, str, str, float], Awaitable[ProbeResult]]


def docker_health_result(health: str | None) -> ProbeResult:
    if health == "healthy":
        return ProbeResult("passing", "container HEALTHCHECK: healthy")
    if health == "starting":
        return ProbeResult("warning", "container HEALTHCHECK: starting")
    if health == "unhealthy":
        return ProbeResult("critical", "container HEALTHCHECK: unhealthy")
    return ProbeResult("critical", "container has no HEALTHCHECK, or it has not reported yet")


class CheckRunner:
    def __init__(
        self,
        consul: ConsulAPI,
        *,
        on_meta: Callable[[str, dict[str, str]], None],
        health_of: Callable[[str], str | None],
        prober: Prober = probe,
    ) -> None:
        self._consul = consul
        self._probe = prober
        self._on_meta = on_meta
        self._health_of = health_of
        self._tasks: dict[str, tuple[CheckTarget, asyncio.Task[None]]] = {}
        self._kicks: dict[str, asyncio.Event] = {}
        self._limit = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None
        self.last: dict[str, ProbeResult] = {}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A fresh connection per probe: a kept-alive one would not test the path.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=PROBE_CONCURRENCY),
                auto_decompress=True,
            )
        return self._session

    def sync(
        self, targets: Mapping[str, CheckTarget], scope: Collection[str] | None = None
    ) -> None:
        """Run exactly `targets`; with a scope, only services in it are looked at (the
        agent's passes over a few containers must not cost a walk over all of them)."""
        considered = self._tasks if scope is None else [s for s in scope if s in self._tasks]
        for sid in [s for s in considered if targets.get(s) != self._tasks[s][0]]:
            _, task = self._tasks.pop(sid)
            task.cancel()
            self._kicks.pop(sid, None)
            self.last.pop(sid, None)
        for sid, target in targets.items():
            if sid not in self._tasks:
                self._kicks[sid] = asyncio.Event()
                task = asyncio.create_task(self._run(target), name=f"check {sid}")
                self._tasks[sid] = (target, task)

    def kick(self, sid: str) -> None:
        """Check now (e.g. just after a re-registration reset the check to critical)."""
        event = self._kicks.get(sid)
        if event is not None:
            event.set()

    async def _check(self, target: CheckTarget) -> ProbeResult:
        if target.kind is CheckKind.DOCKER:
            return docker_health_result(self._health_of(target.container))
        async with self._limit:
            return await self._probe(self._http(), target.url, target.transport, target.timeout)

    async def _run(self, target: CheckTarget) -> None:
        kick = self._kicks[target.service_id]
        reported_error = False
        while True:
            result = await self._check(target)
            previous = self.last.get(target.service_id)
            self.last[target.service_id] = result
            if previous is None or previous.status != result.status:
                log.info(
                    "check_status_changed",
                    container=target.container,
                    service=target.service,
                    service_id=target.service_id,
                    check=target.kind.value,
                    status=result.status,
                    was=previous.status if previous else None,
                    output=result.output[:300],
                )
            if result.meta:
                self._on_meta(target.service_id, result.meta)
            try:
                await self._consul.update_ttl(target.check_id, result.status, result.output)
                reported_error = False
            except (ConsulUnavailable, ConsulRejected) as exc:
                if not reported_error:  # once per outage, not every interval
                    log.warning(
                        "check_report_failed",
                        container=target.container,
                        service_id=target.service_id,
                        error=str(exc),
                    )
                    reported_error = True
            kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), target.interval)

    async def close(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in self._tasks.values()), return_exceptions=True)
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
