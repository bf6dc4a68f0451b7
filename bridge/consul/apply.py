"""Applies a plan to Consul: registrations and deregistrations, concurrently but bounded.

One path for both: each change is tried once (the Consul client retries passing faults
itself), logged once as done or failed, and reported in the result; a failure never stops
the other changes, and the agent turns any failure into a full pass later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.core.model import Registration, container_of
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable
from bridge.core.reconcile import Plan

log = structlog.get_logger("bridge.agent")

# Below Consul's per-client connection limit (http_max_conns_per_client, 200 by default).
APPLY_CONCURRENCY = 32


@dataclass(slots=True)
class ApplyResult:
    registered: list[tuple[Registration, float]] = field(default_factory=list)  # with when
    deregistered: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # service id, error kind

    @property
    def reached_consul(self) -> bool:
        return bool(self.registered or self.deregistered)


async def apply_plan(
    consul: ConsulAPI, plan: Plan, actual: Mapping[str, Registration]
) -> ApplyResult:
    result = ApplyResult()
    limit = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def attempt(
        what: str, sid: str, about: Registration | None, call: Callable[[], Awaitable[None]]
    ) -> bool:
        fields: dict[str, Any] = {
            "container": about.meta.get("container_name") if about else container_of(sid),
            "service": about.name if about else None,
            "service_id": sid,
        }
        async with limit:
            try:
                await call()
            except (ConsulUnavailable, ConsulRejected) as exc:
                result.failed.append((sid, _kind(exc)))
                log.error(f"consul_{what}_failed", **fields, error=str(exc))
                return False
        if about is not None and what == "register":
            log.info(
                "service_registered",
                **fields,
                address=about.address,
                port=about.port,
                expose=about.meta.get("expose"),
            )
        else:
            log.info("service_deregistered", **fields, port=about.port if about else None)
        return True

    async def register(reg: Registration) -> None:
        if await attempt("register", reg.service_id, reg, lambda: consul.register(reg)):
            result.registered.append((reg, time.time()))

    async def deregister(sid: str) -> None:
        old = actual.get(sid)
        if await attempt("deregister", sid, old, lambda: consul.deregister(sid)):
            result.deregistered.append(sid)

    await asyncio.gather(
        *(register(r) for r in plan.register), *(deregister(s) for s in plan.deregister)
    )
    return result


async def list_keys(consul: ConsulAPI, base: str, result: ApplyResult) -> list[str] | None:
    """The own KV keys under `base`; None (a failure in `result`) when Consul says no."""
    try:
        return await consul.kv_keys(base)
    except (ConsulUnavailable, ConsulRejected) as exc:
        result.failed.append((base, _kind(exc)))
        log.error("consul_kv_list_failed", key=base, error=str(exc))
        return None


async def forget_records(consul: ConsulAPI, keys: Iterable[str], result: ApplyResult) -> None:
    """Delete own KV records (after the services: a record outliving its service for a
    moment is harmless, the other way round it would not be)."""
    limit = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def forget(key: str) -> None:
        async with limit:
            try:
                await consul.kv_delete(key)
            except (ConsulUnavailable, ConsulRejected) as exc:
                result.failed.append((key, _kind(exc)))
                log.error("consul_kv_delete_failed", key=key, error=str(exc))
                return
        log.info("tools_record_deleted", key=key)

    await asyncio.gather(*(forget(k) for k in keys))


def _kind(exc: ConsulUnavailable | ConsulRejected) -> str:
    return "consul_unavailable" if isinstance(exc, ConsulUnavailable) else "consul_rejected"
