"""The stdio processes' handshakes in the bridge's store: the upgrade of a first-release
store (schema 1) keeps every allocation and cursor, and a handshake kept by one agent is
read back by the next one for the same process only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.core.model import PortRange
from bridge.loop.stdio import KeptHandshakes
from bridge.mcp.stdio.handshake import Handshake
from bridge.pool.durable import DurablePool
from bridge.pool.processes import ProcessStore
from bridge.pool.store import SCHEMA_VERSION, read_snapshot

RANGE = PortRange(20000, 20999)

# The schema and rows as the first release wrote them (bridge/pool/store.py, version 1).
FIRST_RELEASE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE allocations (
    port          INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    owner         TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL CHECK (state IN ('active', 'held', 'orphaned')),
    kind          TEXT NOT NULL CHECK (kind IN ('pool', 'external')),
    allocated_at  REAL NOT NULL,
    updated_at    REAL NOT NULL,
    missing_since REAL
);
INSERT INTO meta VALUES ('schema_version', '1'), ('cursor', '20004'), ('instance_id', 'abc');
INSERT INTO allocations VALUES (20003, 'mcp-a', 'active', 'pool', 1.0, 1.0, NULL);
INSERT INTO allocations VALUES (20004, 'mcp-b', 'held', 'pool', 1.0, 2.0, NULL);
"""

SHOOK = Handshake("handshake", "2025-11-25", {"protocolVersion": "2025-11-25", "capabilities": {}})


def first_release_store(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_RELEASE)
    conn.commit()
    conn.close()
    return path


def test_a_first_release_store_is_upgraded_and_keeps_everything(tmp_path: Path) -> None:
    path = first_release_store(tmp_path / "state.db")
    assert read_snapshot(path).schema_version == 1  # a reader does not upgrade
    pool = DurablePool.open(path, RANGE, rebuild_source=lambda: [])
    try:
        assert {a.owner: a.port for a in pool.state.allocations()} == {
            "mcp-a": 20003,
            "mcp-b": 20004,
        }
        assert pool.state.allocate("mcp-c", now=3.0).port == 20005  # the cursor kept
    finally:
        pool.close()
    snapshot = read_snapshot(path)
    assert snapshot.schema_version == SCHEMA_VERSION == 2
    assert snapshot.instance_id == "abc"


async def test_a_kept_handshake_is_read_back_by_the_next_agent_for_that_process_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    DurablePool.open(path, RANGE, rebuild_source=lambda: []).close()
    first = KeptHandshakes()
    first.store = ProcessStore(path)
    await first.put("c1", "2026-12-06T08:00:00Z", SHOOK)
    first.store.close()

    second = KeptHandshakes()  # a restarted agent: nothing in memory
    second.store = ProcessStore(path)
    assert await second.get("c1", "2026-12-06T08:00:00Z") == SHOOK
    assert await second.get("c1", "2026-12-06T09:00:00Z") is None  # a new process
    assert await second.get("c2", "2026-12-06T08:00:00Z") is None
    await second.forget("c1", "2026-12-06T08:00:00Z")
    assert await second.get("c1", "2026-12-06T08:00:00Z") is None
    second.store.close()


async def test_a_row_that_is_not_a_handshake_is_as_if_none_was_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    DurablePool.open(path, RANGE, rebuild_source=lambda: []).close()
    store = ProcessStore(path)
    for text in ("not json", '{"era": "other", "version": "x", "result": {}}', "[]"):
        await store.put("c1", "t", text)
        kept = KeptHandshakes()
        kept.store = store
        assert await kept.get("c1", "t") is None
    store.close()


async def test_keep_only_drops_the_rows_of_containers_that_are_gone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    DurablePool.open(path, RANGE, rebuild_source=lambda: []).close()
    kept = KeptHandshakes()
    kept.store = ProcessStore(path)
    for cid in ("c1", "c2", "c3"):
        await kept.put(cid, "t", SHOOK)
    await kept.keep_only({"c2"})
    again = KeptHandshakes()
    again.store = kept.store
    assert [await again.get(c, "t") for c in ("c1", "c2", "c3")] == [None, SHOOK, None]
    kept.store.close()
