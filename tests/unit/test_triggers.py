"""A burst of events is taken by one pass; a single event does not wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge import triggers as triggers_module
from bridge.model import ContainerEvent
from bridge.triggers import BURST_SETTLE_MAX, Triggers


def start(i: int) -> ContainerEvent:
    return ContainerEvent(f"id{i}", "start", f"mcp-{i}")


async def test_a_burst_settles_into_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    # A quiet window far longer than the feeder's gaps, so a slow machine cannot end the
    # burst early.
    monkeypatch.setattr(triggers_module, "BURST_QUIET", 0.05)
    monkeypatch.setattr(triggers_module, "BURST_SETTLE_MAX", 5.0)
    triggers = Triggers()
    triggers.take()  # the first, full pass
    triggers.on_event(start(0))
    triggers.on_event(start(1))

    async def more() -> None:  # the rest of the burst, one event per millisecond
        for i in range(2, 20):
            await asyncio.sleep(0.001)
            triggers.on_event(start(i))

    feeder = asyncio.create_task(more())
    await triggers.settle()
    taken = triggers.take()  # what the pass would take now
    assert feeder.done() and len(taken.containers) == 20


async def test_one_container_does_not_wait_and_a_burst_never_waits_long() -> None:
    triggers = Triggers()
    triggers.take()
    triggers.on_event(start(0))
    triggers.on_event(ContainerEvent("id0", "die", "mcp-0"))  # one container, two events
    started = time.monotonic()
    await triggers.settle()
    assert time.monotonic() - started < 0.001

    triggers.on_event(start(1))
    stop = False

    async def endless() -> None:
        i = 100
        while not stop:
            await asyncio.sleep(0.001)
            triggers.on_event(start(i))
            i += 1

    feeder = asyncio.create_task(endless())
    started = time.monotonic()
    await triggers.settle()
    waited = time.monotonic() - started
    stop = True
    await feeder
    assert waited < BURST_SETTLE_MAX * 3, "an endless stream must not hold the pass back"
