"""What the gateway serves, followed in Consul with blocking queries (no polling loop).

Three kinds of watch, each a blocking query that returns when what it watches changes (or
after WAIT, to be asked again): the datacenter's services (those tagged `mcp`, limited to
BRIDGE_GATEWAY_SERVICES), the instances of each such service with their health, and the
bridges' tool records in KV. Each change makes a new `View` and tells the gateway.

When Consul cannot be reached the last view stays served, `consul_error` says why (for
status), and the watch tries again with backoff; it recovers without a restart. When an
index goes backwards (Consul restarted, or a snapshot restored) the watch starts over.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import structlog

from bridge.consul.catalog import MCP_TAG, Instance, instance_of
from bridge.core.model import KVEntry
from bridge.core.protocols import ConsulRejected, ConsulUnavailable

log = structlog.get_logger("bridge.gateway")

WAIT = "55s"  # each blocking query's longest wait (the client's timeout is longer)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
MIN_INTERVAL = 0.2  # seconds between one watch's queries, at least


class Watching(Protocol):
    """The Consul client's blocking queries (consul/client.py)."""

    kv_prefix: str

    async def watch_services(self, index: int, wait: str) -> tuple[int, dict[str, list[str]]]: ...

    async def watch_health(
        self, name: str, index: int, wait: str
    ) -> tuple[int, list[Mapping[str, Any]]]: ...

    async def watch_kv(self, prefix: str, index: int, wait: str) -> tuple[int, list[KVEntry]]: ...


@dataclass(frozen=True, slots=True)
class View:
    """One moment of the catalog: the instances of each service, and the tool records."""

    instances: Mapping[str, tuple[Instance, ...]] = field(default_factory=dict)
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by service id

    def callable(self, service: str) -> tuple[Instance, ...]:
        """Instances a call may go to: healthy in Consul, not behind MCP authorization."""
        return tuple(i for i in self.instances.get(service, ()) if i.healthy and not i.protected)

    def protected(self) -> list[Instance]:
        return [i for group in self.instances.values() for i in group if i.protected]


class Catalog:
    def __init__(
        self, consul: Watching, services: Collection[str], on_change: Callable[[View], None]
    ) -> None:
        self.consul = consul
        self.wanted = frozenset(services)  # empty: every MCP service
        self.view = View()
        self.consul_error: str | None = None
        self.synced = asyncio.Event()  # the first full view is in
        self._on_change = on_change
        self._instances: dict[str, tuple[Instance, ...]] = {}
        self._records: dict[str, Mapping[str, Any]] = {}
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._errors: dict[str, str] = {}
        self._since: float | None = None
        self._kv_seen = self._services_seen = False

    async def run(self) -> None:
        """Follow Consul until cancelled."""
        kv = asyncio.create_task(self._follow("kv", self._kv))
        try:
            await self._follow("services", self._services)
        finally:
            kv.cancel()
            for task in [kv, *self._watches.values()]:
                task.cancel()
            await asyncio.gather(kv, *self._watches.values(), return_exceptions=True)

    async def _follow(self, what: str, step: Callable[[int], Any]) -> None:
        """One blocking query after another, with backoff while Consul is away. Consul's
        rules for the index: one that goes backwards starts over (0: an answer at once),
        and one that is not above 0 is taken as 1, lest the loop spin; and never more than
        one query per MIN_INTERVAL, whatever Consul answers."""
        index, wait = 0, RETRY_FIRST
        while True:
            asked = time.monotonic()
            try:
                new = await step(index)
            except Exception as exc:  # Consul away, or a fault of the gateway's own
                if not isinstance(exc, (ConsulUnavailable, ConsulRejected)):
                    log.exception("gateway_watch_broke", watch=what)
                if self._errors.get(what) is None:
                    log.warning("gateway_consul_unreachable", watch=what, error=str(exc))
                    self._since = self._since or time.time()
                self._errors[what] = str(exc)
                self._note_errors()
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            if self._errors.pop(what, None) is not None:
                log.info("gateway_consul_back", watch=what)
                self._note_errors()
            wait = RETRY_FIRST
            index = 0 if new < index else max(new, 1)
            await asyncio.sleep(max(0.0, MIN_INTERVAL - (time.monotonic() - asked)))

    def _note_errors(self) -> None:
        self.consul_error = "; ".join(f"{w}: {e}" for w, e in sorted(self._errors.items())) or None
        if self.consul_error is None:
            self._since = None

    @property
    def consul_error_since(self) -> float | None:
        """When Consul stopped answering (wall clock), while it does not."""
        return self._since

    async def _services(self, index: int) -> int:
        new, services = await self.consul.watch_services(index, WAIT)
        names = {
            n for n, tags in services.items()
            if MCP_TAG in tags and (not self.wanted or n in self.wanted)
        }  # fmt: skip
        for gone in set(self._watches) - names:
            self._watches.pop(gone).cancel()
            self._instances.pop(gone, None)
            self._errors.pop(f"service {gone}", None)  # its watch's error goes with it
            self._note_errors()
            log.info("gateway_service_gone", service=gone)
        for name in sorted(names - set(self._watches)):
            self._watches[name] = asyncio.create_task(
                self._follow(f"service {name}", partial(self._health, name))
            )
        self._services_seen = True
        self._note_synced()
        self._changed()
        return new

    async def _health(self, name: str, index: int) -> int:
        new, entries = await self.consul.watch_health(name, index, WAIT)
        instances = tuple(sorted((instance_of(e) for e in entries), key=lambda i: i.service_id))
        if name in self._watches:  # not withdrawn meanwhile
            self._instances[name] = instances
            self._note_synced()
            self._changed()
        return new

    async def _kv(self, index: int) -> int:
        new, entries = await self.consul.watch_kv(f"{self.consul.kv_prefix}/", index, WAIT)
        records: dict[str, Mapping[str, Any]] = {}
        for entry in entries:
            if not entry.key.endswith("/tools"):
                continue
            try:
                record = json.loads(entry.value)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("service_id"), str):
                records[record["service_id"]] = record
        self._records = records
        self._kv_seen = True
        self._note_synced()
        self._changed()
        return new

    def _note_synced(self) -> None:
        """The first full view: every service's instances, and the tool records."""
        if self._kv_seen and self._services_seen and set(self._instances) >= set(self._watches):
            self.synced.set()

    def _changed(self) -> None:
        self.view = View(dict(self._instances), dict(self._records))
        self._on_change(self.view)
