"""The agent in-process against the fakes (tests/fakes.py): a world of one agent, its
fake Docker engine, Consul agent and forwarders, and a clock the test moves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bridge.core.model import AllocState, ContainerEvent
from bridge.loop.agent import Agent
from bridge.mcp.checks import CheckRunner
from bridge.pool.allocator import BindTest, always_free
from tests.builders import NODE, make_settings
from tests.fakes import FakeConsul, FakeDocker, FakeForwarders, FakeStdio, settle

NO_CHECK = {"mcp.check": "none"}
STALE_AFTER = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    agent: Agent
    docker: FakeDocker
    consul: FakeConsul
    forwarders: FakeForwarders
    clock: Clock
    stdio: FakeStdio

    def run(self, name: str, **kw: Any) -> ContainerEvent:
        kw.setdefault("labels", NO_CHECK)
        return self.docker.run(name, **kw)

    async def full_pass(self) -> None:
        self.agent.triggers.request_full()
        await self.settle()

    async def settle(self) -> int:
        return await settle(self.agent.step, self.agent.triggers.wake)

    async def on(self, event: ContainerEvent) -> None:
        self.agent.triggers.on_event(event)
        await self.settle()

    def ports(self) -> dict[str, int]:
        """Container name -> registered port, as Consul holds it."""
        return {
            r.meta["container_name"]: r.port
            for r in self.consul.services.values()
            if self.consul.is_ours(r)
        }

    def allocation_state(self, name: str) -> AllocState | None:
        assert self.agent.pool is not None
        alloc = self.agent.pool.state.get(name)
        return None if alloc is None else alloc.state

    def metric(self, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(self.agent.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        raise KeyError(name)


async def make_world(
    tmp_path: Path,
    docker: FakeDocker | None = None,
    consul: FakeConsul | None = None,
    *,
    is_free: BindTest = always_free,
    checks: Callable[..., CheckRunner] = CheckRunner,
    **settings: Any,
) -> World:
    """`is_free`: the agent's bind test (every port free unless a test says otherwise);
    `checks`: what makes its check runner (one with a fake prober, say)."""
    docker, consul = docker or FakeDocker(), consul or FakeConsul(NODE)
    forwarders, clock, stdio = FakeForwarders(), Clock(), FakeStdio()
    values = {
        "state_file": str(tmp_path / "state" / "state.db"),
        "port_range": "11100-11103",
        "stale_after": f"{STALE_AFTER:g}s",
        "resync_interval": "1h",
        "advertise_address": "127.0.0.1",
        **settings,
    }
    agent = Agent(
        make_settings(**values),
        docker=docker,
        consul=consul,
        forwarders=forwarders,
        stdio=stdio,
        checks=checks,
        clock=clock,
        is_free=is_free,
    )
    await agent.start()
    agent.view.docker_connected = True  # the watch says so in a running agent
    return World(agent, docker, consul, forwarders, clock, stdio)
