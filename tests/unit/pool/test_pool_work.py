"""The pool's step of a pass: pool_work and apply_pool_work on the real in-memory PoolState.

Covers which containers get pool ports (proxy, preferred host ports, stickiness), published
ports claimed as external, orphaning on complete and partial listings, the stale-after sweep,
exhaustion reported per container, and idempotence of a repeated pass. Labels are read as
the pass reads them; no Docker, no Consul, no clock.
"""

from __future__ import annotations

from typing import Any

from bridge.core.config import Settings
from bridge.core.model import AllocKind, AllocState, Container, PortBinding, PortRange
from bridge.core.reconcile import read_labels
from bridge.pool.allocator import PoolExhausted, PoolState
from bridge.pool.work import PoolWork, apply_pool_work, pool_work
from tests.builders import make_container, make_settings
from tests.reconcile_cases import NOW, SETTINGS, STALE_AFTER, make_spec

# ---- pool_work + apply_pool_work -------------------------------------------------------


def pool_state(low: int = 11100, high: int = 11109) -> PoolState:
    return PoolState(PortRange(low, high), ())


def pool_step(
    state: PoolState,
    containers: list[Container],
    *,
    complete: bool = True,
    gone: tuple[str, ...] = (),
    sweep: bool = False,
    now: float = NOW,
    busy: frozenset[int] = frozenset(),
    settings: Settings = SETTINGS,
) -> tuple[PoolWork, Any]:
    """The pool's step of a pass (loop/passes.py, step 3) on its own: the pass's own pure
    functions, labels read as the pass reads them, with no I/O around them."""
    specs, _ = read_labels(containers, settings)
    work = pool_work(containers, specs, complete=complete, gone=gone, sweep=sweep)
    outcome = apply_pool_work(
        state, work, now=now, stale_after=STALE_AFTER, is_free=lambda p: p not in busy
    )
    return work, outcome


def proxy(name: str, state: str = "running", **labels: str) -> Container:
    return make_container(name, labels={"mcp.expose": "proxy", **labels}, state=state)


def published(name: str, host_port: int, state: str = "running") -> Container:
    return make_container(name, published={8080: (PortBinding("0.0.0.0", host_port),)}, state=state)


def test_pool_work_lists_allocations_and_claims() -> None:
    containers = [
        proxy("mcp-b", **{"mcp.host_port": "11105"}),
        proxy("mcp-a"),
        published("mcp-p", 11103),
        make_container("mcp-i", labels={"mcp.expose": "internal"}),
        proxy("mcp-stopped", state="exited"),
        make_container("unmanaged"),
    ]
    specs = {c.name: make_spec(c) for c in containers if c.name.startswith("mcp-")}
    work = pool_work(containers, specs, complete=True)
    assert work.allocations == [("mcp-a", None, ""), ("mcp-b", 11105, "")]
    assert work.claims == [("mcp-p", 11103)]
    assert work.present == {
        "mcp-b": True,
        "mcp-a": True,
        "mcp-p": True,
        "mcp-i": True,
        "mcp-stopped": False,
        "unmanaged": True,
    }
    assert work.observe == {}
    assert work.sweep is False


def test_pool_work_partial_observes_listed_and_gone() -> None:
    containers = [proxy("mcp-a"), proxy("mcp-s", state="exited")]
    work = pool_work(containers, {}, complete=False, gone=["mcp-old"], sweep=False)
    assert work.present is None
    assert work.observe == {"mcp-a": True, "mcp-s": False, "mcp-old": None}


def test_proxy_containers_get_pool_ports() -> None:
    state = pool_state()
    _, out = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    assert out.ports == {"mcp-a": 11100, "mcp-b": 11101}
    assert out.errors == {}
    for name, port in out.ports.items():
        alloc = state.get(name)
        assert alloc is not None
        assert (alloc.port, alloc.kind, alloc.state) == (port, AllocKind.POOL, AllocState.ACTIVE)


def test_preferred_host_port_is_honoured() -> None:
    state = pool_state()
    _, out = pool_step(state, [proxy("mcp-a", **{"mcp.host_port": "11107"}), proxy("mcp-b")])
    assert out.ports == {"mcp-a": 11107, "mcp-b": 11100}


def test_busy_preferred_port_falls_back_to_a_free_one() -> None:
    state = pool_state()
    _, out = pool_step(
        state, [proxy("mcp-a", **{"mcp.host_port": "11107"})], busy=frozenset({11107})
    )
    assert out.ports == {"mcp-a": 11100}


def test_pool_ports_are_sticky_across_passes() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    _, second = pool_step(state, [proxy("mcp-b"), proxy("mcp-a"), proxy("mcp-c")], now=NOW + 5)
    assert second.ports["mcp-a"] == first.ports["mcp-a"]
    assert second.ports["mcp-b"] == first.ports["mcp-b"]


def test_published_ports_are_claimed_as_external() -> None:
    state = pool_state()
    _, out = pool_step(state, [published("mcp-p", 11100), proxy("mcp-a")])
    claim = state.get("mcp-p")
    assert claim is not None
    assert (claim.port, claim.kind, claim.state) == (11100, AllocKind.EXTERNAL, AllocState.ACTIVE)
    # The pool never hands out a port a container publishes by itself.
    assert out.ports == {"mcp-a": 11101}
    assert "mcp-p" not in out.ports


def test_published_port_outside_the_pool_is_not_recorded() -> None:
    state = pool_state()
    pool_step(state, [published("mcp-p", 32768)])
    assert state.get("mcp-p") is None
    assert len(state) == 0


def test_complete_listing_orphans_absent_owners() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b"), published("mcp-p", 11105)])
    pool_step(state, [proxy("mcp-b")], now=NOW + 10)
    for name in ("mcp-a", "mcp-p"):
        alloc = state.get(name)
        assert alloc is not None
        assert alloc.state is AllocState.ORPHANED
        assert alloc.missing_since == NOW + 10
    b = state.get("mcp-b")
    assert b is not None and b.state is AllocState.ACTIVE


def test_partial_listing_orphans_only_the_named_gone() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    pool_step(state, [], complete=False, gone=("mcp-a",), now=NOW + 1)
    a, b = state.get("mcp-a"), state.get("mcp-b")
    assert a is not None and a.state is AllocState.ORPHANED
    assert b is not None and b.state is AllocState.ACTIVE


def test_stopped_container_keeps_its_port_held() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    _, stopped = pool_step(state, [proxy("mcp-a", state="exited"), proxy("mcp-b")], now=NOW + 1)
    a = state.get("mcp-a")
    assert a is not None
    assert (a.state, a.missing_since) == (AllocState.HELD, None)
    assert "mcp-a" not in stopped.ports
    # Held long past stale_after: a stopped container is not gone.
    _, later = pool_step(
        state,
        [proxy("mcp-a", state="exited"), proxy("mcp-b"), proxy("mcp-c")],
        sweep=True,
        now=NOW + 10 * STALE_AFTER,
    )
    assert later.released == []
    assert later.ports["mcp-c"] not in (first.ports["mcp-a"], first.ports["mcp-b"])
    _, back = pool_step(state, [proxy("mcp-a"), proxy("mcp-b")], now=NOW + 11 * STALE_AFTER)
    assert back.ports["mcp-a"] == first.ports["mcp-a"]


def test_sweep_releases_orphans_only_after_stale_after() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")])
    pool_step(state, [proxy("mcp-b")], now=NOW + 1)  # mcp-a gone at NOW + 1
    _, early = pool_step(state, [proxy("mcp-b")], sweep=True, now=NOW + STALE_AFTER)
    assert early.released == []
    assert state.get("mcp-a") is not None
    _, due = pool_step(state, [proxy("mcp-b")], sweep=True, now=NOW + 1 + STALE_AFTER)
    assert [(a.owner, a.port) for a in due.released] == [("mcp-a", 11100)]
    assert state.get("mcp-a") is None
    assert state.holder(11100) is None


def test_orphan_that_comes_back_before_the_sweep_keeps_its_port() -> None:
    state = pool_state()
    _, first = pool_step(state, [proxy("mcp-a")])
    pool_step(state, [], now=NOW + 1)
    _, back = pool_step(state, [proxy("mcp-a")], sweep=True, now=NOW + 2 * STALE_AFTER)
    assert back.released == []
    assert back.ports == first.ports


def test_sweep_without_sweep_flag_releases_nothing() -> None:
    state = pool_state()
    pool_step(state, [proxy("mcp-a")])
    pool_step(state, [], now=NOW + 1)
    _, out = pool_step(state, [], now=NOW + 10 * STALE_AFTER)
    assert out.released == []
    a = state.get("mcp-a")
    assert a is not None and a.state is AllocState.ORPHANED


def test_exhaustion_is_reported_per_container_without_affecting_others() -> None:
    state = pool_state(11100, 11102)
    settings = make_settings(port_range="11100-11102")
    containers = [
        published("mcp-p", 11101),
        proxy("mcp-a"),
        proxy("mcp-b"),
        proxy("mcp-c"),
        make_container("mcp-i", labels={"mcp.expose": "internal"}),
    ]
    _, out = pool_step(state, containers, settings=settings)
    assert out.ports == {"mcp-a": 11100, "mcp-b": 11102}
    assert set(out.errors) == {"mcp-c"}
    error = out.errors["mcp-c"]
    assert isinstance(error, PoolExhausted)
    assert "11100-11102" in str(error)
    assert error.holders["active"] == 2 and error.holders["external"] == 1
    claim = state.get("mcp-p")
    assert claim is not None and claim.kind is AllocKind.EXTERNAL
    assert state.get("mcp-c") is None


def test_exhausted_container_gets_a_port_once_one_frees() -> None:
    state = pool_state(11100, 11101)
    settings = make_settings(port_range="11100-11101")
    pool_step(state, [proxy("mcp-a"), proxy("mcp-b")], settings=settings)
    _, full = pool_step(state, [proxy("mcp-b"), proxy("mcp-c")], now=NOW + 1, settings=settings)
    assert set(full.errors) == {"mcp-c"}  # mcp-a's port is orphaned, not free yet
    _, freed = pool_step(
        state,
        [proxy("mcp-b"), proxy("mcp-c")],
        sweep=True,
        now=NOW + 1 + STALE_AFTER,
        settings=settings,
    )
    assert [a.owner for a in freed.released] == ["mcp-a"]
    assert freed.errors == {}
    assert freed.ports == {"mcp-b": 11101, "mcp-c": 11100}


def test_pool_pass_is_idempotent() -> None:
    state = pool_state()
    containers = [proxy("mcp-a"), proxy("mcp-b", **{"mcp.host_port": "11108"})]
    containers.append(published("mcp-p", 11104))
    _, first = pool_step(state, containers)
    before = state.allocations()
    _, again = pool_step(state, containers)
    assert again.ports == first.ports
    assert state.allocations() == before
