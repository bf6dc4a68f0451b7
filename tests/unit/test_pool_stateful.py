"""The durable pool against a deliberately simple model, with reopen-from-disk in the mix.

The model keeps a dict owner -> port and a cursor and finds the next port by walking the
range in a list; the pool must agree with it after every step and after every reopen.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bridge.config import PortRange
from bridge.model import AllocKind
from bridge.port_pool import DurablePortPool
from bridge.ports import PoolExhausted, PortOutsidePool

# Small on purpose: runs must reach the top of the range, wrap, and fill it up.
RANGE = PortRange(100, 105)
RESERVED = frozenset({103})
OWNERS = st.sampled_from([f"c{i}" for i in range(8)])
PORTS = st.integers(min_value=99, max_value=106)  # a little outside the range too
NOW = 1_000.0


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="pool-sm-"))
        self.pool = DurablePortPool.open(self.dir / "state.db", RANGE, RESERVED)
        self.busy: set[int] = set()  # ports "another process" holds
        # The model.
        self.owners: dict[str, tuple[int, AllocKind]] = {}
        self.cursor = RANGE.low - 1

    def teardown(self) -> None:
        self.pool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the model's rules, written plainly ----

    def _held(self) -> set[int]:
        return {port for port, _ in self.owners.values()}

    def _takeable(self, port: int) -> bool:
        return port not in self._held() and port not in self.busy

    def _next_after_cursor(self) -> int | None:
        ports = list(range(RANGE.low, RANGE.high + 1))
        start = ports.index(self.cursor) + 1 if self.cursor in RANGE else 0
        for port in ports[start:] + ports[:start]:
            if port not in RESERVED and self._takeable(port):
                return port
        return None

    def _is_free(self, port: int) -> bool:
        return port not in self.busy

    # ---- rules ----

    @rule(owner=OWNERS, preferred=st.none() | PORTS)
    def allocate(self, owner: str, preferred: int | None) -> None:
        expected_error: type[Exception] | None = None
        existing = self.owners.get(owner)
        if preferred is not None and (preferred not in RANGE or preferred in RESERVED):
            expected_error = PortOutsidePool
            expected = None
        elif (
            existing is not None
            and existing[1] is AllocKind.POOL
            and not (
                preferred is not None and preferred != existing[0] and self._takeable(preferred)
            )
        ):
            expected = existing[0]
        elif preferred is not None and self._takeable(preferred):
            expected = preferred
        else:
            expected = self._next_after_cursor()
            if expected is None:
                expected_error = PoolExhausted

        try:
            with self.pool.transaction() as s:
                got = s.allocate(owner, now=NOW, preferred=preferred, is_free=self._is_free).port
        except (PoolExhausted, PortOutsidePool) as exc:
            assert expected_error is not None and isinstance(exc, expected_error), (
                f"pool raised {exc!r}, model expected port {expected}"
            )
            return
        assert expected_error is None, f"pool gave {got}, model expected {expected_error}"
        assert got == expected, f"{owner}: pool gave {got}, model expected {expected}"
        if not (existing is not None and existing[0] == got) and got != preferred:
            self.cursor = got
        self.owners[owner] = (got, AllocKind.POOL)

    @rule(owner=OWNERS)
    def allocate_next(self, owner: str) -> None:
        """The common case, drawn as often again as the others."""
        self.allocate(owner, None)

    @rule(owner=OWNERS)
    def release(self, owner: str) -> None:
        with self.pool.transaction() as s:
            s.release(owner)
        self.owners.pop(owner, None)

    @rule(owner=OWNERS, running=st.sampled_from([True, False, None]))
    def observe(self, owner: str, running: bool | None) -> None:
        with self.pool.transaction() as s:
            s.observe(owner, running, now=NOW)
        # Observing never frees a port: stopped and gone owners keep theirs.

    @rule()
    def sweep_everything_gone(self) -> None:
        with self.pool.transaction() as s:
            released = s.sweep(now=NOW + 10, stale_after=0)
        for alloc in released:
            del self.owners[alloc.owner]

    @rule(owner=OWNERS, port=PORTS)
    def claim_external(self, owner: str, port: int) -> None:
        with self.pool.transaction() as s:
            s.claim_external(owner, port, now=NOW)
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

    @rule()
    def reopen(self) -> None:
        """Close and reopen from disk: everything must come back exactly."""
        self.pool.close()
        self.pool = DurablePortPool.open(self.dir / "state.db", RANGE, RESERVED)

    # ---- invariants ----

    @invariant()
    def agrees_with_model(self) -> None:
        state = self.pool.state
        got = {a.owner: (a.port, a.kind) for a in state.allocations()}
        assert got == self.owners
        assert state.cursor == self.cursor
        ports = [a.port for a in state.allocations()]
        assert len(ports) == len(set(ports)), "one port for two owners"
        assert not (set(ports) & RESERVED)
        capacity = len(RANGE) - len(RESERVED)
        assert state.free_count() == capacity - len(self.owners)
        h = state.holders()
        assert h["active"] + h["held"] + h["orphaned"] + h["external"] == len(self.owners)


PoolMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestPoolMachine = PoolMachine.TestCase
