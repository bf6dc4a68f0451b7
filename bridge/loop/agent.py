"""The asyncio agent: watches Docker, keeps Consul and the pool equal to it.

One pass at a time (loop/passes.py). Events only say "look at container X again" (loop/triggers.py)
and wake the loop; a full pass (start-up, every BRIDGE_RESYNC_INTERVAL, every Docker
reconnect, after a failure) relists everything and re-reads what Consul holds, which
repairs whatever was missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.consul.client import ConsulClient
from bridge.consul.ownership import NodeClaim
from bridge.consul.session import ConsulSession
from bridge.core.config import Settings
from bridge.core.findings import Level, check_ephemeral
from bridge.core.model import EngineVersion
from bridge.core.net import bind_test, detect_advertise_address
from bridge.core.protocols import (
    ConsulAPI,
    ConsulUnavailable,
    DockerAPI,
    ForwarderSetAPI,
)
from bridge.docker.engine import DockerEngine, watch
from bridge.forward.listeners import ForwarderSet
from bridge.labels.parse import is_managed
from bridge.loop import stdio as stdio_parts
from bridge.loop.metrics import AgentReading, Metrics, PoolPressure
from bridge.loop.passes import (
    EXPECTED_FAILURES,
    ApplyFailed,
    Parts,
    PassResult,
    failure_kind,
    run_pass,
)
from bridge.loop.triggers import Pending, Triggers
from bridge.loop.view import View, status_report
from bridge.mcp.checks import CheckRunner
from bridge.mcp.probe import ProbeResult
from bridge.pool.allocator import BindTest
from bridge.pool.durable import GroupCommit, open_waiting
from bridge.pool.fleet import FleetPorts
from bridge.pool.processes import ProcessStore
from bridge.pool.repair import live_claims_source

log = structlog.get_logger("bridge.agent")


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        docker: DockerAPI | None = None,
        consul: ConsulAPI | None = None,
        forwarders: ForwarderSetAPI | None = None,
        stdio: stdio_parts.StdioServing | None = None,
        checks: Callable[..., CheckRunner] = CheckRunner,
        clock: Callable[[], float] = time.time,
        is_free: BindTest | None = None,
    ) -> None:
        self.settings = settings
        self.view = View()
        self.node_id = settings.node_id
        self.advertise = settings.advertise_address or detect_advertise_address()
        engine = (
            DockerEngine(settings.docker_host, may_manage=lambda c: is_managed(c, settings))
            if docker is None
            else None
        )
        self.handshakes = stdio_parts.KeptHandshakes()
        self.docker: DockerAPI = docker or engine  # type: ignore[assignment]
        self.consul = consul or ConsulClient.from_settings(settings)
        self.forwarders = forwarders or ForwarderSet(settings.listen_address)
        if stdio is None:
            assert engine is not None, "an agent given its Docker is given its stdio set too"
            stdio = stdio_parts.stdio_set(settings, engine, self.handshakes)
        self.stdio = stdio
        self.checks = checks(
            self.consul, on_meta=self._on_probe_meta, health_of=self.view.health_of,
            tools_interval=settings.tools_interval, stdio_prober=self._stdio_probe,
        )  # fmt: skip
        self._clock = clock
        self._is_free = is_free or bind_test(settings.listen_address)
        self.pool: GroupCommit | None = None
        self.triggers = Triggers()
        self.session = ConsulSession(
            self.consul, f"mcp-bridge {self.node_id}", on_lost=self.triggers.request_full
        )
        self.claim: NodeClaim | None = None  # this bridge's hold on its node id
        self.fleet: FleetPorts | None = None
        self.metrics = Metrics(
            lambda: AgentReading.of(
                self.view,
                self.pool.state if self.pool else None,
                self.forwarders.counters(),
                self.stdio.readings(),
            )
        )
        self._stopping = asyncio.Event()
        self.pool_pressure = PoolPressure()

    # ---- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        settings, consul = self.settings, self.consul
        ephemeral = check_ephemeral(settings.port_range)
        if ephemeral.level is not Level.OK:
            log.warning("port_range_overlaps_ephemeral", detail=ephemeral.detail)
        pool = await open_waiting(
            settings.state_file,
            settings.port_range,
            settings.reserved_ports,
            rebuild_source=live_claims_source(self.docker, consul, settings),
            is_free=self._is_free,
            clock=self._clock,
            stopping=self._stopping,
            on_retry=lambda: self.metrics.error("store"),
            tiers=settings.tier_layout,
        )
        if pool is None:
            return  # stopped while waiting for the store
        self.pool = group = GroupCommit(pool)
        self.handshakes.store = ProcessStore(settings.state_file)
        instance = await asyncio.to_thread(pool.store.instance_id)
        self.claim = NodeClaim(consul, self.session, instance)
        self.fleet = FleetPorts.for_settings(consul, settings, self._clock, self.session)
        self.parts = Parts(settings, self.advertise, self.docker, consul, group, self.fleet)
        log.info(
            "agent_started", node_id=self.node_id, advertise=self.advertise,
            consul=settings.consul_url, port_range=str(settings.port_range),
            allocations=len(pool.state),
        )  # fmt: skip

    async def run(self) -> None:
        """Start, then serve until stop() is called."""
        if self.pool is None:
            await self.start()
        if self.pool is None:  # stopped before the store could be opened
            await self.close()
            return
        tasks = [
            asyncio.create_task(self._watch_docker(), name="docker-events"),
            asyncio.create_task(self._resync_timer(), name="resync-timer"),
        ]
        if self.claim is not None:
            keep = self.claim.keep(on_regained=self.triggers.request_full)
            tasks.append(asyncio.create_task(keep, name="node-id-claim"))
        loop_task = asyncio.create_task(self._loop(), name="reconcile")
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        self.triggers.wake.set()
        await loop_task  # finishes the pass under way, if any
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close()

    def stop(self) -> None:
        log.info("agent_stopping", node_id=self.node_id)
        self._stopping.set()
        self.triggers.wake.set()

    async def close(self) -> None:
        self.triggers.cancel_retry()
        await self.checks.close()
        # Registrations stay (the containers run on); the next agent reopens the ports.
        await self.forwarders.close()
        await self.stdio.close()  # its processes run on; the next agent attaches again
        if self.handshakes.store is not None:
            self.handshakes.store.close()
            self.handshakes.store = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        await self.session.destroy()  # the node id is free at once, not after the TTL
        await self.consul.close()
        await self.docker.close()
        log.info(
            "agent_stopped", node_id=self.node_id, registrations_kept=len(self.view.registered)
        )

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            self.triggers.request_full()

    async def _watch_docker(self) -> None:
        def connected(engine: EngineVersion) -> None:
            self.view.docker_connected, self.view.engine = True, engine
            log.info("docker_connected", engine=str(engine))
            self.triggers.request_full()  # whatever happened while we were away: relist

        def lost(reason: str) -> None:
            self.view.docker_connected = False
            self.metrics.error("docker")
            log.warning("docker_disconnected", reason=reason)

        await watch(
            self.docker, on_event=self.triggers.on_event, on_connected=connected, on_lost=lost
        )

    # ---- the loop -----------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self.triggers.wake.wait()
            if self._stopping.is_set():
                return
            await self.triggers.settle()
            await self.step()

    async def step(self) -> PassResult | None:
        """Run one pass over the pending work; None when it failed (and will be retried)."""
        assert self.pool is not None
        pending = self.triggers.take()
        started = time.monotonic()
        try:
            if self.claim is not None:
                await self.claim.ensure()  # another bridge on this node id: touch nothing
            result = await run_pass(
                self.parts, self.forwarders, self.checks, self.view, pending, self.stdio
            )
            self.triggers.seen(result.listed, pending)
            if pending.full:  # the kept handshakes of containers that are gone
                await self.handshakes.keep_only({c.id for c in result.listed})
            self.view.absorb(result, pending, self.metrics)
            self.pool_pressure.note(self.pool.state)
            failed = result.applied.failed
            if failed:
                raise ApplyFailed(
                    f"{len(failed)} Consul changes failed (see consul_*_failed events); retrying"
                )
        except Exception as exc:  # Docker or Consul away, or a bug: never kill the loop
            self._failed(exc, pending)
            return None
        finally:
            self.metrics.reconcile_duration.labels(str(pending.full).lower()).observe(
                time.monotonic() - started
            )
        self.view.failures = 0
        self.triggers.again_soon(self.view.waits_on_consul, self.settings.resync_interval)
        applied = result.applied
        log.debug(
            "reconcile_done", full=pending.full, containers=len(result.listed),
            registered=len(applied.registered), deregistered=len(applied.deregistered),
            seconds=round(time.monotonic() - started, 4), steps=result.steps,
        )  # fmt: skip
        return result

    def _failed(self, exc: Exception, pending: Pending) -> None:
        view = self.view
        if isinstance(exc, ConsulUnavailable):
            view.consul_reachable = False
        kind = failure_kind(exc)
        if kind is not None:
            self.metrics.error(kind)
        view.failures += 1
        delay = min(self.settings.resync_interval, 0.25 * 2 ** min(view.failures, 8))
        log.error(
            "reconcile_failed",
            error=f"{type(exc).__name__}: {exc}",
            full=pending.full,
            retry_in_s=delay,
            exc_info=not isinstance(exc, EXPECTED_FAILURES),
        )
        # Nothing is lost: the work goes back, and the next try is a full pass.
        self.triggers.give_back(pending, retry_in=delay)

    # ---- what the checks and metrics read ----------------------------------------------

    async def _stdio_probe(self, sid: str, budget: float, want_tools: bool) -> ProbeResult:
        return await stdio_parts.probe(self.stdio, sid, budget, want_tools)

    def _on_probe_meta(self, sid: str, meta: dict[str, str]) -> None:
        changed = self.view.note_probe_meta(sid, meta)
        if changed is not None:  # re-register with the server's name, versions and tools
            self.triggers.look_at(changed)

    async def status(self) -> dict[str, Any]:
        return await status_report(
            self.view, self.consul, advertise=self.advertise,
            forwarders=self.forwarders.counters(), stdio=self.stdio.readings(),
            node_id_conflict=self.claim.conflict if self.claim else None,
            label_prefix=self.settings.label_prefix,
        )  # fmt: skip
