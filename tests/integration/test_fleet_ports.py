"""Cluster port scope against the real Consul KV: several simulated bridges (one Consul
session each, as each host has) claim, use, drop and release ports in random
interleavings, concurrently, and die. Whatever happens: never one port for two services,
never two ports for one service."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bridge.consul.client import ConsulClient
from bridge.consul.session import ConsulSession
from bridge.core.model import PortRange
from bridge.pool.fleet import FleetContended, FleetExhausted, FleetPorts
from tests.integration.conftest import consul_url

RANGE = PortRange(41000, 41005)  # small: the fleet fills it up and wraps
BRIDGES = 3
SERVICES = st.sampled_from([f"svc{i}" for i in range(9)])
HOSTS = st.integers(min_value=0, max_value=BRIDGES - 1)
STALE_AFTER = 100.0


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FleetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = Clock()
        prefix = f"fleet-test-{secrets.token_hex(4)}"
        self.hosts: list[FleetPorts] = []
        for i in range(BRIDGES):
            consul = ConsulClient(consul_url(), f"host{i}", kv_prefix=prefix)
            session = ConsulSession(consul, f"mcp-bridge host{i}")
            self.hosts.append(
                FleetPorts(
                    consul, node_id=f"host{i}", port_range=RANGE, clock=self.clock, session=session
                )
            )
        self.prefix = prefix
        self.ports: dict[str, int] = {}  # the model: service -> port, while claimed
        self.uses: list[dict[str, str]] = [{} for _ in range(BRIDGES)]  # host -> service -> owner

    def _run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    def teardown(self) -> None:
        async def clean() -> None:
            consul = self.hosts[0].consul
            for host in self.hosts:
                await host.session.destroy()
            await consul.kv_txn([{"KV": {"Verb": "delete-tree", "Key": f"{self.prefix}/ports/"}}])
            for host in self.hosts:
                await host.consul.close()

        self._run(clean())
        self.runner.close()

    def _check_claim(self, service: str, port: int) -> None:
        if service in self.ports:
            assert port == self.ports[service], f"{service}: {port}, before {self.ports[service]}"
        else:
            owner = [s for s, p in self.ports.items() if p == port]
            assert not owner, f"port {port} given to {service}, already {owner}"
            self.ports[service] = port

    @rule(host=HOSTS, service=SERVICES)
    def claim(self, host: int, service: str) -> None:
        try:
            port = self._run(
                self.hosts[host].claim(
                    service, f"c-{service}", preferred=None, is_free=lambda p: True
                )
            )
        except FleetExhausted:
            assert len(self.ports) >= len(RANGE) or self._registry_full()
            return
        self._check_claim(service, port)
        self.uses[host][service] = f"c-{service}"

    @rule(claims=st.lists(st.tuples(HOSTS, SERVICES), min_size=2, max_size=5))
    def claim_at_once(self, claims: list[tuple[int, str]]) -> None:
        """Hosts racing: the same service on several hosts, several services for ports."""

        async def race() -> list[Any]:
            return await asyncio.gather(
                *(
                    self.hosts[h].claim(s, f"c-{s}", preferred=None, is_free=lambda p: True)
                    for h, s in claims
                ),
                return_exceptions=True,
            )

        for (host, service), got in zip(claims, self._run(race()), strict=True):
            if isinstance(got, BaseException):
                assert isinstance(got, FleetExhausted | FleetContended), got
                continue
            self._check_claim(service, got)
            self.uses[host][service] = f"c-{service}"

    @rule(host=HOSTS, service=SERVICES)
    def stop_using(self, host: int, service: str) -> None:
        self.uses[host].pop(service, None)
        self._run(self.hosts[host].sync(self.uses[host], set(), stale_after=STALE_AFTER))

    @rule(host=HOSTS)
    def host_dies(self, host: int) -> None:
        """Its session invalidated, as when Consul's failure detection drops the node."""
        self._run(self.hosts[host].session.destroy())
        self.uses[host] = {}

    @rule(host=HOSTS, seconds=st.sampled_from([1.0, 60.0, STALE_AFTER]))
    def time_passes_and_idle_ports_go(self, host: int, seconds: float) -> None:
        self.clock.now += seconds
        released = self._run(self.hosts[host].sync(self.uses[host], set(), stale_after=STALE_AFTER))
        for service in released:
            assert not any(service in uses for uses in self.uses), f"{service} released in use"
            self.ports.pop(service, None)

    def _registry_full(self) -> bool:
        registry = self._run(self.hosts[0].read())
        return len(registry.ports) >= len(RANGE)

    @invariant()
    def one_port_per_service_and_one_service_per_port(self) -> None:
        registry = self._run(self.hosts[0].read())
        by_service = {s: port for s, (port, _, _) in registry.services.items()}
        assert len(set(by_service.values())) == len(by_service), f"one port twice: {by_service}"
        assert {p: s for s, p in by_service.items()} == dict(registry.ports)
        for service, port in self.ports.items():
            assert by_service.get(service) == port, f"{service} lost its port {port}"
        for host, uses in enumerate(self.uses):
            for service in uses:
                assert f"host{host}" in registry.users.get(service, {}), (host, service)

    @invariant()
    def every_port_in_range(self) -> None:
        registry = self._run(self.hosts[0].read())
        assert all(p in RANGE for p in registry.ports)


FleetMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None)


def test_fleet_registry_holds_under_races_and_host_deaths(services: dict[str, str]) -> None:
    FleetMachine.TestCase().runTest()
