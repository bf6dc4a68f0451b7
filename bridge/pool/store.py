"""The port pool on disk: SQLite from the standard library.

Why SQLite: WAL mode with synchronous=FULL makes every commit durable (about 0.2 ms here,
against about 0.4 ms for a JSON write-fsync-rename that must rewrite everything), a crash
at any instant leaves the old or the new state, readers (`mcp-bridge ports`) never block
the writer, and PRIMARY KEY(port) + UNIQUE(owner) make a double allocation impossible at
the storage level: a buggy caller gets an IntegrityError, not two containers on one port.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bridge.core.model import Allocation, AllocKind, AllocState
from bridge.pool.allocator import Changes
from bridge.pool.tiers import UNTIERED

# 1: the first release (meta, allocations). 2: stdio_processes. A store of an older
# version is upgraded in place when the agent opens it (PortStore.load).
SCHEMA_VERSION = 2

# The handshake of each stdio server process the bridge is serving (pool/processes.py),
# so that a restarted bridge never sends a live process a second `initialize`.
_STDIO_PROCESSES = """
CREATE TABLE IF NOT EXISTS stdio_processes (
    container_id TEXT PRIMARY KEY,
    started_at   TEXT NOT NULL,
    handshake    TEXT NOT NULL,
    updated_at   REAL NOT NULL
);
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS allocations (
    port          INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    owner         TEXT NOT NULL UNIQUE,
    state         TEXT NOT NULL CHECK (state IN ('active', 'held', 'orphaned')),
    kind          TEXT NOT NULL CHECK (kind IN ('pool', 'external')),
    allocated_at  REAL NOT NULL,
    updated_at    REAL NOT NULL,
    missing_since REAL
);
"""
    + _STDIO_PROCESSES
)


class StoreError(Exception):
    pass


class StoreCorrupt(StoreError):
    pass


class StoreLocked(StoreError):
    pass


class StoreTooNew(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class StoreSnapshot:
    path: Path
    exists: bool
    schema_version: int | None
    cursor: int | None  # the untiered ports' cursor (the whole range's, without tiers)
    allocations: list[Allocation]
    # This store's identity, made once: the agent that owns it claims its node id in
    # Consul under it, so that another bridge started with the same node id is told apart
    # from this one restarted. None in stores written before it existed.
    instance_id: str | None = None
    tier_cursors: Mapping[str, int] = field(default_factory=dict)  # each named tier's

    @property
    def cursors(self) -> dict[str, int]:
        """Every tier's cursor, the untiered one under UNTIERED."""
        found = dict(self.tier_cursors)
        if self.cursor is not None:
            found[UNTIERED] = self.cursor
        return found


def _cursor_key(tier: str) -> str:
    return "cursor" if tier == UNTIERED else f"cursor:{tier}"


def _row_to_allocation(row: tuple[object, ...]) -> Allocation:
    port, owner, state, kind, allocated_at, updated_at, missing_since = row
    if not isinstance(port, int) or not isinstance(owner, str) or not owner:
        raise StoreCorrupt(f"bad allocation row {row!r}")
    try:
        return Allocation(
            port=port,
            owner=owner,
            state=AllocState(str(state)),
            kind=AllocKind(str(kind)),
            allocated_at=float(allocated_at),  # type: ignore[arg-type]
            updated_at=float(updated_at),  # type: ignore[arg-type]
            missing_since=None if missing_since is None else float(missing_since),  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as exc:
        raise StoreCorrupt(f"bad allocation row {row!r}: {exc}") from None


def _read(conn: sqlite3.Connection, path: Path) -> StoreSnapshot:
    """Everything in an open store, checked; raises StoreCorrupt or StoreTooNew."""
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise StoreCorrupt(f"integrity check failed: {check[0] if check else 'no answer'}")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        rows = conn.execute(
            "SELECT port, owner, state, kind, allocated_at, updated_at, missing_since"
            " FROM allocations ORDER BY port"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(str(exc)) from None
    try:
        version = int(meta["schema_version"])
        cursor = int(meta["cursor"])
    except (KeyError, ValueError):
        raise StoreCorrupt(f"meta table lacks schema_version or cursor: {meta!r}") from None
    if version > SCHEMA_VERSION:
        raise StoreTooNew(
            f"state file {path} has schema version {version}; this mcp-bridge knows"
            f" up to {SCHEMA_VERSION}: upgrade mcp-bridge or point BRIDGE_STATE_FILE elsewhere"
        )
    allocations = [_row_to_allocation(r) for r in rows]
    tiers = {
        key.removeprefix("cursor:"): int(value)
        for key, value in meta.items()
        if key.startswith("cursor:") and str(value).lstrip("-").isdigit()
    }
    return StoreSnapshot(path, True, version, cursor, allocations, meta.get("instance_id"), tiers)


def read_snapshot(path: Path) -> StoreSnapshot:
    """A consistent read-only view, safe while an agent writes (WAL readers never block).

    A missing file is an empty pool, not an error, and is not created.
    """
    if not path.exists():
        return StoreSnapshot(path, False, None, None, [])
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise StoreCorrupt(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("BEGIN")  # one snapshot for the integrity check and the rows
        return _read(conn, path)
    except sqlite3.DatabaseError as exc:
        raise StoreCorrupt(str(exc)) from None
    finally:
        conn.close()


class StoreLock:
    """One agent per store: an exclusive flock on `<state file>.lock`, holding our pid."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"state file {self.path.with_suffix('')} is in use by another mcp-bridge"
                f" agent (pid {holder}); run one agent per state file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def move_aside(path: Path) -> Path:
    """Rename a bad store (and its WAL files) out of the way, keeping it for a post-mortem."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(path) + suffix)
        if source.exists():
            source.rename(Path(str(target) + suffix))
    return target


class PortStore:
    """The writer's connection. Not thread-safe: one writer at a time (the pool ensures it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=5.0
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreCorrupt(str(exc)) from None

    @classmethod
    def create(
        cls, path: Path, allocations: list[Allocation], cursors: Mapping[str, int]
    ) -> PortStore:
        """A new store holding exactly `allocations`; atomic: written aside, then renamed."""
        tmp = path.with_name(path.name + ".new")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(tmp) + suffix).unlink()
        store = cls(tmp)
        try:
            store._conn.executescript(_SCHEMA)  # executescript commits on its own
            with store._transaction() as conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("cursor", str(cursors.get(UNTIERED, -1))),
                        ("instance_id", uuid.uuid4().hex),
                        *((_cursor_key(t), str(p)) for t, p in cursors.items() if t != UNTIERED),
                    ],
                )
                conn.executemany(_INSERT, [_values(a) for a in allocations])
            store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            store.close()
        os.replace(tmp, path)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(str(tmp) + suffix).unlink()
        _fsync_dir(path.parent)
        return cls(path)

    def load(self) -> StoreSnapshot:
        snapshot = _read(self._conn, self.path)
        if snapshot.schema_version is not None and snapshot.schema_version < SCHEMA_VERSION:
            self._upgrade(snapshot.schema_version)
            snapshot = _read(self._conn, self.path)
        return snapshot

    def _upgrade(self, version: int) -> None:
        """Bring an older store to SCHEMA_VERSION, in one transaction: its allocations
        and cursors stay as they are; only what later versions added is created."""
        try:
            with self._transaction() as conn:
                if version < 2:
                    conn.execute(_STDIO_PROCESSES)
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot upgrade {self.path} from version {version}: {exc}") from exc

    def instance_id(self) -> str:
        """This store's identity, made now when an older store has none."""
        found = self.load().instance_id
        if found:
            return found
        made = uuid.uuid4().hex
        with self._transaction() as conn:
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (made,))
        return made

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def write(self, changes: Changes) -> None:
        """Persist one transaction's changes durably, all or nothing."""
        try:
            with self._transaction() as conn:
                conn.executemany(
                    "DELETE FROM allocations WHERE port = ?", [(p,) for p in changes.ports]
                )
                conn.executemany(_INSERT, [_values(a) for a in changes.ports.values() if a])
                conn.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(_cursor_key(tier), str(port)) for tier, port in changes.cursors.items()],
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc

    def close(self) -> None:
        self._conn.close()


_INSERT = (
    "INSERT INTO allocations (port, owner, state, kind, allocated_at, updated_at, missing_since)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _values(a: Allocation) -> tuple[object, ...]:
    return (
        a.port,
        a.owner,
        a.state.value,
        a.kind.value,
        a.allocated_at,
        a.updated_at,
        a.missing_since,
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
