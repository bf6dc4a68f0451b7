"""A burst of events is taken by one pass; a single event does not wait."""

from __future__ import annotations

import asyncio

import pytest

from bridge.core.model import ContainerEvent
from bridge.loop import triggers as triggers_module
from bridge.loop.triggers import BURST_SETTLE_MAX, Triggers


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


async def test_one_container_does_not_wait_and_a_burst_never_waits_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a clock the test moves: a single container's pass does not sleep at all, and a
    stream of new containers that never ends holds its pass back BURST_SETTLE_MAX at most."""
    clock = [0.0]
    naps: list[float] = []
    triggers = Triggers()
    triggers.take()
    counter = iter(range(100, 10**6))

    async def nap(seconds: float) -> None:  # each nap, one more container turns up
        naps.append(seconds)
        clock[0] += seconds
        triggers.on_event(start(next(counter)))

    monkeypatch.setattr(triggers_module.asyncio, "sleep", nap)
    monkeypatch.setattr(triggers_module.time, "monotonic", lambda: clock[0])
    triggers.on_event(start(0))
    triggers.on_event(ContainerEvent("id0", "die", "mcp-0"))  # one container, two events
    await triggers.settle()
    assert naps == []

    triggers.on_event(start(1))
    await triggers.settle()
    assert naps and clock[0] <= BURST_SETTLE_MAX + max(naps)


async def test_again_soon_backs_off_per_retry_not_per_pass() -> None:
    triggers = Triggers()
    triggers.take()
    loop = asyncio.get_running_loop()
    triggers.again_soon(True, most=30.0)
    first = triggers.retry
    assert first is not None and 0.4 < first.when() - loop.time() <= 0.5
    for _ in range(5):  # passes that events woke before it fired
        triggers.again_soon(True, most=30.0)
    assert triggers.retry is first, "re-armed by passes it did not start"
    await asyncio.sleep(0.55)
    assert triggers.wake.is_set() and triggers.take().full
    triggers.again_soon(True, most=30.0)  # the pass the timer started: still waiting
    second = triggers.retry
    assert second is not None and 0.9 < second.when() - loop.time() <= 1.0
    triggers.again_soon(False, most=30.0)
    triggers.cancel_retry()
