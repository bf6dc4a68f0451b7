"""Benchmark the durable port pool: real SQLite store, real disk, durable commits.

Measures, in one run, each on a fresh store in its own temporary directory:

1. single   - sequential durable allocations through the async API (one commit each);
              also once with the real bind test (`bridge.core.net.bind_test("127.0.0.1")`).
2. burst    - N concurrent `allocate` calls (`asyncio.gather`) on a fresh pool, repeated R
              times; group commit should fold the burst into a handful of durable writes.
3. scaling  - per-allocation time with 100 ports already held vs 10,000 held, measured in
              interleaved rounds (A, B, A, B, ...) so machine noise hits both conditions.

Every pool gets one warm-up allocation before timing starts (it opens the WAL and starts
the worker thread); warm-up commits are not counted. Latency is measured from the moment
the caller calls `allocate` until its future resolves, i.e. until the change is on disk.

The table goes to stdout, followed by exactly one JSON object as the last line. The pool's
structlog output is filtered at WARNING (and would go to stderr), so stdout stays clean.

    .venv/bin/python scripts/bench_pool.py            # full run
    .venv/bin/python scripts/bench_pool.py --quick    # smoke run for tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit.common import fmt_table, percentile, silence_structlog

from bridge.core.model import PortRange
from bridge.core.net import bind_test
from bridge.pool.allocator import BindTest, always_free
from bridge.pool.durable import DurablePool, GroupCommit

PORT_RANGE = PortRange(20000, 40000)
HELD_SMALL = 100
HELD_LARGE = 10_000
GOAL_BURST_PER_S = 10_000.0
GOAL_SCALING_RATIO = 1.5
STORE_NAME = "ports.db"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the result table."""

    name: str
    allocs_per_s: float
    p50_ms: float
    p99_ms: float
    commits: int | None


@dataclass(frozen=True, slots=True)
class Run:
    """The raw outcome of one timed batch of allocations on one fresh pool."""

    elapsed_s: float
    latencies_s: list[float]
    commits: int

    @property
    def allocs_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def ms(seconds: float) -> float:
    return seconds * 1000.0


def open_pool(directory: str, is_free: BindTest) -> GroupCommit:
    pool = DurablePool.open(Path(directory) / STORE_NAME, PORT_RANGE, is_free=is_free)
    return GroupCommit(pool)


def check_unique(ports: Sequence[int], what: str) -> None:
    if len(set(ports)) != len(ports):
        raise RuntimeError(f"{what}: the pool handed out a port twice")


async def warm_up(apool: GroupCommit) -> None:
    await apool.allocate("warm-up")


async def sequential(apool: GroupCommit, count: int, prefix: str) -> Run:
    """`count` durable allocations one after the other; per-op latency and total time."""
    latencies: list[float] = []
    ports: list[int] = []
    commits_before = apool.commits
    start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        alloc = await apool.allocate(f"{prefix}{i}")
        latencies.append(time.perf_counter() - t0)
        ports.append(alloc.port)
    elapsed = time.perf_counter() - start
    check_unique(ports, prefix)
    return Run(elapsed, latencies, apool.commits - commits_before)


async def bench_single(root: str, count: int, is_free: BindTest) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-single-", dir=root) as tmp:
        apool = open_pool(tmp, is_free)
        try:
            await warm_up(apool)
            return await sequential(apool, count, "c")
        finally:
            await apool.close()


async def bench_burst_once(root: str, count: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-burst-", dir=root) as tmp:
        apool = open_pool(tmp, always_free)
        try:
            await warm_up(apool)

            async def request(i: int) -> tuple[int, float]:
                t0 = time.perf_counter()
                alloc = await apool.allocate(f"b{i}")
                return alloc.port, time.perf_counter() - t0

            commits_before = apool.commits
            start = time.perf_counter()
            results = await asyncio.gather(*(request(i) for i in range(count)))
            elapsed = time.perf_counter() - start
            check_unique([port for port, _ in results], "burst")
            return Run(elapsed, [lat for _, lat in results], apool.commits - commits_before)
        finally:
            await apool.close()


async def bench_scaling_once(root: str, held: int, count: int) -> Run:
    with tempfile.TemporaryDirectory(prefix=f"bench-held{held}-", dir=root) as tmp:
        apool = open_pool(tmp, always_free)
        pool = apool.pool
        try:
            with pool.transaction() as state:  # one durable commit for all the held ports
                for i in range(held):
                    state.allocate(f"h{i}", now=pool.clock())
            if len(pool.state) != held:
                raise RuntimeError(f"pre-fill holds {len(pool.state)} ports, wanted {held}")
            await warm_up(apool)
            return await sequential(apool, count, "s")
        finally:
            await apool.close()


def row_from_runs(name: str, runs: Sequence[Run]) -> Row:
    """Median over runs of throughput, p50, p99 and commits (a single run is itself)."""
    return Row(
        name=name,
        allocs_per_s=statistics.median(r.allocs_per_s for r in runs),
        p50_ms=statistics.median(ms(percentile(r.latencies_s, 50)) for r in runs),
        p99_ms=statistics.median(ms(percentile(r.latencies_s, 99)) for r in runs),
        commits=round(statistics.median(r.commits for r in runs)),
    )


def format_table(rows: Sequence[Row]) -> str:
    header = ("measurement", "allocs/s", "p50 ms", "p99 ms", "commits")
    body = [
        (
            r.name,
            f"{r.allocs_per_s:,.0f}",
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            "-" if r.commits is None else str(r.commits),
        )
        for r in rows
    ]
    return fmt_table(header, body)


def filesystem_of(path: str) -> str:
    """The mount's filesystem type (Linux /proc/mounts), to show the disk is real."""
    best, fs_type = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount_point = parts[1]
                inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > len(best):
                    best, fs_type = mount_point, parts[2]
    except OSError:
        pass
    return fs_type


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--single", type=int, default=2000, metavar="N")
    parser.add_argument("--burst", type=int, default=1000, metavar="N")
    parser.add_argument("--repeats", type=int, default=5, metavar="R", help="bursts to run")
    parser.add_argument("--scaling-ops", type=int, default=1000, metavar="M")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved scaling rounds")
    parser.add_argument("--dir", default=None, help="parent of the temp dirs (default: TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.single, args.burst, args.repeats = 50, 100, 2
        args.scaling_ops, args.rounds = 50, 1
    for name in ("single", "burst", "repeats", "scaling_ops", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


async def bench(args: argparse.Namespace, root: str) -> dict[str, Any]:
    rows: list[Row] = []

    single = await bench_single(root, args.single, always_free)
    rows.append(row_from_runs(f"single x{args.single} (sequential, async)", [single]))
    single_bind = await bench_single(root, args.single, bind_test("127.0.0.1"))
    rows.append(row_from_runs(f"single x{args.single}, with real bind test", [single_bind]))

    bursts = [await bench_burst_once(root, args.burst) for _ in range(args.repeats)]
    burst_row = row_from_runs(f"burst x{args.burst} (median of {args.repeats})", bursts)
    rows.append(burst_row)

    scaling: dict[int, list[Run]] = {HELD_SMALL: [], HELD_LARGE: []}
    for _ in range(args.rounds):  # interleaved: A, B, A, B, ...
        for held in (HELD_SMALL, HELD_LARGE):
            scaling[held].append(await bench_scaling_once(root, held, args.scaling_ops))
    per_op_ms = {
        held: statistics.median(ms(statistics.median(r.latencies_s)) for r in runs)
        for held, runs in scaling.items()
    }
    round_ratios = [
        statistics.median(big.latencies_s) / statistics.median(small.latencies_s)
        for small, big in zip(scaling[HELD_SMALL], scaling[HELD_LARGE], strict=True)
    ]
    ratio = per_op_ms[HELD_LARGE] / per_op_ms[HELD_SMALL]
    for held, runs in scaling.items():
        rows.append(
            row_from_runs(
                f"scaling: {held} held, x{args.scaling_ops} (median of {args.rounds})", runs
            )
        )

    single_row = rows[0]
    burst_per_s = burst_row.allocs_per_s
    print(f"port pool benchmark: range {PORT_RANGE}, stores under {root} ({filesystem_of(root)})")
    print(f"python {platform.python_version()}, sqlite WAL synchronous=FULL, durable commits")
    print()
    print(format_table(rows))
    print()
    print(
        f"burst: {burst_per_s:,.0f} allocs/s (goal >= {GOAL_BURST_PER_S:,.0f}/s):"
        f" {'met' if burst_per_s >= GOAL_BURST_PER_S else 'NOT met'}"
    )
    print(
        f"scaling: {per_op_ms[HELD_LARGE]:.3f} ms/alloc at {HELD_LARGE} held vs"
        f" {per_op_ms[HELD_SMALL]:.3f} ms at {HELD_SMALL} held, ratio {ratio:.2f}"
        f" (goal <= {GOAL_SCALING_RATIO}): {'met' if ratio <= GOAL_SCALING_RATIO else 'NOT met'}"
    )
    return {
        "single_allocs_per_s": round(single_row.allocs_per_s, 1),
        "p50_ms": round(single_row.p50_ms, 4),
        "p99_ms": round(single_row.p99_ms, 4),
        "single_commits": single_row.commits,
        "single_bind_test_allocs_per_s": round(rows[1].allocs_per_s, 1),
        "single_bind_test_p50_ms": round(rows[1].p50_ms, 4),
        "single_bind_test_p99_ms": round(rows[1].p99_ms, 4),
        "burst_size": args.burst,
        "burst_allocs_per_s": round(burst_per_s, 1),
        "burst_allocs_per_s_runs": [round(r.allocs_per_s, 1) for r in bursts],
        "burst_p50_ms": round(burst_row.p50_ms, 4),
        "burst_p99_ms": round(burst_row.p99_ms, 4),
        "burst_commits": burst_row.commits,
        "burst_commits_runs": [r.commits for r in bursts],
        "scaling_ms_per_alloc_100": round(per_op_ms[HELD_SMALL], 4),
        "scaling_ms_per_alloc_10000": round(per_op_ms[HELD_LARGE], 4),
        "scaling_round_ratios": [round(r, 3) for r in round_ratios],
        "scaling_ratio_10000_vs_100": round(ratio, 3),
        "goal_burst_met": burst_per_s >= GOAL_BURST_PER_S,
        "goal_scaling_met": ratio <= GOAL_SCALING_RATIO,
        "quick": bool(args.quick),
        "tmp_root": root,
        "filesystem": filesystem_of(root),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    silence_structlog()
    root = os.path.realpath(args.dir or tempfile.gettempdir())
    result = asyncio.run(bench(args, root))
    print(json.dumps(result, sort_keys=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
