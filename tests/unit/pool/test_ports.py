"""The pool's allocation rules, on the pure in-memory state."""

from __future__ import annotations

import socket

import pytest

from bridge.core.model import AllocKind, AllocState, LiveClaim, PortRange
from bridge.core.net import bind_test
from bridge.pool.allocator import PoolExhausted, PoolState, PortOutsidePool
from bridge.pool.repair import rebuild
from bridge.pool.work import sweep

NOW = 1_000.0


def pool(low: int = 100, high: int = 104, reserved: tuple[int, ...] = ()) -> PoolState:
    return PoolState(PortRange(low, high), reserved)


def test_first_allocations_go_up_from_the_bottom() -> None:
    p = pool()
    assert [p.allocate(f"c{i}", now=NOW).port for i in range(3)] == [100, 101, 102]


def test_sticky_owner_gets_its_port_back_even_after_stop_and_start() -> None:
    p = pool()
    first = p.allocate("a", now=NOW).port
    p.allocate("b", now=NOW)
    p.observe("a", False, now=NOW + 1)
    assert p.get("a").state is AllocState.HELD  # type: ignore[union-attr]
    again = p.allocate("a", now=NOW + 2)
    assert again.port == first
    assert again.state is AllocState.ACTIVE


def test_freed_port_is_reused_only_after_the_cursor_wraps() -> None:
    p = pool()
    p.allocate("a", now=NOW)  # 100
    p.allocate("b", now=NOW)  # 101
    p.release("a")
    # 100 is free, but the cursor goes on: 102, 103, 104, then wraps to 100.
    assert [p.allocate(o, now=NOW).port for o in "cde"] == [102, 103, 104]
    assert p.allocate("f", now=NOW).port == 100


def test_reserved_ports_are_never_handed_out() -> None:
    p = pool(reserved=(100, 102))
    assert [p.allocate(o, now=NOW).port for o in "abc"] == [101, 103, 104]
    with pytest.raises(PoolExhausted):
        p.allocate("d", now=NOW)


def test_preferred_port_taken_when_free_without_moving_the_cursor() -> None:
    p = pool()
    assert p.allocate("a", now=NOW, preferred=103).port == 103
    assert p.allocate("b", now=NOW).port == 100


def test_preferred_port_held_by_another_falls_back_to_the_cursor() -> None:
    p = pool()
    p.allocate("a", now=NOW, preferred=102)
    assert p.allocate("b", now=NOW, preferred=102).port == 100


def test_preferred_port_outside_pool_or_reserved_is_refused() -> None:
    p = pool(reserved=(101,))
    with pytest.raises(PortOutsidePool, match="99"):
        p.allocate("a", now=NOW, preferred=99)
    with pytest.raises(PortOutsidePool, match="reserved"):
        p.allocate("a", now=NOW, preferred=101)
    assert len(p) == 0


def test_owner_moves_to_a_new_preferred_port_when_it_is_free() -> None:
    p = pool()
    assert p.allocate("a", now=NOW).port == 100
    assert p.allocate("a", now=NOW, preferred=104).port == 104
    assert p.holder(100) is None


def test_owner_keeps_its_port_when_the_new_preferred_one_is_taken() -> None:
    p = pool()
    p.allocate("a", now=NOW)
    p.allocate("b", now=NOW, preferred=104)
    assert p.allocate("a", now=NOW, preferred=104).port == 100


def test_busy_port_is_skipped_and_retried_later() -> None:
    p = pool()
    busy = {100, 101}
    assert p.allocate("a", now=NOW, is_free=lambda port: port not in busy).port == 102
    assert p.last_busy == {100, 101}
    busy.clear()
    # Retried once the cursor comes round: 103, 104, then 100.
    assert [p.allocate(o, now=NOW, is_free=lambda port: True).port for o in "bcd"] == [
        103,
        104,
        100,
    ]


def test_exhaustion_names_the_range_and_counts_what_holds_it() -> None:
    p = pool(reserved=(104,))
    p.allocate("a", now=NOW)
    p.allocate("b", now=NOW)
    p.observe("b", False, now=NOW)
    p.claim_external("pub", 102, now=NOW)
    with pytest.raises(PoolExhausted) as info:
        p.allocate("c", now=NOW, is_free=lambda port: port != 103)
    text = str(info.value)
    assert "100-104" in text
    assert "1 active" in text and "1 held" in text and "1 external" in text
    assert "1 reserved" in text and "1 busy" in text
    assert p.get("c") is None


def test_exhaustion_then_a_freed_port_is_handed_out() -> None:
    p = pool(high=101)
    p.allocate("a", now=NOW)
    p.allocate("b", now=NOW)
    with pytest.raises(PoolExhausted):
        p.allocate("c", now=NOW)
    p.release("a")
    assert p.allocate("c", now=NOW).port == 100


def test_external_claim_is_never_handed_out_and_displaces_a_stopped_holder() -> None:
    p = pool()
    p.allocate("a", now=NOW)  # 100
    p.observe("a", False, now=NOW)
    ext = p.claim_external("pub", 100, now=NOW)
    assert ext is not None and ext.kind is AllocKind.EXTERNAL
    assert p.get("a") is None
    assert p.allocate("a", now=NOW).port == 101
    assert 100 not in {p.allocate(o, now=NOW).port for o in "bcd"}


def test_external_claim_outside_range_is_not_recorded() -> None:
    p = pool()
    assert p.claim_external("pub", 8080, now=NOW) is None
    assert len(p) == 0


def test_owner_switching_from_external_to_pool_releases_the_external_port() -> None:
    p = pool()
    p.claim_external("a", 103, now=NOW)
    assert p.allocate("a", now=NOW).port == 100
    assert p.holder(103) is None


def test_allocation_outside_a_shrunk_range_moves_into_the_range() -> None:
    old = pool(low=100, high=110)
    old.allocate("a", now=NOW, preferred=110)
    shrunk = PoolState(PortRange(100, 104), (), old.allocations(), old.cursor)
    assert shrunk.allocate("a", now=NOW).port == 100
    assert shrunk.holder(110) is None


def test_gone_owner_is_released_only_after_stale_after() -> None:
    p = pool()
    p.allocate("a", now=NOW)
    p.allocate("b", now=NOW)
    p.observe_all({"b": False}, now=NOW)  # a gone, b stopped
    assert p.get("a").state is AllocState.ORPHANED  # type: ignore[union-attr]
    assert sweep(p, now=NOW + 599, stale_after=600) == []
    # Seen gone again later: the clock keeps counting from the first sighting.
    p.observe_all({"b": False}, now=NOW + 300)
    released = sweep(p, now=NOW + 600, stale_after=600)
    assert [a.owner for a in released] == ["a"]
    assert p.get("b") is not None  # a stopped container keeps its port


def test_orphan_that_comes_back_keeps_its_port() -> None:
    p = pool()
    port = p.allocate("a", now=NOW).port
    p.observe("a", None, now=NOW)
    p.observe("a", True, now=NOW + 10)
    assert sweep(p, now=NOW + 10_000, stale_after=600) == []
    assert p.allocate("a", now=NOW + 10_001).port == port


def test_journal_rollback_restores_allocations_and_cursor() -> None:
    p = pool()
    p.allocate("a", now=NOW)
    p.begin()
    p.allocate("b", now=NOW)
    p.release("a")
    p.observe("b", False, now=NOW)
    assert p.pending().ports.keys() == {100, 101}
    p.rollback()
    p.end()
    assert [(a.owner, a.port) for a in p.allocations()] == [("a", 100)]
    assert p.cursor == 100


def test_pending_leaves_out_ports_that_ended_as_they_began() -> None:
    p = pool()
    p.begin()
    p.allocate("a", now=NOW)
    p.release("a")
    assert not p.pending()


def test_rebuild_prefers_running_claims_and_reports_conflicts() -> None:
    claims = [
        LiveClaim("stopped", 101, AllocKind.POOL, running=False),
        LiveClaim("running", 101, AllocKind.POOL, running=True),
        LiveClaim("other", 103, AllocKind.POOL, running=True),
        LiveClaim("pub", 102, AllocKind.EXTERNAL, running=True),
        LiveClaim("pub-far", 8080, AllocKind.EXTERNAL, running=True),
    ]
    state, conflicts = rebuild(PortRange(100, 104), (), claims, now=NOW)
    assert {(a.owner, a.port) for a in state.allocations()} == {
        ("running", 101),
        ("other", 103),
        ("pub", 102),
    }
    assert [c.owner for c in conflicts] == ["stopped"]
    assert state.cursor == 103
    assert state.allocate("new", now=NOW).port == 104


def test_bind_test_sees_a_listener_but_not_time_wait() -> None:
    can_bind = bind_test("127.0.0.1")
    listener = socket.socket()
    # As asyncio servers (our forwarders) do; Linux lets a TIME_WAIT port be rebound
    # only when both sockets set SO_REUSEADDR.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert not can_bind(port)
        # Make a connection and close it from the server side: TIME_WAIT on `port`.
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()
        client.close()
    finally:
        listener.close()
    assert can_bind(port)
