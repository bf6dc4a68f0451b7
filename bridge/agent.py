"""The asyncio agent: watches Docker, keeps Consul and the pool equal to it.

One reconcile pass at a time. Events only mark containers dirty ("look at X again") and
wake the loop, so a burst of events for one container collapses into one look, and events
that arrive during a pass are handled by the next. A full pass (start-up, every
BRIDGE_RESYNC_INTERVAL, every Docker reconnect, after a failure) relists everything and
re-reads what Consul holds, which repairs whatever was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential,
)

from bridge.checks import CheckRunner, CheckTarget
from bridge.config import Settings
from bridge.consul_sink import ConsulRejected, ConsulSink, ConsulUnavailable
from bridge.docker_source import ContainerEvent, DockerSource, StreamEnded, StreamHandle
from bridge.doctor import Level, check_ephemeral
from bridge.expose import ExposeManager, Target
from bridge.labels import parse_labels
from bridge.metrics import POOL_WARN_RATIO, Metrics, PoolUse, Snapshot
from bridge.model import (
    AllocKind,
    CheckKind,
    ExposeMode,
    LabelError,
    LiveClaim,
    Registration,
    ServiceSpec,
)
from bridge.port_pool import AsyncPortPool, DurablePortPool
from bridge.port_store import StoreError, StoreLocked, StoreTooNew
from bridge.ports import PoolExhausted, bind_test
from bridge.reconcile import (
    EndpointError,
    apply_pool_work,
    build_registration,
    check_id,
    plan,
    pool_work,
    published_binding,
    resolve_endpoint,
    service_id,
)

log = structlog.get_logger("bridge.agent")

# Container events that can change what we register; exec_* (HEALTHCHECKs run one every
# interval), attach, resize and the like cannot, and would only cause idle passes.
# "create" is not among them: nothing is registered before a container runs.
RELEVANT_ACTIONS = frozenset(
    {
        "start",
        "restart",
        "stop",
        "die",
        "kill",
        "oom",
        "destroy",
        "rename",
        "pause",
        "unpause",
        "update",
    }
)
# A running container joining or leaving a network can change its address. Docker also
# connects a container's networks while starting it, just before the start event: those
# are left to the start event, or each start would cost two passes.
NETWORK_ACTIONS = frozenset({"network_connect", "network_disconnect"})
APPLY_CONCURRENCY = 32


def detect_advertise_address() -> str:
    """The address of the interface with the default route; 127.0.0.1 without one.

    A UDP connect sends nothing: it only asks the kernel which source address it would use.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed anywhere real
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class ApplyFailed(Exception):
    """Some registrations or deregistrations failed; each was logged with its reason."""


@dataclass(frozen=True, slots=True)
class ManagedService:
    spec: ServiceSpec
    registration: Registration


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.advertise = settings.advertise_address or detect_advertise_address()
        self.docker = DockerSource(settings.docker_host)
        self.consul = ConsulSink.from_settings(settings)
        self.pool: AsyncPortPool | None = None
        self._is_free = bind_test(settings.listen_address)
        self.expose = ExposeManager(settings.listen_address)
        self.checks = CheckRunner(
            self.consul, on_meta=self._on_probe_meta, health_of=self._health_of
        )

        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._full = True
        self._dirty: set[str] = set()  # container ids to look at again
        self._gone: set[str] = set()  # container names that events say are gone
        self._names: dict[str, str] = {}  # container id -> name, as last seen
        self._running: set[str] = set()  # ids of running containers, as last listed
        self._failures = 0
        # Container name -> when Docker said something happened to it, for the
        # event-to-registered histogram; swapped per pass like _dirty.
        self._event_times: dict[str, float] = {}
        self._pass_event_times: dict[str, float] = {}
        self._pool_pressure = False
        self.metrics = Metrics(self._snapshot)

        # What the agent believes; /v1/status shows it.
        self.registered: dict[str, Registration] = {}  # own services, as Consul holds them
        self.managed: dict[str, ManagedService] = {}  # container name -> service
        self.skipped: dict[str, LabelError] = {}  # container name -> why
        self.waiting: dict[str, str] = {}  # container name -> why it has no service yet
        self.probe_meta: dict[str, dict[str, str]] = {}  # service id -> mcp_server_* meta
        self.listing_complete = False
        self.docker_connected = False
        self.consul_reachable = False
        self.passes = 0

    # ---- life cycle ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Docker and Consul answer, a full pass is done, and the last pass applied cleanly
        (a Consul that answers but refuses our writes leaves us not ready)."""
        return (
            self.docker_connected
            and self.consul_reachable
            and self.listing_complete
            and self._failures == 0
        )

    async def start(self) -> None:
        ephemeral = check_ephemeral(self.settings.port_range)
        if ephemeral.level is not Level.OK:
            log.warning("port_range_overlaps_ephemeral", detail=ephemeral.detail)
        loop = asyncio.get_running_loop()

        def rebuild_source() -> list[LiveClaim]:
            # Called (in a worker thread) only when the store is missing or corrupt.
            return asyncio.run_coroutine_threadsafe(self._live_claims(), loop).result()

        pool = await self._open_pool(rebuild_source)
        if pool is None:
            return  # stopped while waiting for the store
        self.pool = AsyncPortPool(pool)
        log.info(
            "agent_started",
            node_id=self.node_id,
            advertise=self.advertise,
            consul=self.settings.consul_url,
            port_range=str(self.settings.port_range),
            allocations=len(pool.state),
        )

    async def _open_pool(
        self, rebuild_source: Callable[[], list[LiveClaim]]
    ) -> DurablePortPool | None:
        """Open the store, waiting (not exiting) while it cannot be written: a read-only
        or full volume is often fixed while we wait, and the registrations of the previous
        agent stay in Consul meanwhile. Another agent holding the store, or a store from
        a newer version, is a configuration error and ends the agent."""

        async def sleep_unless_stopping(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

        def note(rs: RetryCallState) -> None:
            self.metrics.error("store")
            log.error(
                "state_store_unavailable",
                path=str(self.settings.state_file),
                error=str(rs.outcome.exception()) if rs.outcome else None,
                retry_in_s=rs.next_action.sleep if rs.next_action else None,
            )

        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.5, max=30.0),
            retry=retry_if_exception_type((StoreError, OSError))
            & retry_if_not_exception_type((StoreLocked, StoreTooNew)),
            stop=lambda _: self._stopping.is_set(),
            sleep=sleep_unless_stopping,
            before_sleep=note,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await asyncio.to_thread(
                        DurablePortPool.open,
                        self.settings.state_file,
                        self.settings.port_range,
                        self.settings.reserved_ports,
                        rebuild_source=rebuild_source,
                        is_free=self._is_free,
                    )
        except (StoreError, OSError):
            if self._stopping.is_set():
                return None
            raise
        raise AssertionError("unreachable")

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
        loop_task = asyncio.create_task(self._reconcile_loop(), name="reconcile")
        await self._stopping.wait()
        for task in tasks:
            task.cancel()
        self._wake.set()
        await loop_task  # finishes the pass under way, if any
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close()

    def stop(self) -> None:
        log.info("agent_stopping", node_id=self.node_id)
        self._stopping.set()
        self._wake.set()

    async def close(self) -> None:
        await self.checks.close()
        # Forwarders go with the agent; registrations stay (the containers still run),
        # and the next agent reopens the same ports on its first pass.
        await self.expose.close()
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        await self.consul.close()
        self.docker.close()
        log.info("agent_stopped", node_id=self.node_id, registrations_kept=len(self.registered))

    # ---- triggers -----------------------------------------------------------------

    def request_full(self) -> None:
        self._full = True
        self._wake.set()

    def _on_event(self, event: ContainerEvent) -> None:
        if event.action in NETWORK_ACTIONS:
            if event.container_id not in self._running:
                return
        elif event.action not in RELEVANT_ACTIONS and not event.action.startswith("health_status"):
            return
        self._dirty.add(event.container_id)
        if event.name:
            name = event.name.lstrip("/")
            self._names[event.container_id] = name
            self._event_times.setdefault(name, event.time or time.time())
        if event.action == "destroy" and event.name:
            self._gone.add(event.name.lstrip("/"))
        if event.action == "rename" and event.old_name:
            self._gone.add(event.old_name)
        self._wake.set()

    async def _resync_timer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_interval)
            self.request_full()

    async def _watch_docker(self) -> None:
        queue: asyncio.Queue[ContainerEvent | StreamEnded] = asyncio.Queue()
        while not self._stopping.is_set():
            handle = await self._connect_events(queue)
            self.docker_connected = True
            log.info("docker_connected")
            self.request_full()  # whatever happened while we were away: relist
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, StreamEnded):
                        self.docker_connected = False
                        self.metrics.error("docker")
                        log.warning("docker_disconnected", reason=str(item))
                        break
                    self._on_event(item)
            finally:
                handle.close()

    async def _connect_events(
        self, queue: asyncio.Queue[ContainerEvent | StreamEnded]
    ) -> StreamHandle:
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda rs: log.warning(
                "docker_unreachable",
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception()) if rs.outcome else None,
            ),
        ):
            with attempt:
                return await self.docker.events(queue)
        raise AssertionError("unreachable")

    # ---- the loop -----------------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            full, dirty, gone = self._full, self._dirty, self._gone
            self._full, self._dirty, self._gone = False, set(), set()
            times = self._pass_event_times = self._event_times
            self._event_times = {}
            try:
                await self.reconcile(full=full, dirty=dirty, gone=gone)
                self._failures = 0
                self._pass_event_times = {}
            except Exception as exc:  # Docker or Consul away, or a bug: never kill the loop
                if isinstance(exc, ConsulUnavailable):
                    self.consul_reachable = False
                kind = _error_kind(exc)
                if kind is not None:
                    self.metrics.error(kind)
                self._pass_event_times = {}
                for name, at in times.items():  # not registered yet: keep the first time
                    self._event_times[name] = min(at, self._event_times.get(name, at))
                self._failures += 1
                delay = min(self.settings.resync_interval, 0.25 * 2 ** min(self._failures, 8))
                log.error(
                    "reconcile_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    full=full,
                    retry_in_s=delay,
                    exc_info=not isinstance(
                        exc, ConsulUnavailable | ConsulRejected | ApplyFailed | StoreError | OSError
                    ),
                )
                # Nothing is lost: the next try is a full pass.
                self._dirty |= dirty
                self._gone |= gone
                self._full = True
                asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def reconcile(
        self, *, full: bool, dirty: Iterable[str] = (), gone: Iterable[str] = ()
    ) -> None:
        """One pass: list, parse, pool, plan, apply."""
        started = time.monotonic()
        try:
            await self._reconcile(full=full, dirty=dirty, gone=gone)
        finally:
            self.metrics.reconcile_duration.labels("true" if full else "false").observe(
                time.monotonic() - started
            )

    async def _reconcile(self, *, full: bool, dirty: Iterable[str], gone: Iterable[str]) -> None:
        assert self.pool is not None
        started = time.monotonic()
        dirty_ids = set(dirty)
        if full:
            containers = await self.docker.list()
            own = await self.consul.own_services()
            self.consul_reachable = True
            self.registered = own
            scope: set[str] | None = None
            gone_names: set[str] = set()
        else:
            containers = await self.docker.list(dirty_ids)
            listed = {c.name for c in containers}
            known = {self._names[i] for i in dirty_ids if i in self._names}
            gone_names = (set(gone) | known) - listed
            scope = {service_id(self.node_id, n) for n in listed | gone_names}
        for gone_id in dirty_ids - {c.id for c in containers}:
            self._names.pop(gone_id, None)
        for container in containers:
            self._names[container.id] = container.name
        running = {c.id for c in containers if c.running}
        self._running = running if full else (self._running - dirty_ids) | running

        specs: dict[str, ServiceSpec] = {}
        skipped: dict[str, LabelError] = {}
        for container in containers:
            if not container.running:
                # No service without a running container; and before it runs, Docker
                # reports neither its address nor its ports, so its labels can't be judged.
                continue
            result = parse_labels(container, self.settings)
            if isinstance(result, LabelError):
                skipped[container.name] = result
            elif result is not None:
                specs[container.name] = result
        # The container names this pass speaks for (None: all of them).
        scope_names = None if full else {c.name for c in containers} | gone_names
        self._note_skipped(skipped, scope_names)

        work = pool_work(containers, specs, complete=full, gone=gone_names, sweep=full)
        settings, is_free = self.settings, self._is_free
        outcome = await self.pool.run(
            lambda state: apply_pool_work(
                state, work, now=time.time(), stale_after=settings.stale_after, is_free=is_free
            )
        )
        self._note_pool_use()

        desired: dict[str, Registration] = {}
        waiting: dict[str, str] = {}
        error_kinds: dict[str, str] = {}  # container name -> metrics kind of why it waits
        managed: dict[str, ManagedService] = {}
        for name, spec in specs.items():
            if not spec.container.running:
                continue
            if name in outcome.errors:
                waiting[name] = str(outcome.errors[name])
                if isinstance(outcome.errors[name], PoolExhausted):
                    error_kinds[name] = "pool_exhausted"
                continue
            try:
                endpoint = resolve_endpoint(spec, outcome.ports.get(name), self.advertise)
            except EndpointError as exc:
                waiting[name] = str(exc)
                continue
            sid = service_id(self.node_id, name)
            reg = build_registration(spec, endpoint, self.node_id, self.probe_meta.get(sid))
            desired[sid] = reg
            managed[name] = ManagedService(spec, reg)
        self._replace(self.managed, managed, scope_names)
        # Make proxy ports real before Consul hears of them.
        # Only what this pass looked at: a pass over one container must not walk them all.
        forwarded = await self.expose.sync(self._forward_targets(scope_names), scope)
        for sid, listen_error in forwarded.items():
            name = sid.split(":", 1)[1]
            desired.pop(sid, None)
            self.managed.pop(name, None)
            waiting[name] = listen_error
            error_kinds[name] = "forwarder"
        self._note_waiting(waiting, error_kinds, scope_names)

        actions = plan(
            desired,
            self.registered,
            scope=scope,
            listing_complete=self.listing_complete or full,
        )
        failures = await self._apply(actions.register, actions.deregister)
        self.checks.sync(self._check_targets(scope_names), scope)
        if full:
            self.listing_complete = True
        self.passes += 1
        log.debug(
            "reconcile_done",
            full=full,
            containers=len(containers),
            registered=len(actions.register),
            deregistered=len(actions.deregister),
            seconds=round(time.monotonic() - started, 4),
        )
        if outcome.released and self.waiting:
            # Ports came free: give them to whoever waits, now rather than at the next resync.
            self.request_full()
        if failures:
            raise ApplyFailed(
                f"{failures} Consul changes failed (see consul_*_failed events); retrying"
            )

    def _replace(
        self, target: dict[str, Any], fresh: dict[str, Any], scope_names: set[str] | None
    ) -> None:
        if scope_names is None:
            target.clear()
        else:
            for name in scope_names:
                target.pop(name, None)
        target.update(fresh)

    def _note_skipped(self, skipped: dict[str, LabelError], scope_names: set[str] | None) -> None:
        for name, error in skipped.items():
            if self.skipped.get(name) != error:  # once per new reason, not every resync
                self.metrics.error("labels")
                log.error(
                    "container_skipped",
                    container=name,
                    label=error.label,
                    value=error.value[:200],
                    reason=error.reason,
                )
        self._replace(self.skipped, skipped, scope_names)

    def _note_waiting(
        self, waiting: dict[str, str], error_kinds: dict[str, str], scope_names: set[str] | None
    ) -> None:
        for name, reason in waiting.items():
            if self.waiting.get(name) != reason:  # once per new reason, not every resync
                log.warning("container_waiting", container=name, reason=reason)
                if name in error_kinds:
                    self.metrics.error(error_kinds[name])
        self._replace(self.waiting, waiting, scope_names)

    async def _apply(self, register: Iterable[Registration], deregister: Iterable[str]) -> int:
        limit = asyncio.Semaphore(APPLY_CONCURRENCY)
        failures = 0

        async def do_register(reg: Registration) -> None:
            nonlocal failures
            async with limit:
                try:
                    await self.consul.register(reg)
                except (ConsulUnavailable, ConsulRejected) as exc:
                    failures += 1
                    self.metrics.error(_consul_kind(exc))
                    log.error(
                        "consul_register_failed",
                        container=reg.meta.get("container_name"),
                        service=reg.name,
                        service_id=reg.service_id,
                        error=str(exc),
                    )
                    return
            self.registered[reg.service_id] = reg
            self.consul_reachable = True
            self.checks.kick(reg.service_id)  # registering reset its TTL check to critical
            self.metrics.registrations.inc()
            happened = self._pass_event_times.pop(reg.meta.get("container_name", ""), None)
            if happened is not None:
                self.metrics.event_to_registered.observe(max(0.0, time.time() - happened))
            log.info(
                "service_registered",
                container=reg.meta.get("container_name"),
                service=reg.name,
                service_id=reg.service_id,
                address=reg.address,
                port=reg.port,
                expose=reg.meta.get("expose"),
            )

        async def do_deregister(sid: str) -> None:
            nonlocal failures
            old = self.registered.get(sid)
            async with limit:
                try:
                    await self.consul.deregister(sid)
                except (ConsulUnavailable, ConsulRejected) as exc:
                    failures += 1
                    self.metrics.error(_consul_kind(exc))
                    log.error(
                        "consul_deregister_failed",
                        container=old.meta.get("container_name") if old else None,
                        service=old.name if old else None,
                        service_id=sid,
                        error=str(exc),
                    )
                    return
            self.metrics.deregistrations.inc()
            self.registered.pop(sid, None)
            self.probe_meta.pop(sid, None)
            log.info(
                "service_deregistered",
                container=old.meta.get("container_name") if old else None,
                service=old.name if old else None,
                service_id=sid,
                port=old.port if old else None,
            )

        await asyncio.gather(
            *(do_register(r) for r in register), *(do_deregister(s) for s in deregister)
        )
        return failures

    # ---- metrics ------------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        pool = None
        if self.pool is not None:
            state = self.pool.state
            pool = PoolUse(state.capacity, state.used_count(), state.free_count())
        return Snapshot(
            pool=pool,
            services=len(self.registered),
            forwarders=self.expose.counters(),
            docker_connected=self.docker_connected,
            consul_reachable=self.consul_reachable,
            ready=self.ready,
        )

    def _note_pool_use(self) -> None:
        """One event when use crosses POOL_WARN_RATIO, one when it falls back."""
        assert self.pool is not None
        state = self.pool.state
        used, size = state.used_count(), state.capacity
        high = used > POOL_WARN_RATIO * size
        if high == self._pool_pressure:
            return
        self._pool_pressure = high
        event = "pool_nearly_exhausted" if high else "pool_pressure_relieved"
        (log.warning if high else log.info)(
            event,
            used=used,
            size=size,
            free=state.free_count(),
            range=str(state.port_range),
            threshold=POOL_WARN_RATIO,
        )

    # ---- forwarders and checks ----------------------------------------------------------

    def _in_scope(self, names: set[str] | None) -> Iterable[tuple[str, ManagedService]]:
        if names is None:
            return self.managed.items()
        return ((n, self.managed[n]) for n in names if n in self.managed)

    def _forward_targets(self, names: set[str] | None = None) -> dict[str, Target]:
        return {
            item.registration.service_id: Target(
                item.registration.port, item.spec.address or "", item.spec.port
            )
            for _, item in self._in_scope(names)
            if item.spec.expose is ExposeMode.PROXY
        }

    def _check_targets(self, names: set[str] | None = None) -> dict[str, CheckTarget]:
        targets = {}
        for name, item in self._in_scope(names):
            reg, spec = item.registration, item.spec
            kind = spec.check.kind
            if (
                kind not in (CheckKind.MCP, CheckKind.DOCKER)
                or reg.service_id not in self.registered
            ):
                continue
            host = f"[{reg.address}]" if ":" in reg.address else reg.address
            targets[reg.service_id] = CheckTarget(
                service_id=reg.service_id,
                service=reg.name,
                container=name,
                check_id=check_id(reg.service_id, kind),
                kind=kind,
                # Through the registered address and port: the whole path is tested.
                url=f"http://{host}:{reg.port}{spec.path}",
                transport=spec.transport.value,
                interval=spec.check.interval,
                timeout=spec.check.timeout,
            )
        return targets

    def _on_probe_meta(self, sid: str, meta: dict[str, str]) -> None:
        if self.probe_meta.get(sid) == meta:
            return
        self.probe_meta[sid] = meta
        item = self.managed.get(sid.split(":", 1)[1])
        if item is not None:  # re-register with the server's name and versions in meta
            self._dirty.add(item.spec.container.id)
            self._wake.set()

    def _health_of(self, container: str) -> str | None:
        item = self.managed.get(container)
        return item.spec.container.health if item else None

    # ---- rebuilding a lost store ------------------------------------------------------

    async def _live_claims(self) -> list[LiveClaim]:
        """What running containers hold, from Docker and our own Consul meta.

        Waits until both answer: rebuilding without Consul would forget the proxy ports of
        running containers and could hand one out twice.
        """
        async for attempt in AsyncRetrying(
            wait=wait_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception_type(Exception),
            before_sleep=lambda rs: log.warning(
                "state_rebuild_waiting",
                attempt=rs.attempt_number,
                error=str(rs.outcome.exception()) if rs.outcome else None,
            ),
        ):
            with attempt:
                containers = await self.docker.list()
                own = await self.consul.own_services()
        running = {c.name: c.running for c in containers}
        claims: list[LiveClaim] = []
        for container in containers:
            spec = parse_labels(container, self.settings)
            if isinstance(spec, ServiceSpec) and spec.expose is ExposeMode.PUBLISHED:
                binding = published_binding(spec)
                if binding is not None:
                    claims.append(
                        LiveClaim(container.name, binding[1], AllocKind.EXTERNAL, container.running)
                    )
        for reg in own.values():
            name, host_port = reg.meta.get("container_name"), reg.meta.get("host_port")
            if reg.meta.get("expose") == "proxy" and name and host_port and host_port.isdigit():
                claims.append(
                    LiveClaim(name, int(host_port), AllocKind.POOL, running.get(name, False))
                )
        log.info(
            "state_rebuild_sources",
            containers=len(containers),
            services=len(own),
            claims=len(claims),
        )
        return claims

    # ---- status -------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        with contextlib.suppress(ConsulUnavailable, ConsulRejected):
            checks = await self.consul.checks()
        managed = []
        for name, item in sorted(self.managed.items()):
            reg = item.registration
            states = [
                {
                    "check_id": cid,
                    "status": c.get("Status"),
                    "output": str(c.get("Output", ""))[:300],
                }
                for cid, c in checks.items()
                if c.get("ServiceID") == reg.service_id
            ]
            managed.append(
                {
                    "container": name,
                    "container_id": item.spec.container.id,
                    "service": reg.name,
                    "service_id": reg.service_id,
                    "address": reg.address,
                    "port": reg.port,
                    "host_port": reg.meta.get("host_port"),
                    "expose": item.spec.expose.value,
                    "check": item.spec.check.kind.value,
                    "check_status": states[0]["status"] if states else None,
                    "checks": states,
                    "registered": reg.service_id in self.registered,
                    "connections": _connections(self.expose, reg.service_id),
                }
            )
        return {
            "node_id": self.node_id,
            "ready": self.ready,
            "docker_connected": self.docker_connected,
            "consul_reachable": self.consul_reachable,
            "consul_url": self.settings.consul_url,
            "advertise_address": self.advertise,
            "passes": self.passes,
            "managed": managed,
            "skipped": [
                {"container": n, "label": e.label, "value": e.value[:200], "reason": e.reason}
                for n, e in sorted(self.skipped.items())
            ],
            "waiting": [{"container": n, "reason": r} for n, r in sorted(self.waiting.items())],
        }


def _consul_kind(exc: ConsulUnavailable | ConsulRejected) -> str:
    return "consul_unavailable" if isinstance(exc, ConsulUnavailable) else "consul_rejected"


def _error_kind(exc: BaseException) -> str | None:
    """The metrics kind of a failure; None when its parts were counted already."""
    if isinstance(exc, ApplyFailed):
        return None
    if isinstance(exc, ConsulUnavailable):
        return "consul_unavailable"
    if isinstance(exc, ConsulRejected):
        return "consul_rejected"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, docker.errors.DockerException | requests.RequestException):
        return "docker"
    return "reconcile"


def _connections(expose: ExposeManager, sid: str) -> dict[str, int] | None:
    forwarder = expose.forwarders.get(sid)
    if forwarder is None:
        return None
    c = forwarder.counters
    return {
        "active": c.active,
        "total": c.total,
        "failed": c.failed,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
    }
