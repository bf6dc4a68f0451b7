"""The handshake of each stdio server process being served, kept in the bridge's store
(table stdio_processes, schema version 2), so that a bridge restarted while the process
lives on (SIGKILL included) serves it from what the process said once, and never sends it
a second `initialize`.

One row per container: its process's StartedAt and the handshake as JSON text (this module
does not read it; mcp/stdio/ does). Its own SQLite connection, beside the pool's writer
(WAL lets both; each write is one short transaction), used from worker threads so the
event loop never waits on the disk. A row goes when its process ends: a process is never
attached to again after its output ended.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from bridge.pool.store import StoreError


class ProcessStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        self._lock = asyncio.Lock()  # one statement at a time on this connection

    async def get(self, container_id: str, started_at: str) -> str | None:
        rows = await self._run(
            "SELECT handshake FROM stdio_processes WHERE container_id = ? AND started_at = ?",
            (container_id, started_at),
        )
        return str(rows[0][0]) if rows else None

    async def put(self, container_id: str, started_at: str, handshake: str) -> None:
        await self._run(
            "INSERT OR REPLACE INTO stdio_processes"
            " (container_id, started_at, handshake, updated_at) VALUES (?, ?, ?, ?)",
            (container_id, started_at, handshake, time.time()),
        )

    async def forget(self, container_id: str, started_at: str) -> None:
        await self._run(
            "DELETE FROM stdio_processes WHERE container_id = ? AND started_at = ?",
            (container_id, started_at),
        )

    async def keep_only(self, container_ids: set[str]) -> None:
        """Delete the rows of every container not in `container_ids`."""
        rows = await self._run("SELECT container_id FROM stdio_processes", ())
        for (cid,) in rows:
            if cid not in container_ids:
                await self._run("DELETE FROM stdio_processes WHERE container_id = ?", (cid,))

    async def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        def run() -> list[tuple[object, ...]]:
            return self._conn.execute(sql, args).fetchall()  # autocommit: one transaction

        async with self._lock:
            running = asyncio.ensure_future(asyncio.to_thread(run))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # The caller is cancelled, the statement runs on in its thread: the lock is
                # not let go (and the connection not used again) until it has ended.
                await asyncio.wait([running])
                raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: stdio_processes: {exc}") from exc

    def close(self) -> None:
        self._conn.close()
