"""Allocates and releases in bursts forever, printing each change once it is durable.

Run by test_pool_crash.py, which SIGKILLs it at random instants: whatever this printed
must be in the store when it is reopened.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bridge.core.config import LogLevel
from bridge.core.model import PortRange
from bridge.pool.durable import DurablePool, GroupCommit
from bridge.surface.logs import configure_logging


async def main(path: Path, run: int) -> None:
    configure_logging(level=LogLevel.ERROR)
    pool = GroupCommit(DurablePool.open(path, PortRange(30000, 30499)))
    # Release what earlier runs left, in one batch, so the range never fills up.
    leftovers = [a.owner for a in pool.state.allocations()]
    sys.stdout.write("".join(f"releasing {o}\n" for o in leftovers))
    sys.stdout.flush()
    await asyncio.gather(*(pool.run(lambda s, o=o: s.release(o)) for o in leftovers))
    sys.stdout.write("".join(f"release {o}\n" for o in leftovers))
    sys.stdout.flush()
    round_no = 0
    survivors: list[str] = []
    while True:
        owners = [f"run{run}-r{round_no}-{i}" for i in range(40)]
        allocs = await asyncio.gather(*(pool.allocate(o) for o in owners))
        sys.stdout.write("".join(f"alloc {a.owner} {a.port}\n" for a in allocs))
        # Release half of this round and what is left of the last one: deletes are in
        # the mix, and the range never fills up.
        gone = owners[::2] + survivors
        survivors = owners[1::2]
        sys.stdout.write("".join(f"releasing {o}\n" for o in gone))
        sys.stdout.flush()
        await asyncio.gather(*(pool.run(lambda s, o=o: s.release(o)) for o in gone))
        sys.stdout.write("".join(f"release {o}\n" for o in gone))
        sys.stdout.flush()
        round_no += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
