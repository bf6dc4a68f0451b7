"""The durable pool against a deliberately simple model, with reopen-from-disk in the mix.

The model keeps a dict owner -> port, a cursor per tier, and finds the next port by
walking the tier's ports in a list; the pool must agree with it after every step, after
every reopen and after the tiers are reconfigured (held ports keep their owners). Every
change goes through the transaction path the agent uses: GroupCommit.run, with bursts of
concurrent requests sharing one batch and one durable write.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bridge.core.model import AllocKind, PortRange
from bridge.pool.allocator import PoolExhausted, PoolState, PortOutsidePool
from bridge.pool.durable import DurablePool, GroupCommit
from bridge.pool.tiers import UNTIERED, TierLayout, layout_for
from bridge.pool.work import sweep

# Small on purpose: runs must reach the top of a tier, wrap, and fill it up.
RANGE = PortRange(100, 111)
RESERVED = frozenset({103})
LAYOUTS = [
    (),  # no tiers: the whole range is one pool
    (("a", PortRange(100, 103)), ("b", PortRange(104, 107))),  # untiered: 108-111
    # untiered in three pieces (102, 104-105, 110-111); tier z is all reserved
    (("a", PortRange(100, 101)), ("z", PortRange(103, 103)), ("b", PortRange(106, 109))),
]
OWNERS = st.sampled_from([f"c{i}" for i in range(10)])
TIERS = st.sampled_from([UNTIERED, "a", "b", "z"])  # one the layout lacks means untiered
PORTS = st.integers(min_value=99, max_value=112)  # a little outside the range too
NOW = 1_000.0
Expectation = tuple[int | None, type[Exception] | None]  # a port, or the error


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="pool-sm-"))
        self.runner = asyncio.Runner()
        self.layout_tiers = LAYOUTS[0]
        self.pool = self._open()
        self.busy: set[int] = set()  # ports "another process" holds
        # The model.
        self.owners: dict[str, tuple[int, AllocKind]] = {}
        self.stored: dict[str, int] = {}  # tier -> last port handed out in it, on disk

    @property
    def layout(self) -> TierLayout:
        return layout_for(RANGE, self.layout_tiers)

    def _open(self) -> GroupCommit:
        return GroupCommit(
            DurablePool.open(self.dir / "state.db", RANGE, RESERVED, tiers=self.layout)
        )

    def _run(self, op: Callable[[PoolState], Any]) -> Any:
        return self.runner.run(self.pool.run(op))

    def teardown(self) -> None:
        self.runner.run(self.pool.close())
        self.runner.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the model's rules, written plainly ----

    def _held(self) -> set[int]:
        return {port for port, _ in self.owners.values()}

    def _takeable(self, port: int) -> bool:
        return port not in self._held() and port not in self.busy

    def _tier_ports(self, tier: str) -> list[int]:
        """The tier's ports, found plainly: every port of the range no other tier names."""
        named = dict(self.layout_tiers)
        if tier != UNTIERED:
            return [p for p in range(RANGE.low, RANGE.high + 1) if p in named[tier]]
        return [
            p for p in range(RANGE.low, RANGE.high + 1) if all(p not in r for r in named.values())
        ]

    @property
    def cursors(self) -> dict[str, int]:
        """The cursors in force: those of today's tiers that are inside their tier."""
        return {
            t: p for t, p in self.stored.items() if self._tier(t) == t and p in self._tier_ports(t)
        }

    def _tier(self, drawn: str) -> str:
        return drawn if drawn in dict(self.layout_tiers) else UNTIERED

    def _next_after_cursor(self, tier: str) -> int | None:
        ports = self._tier_ports(tier)
        cursor = self.cursors.get(tier)
        start = ports.index(cursor) + 1 if cursor in ports else 0
        for port in ports[start:] + ports[:start]:
            if port not in RESERVED and self._takeable(port):
                return port
        return None

    def _is_free(self, port: int) -> bool:
        return port not in self.busy

    def _expect(
        self, owner: str, preferred: int | None, tier: str
    ) -> tuple[int | None, type[Exception] | None]:
        """The model's answer to an allocation: a port, or the error the pool must raise.
        A held port is kept even where the tiers have changed since; a new one comes from
        the tier."""
        existing = self.owners.get(owner)
        if preferred is not None and (
            preferred in RESERVED or preferred not in self._tier_ports(tier)
        ):
            return None, PortOutsidePool
        if (
            existing is not None
            and existing[1] is AllocKind.POOL
            and not (
                preferred is not None and preferred != existing[0] and self._takeable(preferred)
            )
        ):
            return existing[0], None
        if preferred is not None and self._takeable(preferred):
            return preferred, None
        expected = self._next_after_cursor(tier)
        return expected, PoolExhausted if expected is None else None

    def _record(self, owner: str, preferred: int | None, got: int, tier: str) -> None:
        existing = self.owners.get(owner)
        sticky = existing is not None and existing[0] == got
        if not sticky:
            assert got in self._tier_ports(tier), f"new port {got} outside tier {tier!r}"
            if got != preferred:
                self.stored[tier] = got
        self.owners[owner] = (got, AllocKind.POOL)

    def _check_error(self, exc: Exception, tier: str) -> None:
        if isinstance(exc, PoolExhausted):
            assert exc.tier == tier, f"exhaustion named tier {exc.tier!r}, not {tier!r}"
            if tier != UNTIERED:
                assert f"tier {tier}" in str(exc)

    # ---- rules ----

    @rule(owner=OWNERS, preferred=st.none() | PORTS, drawn=TIERS)
    def allocate(self, owner: str, preferred: int | None, drawn: str) -> None:
        tier = self._tier(drawn)
        expected, expected_error = self._expect(owner, preferred, tier)
        try:
            got = self._run(
                lambda s: s.allocate(
                    owner, now=NOW, preferred=preferred, is_free=self._is_free, tier=tier
                )
            ).port
        except (PoolExhausted, PortOutsidePool) as exc:
            assert expected_error is not None and isinstance(exc, expected_error), (
                f"pool raised {exc!r}, model expected port {expected}"
            )
            self._check_error(exc, tier)
            return
        assert expected_error is None, f"pool gave {got}, model expected {expected_error}"
        assert got == expected, f"{owner}: pool gave {got}, model expected {expected}"
        self._record(owner, preferred, got, tier)

    @rule(owner=OWNERS, drawn=TIERS)
    def allocate_next(self, owner: str, drawn: str) -> None:
        """The common case, drawn as often again as the others."""
        self.allocate(owner, None, drawn)

    @rule(owner=OWNERS)
    def release(self, owner: str) -> None:
        self._run(lambda s: s.release(owner))
        self.owners.pop(owner, None)

    @rule(owner=OWNERS, running=st.sampled_from([True, False, None]))
    def observe(self, owner: str, running: bool | None) -> None:
        self._run(lambda s: s.observe(owner, running, now=NOW))
        # Observing never frees a port: stopped and gone owners keep theirs.

    @rule()
    def sweep_everything_gone(self) -> None:
        released = self._run(lambda s: sweep(s, now=NOW + 10, stale_after=0))
        for alloc in released:
            del self.owners[alloc.owner]

    @rule(owner=OWNERS, port=PORTS)
    def claim_external(self, owner: str, port: int) -> None:
        self._run(lambda s: s.claim_external(owner, port, now=NOW))
        self.owners.pop(owner, None)
        if port in RANGE and port not in RESERVED:
            for other, (held, _) in list(self.owners.items()):
                if held == port:
                    del self.owners[other]
        if port in RANGE and port not in RESERVED:
            self.owners[owner] = (port, AllocKind.EXTERNAL)

    @rule(port=st.integers(min_value=RANGE.low, max_value=RANGE.high), busy=st.booleans())
    def other_process(self, port: int, busy: bool) -> None:
        (self.busy.add if busy else self.busy.discard)(port)

    @rule(
        requests=st.lists(st.tuples(OWNERS, st.none() | PORTS, TIERS), min_size=2, max_size=6),
        broken_at=st.none() | st.integers(min_value=0, max_value=5),
    )
    def burst(self, requests: list[tuple[str, int | None, str]], broken_at: int | None) -> None:
        """Concurrent requests, as one pass's allocations arrive: one batch, one write.
        A request that fails, even half-way through changing the pool, fails alone and
        leaves nothing behind."""
        pool, free = self.pool, self._is_free

        def allocate(owner: str, preferred: int | None, tier: str) -> Callable[[PoolState], Any]:
            return lambda s: s.allocate(
                owner, now=NOW, preferred=preferred, is_free=free, tier=tier
            )

        def broken(s: PoolState) -> None:
            for alloc in s.allocations():
                s.release(alloc.owner)
            raise RuntimeError("a bug half-way through")

        requests = [(o, p, self._tier(t)) for o, p, t in requests]
        ops = [allocate(o, p, t) for o, p, t in requests]
        if broken_at is not None:
            ops.insert(min(broken_at, len(ops)), broken)

        async def together() -> list[Any]:
            return await asyncio.gather(*(pool.run(op) for op in ops), return_exceptions=True)

        commits = pool.commits
        results = self.runner.run(together())
        assert pool.commits - commits <= 1, "one batch took more than one durable write"
        if broken_at is not None:
            failed = results.pop(min(broken_at, len(requests)))
            assert isinstance(failed, RuntimeError), failed
        for (owner, preferred, tier), got in zip(requests, results, strict=True):
            expected, expected_error = self._expect(owner, preferred, tier)
            if isinstance(got, BaseException):
                assert expected_error is not None and isinstance(got, expected_error), (
                    f"{owner}: pool raised {got!r}, model expected port {expected}"
                )
                self._check_error(got, tier)
                continue
            assert expected_error is None, f"pool gave {got.port}, model expected {expected_error}"
            assert got.port == expected, f"{owner}: pool gave {got.port}, model expected {expected}"
            self._record(owner, preferred, got.port, tier)

    @rule()
    def reopen(self) -> None:
        """Close and reopen from disk: everything must come back exactly."""
        self.runner.run(self.pool.close())
        self.pool = self._open()

    @rule(layout=st.sampled_from(range(len(LAYOUTS))))
    def reconfigure(self, layout: int) -> None:
        """Restart with other tiers: every port keeps its owner, even one its tier no
        longer contains; a stored cursor counts only while it is inside its tier."""
        self.runner.run(self.pool.close())
        self.layout_tiers = LAYOUTS[layout]
        self.pool = self._open()

    # ---- invariants ----

    @invariant()
    def agrees_with_model(self) -> None:
        state = self.pool.state
        got = {a.owner: (a.port, a.kind) for a in state.allocations()}
        assert got == self.owners
        assert state.cursors == self.cursors
        ports = [a.port for a in state.allocations()]
        assert len(ports) == len(set(ports)), "one port for two owners"
        assert not (set(ports) & RESERVED)
        capacity = len(RANGE) - len(RESERVED)
        assert state.free_count() == capacity - len(self.owners)
        for tier in [UNTIERED, *dict(self.layout_tiers)]:
            mine = self._tier_ports(tier)
            size = len([p for p in mine if p not in RESERVED])
            used = sum(1 for port, _ in self.owners.values() if port in mine)
            assert state.capacity_of(tier) == size
            assert state.free_count(tier) == size - used, tier
        h = state.holders()
        assert h["active"] + h["held"] + h["orphaned"] + h["external"] == len(self.owners)


PoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestPoolMachine = PoolMachine.TestCase
