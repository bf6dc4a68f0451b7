"""Cluster port scope: one port per service name across the fleet, claimed in Consul KV.

Layout, under `<kv prefix>/ports/`, shared by every bridge of the fleet:

    service/<name>          {"port": 11105, "idle_since": null}   the service's port
    port/<port>             {"service": "<name>"}                 who holds a port
    users/<name>/<node id>  {"owner": "<container>"}              a host using it (locked)
    cursor                  {"port": 11105}                       the fleet's wrap-around
    cursor/<tier>           {"port": 9004}                        ... of each tier

- A claim writes `service/` and `port/` with check-and-set on "does not exist yet", and the
  (tier's) cursor with check-and-set on its index, in one transaction: two hosts can never claim
  one port for two services, nor two ports for one service. The loser reads again. As in node
  scope, a preferred port given leaves the cursor where it is.
- Using a service's port locks `users/<name>/<node id>` with the bridge's Consul session and
  touches `service/<name>` (check-and-set) in the same transaction. The session is renewed
  while the bridge lives and is tied to its node's health: when a host dies, Consul deletes
  its locks, so a dead host never pins a port.
- A service nobody uses is marked idle, and released after BRIDGE_STALE_AFTER by whichever
  bridge sees it first: a delete with check-and-set on the index it saw idle, which any use
  in between changes, so a port in use is never released.

The local store stays this host's durable record: a host keeps serving the ports its
running containers hold while Consul is away; only new names wait.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.core.config import PortScope, Settings
from bridge.core.model import KVEntry, PortRange
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable, SessionAPI
from bridge.pool.allocator import BindTest, PoolError, PoolExhausted
from bridge.pool.tiers import UNTIERED, TierLayout, layout_for

log = structlog.get_logger("bridge.pool")

ATTEMPTS = 8  # claims lost to another host before giving up for this pass


class FleetExhausted(PoolExhausted):
    """No port of the tier left in the fleet's registry; node scope's message, its name."""

    WHAT = "cluster port registry"


class FleetContended(PoolError):
    """Other hosts kept winning the race for ports; the next pass tries again."""


@dataclass(frozen=True, slots=True)
class Registry:
    """One read of the whole registry."""

    services: Mapping[str, tuple[int, float | None, int]]  # name -> port, idle_since, index
    ports: Mapping[int, str]  # port -> service
    users: Mapping[str, Mapping[str, tuple[str, str | None]]]  # name -> node -> owner, session
    cursors: Mapping[str, tuple[int | None, int]]  # tier -> port, index (0: not there yet)

    def service_of(self, port: int) -> str | None:
        return self.ports.get(port)


def _json(entry: KVEntry) -> dict[str, Any]:
    try:
        value = json.loads(entry.value or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _b64(value: Mapping[str, Any]) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _op(verb: str, key: str, **more: Any) -> dict[str, Any]:
    return {"KV": {"Verb": verb, "Key": key, **more}}


class FleetPorts:
    def __init__(
        self,
        consul: ConsulAPI,
        *,
        node_id: str,
        port_range: PortRange,
        reserved: Iterable[int] = (),
        layout: TierLayout | None = None,
        clock: Callable[[], float],
        session: SessionAPI,
    ) -> None:
        self.consul = consul
        self.node_id = node_id
        self.port_range = port_range
        self.layout = layout or layout_for(port_range, ())
        self.reserved = frozenset(reserved)
        self.clock = clock
        self.root = f"{consul.kv_prefix}/ports/"
        self.session = session  # the bridge's own: the node id claim holds its lock with it

    @classmethod
    def for_settings(
        cls,
        consul: ConsulAPI,
        settings: Settings,
        clock: Callable[[], float],
        session: SessionAPI,
    ) -> FleetPorts | None:
        """The fleet's registry in cluster port scope; None in node scope."""
        if settings.port_scope is not PortScope.CLUSTER:
            return None
        return cls(
            consul,
            node_id=settings.node_id,
            port_range=settings.port_range,
            reserved=settings.reserved_ports,
            layout=settings.tier_layout,
            clock=clock,
            session=session,
        )

    # ---- reading ------------------------------------------------------------------------

    async def read(self) -> Registry:
        services: dict[str, tuple[int, float | None, int]] = {}
        ports: dict[int, str] = {}
        users: dict[str, dict[str, tuple[str, str | None]]] = {}
        cursors: dict[str, tuple[int | None, int]] = {}
        for entry in await self.consul.kv_read(self.root):
            path = entry.key.removeprefix(self.root).split("/")
            value = _json(entry)
            if path[0] == "service" and len(path) == 2 and isinstance(value.get("port"), int):
                services[path[1]] = (value["port"], value.get("idle_since"), entry.modify_index)
            elif path[0] == "port" and len(path) == 2 and path[1].isdigit():
                ports[int(path[1])] = str(value.get("service", ""))
            elif path[0] == "users" and len(path) == 3 and entry.session:
                users.setdefault(path[1], {})[path[2]] = (str(value.get("owner")), entry.session)
            elif path[0] == "cursor" and len(path) <= 2:
                cursors["/".join(path[1:])] = (value.get("port"), entry.modify_index)
        return Registry(services, ports, users, cursors)

    # ---- claiming ---------------------------------------------------------------------

    async def claim(
        self,
        service: str,
        owner: str,
        *,
        preferred: int | None,
        is_free: BindTest,
        tier: str = UNTIERED,
    ) -> int:
        """The service's port across the fleet (claimed now if it has none), locked as used
        by this host for `owner`. Raises FleetExhausted, FleetContended."""
        session = await self.session.ensure()
        for _ in range(ATTEMPTS):
            registry = await self.read()
            stale = registry.users.get(service, {}).get(self.node_id)
            if stale is not None and stale[1] not in (None, session):
                # Only this node id writes users/<name>/<node id>: a lock held by another
                # session is this host's from before a restart, still within its TTL.
                await self.consul.session_destroy(stale[1])
                continue
            held = registry.services.get(service)
            if held is not None:
                port, _, index = held
                if await self._use(service, owner, port, index, session):
                    return port
                continue
            port = self._choose(registry, preferred, is_free, tier)
            value = {"port": port, "idle_since": None}
            ops = [
                _op("cas", f"{self.root}service/{service}", Value=_b64(value), Index=0),
                _op("cas", f"{self.root}port/{port}", Value=_b64({"service": service}), Index=0),
                self._lock(service, owner, session),
            ]
            if port != preferred:  # as in node scope, a preferred port leaves the cursor
                cursor = self.root + "/".join(filter(None, ("cursor", tier)))
                index = registry.cursors.get(tier, (None, 0))[1]
                ops.append(_op("cas", cursor, Value=_b64({"port": port}), Index=index))
            if await self.consul.kv_txn(ops):
                log.info("fleet_port_claimed", service=service, port=port, node_id=self.node_id)
                return port
        raise FleetContended(f"lost the race for a port for {service} {ATTEMPTS} times")

    def _choose(
        self, registry: Registry, preferred: int | None, is_free: BindTest, tier: str
    ) -> int:
        span = self.layout[tier]

        def takeable(port: int) -> bool:
            return (
                port in span
                and port not in self.reserved
                and port not in registry.ports
                and is_free(port)
            )

        if preferred is not None and takeable(preferred):
            return preferred
        cursor = registry.cursors.get(tier, (None, 0))[0]
        busy = 0
        for port in span.after(cursor if isinstance(cursor, int) else None):
            if takeable(port):
                return port
            busy += port not in self.reserved and port not in registry.ports
        reserved = sum(1 for p in self.reserved if p in span)
        claimed = sum(1 for p in registry.ports if p in span and p not in self.reserved)
        holders = {"claimed by services of the fleet": claimed, "reserved": reserved}
        holders["busy on this host"] = busy
        raise FleetExhausted(span, holders, tiered=self.layout.tiered)

    def _lock(self, service: str, owner: str, session: str) -> dict[str, Any]:
        key = f"{self.root}users/{service}/{self.node_id}"
        return _op("lock", key, Value=_b64({"owner": owner}), Session=session)

    async def _use(self, service: str, owner: str, port: int, index: int, session: str) -> bool:
        # Touching service/<name> with check-and-set makes a release that saw it idle fail;
        # a new value each time, as Consul keeps the index of a write that changes nothing.
        value = {"port": port, "idle_since": None, "touched": secrets.token_hex(4)}
        key = f"{self.root}service/{service}"
        ops = [_op("cas", key, Value=_b64(value), Index=index), self._lock(service, owner, session)]
        return await self.consul.kv_txn(ops)

    async def ports_for(
        self,
        wanted: Mapping[str, tuple[str, int | None, str]],
        held: Mapping[str, int],
        is_free: BindTest,
    ) -> tuple[dict[str, int], dict[str, tuple[str, str | None]]]:
        """The fleet's port for each container that wants one (container -> service and
        preferred port), and why the others wait (the reason, and its metrics error kind
        when the wait is an error). `held`: the ports containers hold here
        already; they keep them while the registry cannot be read (Consul away), and
        without a call when the registry agrees and this host's lock stands. A service
        keeps its port when tiers change; only new claims are made inside the tier."""
        ports: dict[str, int] = {}
        waiting: dict[str, tuple[str, str | None]] = {}
        try:
            registry = await self.read()
        except ConsulUnavailable as exc:
            for container in wanted:
                if container in held:
                    ports[container] = held[container]
                else:
                    why = f"cluster port registry unavailable: {exc}"
                    waiting[container] = (why, "consul_unavailable")
            return ports, waiting
        for container, (service, preferred, tier) in sorted(wanted.items()):
            known = registry.services.get(service)
            lock = registry.users.get(service, {}).get(self.node_id)
            if known and lock and lock[1] == self.session.id:
                holds = held.get(container) == known[0]
                if holds and lock[0] == container:
                    ports[container] = known[0]
                    continue
                if not holds and lock[0] != container:
                    # Another container here uses the service: the local pool refuses this
                    # one (one instance per host) or, the other gone, gives it the port.
                    # Either way nothing changes in the registry; the lock's owner follows
                    # the container that holds the port (the next pass, or sync).
                    ports[container] = known[0]
                    continue
            try:
                ports[container] = await self.claim(
                    service, container, preferred=preferred, is_free=is_free, tier=tier
                )
            except (PoolError, ConsulUnavailable, ConsulRejected) as exc:
                waiting[container] = (str(exc), _wait_kind(exc))
        return ports, waiting

    # ---- this host's uses, and the fleet's idle ports --------------------------------

    async def sync(
        self, using: Mapping[str, str], allocated: AbstractSet[str], *, stale_after: float
    ) -> list[str]:
        """Keep this host's `users/` locks: one for each service a container here uses
        (`using`: service -> container), dropped once no allocation of this host holds it
        any more (`allocated`: the owners of the local pool). Then mark and release the
        fleet's idle services. Returns the services released."""
        session = await self.session.ensure()
        registry = await self.read()
        for service, owner in using.items():
            mine = registry.users.get(service, {}).get(self.node_id)
            held = registry.services.get(service)
            if held is not None and (mine is None or mine[1] != session or mine[0] != owner):
                await self._use(service, owner, held[0], held[2], session)
        for service, nodes in registry.users.items():
            mine = nodes.get(self.node_id)
            if mine is not None and service not in using and mine[0] not in allocated:
                key = f"{self.root}users/{service}/{self.node_id}"
                await self.consul.kv_txn([_op("delete", key)])
        return await self._release_idle(await self.read(), stale_after)

    async def _release_idle(self, registry: Registry, stale_after: float) -> list[str]:
        now, released = self.clock(), []
        for service, (port, idle_since, index) in registry.services.items():
            if registry.users.get(service):
                continue
            key = f"{self.root}service/{service}"
            if idle_since is None:
                idle = {"port": port, "idle_since": now}
                await self.consul.kv_txn([_op("cas", key, Value=_b64(idle), Index=index)])
            elif now - idle_since >= stale_after:
                ops = [
                    _op("delete-cas", key, Index=index),
                    _op("delete", f"{self.root}port/{port}"),
                ]
                if await self.consul.kv_txn(ops):
                    log.info(
                        "fleet_port_released", service=service, port=port, node_id=self.node_id
                    )
                    released.append(service)
        return released


def _wait_kind(exc: Exception) -> str | None:
    """The metrics error kind of a wait for the fleet's port; None when it is no error
    (claims lost to other hosts again and again: the next pass tries again)."""
    if isinstance(exc, PoolExhausted):  # FleetExhausted too
        return "pool_exhausted"
    if isinstance(exc, ConsulUnavailable):
        return "consul_unavailable"
    if isinstance(exc, ConsulRejected):
        return "consul_rejected"
    return None
