"""One reconcile pass, step by step: look, read labels, pool, forwarders, plan, apply, checks,
records.

Each step's logic is pure (core/reconcile.py, core/registration.py, pool/work.py); this module does
only the I/O between them, through the adapters' Protocols, and returns what happened as a
PassResult. It changes nothing the agent holds: the agent merges the result into its view.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from bridge.consul.apply import ApplyResult, apply_plan, forget_records, list_keys
from bridge.consul.ownership import NodeIdConflict
from bridge.core.config import Settings
from bridge.core.model import (
    AllocKind,
    CheckKind,
    Container,
    ExposeMode,
    LabelError,
    Registration,
    ServiceSpec,
    Stdin,
)
from bridge.core.protocols import (
    ConsulAPI,
    ConsulRejected,
    ConsulUnavailable,
    DockerAPI,
    DockerUnavailable,
    ForwarderSetAPI,
    StdioSetAPI,
)
from bridge.core.reconcile import (
    ManagedService,
    Scope,
    Waiting,
    check_targets,
    desired_services,
    forward_targets,
    gone_names,
    plan,
    read_labels,
    records_to_forget,
    stdio_targets,
)
from bridge.labels.parse import needs_stdin
from bridge.loop.triggers import Pending
from bridge.loop.view import View
from bridge.mcp.checks import CheckRunner
from bridge.pool.durable import GroupCommit
from bridge.pool.fleet import FleetPorts
from bridge.pool.store import StoreError
from bridge.pool.work import apply_pool_work, pool_work

log = structlog.get_logger("bridge.agent")


@dataclass(frozen=True, slots=True)
class Parts:
    """What a pass works with."""

    settings: Settings
    advertise: str
    docker: DockerAPI
    consul: ConsulAPI
    pool: GroupCommit
    fleet: FleetPorts | None = None  # cluster port scope
    # Containers' stdin settings by id (model.Stdin): fixed at creation, read once each.
    stdin: dict[str, Stdin] = field(default_factory=dict)


@dataclass(slots=True)
class PassResult:
    scope: Scope
    listed: list[Container]
    consul_services: dict[str, Registration] | None  # a full pass's fresh read of Consul
    services: dict[str, ManagedService] = field(default_factory=dict)  # in scope
    skipped: dict[str, LabelError] = field(default_factory=dict)
    waiting: dict[str, Waiting] = field(default_factory=dict)
    applied: ApplyResult = field(default_factory=ApplyResult)
    # Seconds each step took (look, labels, pool, forwarders, apply, checks, records):
    # where a pass's time goes, for /v1/status and the bench's breakdown of one event.
    steps: dict[str, float] = field(default_factory=dict)


async def run_pass(
    parts: Parts,
    forwarders: ForwarderSetAPI,
    checks: CheckRunner,
    view: View,
    pending: Pending,
    stdio: StdioSetAPI,
) -> PassResult:
    node_id = parts.settings.node_id
    timer = _StepTimer()
    # 1. Look again: everything, or the containers the events named.
    consul_services: dict[str, Registration] | None = None
    if pending.full:
        listed = await parts.docker.list()
        consul_services = await parts.consul.own_services()
        scope = Scope(node_id)
    else:
        listed = await parts.docker.list(pending.containers)
        gone = gone_names(listed, pending.containers)
        scope = Scope(node_id, frozenset(c.name for c in listed) | gone)
    listed = await _with_stdin(parts, listed, full=scope.full)
    actual = consul_services if consul_services is not None else view.registered
    result = PassResult(scope, listed, consul_services, steps=timer.steps)
    timer.lap("look")

    # 2. Labels into specs.
    specs, result.skipped = read_labels(listed, parts.settings)
    timer.lap("labels")

    # 3. The pool: observe, sweep, claim, allocate; durable before anything acts on it.
    # In cluster scope each service's port comes from the fleet's registry first.
    fleet_ports: dict[str, int] | None = None
    fleet_waiting: dict[str, tuple[str, str | None]] = {}
    if parts.fleet is not None:
        fleet_ports, fleet_waiting = await _fleet_ports(parts.fleet, specs, parts.pool)
    work = pool_work(
        listed,
        specs,
        complete=scope.full,
        gone=() if scope.names is None else scope.names - {c.name for c in listed},
        sweep=scope.full,
        fleet_ports=fleet_ports,
    )
    settings, pool = parts.settings, parts.pool.pool
    outcome = await parts.pool.run(
        lambda state: apply_pool_work(
            state, work, now=pool.clock(), stale_after=settings.stale_after, is_free=pool.is_free
        )
    )
    timer.lap("pool")

    # 4. What should be registered; proxy ports made real before Consul hears of them.
    desired = desired_services(
        specs,
        outcome,
        advertise=parts.advertise,
        node_id=node_id,
        probe_meta=view.probe_meta,
        tiers=settings.tier_layout,
    )
    to_forward = forward_targets(desired.services.values())
    to_serve = stdio_targets(desired.services.values())
    failed = await forwarders.sync(to_forward, scope.services)
    failed.update(await stdio.sync(to_serve, scope.services))
    if failed:  # the port may have been held by the other set until now (a container
        # re-created with the other transport): once more, now that both have closed theirs
        failed = await forwarders.sync(to_forward, scope.services)
        failed.update(await stdio.sync(to_serve, scope.services))
    desired.hold_back(failed, "forwarder")
    timer.lap("forwarders")
    desired.waiting.update({n: Waiting(*why) for n, why in fleet_waiting.items()})
    result.services, result.waiting = desired.services, desired.waiting

    # 5. Plan and apply.
    actions = plan(
        desired.registrations,
        actual,
        scope=scope.services,
        first_full_pass_done=view.first_full_pass_done or scope.full,
    )
    consul = parts.consul
    result.applied = applied = await apply_plan(consul, actions, actual)
    timer.lap("apply")

    # 6. The checks the bridge reports, for what Consul now holds. Those of services that
    # went are stopped and waited for: one in the middle of writing its tool record could
    # otherwise write it again after step 7 deleted it.
    registered = {reg.service_id for reg, _ in applied.registered}
    held = {
        m.registration.service_id
        for m in desired.services.values()
        if m.registration.service_id in actual or m.registration.service_id in registered
    }
    checks.sync(check_targets(desired.services.items(), held), scope.services)
    for sid in registered:
        checks.kick(sid)  # registering reset its TTL check to critical
    # Withdrawn checks end before their records go (below), so none writes one back. A
    # tool write already sent is let finish: with Consul slow, that can hold this pass
    # for the write's own retries, a price paid only when a service goes.
    await checks.stopped()
    timer.lap("checks")

    # 7. The tool records of what went, and in a full pass any own record nothing keeps;
    # the fleet's port records.
    base = f"{consul.kv_prefix}/{node_id}/"
    keys = await list_keys(consul, base, applied) if scope.full else None
    keep = {
        m.registration.service_id
        for m in desired.services.values()
        if m.spec.tools and m.spec.check.kind is CheckKind.MCP
    }
    forget = records_to_forget(base, withdrawn=applied.deregistered, listed=keys, keep=keep)
    await forget_records(consul, forget, applied)
    if parts.fleet is not None and scope.full:
        using = {spec.name: name for name, spec in specs.items() if name in outcome.ports}
        allocated = {a.owner for a in parts.pool.state.allocations()}
        try:
            await parts.fleet.sync(using, allocated, stale_after=settings.stale_after)
        except (ConsulUnavailable, ConsulRejected) as exc:
            log.warning("fleet_sync_failed", error=str(exc))
    timer.lap("records")
    return result


async def _with_stdin(parts: Parts, listed: list[Container], *, full: bool) -> list[Container]:
    """The listing with each maybe-stdio container's stdin settings: an inspect gives them
    (a pass over a few containers inspects them anyway), a listing does not, so those not
    known yet are read once each and kept by container id."""
    known = parts.stdin
    for c in listed:
        if c.stdin is not None:
            known[c.id] = c.stdin
    need = [c.id for c in listed if c.id not in known and needs_stdin(c, parts.settings)]
    if need:
        known.update(await parts.docker.stdin_of(need))
    if full:  # forget removed containers
        ids = {c.id for c in listed}
        for cid in [k for k in known if k not in ids]:
            del known[cid]
    return [
        dataclasses.replace(c, stdin=known[c.id]) if c.stdin is None and c.id in known else c
        for c in listed
    ]


class _StepTimer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(now - self._last, 6)
        self._last = now


async def _fleet_ports(
    fleet: FleetPorts, specs: Mapping[str, ServiceSpec], pool: GroupCommit
) -> tuple[dict[str, int], dict[str, tuple[str, str | None]]]:
    wanted = {
        name: (spec.name, spec.host_port, spec.tier)
        for name, spec in specs.items()
        if spec.expose is ExposeMode.PROXY
    }
    held = {
        name: alloc.port
        for name in wanted
        if (alloc := pool.state.get(name)) is not None and alloc.kind is AllocKind.POOL
    }
    return await fleet.ports_for(wanted, held, pool.pool.is_free)


def failure_kind(exc: BaseException) -> str | None:
    """The metrics kind of a failed pass; None when its parts were counted already."""
    if isinstance(exc, ApplyFailed):
        return None
    if isinstance(exc, ConsulUnavailable):
        return "consul_unavailable"
    if isinstance(exc, ConsulRejected):
        return "consul_rejected"
    if isinstance(exc, StoreError):
        return "store"
    if isinstance(exc, DockerUnavailable):
        return "docker"
    if isinstance(exc, NodeIdConflict):
        return "node_id_conflict"
    return "reconcile"


class ApplyFailed(Exception):
    """Some registrations or deregistrations failed; each was logged with its reason."""


# Failures that are the world's, not a bug: logged without a traceback.
EXPECTED_FAILURES = (
    ConsulUnavailable,
    ConsulRejected,
    ApplyFailed,
    StoreError,
    DockerUnavailable,
    NodeIdConflict,
    OSError,
)
