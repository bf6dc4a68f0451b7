"""Each service's tools for the union, from the bridges' KV records or listed by the
gateway itself.

A bridge keeps each instance's tools in KV (mcp/checks.py). A service's tools are taken
from the record of one of its callable instances (the first by id with a whole record:
they run one image, so one record speaks for all). Where no record is whole (over
Consul's value limit the bridge cuts it and marks it `truncated`) or none is there yet,
the gateway lists that instance's tools itself, once per record digest, in the background.
A service whose name is not a DNS label (registered by hand or by another tool, with `_`)
is left out: names.py's scheme relies on service names having no `_`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from bridge.consul.catalog import Instance
from bridge.gateway.catalog import View
from bridge.gateway.names import Offered, union

log = structlog.get_logger("bridge.gateway")

Lister = Callable[[Instance], Awaitable[list[dict[str, Any]]]]
SKIPPED = (
    "its name has '_' (not a DNS label, so never a bridge's): its tools' names could"
    " collide with another service's, so it is left out of the union"
)


class Union:
    def __init__(self, lister: Lister, on_listed: Callable[[], None]) -> None:
        self._lister = lister
        self._on_listed = on_listed
        self.listed: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (instance, digest)
        self._listing: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._skipped: set[str] = set()  # said once each

    def offered(self, view: View) -> dict[str, Offered]:
        ids = {i.service_id for group in view.instances.values() for i in group}
        for key in [k for k in self.listed if k[0] not in ids]:  # instances gone
            del self.listed[key]
        tools: dict[str, list[Mapping[str, Any]]] = {}
        for service in view.instances:
            if "_" in service:  # not a DNS label: `<service>__<tool>` would be ambiguous
                if service not in self._skipped:
                    self._skipped.add(service)
                    log.warning("gateway_service_skipped", service=service, reason=SKIPPED)
                continue
            found = self._tools_of(view, service)
            if found is not None:
                tools[service] = found
        return union(tools)

    def _tools_of(self, view: View, service: str) -> list[Mapping[str, Any]] | None:
        callable_ = view.callable(service)
        for instance in callable_:
            record = view.records.get(instance.service_id)
            if record and not record.get("truncated") and isinstance(record.get("tools"), list):
                return list(record["tools"])
        for instance in callable_:  # no whole record: what the gateway listed itself
            key = (
                instance.service_id,
                str((view.records.get(instance.service_id) or {}).get("hash")),
            )
            if key in self.listed:
                return list(self.listed[key])
        if callable_:
            first = callable_[0]
            self._list(first, str((view.records.get(first.service_id) or {}).get("hash")))
        return None

    def _list(self, instance: Instance, digest: str) -> None:
        key = (instance.service_id, digest)
        if key in self._listing:
            return
        self._listing[key] = asyncio.create_task(self._list_now(instance, key))

    async def _list_now(self, instance: Instance, key: tuple[str, str]) -> None:
        try:
            self.listed[key] = await self._lister(instance)
        except Exception as exc:  # tried again when the view next changes
            log.warning("gateway_tools_list_failed", instance=instance.service_id, error=str(exc))
            del self._listing[key]
            return
        log.info("gateway_tools_listed", instance=instance.service_id, tools=len(self.listed[key]))
        self._on_listed()

    async def close(self) -> None:
        for task in self._listing.values():
            task.cancel()
        await asyncio.gather(*self._listing.values(), return_exceptions=True)
