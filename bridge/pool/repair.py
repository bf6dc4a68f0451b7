"""Repair: the pool compared with reality, and mended.

- `live_claims`: what running containers hold, from Docker and from the bridge's own
  Consul services; the input of a rebuild.
- `rebuild`: a pool from those claims, after the store was lost or found corrupt, so that
  no running container loses its port and none is handed out twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from bridge.core.config import Settings
from bridge.core.model import (
    Allocation,
    AllocKind,
    AllocState,
    ExposeMode,
    LiveClaim,
    PortRange,
    ServiceSpec,
    published_binding,
)
from bridge.core.protocols import ConsulAPI, DockerAPI
from bridge.core.retry import retry_forever
from bridge.labels.parse import parse_labels
from bridge.pool.allocator import PoolState
from bridge.pool.tiers import TierLayout

log = structlog.get_logger("bridge.pool")


async def live_claims(docker: DockerAPI, consul: ConsulAPI, settings: Settings) -> list[LiveClaim]:
    """Published ports from Docker; proxy ports from the `host_port` meta of our services.

    Waits until both answer: rebuilding without Consul would forget the proxy ports of
    running containers and could hand one out twice.
    """
    async for attempt in retry_forever("state_rebuild_waiting", log=log):
        with attempt:
            containers = await docker.list()
            own = await consul.own_services()
    running = {c.name: c.running for c in containers}
    claims: list[LiveClaim] = []
    for container in containers:
        spec = parse_labels(container, settings)
        if isinstance(spec, ServiceSpec) and spec.expose is ExposeMode.PUBLISHED:
            binding = published_binding(spec)
            if binding is not None:
                claims.append(
                    LiveClaim(container.name, binding[1], AllocKind.EXTERNAL, container.running)
                )
    for reg in own.values():
        name, host_port = reg.meta.get("container_name"), reg.meta.get("host_port")
        if reg.meta.get("expose") == "proxy" and name and host_port and host_port.isdigit():
            claims.append(LiveClaim(name, int(host_port), AllocKind.POOL, running.get(name, False)))
    log.info(
        "state_rebuild_sources", containers=len(containers), services=len(own), claims=len(claims)
    )
    return claims


def live_claims_source(
    docker: DockerAPI, consul: ConsulAPI, settings: Settings
) -> Callable[[], list[LiveClaim]]:
    """live_claims for the store's rebuild, which runs in a worker thread: the coroutine
    runs on the calling event loop."""
    loop = asyncio.get_running_loop()

    def source() -> list[LiveClaim]:
        claims = live_claims(docker, consul, settings)
        return asyncio.run_coroutine_threadsafe(claims, loop).result()

    return source


def rebuild(
    port_range: PortRange,
    reserved: Iterable[int],
    claims: Iterable[LiveClaim],
    *,
    now: float,
    tiers: TierLayout | None = None,
) -> tuple[PoolState, list[LiveClaim]]:
    """A pool from what live containers hold; returns it and the claims it refused.

    Running claims win over stopped ones; a claim on a port someone else already claimed
    is returned as a conflict rather than recorded twice. The cursor goes to the highest
    claimed pool port (each tier's to its highest), so new ports come after every port in
    use.
    """
    by_port: dict[int, Allocation] = {}
    owners: set[str] = set()
    conflicts: list[LiveClaim] = []
    for claim in sorted(claims, key=lambda c: (not c.running, c.kind, c.port, c.owner)):
        if claim.port in by_port or claim.owner in owners:
            conflicts.append(claim)
            continue
        if claim.kind is AllocKind.EXTERNAL and claim.port not in port_range:
            continue
        status = AllocState.ACTIVE if claim.running else AllocState.HELD
        by_port[claim.port] = Allocation(claim.port, claim.owner, status, claim.kind, now, now)
        owners.add(claim.owner)
    layout = tiers or TierLayout(port_range)
    cursors: dict[str, int] = {}
    for a in by_port.values():
        tier = layout.of(a.port) if a.kind is AllocKind.POOL else None
        if tier is not None:
            cursors[tier] = max(cursors.get(tier, a.port), a.port)
    return PoolState(port_range, reserved, by_port.values(), cursors, layout), conflicts
