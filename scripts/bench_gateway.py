#!/usr/bin/env python3
"""Tool calls through `mcp-bridge gateway`, straight to the instance, and through HAProxy
forwarding HTTP to the same instance (the cost of any proxy in the path), side by side in
one run; then an instance killed under load.

    .venv/bin/python scripts/bench_gateway.py [--rounds 3] [--quick]

Needs Consul (scripts/local-services.sh up); installs Debian's haproxy when missing. The
instances are the SDK fixture server (tests/fixtures/mcp_server.py, both eras) as local
processes, registered in Consul by hand: the gateway is what is measured, not a bridge.

Paths: straight to the instance; through HAProxy (the cost of any proxy); through the least
a Python proxy can be (benchkit/least_proxy.py: aiohttp on uvloop, reading nothing inside
the messages: the floor for a proxy written like the gateway); through the gateway.

Measured, in interleaved rounds (each concurrency, each path in turn): 2026-07-28
`tools/call`s per second with 1, 16 and 64 clients, each one call at a time on a
kept-alive connection of its own; latency p50 and p99 over every round's calls; p50 added
over direct. Then two instances of one service under 16 clients through the gateway, one
SIGKILLed: every call answered (a result, or an error naming the dead instance), none
hanging, and the dead one's attempts counted from 1 s after its death to the end.

Goals (issue 23): p50 added <= 1 ms over direct; calls/s at 16 clients >= 80 % of direct;
under the kill every call answered, none hanging, no new call sent to the dead instance
1 s after it died. The table goes to stdout, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit.common import fmt_table, free_port, percentile
from benchkit.gateway_rig import (
    Outcomes,
    consul,
    haproxy,
    least_proxy,
    start_gateway,
    start_instance,
    worker,
)

CONCURRENCY = (1, 16, 64)


async def load(url: str, tool: str, clients: int, calls: int) -> tuple[float, list[float]]:
    """calls/s and latencies of `clients` workers making `calls` each."""
    outs = [Outcomes() for _ in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(worker(url, tool, calls, out) for out in outs))
    wall = time.perf_counter() - started
    errors = [e for o in outs for e in o.errors]
    if errors:
        raise SystemExit(f"bench_gateway: {len(errors)} calls failed at {url}: {errors[:3]}")
    return clients * calls / wall, [lat for o in outs for lat in o.latencies]


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    service = f"benchgw{secrets.token_hex(3)}"
    calls_each = {1: 100, 16: 30, 64: 10} if args.quick else {1: 600, 16: 150, 64: 50}
    a = start_instance(service, f"{service}-a", free_port())
    instances = [a]
    try:
        gateway = start_gateway(service, free_port(), workdir / "gateway.log")
        try:
            with (
                haproxy(free_port(), a.port, workdir) as through_haproxy,
                least_proxy(free_port(), a.url) as through_least,
            ):
                paths = {
                    "direct": (a.url, "echo"),
                    "haproxy": (through_haproxy, "echo"),
                    "least-python": (through_least, "echo"),
                    "gateway": (gateway.base + "/mcp", f"{service}__echo"),
                }
                for url, tool in paths.values():  # warm: connections, imports, caches
                    await load(url, tool, 4, 10)
                rates: dict[str, dict[int, list[float]]] = {
                    p: {c: [] for c in CONCURRENCY} for p in paths
                }
                latencies: dict[str, dict[int, list[float]]] = {
                    p: {c: [] for c in CONCURRENCY} for p in paths
                }
                for _ in range(args.rounds):
                    for c in CONCURRENCY:
                        for name, (url, tool) in paths.items():
                            rate, lat = await load(url, tool, c, calls_each[c])
                            rates[name][c].append(rate)
                            latencies[name][c].extend(lat)
            b = start_instance(service, f"{service}-b", free_port())
            instances.append(b)
            kill = await kill_under_load(
                gateway, f"{service}__echo", a, b, 2.0 if args.quick else 4.0
            )
        finally:
            gateway.proc.terminate()
            gateway.proc.wait(10)
    finally:
        for instance in instances:
            instance.proc.kill()
            consul("PUT", f"/v1/agent/service/deregister/{instance.sid}")
    raw = {
        name: {
            str(c): {
                "calls_per_s": round(percentile(rates[name][c], 50), 1),
                "p50_ms": round(percentile(latencies[name][c], 50) * 1000, 3),
                "p99_ms": round(percentile(latencies[name][c], 99) * 1000, 3),
            }
            for c in CONCURRENCY
        }
        for name in rates
    }
    return {"raw": raw, "kill": kill}


async def kill_under_load(
    gateway: Any, tool: str, a: Any, b: Any, seconds: float
) -> dict[str, Any]:
    url = gateway.base + "/mcp"
    await asyncio.sleep(1.0)  # the gateway's view holds both
    stop = asyncio.Event()
    outs = [Outcomes() for _ in range(16)]
    running = [asyncio.create_task(worker(url, tool, None, out, stop)) for out in outs]
    await asyncio.sleep(seconds / 2)
    a.proc.send_signal(signal.SIGKILL)
    died = time.monotonic()
    await asyncio.sleep(1.0)
    attempts_at_1s = gateway.attempts(a.sid)
    await asyncio.sleep(seconds / 2)
    stop.set()
    _, hanging = await asyncio.wait(running, timeout=60)
    attempts_at_end = gateway.attempts(a.sid)
    stamps = [s for o in outs for s in o.stamps]
    errors = [what for _, what in stamps if what != "ok"]
    return {
        "calls": len(stamps),
        "ok": len(stamps) - len(errors),
        "errors": len(errors),
        "errors_naming_the_dead": sum(1 for e in errors if a.sid in e),
        "errors_after_1s": sum(1 for when, what in stamps if what != "ok" and when > died + 1),
        "hanging_clients": len(hanging),
        "attempts_on_dead_after_1s": attempts_at_end - attempts_at_1s,
    }


def report(figures: dict[str, Any]) -> str:
    raw = figures["raw"]
    rows = []
    for c in CONCURRENCY:
        direct = raw["direct"][str(c)]
        for name in ("direct", "haproxy", "least-python", "gateway"):
            f = raw[name][str(c)]
            added = f["p50_ms"] - direct["p50_ms"]
            ratio = f["calls_per_s"] / direct["calls_per_s"]
            rows.append(
                [
                    f"{name} @{c}",
                    f"{f['calls_per_s']:.0f}",
                    f"{f['p50_ms']:.2f}",
                    f"{f['p99_ms']:.2f}",
                    f"{added:+.2f}",
                    f"{ratio:.2f}",
                ]
            )
    table = fmt_table(
        ["path @clients", "calls/s", "p50 ms", "p99 ms", "p50 added", "vs direct"], rows
    )
    kill = figures["kill"]
    return table + "\n\nkill under load: " + ", ".join(f"{k} {v}" for k, v in kill.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer calls (the CI smoke)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        figures = asyncio.run(measure(args, Path(tmp)))
    print(report(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
