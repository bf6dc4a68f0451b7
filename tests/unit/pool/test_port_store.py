"""Persistence: durability, corrupt and foreign stores, the lock, readers, write failures."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bridge.core.model import AllocKind, AllocState, LiveClaim, PortRange
from bridge.pool.allocator import PortOutsidePool
from bridge.pool.durable import DurablePool, GroupCommit
from bridge.pool.store import (
    SCHEMA_VERSION,
    StoreError,
    StoreLocked,
    StoreTooNew,
    read_snapshot,
)
from bridge.pool.tiers import TierLayout, parse_tiers
from tests.conftest import fill_disk

RANGE = PortRange(20000, 20999)


def open_pool(path: Path, claims: list[LiveClaim] | None = None) -> DurablePool:
    return DurablePool.open(path, RANGE, rebuild_source=lambda: claims or [])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


def owners_ports(pool: DurablePool) -> dict[str, int]:
    return {a.owner: a.port for a in pool.state.allocations()}


def test_allocations_survive_reopen(store: Path) -> None:
    pool = open_pool(store)
    with pool.transaction() as s:
        for i in range(5):
            s.allocate(f"c{i}", now=1.0)
        s.observe("c1", False, now=2.0)
    before = pool.state.allocations()
    pool.close()
    again = open_pool(store)
    assert again.state.allocations() == before
    assert again.state.allocate("c5", now=3.0).port == 20005  # cursor persisted
    again.close()


def test_missing_store_is_rebuilt_from_live_claims(store: Path) -> None:
    claims = [
        LiveClaim("mcp-a", 20007, AllocKind.POOL, running=True),
        LiveClaim("mcp-b", 20003, AllocKind.POOL, running=False),
    ]
    pool = open_pool(store, claims)
    assert owners_ports(pool) == {"mcp-a": 20007, "mcp-b": 20003}
    assert pool.state.get("mcp-b").state is AllocState.HELD  # type: ignore[union-attr]
    with pool.transaction() as s:
        assert s.allocate("new", now=1.0).port == 20008  # after every port in use
    pool.close()
    assert {a.owner for a in read_snapshot(store).allocations} == {"mcp-a", "mcp-b", "new"}


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "foreign-sqlite", "bad-meta", "zero-bytes"],
)
def test_corrupt_store_is_moved_aside_and_rebuilt(
    store: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = open_pool(store)
    with pool.transaction() as s:
        for i in range(50):
            s.allocate(f"c{i}", now=1.0)
    pool.close()
    if damage == "garbage":
        store.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        data = store.read_bytes()
        store.write_bytes(data[: len(data) // 3])
    elif damage == "foreign-sqlite":
        store.unlink()
        with sqlite3.connect(store) as conn:
            conn.execute("CREATE TABLE something_else (x)")
    elif damage == "bad-meta":
        with sqlite3.connect(store) as conn:
            conn.execute("DELETE FROM meta")
    elif damage == "zero-bytes":
        store.write_bytes(b"")  # an empty file is a valid empty SQLite db: no schema
    live = [LiveClaim("c7", 20007, AllocKind.POOL, running=True)]
    rebuilt = open_pool(store, live)
    assert owners_ports(rebuilt) == {"c7": 20007}
    rebuilt.close()
    aside = [p.name for p in store.parent.iterdir() if ".corrupt-" in p.name]
    assert aside, "the bad store must be kept for a post-mortem"
    out = capsys.readouterr().out
    assert "state_store_corrupt" in out and str(store) in out


def test_newer_schema_is_refused_and_left_untouched(store: Path) -> None:
    open_pool(store).close()
    with sqlite3.connect(store) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    before = store.read_bytes()
    with pytest.raises(StoreTooNew, match="upgrade mcp-bridge"):
        open_pool(store)
    assert store.read_bytes() == before
    # and the lock was released on the way out
    open_pool_after = pytest.raises(StoreTooNew)
    with open_pool_after:
        open_pool(store)


def test_second_agent_in_another_process_is_refused(store: Path) -> None:
    pool = open_pool(store)
    code = (
        "import sys; from pathlib import Path; from bridge.pool.durable import DurablePool;"
        "from bridge.core.model import PortRange\n"
        "try:\n"
        f"    DurablePool.open(Path({str(store)!r}), PortRange(20000, 20999))\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e); sys.exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3
    assert "StoreLocked" in result.stdout and f"pid {os.getpid()}" in result.stdout
    pool.close()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_open_in_the_same_process_is_refused(store: Path) -> None:
    pool = open_pool(store)
    with pytest.raises(StoreLocked, match="another mcp-bridge agent"):
        open_pool(store)
    pool.close()


def test_reader_sees_consistent_snapshots_while_the_agent_writes(store: Path) -> None:
    pool = open_pool(store)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read_loop() -> None:
        try:
            while not stop.is_set():
                snap = read_snapshot(store)
                ports = [a.port for a in snap.allocations]
                assert len(ports) == len(set(ports))
                seen.append(len(ports))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(300):
            with pool.transaction() as s:
                s.allocate(f"c{i}", now=1.0)
    finally:
        stop.set()
        reader.join()
        pool.close()
    assert not errors, errors
    assert seen == sorted(seen), "a reader saw allocations disappear"
    assert len(seen) > 5


async def test_concurrent_burst_shares_commits_and_is_durable(store: Path) -> None:
    pool = GroupCommit(open_pool(store))
    allocs = await asyncio.gather(*(pool.allocate(f"c{i}") for i in range(1000)))
    assert len({a.port for a in allocs}) == 1000
    assert pool.commits < 50, f"{pool.commits} commits for a burst of 1000"
    await pool.close()
    assert {a.owner: a.port for a in read_snapshot(store).allocations} == {
        a.owner: a.port for a in allocs
    }


async def test_one_bad_request_does_not_sink_its_batch(store: Path) -> None:
    pool = GroupCommit(open_pool(store))
    good, bad = await asyncio.gather(
        pool.allocate("good"), pool.allocate("bad", preferred=80), return_exceptions=True
    )
    assert not isinstance(good, BaseException) and good.port == 20000
    assert isinstance(bad, PortOutsidePool)
    await pool.close()


async def test_disk_full_fails_the_write_undoes_memory_and_recovers(tiny_disk: Path) -> None:
    pool = GroupCommit(open_pool(tiny_disk / "state.db"))
    kept = await pool.allocate("before")
    filler = fill_disk(tiny_disk)
    owners = [f"o{i}-{'x' * 200}" for i in range(200)]  # big enough to need new pages
    results = await asyncio.gather(*(pool.allocate(o) for o in owners), return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results[:3]
    assert "cannot write" in str(results[0])
    # Memory did not run ahead of the disk: nothing of the failed batch is held.
    assert [a.owner for a in pool.state.allocations()] == ["before"]
    filler.unlink()
    again = await pool.allocate(owners[0])
    assert again.port == kept.port + 1
    await pool.close()
    assert {a.owner for a in read_snapshot(tiny_disk / "state.db").allocations} == {
        "before",
        owners[0],
    }


def test_each_tiers_cursor_survives_reopen_and_a_rebuild(store: Path) -> None:
    layout = TierLayout(RANGE, parse_tiers("a=20000-20004"))
    pool = DurablePool.open(store, RANGE, tiers=layout)
    with pool.transaction() as s:
        s.allocate("x", now=1.0, tier="a")
        s.allocate("y", now=1.0)
    pool.close()
    assert read_snapshot(store).cursors == {"a": 20000, "": 20005}
    again = DurablePool.open(store, RANGE, tiers=layout)
    with again.transaction() as s:
        assert s.allocate("x2", now=2.0, tier="a").port == 20001
        assert s.allocate("y2", now=2.0).port == 20006
    again.close()
    store.unlink()
    claims = [LiveClaim("x", 20003, AllocKind.POOL, running=True)]
    rebuilt = DurablePool.open(store, RANGE, rebuild_source=lambda: claims, tiers=layout)
    with rebuilt.transaction() as s:
        assert s.allocate("x3", now=3.0, tier="a").port == 20004  # after what lives hold
        assert s.allocate("y3", now=3.0).port == 20005
    rebuilt.close()
