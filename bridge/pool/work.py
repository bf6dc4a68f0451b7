"""What one pass asks of the pool, applied in one durable transaction.

`pool_work` is pure over the pass's listing and specs; `apply_pool_work` runs inside the
pool's transaction (GroupCommit.run) and is pure over PoolState, as is `sweep` (the
stale allocations a full pass releases).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bridge.core.model import (
    Allocation,
    AllocState,
    Container,
    ExposeMode,
    ServiceSpec,
    published_binding,
)
from bridge.pool.allocator import BindTest, PoolError, PoolState


@dataclass(slots=True)
class PoolWork:
    observe: dict[str, bool | None] = field(default_factory=dict)  # name -> running/gone
    present: dict[str, bool] | None = None  # a complete listing: owners not in it are gone
    claims: list[tuple[str, int]] = field(default_factory=list)  # published host ports
    # name, preferred port, tier
    allocations: list[tuple[str, int | None, str]] = field(default_factory=list)
    sweep: bool = False
    exact: bool = False  # cluster scope: the preferred port is the fleet's, or none


@dataclass(slots=True)
class PoolOutcome:
    ports: dict[str, int] = field(default_factory=dict)
    errors: dict[str, PoolError] = field(default_factory=dict)
    released: list[Allocation] = field(default_factory=list)


def pool_work(
    containers: Sequence[Container],
    specs: Mapping[str, ServiceSpec],
    *,
    complete: bool,
    gone: Iterable[str] = (),
    sweep: bool = False,
    fleet_ports: Mapping[str, int] | None = None,
) -> PoolWork:
    """`fleet_ports` (cluster scope): container name -> its service's port across the
    fleet; a proxy container without one gets nothing this pass."""
    work = PoolWork(sweep=sweep, exact=fleet_ports is not None)
    if complete:
        work.present = {c.name: c.running for c in containers}
    else:
        work.observe = {c.name: c.running for c in containers}
        work.observe.update({name: None for name in gone})
    for name, spec in sorted(specs.items()):
        if not spec.container.running:
            continue
        if spec.expose is ExposeMode.PUBLISHED:
            binding = published_binding(spec)
            if binding is not None:
                work.claims.append((name, binding[1]))
        elif spec.expose is ExposeMode.PROXY and fleet_ports is None:
            work.allocations.append((name, spec.host_port, spec.tier))
        elif spec.expose is ExposeMode.PROXY and fleet_ports is not None and name in fleet_ports:
            work.allocations.append((name, fleet_ports[name], spec.tier))
    return work


def apply_pool_work(
    state: PoolState,
    work: PoolWork,
    *,
    now: float,
    stale_after: float,
    is_free: BindTest,
) -> PoolOutcome:
    out = PoolOutcome()
    if work.present is not None:
        state.observe_all(work.present, now=now)
    for name, running in work.observe.items():
        state.observe(name, running, now=now)
    if work.sweep:
        out.released = sweep(state, now=now, stale_after=stale_after)
    for name, port in work.claims:
        state.claim_external(name, port, now=now)
    for name, preferred, tier in work.allocations:
        try:
            out.ports[name] = state.allocate(
                name, now=now, preferred=preferred, is_free=is_free, exact=work.exact, tier=tier
            ).port
        except PoolError as exc:
            out.errors[name] = exc
    return out


def sweep(state: PoolState, *, now: float, stale_after: float) -> list[Allocation]:
    """Release allocations whose owner has been gone for `stale_after` seconds. Better to
    leak a port for a while than to hand it out while its old owner may come back."""
    stale = [
        a
        for a in state.allocations()
        if a.state is AllocState.ORPHANED
        and a.missing_since is not None
        and now - a.missing_since >= stale_after
    ]
    for alloc in stale:
        state.release(alloc.owner)
    return stale
