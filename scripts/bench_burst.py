#!/usr/bin/env python3
"""Where a burst's CPU goes: the agent, Consul and dockerd, against raw registers.

    scripts/bench_burst.py [--containers N] [--wave W] [--reps R] [--py-spy PATH]

Needs what scripts/bench.py needs. It starts N containers under a real agent (as
bench.py's, `check=none`), then R times: the first W stopped and withdrawn, the agent
frozen, the W started again, the agent thawed; until all W are visible in Consul, the CPU
time each process spent (agent, Consul, dockerd) per registration; then W raw registers at
the agent's concurrency from this process, and the CPU Consul and this process spent.
With --py-spy (a py-spy binary), R more waves are sampled by `py-spy record --nonblocking`
(py-spy never pauses the agent; --native would ptrace it, which fails here) and their stacks
summed: the agent's share of samples in its own functions and by library.
The CPU figures come from /proc in clock ticks (10 ms), so read the median of several
waves. Prints one JSON line per wave, then the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp  # noqa: F401  # loaded before the first raw wave is timed
from benchkit.agent_bench import Bench

TICK = os.sysconf("SC_CLK_TCK")
FRAME = re.compile(r"(?P<fn>\S+) \((?P<path>[^:]*):\d+\)")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pid_of(pattern: str) -> int:
    found = subprocess.run(["pgrep", "-of", pattern], capture_output=True, text=True)
    return int(found.stdout.split()[0])


class BurstBench(Bench):
    def waves(self) -> list[dict[str, Any]]:
        self.agent.start()
        self.wait_ready()
        self.parallel(lambda n: self.create(n), self.names, 8)
        self.parallel(lambda n: self.client.api.start(n), self.names, 8)
        self.catalog.wait(lambda seen: all(n in seen for n in self.names))
        assert self.agent.proc is not None
        pids = {"agent": self.agent.proc.pid, "consul": pid_of("consul agent"),
                "dockerd": pid_of("^dockerd")}  # fmt: skip
        out = []
        for i in range(self.args.reps * (2 if self.args.py_spy else 1)):
            stacks = self.tmp / f"spy-{i}.txt" if i >= self.args.reps else None
            out.append(self.wave(i, pids, stacks))
            print(json.dumps(out[-1]), flush=True)
        return out

    def wave(self, i: int, pids: dict[str, int], stacks: Path | None) -> dict[str, Any]:
        wave = self.names[: self.args.wave]
        spy: list[subprocess.Popen[bytes]] = []
        before: dict[str, float] = {}

        def before_thaw() -> None:
            if stacks is not None:
                spy.append(subprocess.Popen(
                    [self.args.py_spy, "record", "--nonblocking", "--pid", str(pids["agent"]),
                     "--rate", "1000", "--format", "raw", "--output", str(stacks),
                     "--duration", "4"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
                time.sleep(1.0)  # attached before the agent thaws
            before.update({k: cpu_s(p) for k, p in pids.items()})

        t0 = self.restart_frozen(wave, before_thaw)
        agent_s = self.catalog.wait(lambda seen: all(n in seen for n in wave)) - t0
        after = {k: cpu_s(p) for k, p in pids.items()}
        for sampler in spy:
            sampler.wait()
        raw = [f"{self.rawtag}w{i}-{j}" for j in range(len(wave))]
        raw_pids = {"bench": os.getpid(), "consul": pids["consul"]}
        raw_before = {k: cpu_s(p) for k, p in raw_pids.items()}
        t0 = time.time()
        asyncio.run(self.raw_registers(raw))
        raw_s = self.catalog.wait(lambda seen: all(n in seen for n in raw)) - t0
        raw_after = {k: cpu_s(p) for k, p in raw_pids.items()}
        self.raw_deregister(raw)
        per = 1000 / len(wave)
        return {
            "sampled": stacks is not None,
            "agent_s": agent_s,
            "raw_s": raw_s,
            "ratio": raw_s / agent_s,
            "agent_cpu_ms_per_reg": {k: (after[k] - before[k]) * per for k in pids},
            "raw_cpu_ms_per_reg": {k: (raw_after[k] - raw_before[k]) * per for k in raw_pids},
        }


def summarise(files: list[Path]) -> dict[str, Any]:
    """The agent's samples: inclusive share of its own functions, self share by library."""
    own: collections.Counter[str] = collections.Counter()
    libs: collections.Counter[str] = collections.Counter()
    total = 0
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [m for f in stack.split(";") if (m := FRAME.match(f))]
            if not frames:
                continue
            total += int(count)
            for name in {f"{m['path'].split('bridge/', 1)[1]}:{m['fn']}"
                         for m in frames if "bridge/" in m["path"]}:  # fmt: skip
                own[name] += int(count)
            # py-spy names a frame's file from its package root: "aiohttp/client.py".
            leaf = frames[-1]["path"].rsplit("site-packages/", 1)[-1]
            libs[leaf.split("/", 1)[0]] += int(count)

    def share(counts: collections.Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / max(1, total), 1) for k, v in counts.most_common(30)}

    return {"samples": total, "own_pct": share(own), "self_pct_by_library": share(libs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=1000, metavar="N")
    parser.add_argument("--wave", type=int, default=250, metavar="W")
    parser.add_argument("--reps", type=int, default=3, metavar="R")
    parser.add_argument("--py-spy", metavar="PATH")
    args = parser.parse_args(argv)
    args.limit_samples, args.plot = 8, Path(tempfile.gettempdir()) / "unused.png"
    bench = BurstBench(args)
    try:
        waves = bench.waves()
    finally:
        bench.cleanup()
    plain = [w for w in waves if not w["sampled"]]
    summary: dict[str, Any] = {
        "containers": args.containers,
        "wave": args.wave,
        "ratio_median": statistics.median(w["ratio"] for w in plain),
        "agent_cpu_ms_per_reg_median": {
            k: statistics.median(w["agent_cpu_ms_per_reg"][k] for w in plain)
            for k in plain[0]["agent_cpu_ms_per_reg"]
        },
        "raw_cpu_ms_per_reg_median": {
            k: statistics.median(w["raw_cpu_ms_per_reg"][k] for w in plain)
            for k in plain[0]["raw_cpu_ms_per_reg"]
        },
    }
    if args.py_spy:
        summary["agent_samples"] = summarise(sorted(bench.tmp.glob("spy-*.txt")))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
