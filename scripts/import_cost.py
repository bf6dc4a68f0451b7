#!/usr/bin/env python3
"""What `mcp-bridge run` pays before its first pass: each dependency, then the bridge's
own packages, imported in that order, with the RSS, modules and time each one adds.

    scripts/import_cost.py [--runs K]

Runs in the venv of the runtime dependencies alone (benchkit.agent_rig.runtime_python,
as a user's install or the image has it), each run a fresh interpreter; prints the
median of K runs. An import's figure includes what it is the first to pull in (asyncio
brings ssl and libcrypto), so the order is the agent's own: asyncio first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess

from benchkit.agent_rig import ROOT, runtime_python

STEPS = [
    ("asyncio (and ssl, libcrypto)", "asyncio"),
    ("sqlite3", "sqlite3"),
    ("pydantic (BaseModel)", "pydantic.main"),
    ("pydantic-settings", "pydantic_settings"),
    ("structlog", "structlog"),
    ("tenacity", "tenacity"),
    ("prometheus-client", "prometheus_client"),
    ("aiohttp (client)", "aiohttp"),
    ("aiohttp.web (server)", "aiohttp.web"),
    ("requests (for py-consul)", "requests"),
    ("py-consul", "consul.aio"),
    ("bridge: core, labels, pool rules", "bridge.core.config,bridge.labels.parse"),
    ("bridge: adapters", "bridge.consul.client,bridge.docker.engine,bridge.mcp.checks,"
                         "bridge.forward.listeners,bridge.pool.durable"),
    ("bridge: loop and CLI", "bridge.loop.agent,bridge.surface.cli"),
    ("(not loaded by `run`) the stdio bridge", "bridge.mcp.stdio.served,bridge.docker.attach"),
    ("(not loaded by `run`) mcp-types", "mcp_types"),
]  # fmt: skip

CHILD = """
import importlib, json, sys, time
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) / 1024
rows = [("interpreter", rss(), len(sys.modules), 0.0)]
for label, names in json.loads(sys.argv[1]):
    before, count, start = rss(), len(sys.modules), time.perf_counter()
    for name in names.split(","):
        importlib.import_module(name)
    rows.append((label, rss() - before, len(sys.modules) - count, time.perf_counter() - start))
print(json.dumps(rows))
"""


def one_run(python: str) -> list[list[object]]:
    done = subprocess.run(
        [python, "-c", CHILD, json.dumps(STEPS)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    rows: list[list[object]] = json.loads(done.stdout)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, metavar="K")
    args = parser.parse_args()
    python = runtime_python()
    runs = [one_run(python) for _ in range(args.runs)]
    print(f"median of {args.runs} runs, {python}")
    print("| import | + RSS MB | + modules | + ms |\n|---|---:|---:|---:|")
    total_mb = total_ms = 0.0
    for i, row in enumerate(runs[0]):
        mb = statistics.median(float(r[i][1]) for r in runs)  # type: ignore[arg-type]
        ms = statistics.median(float(r[i][3]) for r in runs) * 1000  # type: ignore[arg-type]
        print(f"| {row[0]} | {mb:.1f} | {row[2]} | {ms:.0f} |")
        if not str(row[0]).startswith("(not"):
            total_mb, total_ms = total_mb + mb, total_ms + ms
    print(f"| **what `run` loads** | **{total_mb:.1f}** | | **{total_ms:.0f}** |")


if __name__ == "__main__":
    main()
