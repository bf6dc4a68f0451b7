"""The port pool's allocation rules: pure, in memory, no I/O but the injected bind test.

Rules (the contract in docs/design.md):
- sticky: an owner (container name) that holds a port gets the same one back;
- a preferred port is taken when free;
- otherwise the next free port after the last one handed out, wrapping at the top of the
  range, so a freed port is reused only after the cursor has come round (moby's allocator
  does the same, to keep a just-freed port from being handed to a new owner while old
  clients may still be talking to it);
- reserved ports and ports another process holds (the bind test fails) are skipped; a busy
  port is not remembered, so it is tried again the next time the cursor reaches it;
- ports a container publishes by itself are recorded as EXTERNAL and never handed out;
- an owner that no longer exists keeps its port until `stale_after` has passed.

Every mutation is journaled so that the durable layer can persist exactly what changed and
undo it if the write fails: memory never runs ahead of the disk.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from bridge.config import PortRange
from bridge.model import Allocation, AllocKind, AllocState

# Whether a port can be bound right now (net.bind_test in the agent).
BindTest = Callable[[int], bool]


def always_free(port: int) -> bool:
    return True


class PoolError(Exception):
    pass


class PortOutsidePool(PoolError):
    pass


class PortTaken(PoolError):
    """An exact port (cluster scope) that cannot be had on this host."""


class PoolExhausted(PoolError):
    def __init__(self, port_range: PortRange, holders: Mapping[str, int]) -> None:
        self.port_range = port_range
        self.holders = dict(holders)
        held = ", ".join(f"{count} {what}" for what, count in holders.items() if count)
        super().__init__(
            f"port pool {port_range} exhausted: all {len(port_range)} ports are taken"
            f" ({held or 'nothing recorded'})"
        )


@dataclass(frozen=True, slots=True)
class Changes:
    """What a transaction changed: each touched port's value before and after, the cursor."""

    ports: Mapping[int, Allocation | None]
    before: Mapping[int, Allocation | None]
    cursor: int

    def __bool__(self) -> bool:
        return bool(self.ports)


class PoolState:
    def __init__(
        self,
        port_range: PortRange,
        reserved: Iterable[int] = (),
        allocations: Iterable[Allocation] = (),
        cursor: int | None = None,
    ) -> None:
        self.port_range = port_range
        self.reserved = frozenset(reserved)
        self._by_port: dict[int, Allocation] = {}
        self._by_owner: dict[str, Allocation] = {}
        # Kept up to date by _set, so a full pool is known without walking the range: a
        # burst of requests against a full pool must not cost a scan each.
        self._taken = 0  # usable ports that some allocation holds
        self._capacity = len(port_range) - sum(1 for p in self.reserved if p in port_range)
        self._version = 0
        self._holders_cache: tuple[int, dict[str, int]] | None = None
        for alloc in allocations:
            if alloc.port in self._by_port or alloc.owner in self._by_owner:
                raise ValueError(f"duplicate allocation {alloc}")
            self._set(alloc.port, alloc)
        # The cursor is the last port handed out; the scan starts just after it.
        self.cursor: int = (
            cursor if cursor is not None and cursor in port_range else port_range.low - 1
        )
        self.last_busy: frozenset[int] = frozenset()
        # Undo records, kept only while a transaction is open (between begin and end).
        self._journal: list[tuple[int, Allocation | None]] | None = None
        self._cursor_at_begin = self.cursor

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

    def holders(self) -> dict[str, int]:
        """Who takes up the range, by kind of holder: for exhaustion errors and metrics."""
        if self._holders_cache is not None and self._holders_cache[0] == self._version:
            return dict(self._holders_cache[1])
        counts: Counter[str] = Counter()
        for alloc in self._by_port.values():
            if alloc.port in self.port_range and alloc.port not in self.reserved:
                counts[alloc.state if alloc.kind is AllocKind.POOL else "external"] += 1
        counts["reserved"] = len(self.port_range) - self._capacity
        counts["busy"] = len(self.last_busy)
        result = {
            what: counts[what]
            for what in ("active", "held", "orphaned", "external", "reserved", "busy")
        }
        self._holders_cache = (self._version, result)
        return dict(result)

    def free_count(self) -> int:
        """Ports nobody holds (some may still be busy with other processes)."""
        return self._capacity - self._taken

    @property
    def capacity(self) -> int:
        """Ports the pool may hand out: the range less reserved ports."""
        return self._capacity

    def used_count(self) -> int:
        """Usable ports that some allocation holds."""
        return self._taken

    # ---- journal --------------------------------------------------------------------

    def begin(self) -> None:
        if self._journal is not None:
            raise RuntimeError("transaction already open")
        self._journal = []
        self._cursor_at_begin = self.cursor

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
        self.cursor = self._cursor_at_begin

    def pending(self) -> Changes:
        before: dict[int, Allocation | None] = {}
        for port, value in self._open_journal():
            before.setdefault(port, value)  # the first entry holds the value before it all
        after = {port: self._by_port.get(port) for port in before}
        changed = {port: a for port, a in after.items() if a != before[port]}
        return Changes(changed, {port: before[port] for port in changed}, self.cursor)

    def end(self) -> None:
        self._journal = None
        self._cursor_at_begin = self.cursor

    def _set(self, port: int, alloc: Allocation | None) -> None:
        self._version += 1
        usable = self.usable(port)
        current = self._by_port.pop(port, None)
        if current is not None:
            del self._by_owner[current.owner]
            self._taken -= usable
        if alloc is not None:
            self._by_port[port] = alloc
            self._by_owner[alloc.owner] = alloc
            self._taken += usable

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
    ) -> Allocation:
        """The owner's port: sticky, else preferred, else next after the cursor.

        `exact`: the preferred port or none (cluster scope: the service's port across the
        fleet); raises PortTaken when another owner holds it here or it is busy.
        Raises PortOutsidePool for a preferred port the pool may not hand out, and
        PoolExhausted when no port is free; in all cases nothing changes.
        """
        if exact and preferred is not None:
            return self._allocate_exact(owner, preferred, now=now, is_free=is_free)
        if preferred is not None and not self.usable(preferred):
            raise PortOutsidePool(
                f"preferred port {preferred} is not in the pool {self.port_range}"
                + (" (it is reserved)" if preferred in self.reserved else "")
            )
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
            port = self._scan(is_free)
        if existing is not None:
            self._drop(existing.port)
        if preferred is None or port != preferred:
            self.cursor = port
        return self._put(Allocation(port, owner, AllocState.ACTIVE, AllocKind.POOL, now, now))

    def _allocate_exact(
        self, owner: str, port: int, *, now: float, is_free: BindTest
    ) -> Allocation:
        if not self.usable(port):
            raise PortOutsidePool(
                f"the fleet's port {port} is outside this host's pool {self.port_range}:"
                " every bridge of a fleet needs the same BRIDGE_PORT_RANGE"
            )
        existing = self._by_owner.get(owner)
        if existing is not None and existing.port == port and existing.kind is AllocKind.POOL:
            return self._activate(existing, now)
        holder = self._by_port.get(port)
        if holder is not None:
            raise PortTaken(
                f"port {port} is held on this host by {holder.owner}"
                " (cluster scope: one instance of a service per host)"
            )
        if not is_free(port):
            raise PortTaken(f"port {port} is busy on this host (another process holds it)")
        if existing is not None:
            self._drop(existing.port)
        return self._put(Allocation(port, owner, AllocState.ACTIVE, AllocKind.POOL, now, now))

    def _takeable(self, port: int, is_free: BindTest) -> bool:
        return port not in self._by_port and is_free(port)

    def _candidates(self) -> Iterator[int]:
        span = self.port_range
        start = self.cursor + 1 if self.cursor in span else span.low
        yield from range(start, span.high + 1)
        yield from range(span.low, start)

    def _scan(self, is_free: BindTest) -> int:
        if self._taken >= self._capacity:
            raise PoolExhausted(self.port_range, self.holders())
        busy: set[int] = set()
        for port in self._candidates():
            if port in self._by_port or port in self.reserved:
                continue
            if is_free(port):
                self.last_busy = frozenset(busy)
                return port
            busy.add(port)
        self.last_busy = frozenset(busy)
        raise PoolExhausted(self.port_range, self.holders())

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
