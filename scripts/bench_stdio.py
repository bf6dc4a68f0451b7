#!/usr/bin/env python3
"""One stdio MCP server, five ways to it, side by side in one run (benchkit/stdio_paths.py):
the pipe (the limit), Docker's attach stream (the limit of anything that attaches),
mcp-bridge serving the server's container, and the peers supergateway (npm) and
mcp-proxy (PyPI) serving it as Streamable HTTP their own way.

    .venv/bin/python scripts/bench_stdio.py [--rounds 3] [--sessions 1000] [--quick]

Needs the local Docker engine and Consul (scripts/local-services.sh up), the image
mcp-bridge/mcp-server-npm:local (scripts/build-local-images.sh mcp-server-npm), Node and
npm; installs the peers into $MCP_BRIDGE_HOME/cache/bench-stdio on first use.

Measured, in interleaved rounds (each concurrency, each path in turn):
- tool calls (`echo`) per second with 1, 16 and 64 clients, each one call at a time, each
  HTTP client in a handshake-era session of its own (the era all three servers serve);
  latency p50 and p99 over every round's calls, and p50 added over the pipe's;
- RSS of each serving process (with its children: supergateway's are per session) idle,
  with 64 sessions, and for mcp-bridge and mcp-proxy with `--sessions` more open;
- mcp-bridge's time from `docker run` to the first answer through the registered port.

Goals (issue 22): ahead of both peers on calls/s and p99 at 16 and 64 clients; p50 added
<= 0.5 ms; 1,000 open sessions add <= 10 MB. The table goes to stdout, then one JSON
object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
from typing import Any

from benchkit.common import fmt_table, free_port, percentile, silence_structlog
from benchkit.stdio_clients import Call, run_workers
from benchkit.stdio_paths import (
    Path,
    attach_path,
    bridge_path,
    install_peers,
    mcp_proxy,
    peer,
    pipe,
    rss_mb,
    supergateway,
)

CONCURRENCY = (1, 16, 64)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    tag = f"benchstdio{secrets.token_hex(3)}"
    consul = os.environ.get("BRIDGE_CONSUL_URL", "http://127.0.0.1:8500")
    calls_each = {1: 60, 16: 25, 64: 10} if args.quick else {1: 400, 16: 100, 64: 40}
    results: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        paths: list[Path] = [
            await stack.enter_async_context(pipe()),
            await stack.enter_async_context(attach_path(tag)),
            await stack.enter_async_context(bridge_path(tag, consul)),
            await stack.enter_async_context(peer("supergateway", *supergateway(free_port()))),
            await stack.enter_async_context(peer("mcp-proxy", *mcp_proxy(free_port()))),
        ]
        clients: dict[str, list[Call]] = {}
        for path in paths:
            entry = results.setdefault(path.name, {"notes": path.notes})
            entry["rss_idle_mb"] = rss_mb(path.pid)
            clients[path.name] = await path.clients(max(CONCURRENCY))
            entry["rss_64_sessions_mb"] = rss_mb(path.pid)
            await run_workers(clients[path.name][:4], 20)  # warm up
        samples: dict[tuple[str, int], list[float]] = {}
        rates: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.rounds):
            for c in CONCURRENCY:
                for path in paths:
                    rate, latencies = await run_workers(clients[path.name][:c], calls_each[c])
                    rates.setdefault((path.name, c), []).append(rate)
                    samples.setdefault((path.name, c), []).extend(latencies)
        for (name, c), values in samples.items():
            rate = sorted(rates[(name, c)])[len(rates[(name, c)]) // 2]  # the median round
            results[name][str(c)] = {
                "calls_per_s": round(rate, 1),
                "p50_ms": round(percentile(values, 50) * 1000, 3),
                "p99_ms": round(percentile(values, 99) * 1000, 3),
            }
        for path in paths:  # many open sessions: what each costs where sessions are cheap
            if path.name in ("mcp-bridge", "mcp-proxy"):
                before = rss_mb(path.pid)
                await path.clients(args.sessions)
                after = rss_mb(path.pid)
                if before is not None and after is not None:
                    results[path.name]["sessions_added_mb"] = round(after - before, 1)
    return results


def report(results: dict[str, Any], sessions: int) -> dict[str, Any]:
    pipe_p50 = {c: results["pipe"][str(c)]["p50_ms"] for c in CONCURRENCY}
    header = ["path", *(f"calls/s @{c}" for c in CONCURRENCY)]
    header += [f"p50/p99 ms @{c}" for c in CONCURRENCY]
    header += ["p50 added @1", "RSS idle", "RSS 64 s.", f"+{sessions} s."]
    rows = []
    for name, r in results.items():
        added = r["1"]["p50_ms"] - pipe_p50[1]
        rows.append(
            [
                name,
                *(f"{r[str(c)]['calls_per_s']:.0f}" for c in CONCURRENCY),
                *(f"{r[str(c)]['p50_ms']:.2f}/{r[str(c)]['p99_ms']:.2f}" for c in CONCURRENCY),
                f"{added:+.2f} ms",
                _mb(r.get("rss_idle_mb")),
                _mb(r.get("rss_64_sessions_mb")),
                _mb(r.get("sessions_added_mb")),
            ]
        )
    print(fmt_table(header, rows))
    ours = results["mcp-bridge"]
    goals: dict[str, Any] = {
        "p50_added_ms": round(ours["1"]["p50_ms"] - pipe_p50[1], 3),
        "sessions_added_mb": ours.get("sessions_added_mb"),
        "run_to_first_answer_s": round(ours["notes"]["run_to_first_answer_s"], 2),
    }
    for c in (16, 64):
        for peer_name in ("supergateway", "mcp-proxy"):
            them = results[peer_name][str(c)]
            goals[f"rate_ratio_vs_{peer_name}_{c}"] = round(
                ours[str(c)]["calls_per_s"] / them["calls_per_s"], 2
            )
            goals[f"p99_ratio_vs_{peer_name}_{c}"] = round(
                ours[str(c)]["p99_ms"] / them["p99_ms"], 2
            )
    print(f"  goals: {goals}")
    return goals


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    silence_structlog()
    install_peers()
    results = asyncio.run(measure(args))
    goals = report(results, args.sessions)
    print(json.dumps({**goals, "raw": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
