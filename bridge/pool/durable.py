"""The durable pool: the allocator's rules (allocator.py) over the SQLite store (store.py).

Memory never runs ahead of the disk: a change is applied in memory, written durably, and
only then reported to the caller; a failed write undoes it in memory. There is one
transaction path, `_Batch`: the agent's group commit (GroupCommit.run) batches concurrent
requests into one batch, one write and one fsync, with the write in a worker thread so the
event loop never blocks on the disk; `DurablePool.transaction` is a batch of one, written
in the caller's thread, for tools and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import structlog
from tenacity import retry_if_exception_type, retry_if_not_exception_type

from bridge.core.model import Allocation, LiveClaim, PortRange
from bridge.core.retry import retry_forever
from bridge.pool.allocator import BindTest, Changes, PoolState, always_free
from bridge.pool.repair import rebuild
from bridge.pool.store import (
    PortStore,
    StoreCorrupt,
    StoreError,
    StoreLock,
    StoreLocked,
    StoreTooNew,
    move_aside,
)
from bridge.pool.tiers import TierLayout

T = TypeVar("T")
RebuildSource = Callable[[], Iterable[LiveClaim]]
Op = Callable[[PoolState], Any]

log = structlog.get_logger("bridge.pool")


def _no_claims() -> list[LiveClaim]:
    return []


class _Batch:
    """One transaction: operations applied in memory, each undone alone if it raises;
    then the caller writes `changes` durably and calls `finish` with the outcome."""

    def __init__(self, state: PoolState) -> None:
        self.state = state
        state.begin()

    def apply(self, op: Op) -> tuple[Any, Exception | None]:
        mark = self.state.mark()
        try:
            return op(self.state), None
        except Exception as exc:  # one bad request must not sink the batch
            self.state.undo_to(mark)
            return None, exc

    @property
    def changes(self) -> Changes:
        return self.state.pending()

    def finish(self, write_error: BaseException | None) -> None:
        changes = self.state.pending()
        if write_error is not None:
            self.state.rollback()
        self.state.end()
        if write_error is None:
            _log_changes(changes)


class DurablePool:
    def __init__(
        self,
        state: PoolState,
        store: PortStore,
        lock: StoreLock,
        *,
        is_free: BindTest = always_free,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.store = store
        self._lock = lock
        self.is_free = is_free
        self.clock = clock

    @classmethod
    def open(
        cls,
        path: Path,
        port_range: PortRange,
        reserved: Iterable[int] = (),
        *,
        rebuild_source: RebuildSource = _no_claims,
        is_free: BindTest = always_free,
        clock: Callable[[], float] = time.time,
        tiers: TierLayout | None = None,
    ) -> DurablePool:
        """Open (or create, or rebuild) the store at `path` and lock it for this process.

        A missing store and a corrupt one are both rebuilt from `rebuild_source` (what live
        containers hold), so losing the file costs no running container its port. A store
        written by a newer schema is refused (StoreTooNew), never overwritten.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = StoreLock(path)
        lock.acquire()
        try:
            store = cls._load(path)
            if store is None:
                store, state = cls._rebuild(
                    path, port_range, reserved, rebuild_source, clock(), tiers
                )
            else:
                snap = store.load()
                state = PoolState(port_range, reserved, snap.allocations, snap.cursors, tiers)
        except BaseException:
            lock.release()
            raise
        return cls(state, store, lock, is_free=is_free, clock=clock)

    @staticmethod
    def _load(path: Path) -> PortStore | None:
        if not path.exists():
            return None
        store: PortStore | None = None
        try:
            store = PortStore(path)
            store.load()  # checks integrity and schema; StoreTooNew propagates
            return store
        except StoreCorrupt as exc:
            if store is not None:
                store.close()
            aside = move_aside(path)
            log.error("state_store_corrupt", path=str(path), moved_to=str(aside), reason=str(exc))
            return None

    @staticmethod
    def _rebuild(
        path: Path,
        port_range: PortRange,
        reserved: Iterable[int],
        rebuild_source: RebuildSource,
        now: float,
        tiers: TierLayout | None,
    ) -> tuple[PortStore, PoolState]:
        claims = list(rebuild_source())
        state, conflicts = rebuild(port_range, reserved, claims, now=now, tiers=tiers)
        for claim in conflicts:
            log.warning(
                "state_rebuild_conflict",
                container=claim.owner,
                port=claim.port,
                holder=(h.owner if (h := state.holder(claim.port)) else None),
            )
        store = PortStore.create(path, state.allocations(), state.cursors)
        log.info(
            "state_store_created",
            path=str(path),
            rebuilt_allocations=len(state),
            claims=len(claims),
            conflicts=len(conflicts),
        )
        return store, state

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PoolState]:
        """Mutate the pool; on leaving, everything done is durable, or nothing is."""
        batch = _Batch(self.state)
        error: BaseException | None = None
        try:
            yield self.state
            if batch.changes:
                self.store.write(batch.changes)
        except BaseException as exc:
            error = exc
            raise
        finally:
            batch.finish(error)

    def close(self) -> None:
        self.store.close()
        self._lock.release()


async def open_waiting(
    path: Path,
    port_range: PortRange,
    reserved: Iterable[int],
    *,
    rebuild_source: RebuildSource,
    is_free: BindTest,
    clock: Callable[[], float],
    stopping: asyncio.Event,
    on_retry: Callable[[], None],
    tiers: TierLayout | None = None,
) -> DurablePool | None:
    """Open the store, waiting (not failing) while it cannot be written: a read-only or
    full volume is often fixed while we wait, and the previous agent's registrations stay
    in Consul meanwhile. Another agent holding the store, or a store from a newer version,
    is a configuration error and is raised. None when `stopping` was set while waiting."""
    retrying = retry_forever(
        "state_store_unavailable",
        log=log,
        first_wait=0.5,
        max_wait=30.0,
        retry=retry_if_exception_type((StoreError, OSError))
        & retry_if_not_exception_type((StoreLocked, StoreTooNew)),
        stopping=stopping,
        error_level=True,
        on_retry=on_retry,
        path=str(path),
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await asyncio.to_thread(
                    DurablePool.open,
                    path,
                    port_range,
                    reserved,
                    rebuild_source=rebuild_source,
                    is_free=is_free,
                    clock=clock,
                    tiers=tiers,
                )
    except (StoreError, OSError):
        if stopping.is_set():
            return None
        raise
    raise AssertionError("unreachable")


def _log_changes(changes: Changes) -> None:
    for port, after in changes.ports.items():
        before = changes.before.get(port)
        if after is None and before is not None:
            log.info("port_released", container=before.owner, port=port, kind=before.kind.value)
        elif after is not None and (before is None or before.owner != after.owner):
            log.info("port_allocated", container=after.owner, port=port, kind=after.kind.value)
        elif after is not None and before is not None and before.state != after.state:
            log.info(
                "port_state_changed",
                container=after.owner,
                port=port,
                state=after.state.value,
                was=before.state.value,
            )


class GroupCommit:
    """The agent's front to a DurablePool: concurrent callers share one durable write.

    Operations run on the event loop (they are pure and take microseconds); only the
    write goes to a worker thread. A caller's future resolves after its change is on disk.
    """

    def __init__(self, pool: DurablePool) -> None:
        self.pool = pool
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # durable writes done; a burst of N requests takes far fewer

    @property
    def state(self) -> PoolState:
        return self.pool.state

    async def run(self, op: Callable[[PoolState], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            # Shielded: once a batch is applied in memory it must finish (write or undo),
            # even if whoever started the flusher is cancelled.
            await asyncio.shield(self._commit(batch))

    async def _commit(self, requests: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        batch = _Batch(self.pool.state)
        outcomes = [(future, *batch.apply(op)) for op, future in requests]
        changes = batch.changes
        write_error: BaseException | None = None
        try:
            if changes:
                await asyncio.to_thread(self.pool.store.write, changes)
                self.commits += 1
        except BaseException as exc:  # undone in memory, whatever failed
            write_error = exc
        batch.finish(write_error)
        for future, result, op_error in outcomes:
            if future.done():
                continue
            error = op_error or write_error
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)
        if write_error is not None and not isinstance(write_error, StoreError):
            raise write_error

    async def allocate(self, owner: str, preferred: int | None = None) -> Allocation:
        pool = self.pool
        return await self.run(
            lambda s: s.allocate(owner, now=pool.clock(), preferred=preferred, is_free=pool.is_free)
        )

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self.pool.close()
