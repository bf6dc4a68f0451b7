"""Helpers the fault tests share: start and remove many containers, and the invariant
every fault test ends on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.integration.conftest import IMAGE, Bridge, wait_for

WORKERS = 8


def start_many(bridge: Bridge, names: list[str], **kwargs: Any) -> None:
    """Start containers concurrently, as a compose `up` or a CI burst would."""
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda n: bridge.run(n, **kwargs), names))


def remove_many(bridge: Bridge, names: list[str]) -> None:
    def remove(name: str) -> None:
        bridge.docker.containers.get(bridge.tag + name).remove(force=True)

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(remove, names))


def store_allocations(bridge: Bridge) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "ports", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **bridge.agent.env},
        check=True,
    ).stdout
    return {a["owner"]: a for a in json.loads(out)["allocations"]}


def invariant(bridge: Bridge) -> dict[str, int]:
    """Every running MCP container of this test has exactly one Consul instance, with a
    unique port from the pool; nothing else of ours is in Consul; the store agrees.
    Returns container name -> port."""
    running = {
        c.name
        for c in bridge.docker.containers.list(filters={"name": bridge.tag})
        if c.status == "running"
    }
    services = bridge.services()
    by_container: dict[str, list[dict[str, Any]]] = {}
    for s in services.values():
        by_container.setdefault(s["Meta"]["container_name"], []).append(s)
    twice = {n: len(v) for n, v in by_container.items() if len(v) > 1}
    assert not twice, f"duplicate registrations: {twice}"
    assert set(by_container) == running, (
        f"missing in Consul: {sorted(running - set(by_container))[:10]}, "
        f"stale in Consul: {sorted(set(by_container) - running)[:10]}"
    )
    ports = {name: v[0]["Port"] for name, v in by_container.items()}
    assert len(set(ports.values())) == len(ports), "one port given twice"
    low, high = (int(p) for p in bridge.agent.env["BRIDGE_PORT_RANGE"].split("-"))
    outside = {n: p for n, p in ports.items() if not low <= p <= high}
    assert not outside, f"ports outside the pool: {outside}"
    held = store_allocations(bridge)
    for name, port in ports.items():
        assert held.get(name, {}).get("port") == port, f"store disagrees for {name}"
    return ports


def settle(bridge: Bridge, count: int, what: str = "all registered") -> dict[str, int]:
    """Wait until `count` services are in Consul and the invariant holds."""

    def holds() -> bool:
        if len(bridge.services()) != count:
            return False
        try:
            invariant(bridge)
        except AssertionError:
            return False
        # Not invariant's mapping: with count 0 it is {}, which wait_for takes for "not yet".
        return True

    wait_for(what, holds, timeout=180)
    return invariant(bridge)  # once more, with its message if it fails now


__all__ = ["IMAGE", "invariant", "remove_many", "settle", "start_many", "store_allocations"]
