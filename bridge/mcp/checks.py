"""Runs the checks the bridge reports itself (TTL checks): `mcp` and `docker`.

One task per service. Probes run concurrently but bounded (a semaphore), each limited by
the label's timeout, all on the event loop through aiohttp, so nothing blocks. Every
interval the result goes to the service's TTL check, which also keeps the TTL fresh.

An `mcp` check also keeps the server's tool inventory: after a probe that got through,
when the server declares tools, it lists them at most once per BRIDGE_TOOLS_INTERVAL, and
at once when a modern server says its list changed (a `subscriptions/listen` stream held
per such server). The count and digest go to service meta; the list goes to Consul KV,
written when the digest changes. When a probe that got through shows the server no longer
declares tools, both go. A listing that fails is logged and tried again after
TOOLS_RETRY (or the interval, if shorter).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from typing import Any

import aiohttp
import structlog

from bridge.core.model import CheckKind, CheckTarget, tools_key
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable
from bridge.core.retry import retry_forever
from bridge.mcp.probe import ProbeResult, probe
from bridge.mcp.tools import digest, kv_record, listen_for_changes

log = structlog.get_logger("bridge.checks")

PROBE_CONCURRENCY = 32
LISTEN_REOPEN_DELAY = 10.0  # after the server ended a change stream
# Until a service's first passing result, it is probed again soon, then less and less
# often up to the interval: a server is seldom listening yet at the first probe, right
# after `docker run`, and waiting a whole interval made it critical for 10 s for nothing.
FIRST_RETRY = 0.2  # seconds; 1.5 times longer after each probe that did not pass
RETRY_GROWTH = 1.5
# After a failed tools/list: neither at every probe (a server whose listing is broken would
# be asked every interval, and log it every time) nor a whole BRIDGE_TOOLS_INTERVAL (5 min
# by default, long for a passing fault to leave the inventory stale): a minute.
TOOLS_RETRY = 60.0
NO_RECORD = ""  # ServiceCheck.written when the KV record is known to be gone


def next_wait(interval: float, passed_once: bool, tries: int) -> float:
    """Seconds until the next probe: the interval once the service has passed; before
    that FIRST_RETRY, growing by half each try, never more than the interval. Probes then
    come at 0, 0.2, 0.5, 1.0, 1.6, 2.6, 4.1 s ..., so a server that starts listening in
    its first 4 s passes within 2 s of listening."""
    if passed_once:
        return interval
    return min(interval, FIRST_RETRY * RETRY_GROWTH**tries)


Prober = Callable[..., Awaitable[ProbeResult]]  # as probe.probe
# A served stdio server's check, in-process (stdio/check.py): service id, budget, tools?
StdioProber = Callable[[str, float, bool], Awaitable[ProbeResult]]
Watch = Callable[[Callable[[], None]], Awaitable[None]]  # a change stream not over HTTP


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
        stdio_prober: StdioProber | None = None,
        tools_interval: float = 300.0,
    ) -> None:
        self.consul = consul
        self.probe = prober
        self.stdio_probe = stdio_prober
        self.on_meta = on_meta
        self.health_of = health_of
        self.tools_interval = tools_interval
        self._checks: dict[str, ServiceCheck] = {}
        self._stopping: list[ServiceCheck] = []  # stopped by sync, not yet waited for
        self.limit = asyncio.Semaphore(PROBE_CONCURRENCY)
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self.last: dict[str, ProbeResult] = {}

    def http(self, kind: str = "probe") -> aiohttp.ClientSession:
        """`probe`: a fresh connection per request (a kept-alive one would not test the
        path); `listen`: long-lived streams, kept out of the probes' connection limit."""
        if kind not in self._sessions:
            limit = PROBE_CONCURRENCY if kind == "probe" else 0
            self._sessions[kind] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, limit=limit),
                auto_decompress=True,
            )
        return self._sessions[kind]

    def sync(
        self, targets: Mapping[str, CheckTarget], scope: Collection[str] | None = None
    ) -> None:
        """Run exactly `targets`; with a scope, only services in it are looked at (the
        agent's passes over a few containers must not cost a walk over all of them). The
        checks it stops are cancelled; `stopped()` waits until they have ended."""
        considered = self._checks if scope is None else [s for s in scope if s in self._checks]
        for sid in [s for s in considered if targets.get(s) != self._checks[s].target]:
            check = self._checks.pop(sid)
            check.stop()
            self._stopping.append(check)
            self.last.pop(sid, None)
        for sid, target in targets.items():
            if sid not in self._checks:
                self._checks[sid] = ServiceCheck(self, target)

    async def stopped(self) -> None:
        """Wait until every check `sync` stopped has ended, a KV write it had begun
        included: after this, none of them writes a tool record again, so the pass can
        delete the records of withdrawn services for good."""
        checks, self._stopping = self._stopping, []
        await asyncio.gather(*(c.wait_stopped() for c in checks), return_exceptions=True)

    def kick(self, sid: str) -> None:
        """Check now (e.g. just after a re-registration reset the check to critical)."""
        check = self._checks.get(sid)
        if check is not None:
            check.kick.set()

    async def close(self) -> None:
        checks, self._checks = [*self._checks.values(), *self._stopping], {}
        self._stopping = []
        for check in checks:
            check.stop()
        await asyncio.gather(*(c.wait_stopped() for c in checks), return_exceptions=True)
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


class ServiceCheck:
    """One service's check loop, its tool inventory and its change listener."""

    def __init__(self, runner: CheckRunner, target: CheckTarget) -> None:
        self.runner = runner
        self.target = target
        self.kick = asyncio.Event()
        self.tools_due = 0.0  # monotonic time the tools are next listed (0: at once)
        self.tools_meta: dict[str, str] = {}
        # Digest of the tools last written to KV; NO_RECORD once deleted; None: not known
        # (a record may be left from before the agent started).
        self.written: str | None = None
        self.listener: asyncio.Task[None] | None = None
        self.writing: asyncio.Future[None] | None = None  # the KV write under way
        self.task = asyncio.create_task(self.run(), name=f"check {target.service_id}")

    def stop(self) -> None:
        self.task.cancel()
        if self.listener is not None:
            self.listener.cancel()

    async def wait_stopped(self) -> None:
        tasks = [t for t in (self.task, self.listener, self.writing) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _fields(self) -> dict[str, Any]:
        t = self.target
        return {"container": t.container, "service": t.service, "service_id": t.service_id}

    async def _check(self) -> ProbeResult:
        target, runner = self.target, self.runner
        if target.kind is CheckKind.DOCKER:
            return docker_health_result(runner.health_of(target.container))
        want_tools = target.tools and time.monotonic() >= self.tools_due
        if target.stdio:
            if runner.stdio_probe is None:
                return ProbeResult("critical", "this agent serves no stdio servers")
            return await runner.stdio_probe(target.service_id, target.timeout, want_tools)
        async with runner.limit:
            return await runner.probe(
                runner.http(), target.url, target.transport, target.timeout, want_tools=want_tools
            )

    async def run(self) -> None:
        target, runner = self.target, self.runner
        reported_error = False
        passed_once, tries = False, 0
        while True:
            result = await self._check()
            passed_once = passed_once or result.status == "passing"
            previous = runner.last.get(target.service_id)
            runner.last[target.service_id] = result
            if previous is None or previous.status != result.status:
                log.info(
                    "check_status_changed",
                    **self._fields(),
                    check=target.kind.value,
                    status=result.status,
                    was=previous.status if previous else None,
                    output=result.output[:300],
                )
            if result.tools is not None:
                await self._keep_tools(result)
            elif result.tools_error is not None:
                self._tools_failed(result.tools_error)
            elif result.tools_declared is False and target.tools:
                await self._drop_tools()
            if result.meta:
                runner.on_meta(target.service_id, {**result.meta, **self.tools_meta})
            if result.listens and target.tools and self.listener is None:
                version = result.meta.get("mcp_protocol_version", "")
                self.listener = asyncio.create_task(self._listen(version, result.watch))
            try:
                await runner.consul.update_ttl(target.check_id, result.status, result.output)
                reported_error = False
            except (ConsulUnavailable, ConsulRejected) as exc:
                if not reported_error:  # once per outage, not every interval
                    log.warning("check_report_failed", **self._fields(), error=str(exc))
                    reported_error = True
            self.kick.clear()
            wait = next_wait(target.interval, passed_once, tries)
            tries += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.kick.wait(), wait)

    async def _keep_tools(self, result: ProbeResult) -> None:
        tools = result.tools or []
        runner, target = self.runner, self.target
        self.tools_due = time.monotonic() + runner.tools_interval
        new = digest(tools)
        self.tools_meta = {"mcp_tools": str(len(tools)), "mcp_tools_hash": new}
        if new == self.written:
            return
        consul = runner.consul
        key = tools_key(consul.kv_prefix, consul.node_id, target.service_id)
        record = kv_record(
            tools,
            service=target.service,
            service_id=target.service_id,
            protocol=result.meta.get("mcp_protocol_version", ""),
        )
        try:
            await self._kv_write(consul.kv_put(key, record))
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("tools_write_failed", **self._fields(), key=key, error=str(exc))
            self.tools_due = 0.0  # try again with the next probe
            return
        log.info("tools_recorded", **self._fields(), key=key, tools=len(tools), hash=new)
        self.written = new

    def _tools_failed(self, error: str) -> None:
        log.warning("tools_list_failed", **self._fields(), error=error)
        # The last inventory stays in meta and KV: a failed listing says nothing new.
        self.tools_due = time.monotonic() + min(self.runner.tools_interval, TOOLS_RETRY)

    async def _drop_tools(self) -> None:
        """The server answered without the `tools` capability: no inventory in meta, and
        its KV record deleted (once; when the agent has just started, in case an earlier
        run left one)."""
        self.tools_meta = {}
        self.tools_due = 0.0  # should it declare tools again, they are listed at once
        if self.written == NO_RECORD:
            return
        consul = self.runner.consul
        key = tools_key(consul.kv_prefix, consul.node_id, self.target.service_id)
        try:
            await self._kv_write(consul.kv_delete(key))
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("tools_delete_failed", **self._fields(), key=key, error=str(exc))
            return  # tried again with the next probe
        if self.written is not None:  # else a precaution: most likely there was none
            log.info("tools_record_deleted", **self._fields(), key=key)
        self.written = NO_RECORD

    async def _kv_write(self, write: Coroutine[Any, Any, None]) -> None:
        """Run a KV write to its end even when the check is stopped meanwhile: a request
        Consul has received is applied whether the bridge waits or not, so wait_stopped
        waits for it, and a pass deletes a withdrawn service's record only after it."""
        self.writing = asyncio.ensure_future(write)
        await asyncio.shield(self.writing)

    def _tools_changed(self) -> None:
        log.info("tools_list_changed", **self._fields())
        self.tools_due = 0.0
        self.kick.set()

    async def _listen(self, version: str, watch: Watch | None) -> None:
        """Hold the server's change stream (over HTTP, or `watch` for a served stdio
        server); reopen it (with backoff) when it ends."""
        target = self.target
        while True:
            async for attempt in retry_forever(
                "tools_listen_failed", log=log, first_wait=1.0, max_wait=60.0, **self._fields()
            ):
                with attempt:
                    if watch is not None:
                        await watch(self._tools_changed)
                    else:
                        await listen_for_changes(
                            self.runner.http("listen"), target.url, version, self._tools_changed
                        )
            # Ended by the server: no replay, so what changed meanwhile was not heard.
            await asyncio.sleep(LISTEN_REOPEN_DELAY)
            self._tools_changed()
