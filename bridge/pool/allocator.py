"""The port pool's allocation rules: pure, in memory, no I/O but the injected bind test.

Rules (the contract in docs/design.md):
- sticky: an owner (container name) that holds a port gets the same one back;
- a preferred port is taken when free;
- otherwise the next free port after the last one handed out, wrapping, so a freed port is
  reused only after the cursor came round (as moby does: old clients may still talk to it);
- reserved ports and ports another process holds (the bind test fails) are skipped; a busy
  port is not remembered, so it is tried again the next time the cursor reaches it;
- ports a container publishes by itself are recorded as EXTERNAL and never handed out;
- an owner that no longer exists keeps its port until `stale_after` has passed (in cluster
  scope, until its service's next container here asks for that port: it is the service's);
- with tiers (pool/tiers.py), each tier is a pool of its own for all of the above: its
  own cursor, capacity and exhaustion; an owner keeps a port it holds even when the tiers
  change under it (reconcile reports the mismatch).

Every mutation is journaled so that the durable layer can persist exactly what changed and
undo it if the write fails: memory never runs ahead of the disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from bridge.core.model import Allocation, AllocKind, AllocState, PortRange
from bridge.pool.tiers import UNTIERED, Tier, TierLayout

BindTest = Callable[[int], bool]  # can a port be bound right now (net.bind_test)


def always_free(port: int) -> bool:
    return True


class PoolError(Exception):
    pass


class PortOutsidePool(PoolError):
    """A port the pool cannot hand out: outside its range, or reserved."""


class PortTaken(PoolError):
    """An exact port (cluster scope) that cannot be had on this host."""


class PoolExhausted(PoolError):
    WHAT = "port pool"  # what ran out, as the message names it

    def __init__(self, tier: Tier, holders: Mapping[str, int], *, tiered: bool = False) -> None:
        self.tier = tier.name
        self.holders = dict(holders)
        held = ", ".join(f"{count} {what}" for what, count in holders.items() if count)
        where = tier.describe() if tiered else str(tier)
        super().__init__(
            f"{self.WHAT} {where} exhausted: all {len(tier)} ports are taken"
            f" ({held or 'nothing recorded'})"
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a transaction changed: each touched port's value before and after, the cursor."""

    ports: Mapping[int, Allocation | None]
    before: Mapping[int, Allocation | None]
    cursors: Mapping[str, int]  # tier -> the last port handed out in it

    def __bool__(self) -> bool:
        return bool(self.ports)


class PoolState:
    def __init__(
        self,
        port_range: PortRange,
        reserved: Iterable[int] = (),
        allocations: Iterable[Allocation] = (),
        cursor: int | Mapping[str, int] | None = None,
        tiers: TierLayout | None = None,
    ) -> None:
        self.port_range = port_range
        self.reserved = frozenset(reserved)
        self.layout = tiers or TierLayout(port_range)
        self._by_port: dict[int, Allocation] = {}
        self._by_owner: dict[str, Allocation] = {}
        # Kept up to date by _set, so a full tier is known without walking it: a burst of
        # requests against a full pool must not cost a scan each.
        self._taken: Counter[str] = Counter()  # tier -> usable ports some allocation holds
        self._capacity = {  # counted over the reserved ports, not over the whole range
            name: len(tier) - sum(1 for p in self.reserved if p in tier)
            for name, tier in self.layout.tiers.items()
        }
        self._tier_of: dict[int, str] = {}  # filled as ports are touched
        self._version = 0
        self._holders_cache: dict[str | None, tuple[int, dict[str, int]]] = {}
        for alloc in allocations:
            if alloc.port in self._by_port or alloc.owner in self._by_owner:
                raise ValueError(f"duplicate allocation {alloc}")
            self._set(alloc.port, alloc)
        # Each tier's cursor is the last port handed out in it; its scan starts just after.
        given = cursor if isinstance(cursor, Mapping) else {UNTIERED: cursor}
        self.cursors: dict[str, int] = {
            name: port
            for name, port in given.items()
            if port is not None and name in self.layout.tiers and port in self.layout[name]
        }
        self.last_busy: frozenset[int] = frozenset()
        # Undo records, kept only while a transaction is open (between begin and end).
        self._journal: list[tuple[int, Allocation | None]] | None = None
        self._cursors_at_begin = dict(self.cursors)

    @property
    def cursor(self) -> int:
        """The untiered ports' cursor (the whole range's, without tiers)."""
        return self.cursors.get(UNTIERED, self.port_range.low - 1)

    def tier_of(self, port: int) -> str | None:
        found = self._tier_of.get(port)
        if found is None:
            found = self.layout.of(port)
            if found is not None:
                self._tier_of[port] = found
        return found

    # ---- reads ----------------------------------------------------------------------

    def get(self, owner: str) -> Allocation | None:
        return self._by_owner.get(owner)

    def holder(self, port: int) -> Allocation | None:
        return self._by_port.get(port)

    def allocations(self) -> list[Allocation]:
        return sorted(self._by_port.values(), key=lambda a: a.port)

    def __len__(self) -> int:
        return len(self._by_port)

    def usable(self, port: int) -> bool:
        """A port the pool may hand out at all (ignoring who holds it)."""
        return port in self.port_range and port not in self.reserved

    def holders(self, tier: str | None = None) -> dict[str, int]:
        """Who takes up the range (or one tier), by kind of holder: for exhaustion errors
        and metrics."""
        cached = self._holders_cache.get(tier)
        if cached is not None and cached[0] == self._version:
            return dict(cached[1])
        span = self.port_range if tier is None else self.layout[tier]
        counts: Counter[str] = Counter()
        for alloc in self._by_port.values():
            if alloc.port in span and alloc.port not in self.reserved:
                counts[alloc.state if alloc.kind is AllocKind.POOL else "external"] += 1
        counts["reserved"] = len(span) - self.capacity_of(tier)
        counts["busy"] = sum(1 for p in self.last_busy if p in span)
        result = {
            what: counts[what]
            for what in ("active", "held", "orphaned", "external", "reserved", "busy")
        }
        self._holders_cache[tier] = (self._version, result)
        return dict(result)

    def free_count(self, tier: str | None = None) -> int:
        """Ports nobody holds (some may still be busy with other processes)."""
        return self.capacity_of(tier) - self.used_count(tier)

    @property
    def capacity(self) -> int:
        """Ports the pool may hand out: the range less reserved ports."""
        return sum(self._capacity.values())

    def capacity_of(self, tier: str | None = None) -> int:
        return self.capacity if tier is None else self._capacity[tier]

    def used_count(self, tier: str | None = None) -> int:
        """Usable ports that some allocation holds."""
        return sum(self._taken.values()) if tier is None else self._taken[tier]

    # ---- journal --------------------------------------------------------------------

    def begin(self) -> None:
        if self._journal is not None:
            raise RuntimeError("transaction already open")
        self._journal = []
        self._cursors_at_begin = dict(self.cursors)

    def _open_journal(self) -> list[tuple[int, Allocation | None]]:
        if self._journal is None:
            raise RuntimeError("no transaction open")
        return self._journal

    def mark(self) -> int:
        return len(self._open_journal())

    def undo_to(self, mark: int) -> None:
        journal = self._open_journal()
        while len(journal) > mark:
            port, before = journal.pop()
            self._set(port, before)

    def rollback(self) -> None:
        self.undo_to(0)
        self.cursors = dict(self._cursors_at_begin)

    def pending(self) -> Changes:
        before: dict[int, Allocation | None] = {}
        for port, value in self._open_journal():
            before.setdefault(port, value)  # the first entry holds the value before it all
        after = {port: self._by_port.get(port) for port in before}
        changed = {port: a for port, a in after.items() if a != before[port]}
        return Changes(changed, {port: before[port] for port in changed}, dict(self.cursors))

    def end(self) -> None:
        self._journal = None
        self._cursors_at_begin = dict(self.cursors)

    def _set(self, port: int, alloc: Allocation | None) -> None:
        self._version += 1
        tier = self.tier_of(port) if self.usable(port) else None
        current = self._by_port.pop(port, None)
        if current is not None:
            del self._by_owner[current.owner]
            if tier is not None:
                self._taken[tier] -= 1
        if alloc is not None:
            self._by_port[port] = alloc
            self._by_owner[alloc.owner] = alloc
            if tier is not None:
                self._taken[tier] += 1

    def _put(self, alloc: Allocation) -> Allocation:
        if self._journal is not None:
            self._journal.append((alloc.port, self._by_port.get(alloc.port)))
        self._set(alloc.port, alloc)
        return alloc

    def _drop(self, port: int) -> Allocation | None:
        before = self._by_port.get(port)
        if before is not None:
            if self._journal is not None:
                self._journal.append((port, before))
            self._set(port, None)
        return before

    # ---- mutations ------------------------------------------------------------------

    def allocate(
        self,
        owner: str,
        *,
        now: float,
        preferred: int | None = None,
        is_free: BindTest = always_free,
        exact: bool = False,
        tier: str = UNTIERED,
    ) -> Allocation:
        """The owner's port: sticky, else preferred, else next after the tier's cursor.

        `exact`: the preferred port or none (cluster scope: the service's port across the
        fleet); raises PortTaken when another owner holds it here or it is busy.
        Raises PortOutsidePool for a preferred port the pool (or the tier) may not hand
        out, and PoolExhausted when the tier has no port free; in all cases nothing changes.
        """
        span = self.layout[tier]
        if exact and preferred is not None:
            return self._allocate_exact(owner, preferred, span, now=now, is_free=is_free)
        if preferred is not None and not (self.usable(preferred) and preferred in span):
            raise PortOutsidePool(self._outside(preferred, span, "preferred port"))
        existing = self._by_owner.get(owner)
        keep = (
            existing is not None and existing.kind is AllocKind.POOL and self.usable(existing.port)
        )
        if existing is not None and keep:
            wants_move = preferred is not None and preferred != existing.port
            if not (wants_move and self._takeable(preferred, is_free)):  # type: ignore[arg-type]
                return self._activate(existing, now)

        if preferred is not None and self._takeable(preferred, is_free):
            port = preferred
        else:
            port = self._scan(span, is_free)
        if existing is not None:
            self._drop(existing.port)
        if preferred is None or port != preferred:
            self.cursors[span.name] = port
        return self._put(Allocation(port, owner, AllocState.ACTIVE, AllocKind.POOL, now, now))

    def _outside(self, port: int, span: Tier, what: str) -> str:
        if port in self.reserved:
            return f"{what} {port} is reserved"
        if port not in self.port_range:
            return f"{what} {port} is not in the pool {self.port_range}"
        return f"{what} {port} is not in {span.describe()}"

    def _allocate_exact(
        self, owner: str, port: int, span: Tier, *, now: float, is_free: BindTest
    ) -> Allocation:
        if port not in self.port_range:
            raise PortOutsidePool(
                f"the fleet's port {port} is outside this host's pool {self.port_range}:"
                " every bridge of a fleet needs the same BRIDGE_PORT_RANGE"
            )
        # A port tiers reconfigured since the fleet's claim left outside keeps its owner.
        if not self.usable(port):
            raise PortOutsidePool(
                self._outside(port, span, "the fleet's port")
                + " on this host: every bridge of a fleet needs the same BRIDGE_RESERVED_PORTS"
            )
        existing = self._by_owner.get(owner)
        if existing is not None and existing.port == port and existing.kind is AllocKind.POOL:
            return self._activate(existing, now)
        holder = self._by_port.get(port)
        # An orphan's container is gone (removed, or renamed to `owner`): the service's new
        # container takes its port now. No bind test then: what listens there is the old
        # name's forwarder, which the forwarder step hands over (or says the port is taken).
        handover = holder is not None and holder.state is AllocState.ORPHANED
        if holder is not None and not handover:
            raise PortTaken(
                f"port {port} is held on this host by {holder.owner}"
                " (cluster scope: one instance of a service per host)"
            )
        if handover:
            self._drop(port)
        elif not is_free(port):
            raise PortTaken(f"port {port} is busy on this host (another process holds it)")
        if existing is not None:
            self._drop(existing.port)
        return self._put(Allocation(port, owner, AllocState.ACTIVE, AllocKind.POOL, now, now))

    def _takeable(self, port: int, is_free: BindTest) -> bool:
        return port not in self._by_port and is_free(port)

    def _scan(self, span: Tier, is_free: BindTest) -> int:
        tiered = self.layout.tiered
        if self._taken[span.name] >= self._capacity[span.name]:
            raise PoolExhausted(span, self.holders(span.name), tiered=tiered)
        busy: set[int] = set()
        for port in span.after(self.cursors.get(span.name)):
            if port in self._by_port or port in self.reserved:
                continue
            if is_free(port):
                self.last_busy = frozenset(busy)
                return port
            busy.add(port)
        self.last_busy = frozenset(busy)
        raise PoolExhausted(span, self.holders(span.name), tiered=tiered)

    def _activate(self, alloc: Allocation, now: float) -> Allocation:
        if alloc.state is AllocState.ACTIVE:
            return alloc
        return self._put(
            replace(alloc, state=AllocState.ACTIVE, updated_at=now, missing_since=None)
        )

    def claim_external(self, owner: str, port: int, *, now: float) -> Allocation | None:
        """Record a port the owner publishes by itself, so the pool never hands it out.

        Docker already bound it, so reality wins: whoever the pool had given it to (a
        stopped container, say) loses it and gets a new port when it next asks. Ports
        outside the range, or reserved, cannot collide with the pool and are not recorded.
        """
        existing = self._by_owner.get(owner)
        if existing is not None and existing.port == port and existing.kind is AllocKind.EXTERNAL:
            return self._activate(existing, now)
        if existing is not None:
            self._drop(existing.port)
        if not self.usable(port):
            return None
        self._drop(port)
        return self._put(Allocation(port, owner, AllocState.ACTIVE, AllocKind.EXTERNAL, now, now))

    def observe(self, owner: str, running: bool | None, *, now: float) -> Allocation | None:
        """Move the owner's allocation to what Docker says: running, stopped, or gone (None)."""
        alloc = self._by_owner.get(owner)
        if alloc is None:
            return None
        if running is None:
            if alloc.state is AllocState.ORPHANED:
                return alloc
            return self._put(
                replace(alloc, state=AllocState.ORPHANED, updated_at=now, missing_since=now)
            )
        if running:
            return self._activate(alloc, now)
        if alloc.state is AllocState.HELD:
            return alloc
        return self._put(replace(alloc, state=AllocState.HELD, updated_at=now, missing_since=None))

    def observe_all(self, present: Mapping[str, bool], *, now: float) -> None:
        """Apply a complete Docker listing (owner -> running); owners not in it are gone."""
        for owner in list(self._by_owner):
            self.observe(owner, present.get(owner), now=now)

    def release(self, owner: str) -> Allocation | None:
        alloc = self._by_owner.get(owner)
        return None if alloc is None else self._drop(alloc.port)
