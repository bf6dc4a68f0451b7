"""The gateway's catalog (bridge/gateway/catalog.py) against an in-memory Consul that
answers blocking queries when the test says: services tagged `mcp` followed and their
instances watched, a withdrawn service dropped, tool records read from KV, the last view
kept (and the reason shown) while Consul is away, and an index that goes backwards
starting over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from bridge.core.model import KVEntry
from bridge.core.protocols import ConsulUnavailable
from bridge.gateway.catalog import Catalog, View
from tests.unit.mcp.test_stdio_modern_adapt import wait_until


def entry(sid: str, service: str, status: str = "passing") -> dict[str, Any]:
    return {
        "Node": {"Node": "n1", "Address": "10.0.0.1"},
        "Service": {
            "ID": sid,
            "Service": service,
            "Port": 20000,
            "Meta": {"mcp_protocol_version": "2026-07-28"},
        },
        "Checks": [{"Status": status}],
    }


class FakeConsul:
    """Each watch answers at once the first time (index 0), then waits for `push`."""

    kv_prefix = "mcp-bridge"

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"services": {}, "kv": []}
        self.index = 1
        self.changed = asyncio.Event()
        self.down: Exception | None = None
        self.asked: list[tuple[str, int]] = []

    def push(self, key: str, value: Any, index: int | None = None) -> None:
        """A change, at a new index (or the one given)."""
        self.state[key] = value
        self.index = index if index is not None else self.index + 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def _answer(self, what: str, index: int) -> tuple[int, Any]:
        self.asked.append((what, index))
        if self.down is not None:
            await asyncio.sleep(0.01)
            raise self.down
        if index and index >= self.index:  # index 0: an answer at once, as Consul gives
            await self.changed.wait()
        if self.down is not None:
            raise self.down
        return self.index, self.state.get(what)

    async def watch_services(self, index: int, wait: str) -> tuple[int, dict[str, list[str]]]:
        new, value = await self._answer("services", index)
        return new, dict(value)

    async def watch_health(
        self, name: str, index: int, wait: str
    ) -> tuple[int, list[Mapping[str, Any]]]:
        new, value = await self._answer(f"health {name}", index)
        return new, list(value or [])

    async def watch_kv(self, prefix: str, index: int, wait: str) -> tuple[int, list[KVEntry]]:
        new, value = await self._answer("kv", index)
        return new, list(value)


async def test_services_instances_and_tool_records_are_followed() -> None:
    consul = FakeConsul()
    views: list[View] = []
    catalog = Catalog(consul, (), views.append)
    running = asyncio.create_task(catalog.run())
    consul.state["health time"] = [entry("h1:time", "time")]
    consul.push("services", {"time": ["mcp"], "web": ["http"]})
    await wait_until(
        lambda: [i.service_id for i in catalog.view.instances.get("time", ())] == ["h1:time"]
    )
    assert "web" not in catalog.view.instances and catalog.synced.is_set()
    record = {"service_id": "h1:time", "tools": [{"name": "now"}], "truncated": 0}
    consul.push("kv", [KVEntry("mcp-bridge/n1/h1:time/tools", json.dumps(record).encode(), 1),
                       KVEntry("mcp-bridge/ports/20000", b"{}", 1)])  # fmt: skip
    await wait_until(lambda: "h1:time" in catalog.view.records)
    consul.push("health time", [entry("h1:time", "time", "critical")])
    await wait_until(lambda: not catalog.view.callable("time"))
    consul.push("services", {})  # withdrawn
    await wait_until(lambda: "time" not in catalog.view.instances)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_consul_away_keeps_the_last_view_and_says_why_then_recovers() -> None:
    consul = FakeConsul()
    catalog = Catalog(consul, ["time"], lambda _: None)
    running = asyncio.create_task(catalog.run())
    consul.state["health time"] = [entry("h1:time", "time")]
    consul.push("services", {"time": ["mcp"], "git": ["mcp"]})
    await wait_until(lambda: catalog.view.callable("time"))
    assert "git" not in catalog.view.instances  # BRIDGE_GATEWAY_SERVICES
    consul.down = ConsulUnavailable("connection refused")
    consul.push("services", {"time": ["mcp"]})  # wakes the watches into the outage
    await wait_until(lambda: catalog.consul_error is not None)
    assert "connection refused" in str(catalog.consul_error)
    assert catalog.view.callable("time")  # the last view, still served
    consul.down = None
    consul.push("services", {"time": ["mcp"]})
    await wait_until(lambda: catalog.consul_error is None, seconds=20)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_an_index_that_goes_backwards_starts_over() -> None:
    consul = FakeConsul()
    catalog = Catalog(consul, (), lambda _: None)
    running = asyncio.create_task(catalog.run())
    consul.push("services", {}, index=50)
    await wait_until(lambda: ("services", 50) in consul.asked)
    consul.push("services", {}, index=3)  # Consul restarted: its index is lower
    await wait_until(lambda: ("services", 0) in consul.asked[1:])
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_an_index_of_zero_is_taken_as_one_and_a_gone_services_error_goes_with_it() -> None:
    consul = FakeConsul()
    consul.index = 0  # a Consul bug: an index of 0 must never be blocked on (a busy loop)
    catalog = Catalog(consul, (), lambda _: None)
    running = asyncio.create_task(catalog.run())
    await wait_until(lambda: ("services", 1) in consul.asked)
    catalog._errors["service git"] = "connection refused"  # its watch failed, then
    catalog._watches["git"] = asyncio.create_task(asyncio.sleep(3600))
    consul.push("services", {})  # git withdrawn
    await wait_until(lambda: "git" not in catalog._watches)
    assert catalog.consul_error is None
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
