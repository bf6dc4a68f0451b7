#!/usr/bin/env python3
"""One container inspect, the way the agent made it before and the way it makes it now:
the Docker SDK's blocking call on an `asyncio.to_thread` worker, against the agent's own
GET on the event loop (bridge/docker/http.py). Side by side in one run, in rounds that
alternate, each round's median reported.

    scripts/inspect_cost.py [--calls N] [--rounds R]

Runs one busybox container of the engine DOCKER_HOST names (mcp-bridge/busybox:local,
from scripts/local-services.sh busybox-image) and removes it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import docker

from bridge.docker.endpoint import endpoint_from_env
from bridge.docker.http import EngineHTTP

IMAGE = "mcp-bridge/busybox:local"


async def median_ms(call: Callable[[], Awaitable[object]], n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main(calls: int, rounds: int) -> None:
    client = docker.from_env()
    container = client.containers.run(
        IMAGE, ["sleep", "600"], detach=True, ports={"80/tcp": None},
        labels={"org.mcp-bridge.bench": "inspect"},
    )  # fmt: skip
    http = EngineHTTP(endpoint_from_env(), 30.0)
    try:
        sdk, cid = client.api, container.id
        ways: dict[str, Callable[[], Awaitable[object]]] = {
            "SDK on a worker thread": lambda: asyncio.to_thread(sdk.inspect_container, cid),
            "aiohttp on the loop (the agent)": lambda: http.inspect(cid),
        }
        medians: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, call in ways.items():
                medians[name].append(await median_ms(call, calls))
        for name, found in medians.items():
            print(f"{name:34} " + " ".join(f"{m:.3f}" for m in found) + " ms")
        ratios = [a / b for a, b in zip(*medians.values(), strict=True)]
        print(f"{'ratio':34} " + " ".join(f"{r:.2f}" for r in ratios))
    finally:
        await http.close()
        container.remove(force=True)
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
