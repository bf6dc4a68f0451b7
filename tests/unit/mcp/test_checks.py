"""The check loop's timing: probed again soon until the first passing result, then every
interval."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from bridge.mcp import checks
from bridge.mcp.checks import CheckRunner, next_wait
from bridge.mcp.probe import ProbeResult
from tests.builders import own_service
from tests.fakes import FakeConsul
from tests.unit.mcp.test_tools import SID, target


def test_until_the_first_pass_the_waits_double_up_to_the_interval() -> None:
    waits = [next_wait(10.0, False, tries) for tries in range(12)]
    probes = [sum(waits[:i]) for i in range(len(waits))]  # when each probe runs
    # A server that starts listening at any time in its first 4 s is probed within 2 s.
    assert all(b - a < 2.0 for a, b in itertools.pairwise(probes) if a < 4.0)
    assert max(waits) == 10.0
    assert next_wait(10.0, True, 0) == 10.0
    assert next_wait(0.05, False, 0) == 0.05, "never longer than the interval"


class NotYetListening:
    """Connection refused for the first `down` probes, then a passing MCP server."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.calls = 0

    async def __call__(self, *_: Any, **__: Any) -> ProbeResult:
        self.calls += 1
        if self.calls <= self.down:
            return ProbeResult("critical", "cannot reach: connection refused")
        return ProbeResult("passing", "MCP 2026-07-28 OK")


async def test_a_server_that_starts_late_passes_soon_then_the_interval_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checks, "FIRST_RETRY", 0.005)
    consul, prober = FakeConsul("n1"), NotYetListening(down=3)
    consul.services[SID] = own_service("mcp-a", 11100)
    runner = CheckRunner(consul, on_meta=lambda *_: None, health_of=lambda _: None, prober=prober)
    try:
        runner.sync({SID: target(tools=False)})  # interval 3600 s
        for _ in range(200):
            if runner.last.get(SID) and runner.last[SID].status == "passing":
                break
            await asyncio.sleep(0.01)
        assert runner.last[SID].status == "passing", "still waiting for a whole interval"
        assert consul.ttl[f"{SID}:mcp"][0] == "passing"
        calls = prober.calls
        await asyncio.sleep(0.3)
        assert prober.calls == calls == 4, "after passing, only the interval"
    finally:
        await runner.close()
