"""This bridge's Consul session: tied to its Consul agent's node (its locks go when the
node fails) and to a TTL (they go when the bridge stops renewing). The node id claim and
the fleet's port uses are locks held with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable

log = structlog.get_logger("bridge.agent")

SESSION_TTL = 30  # seconds; the agent renews it every third of that


class ConsulSession:
    def __init__(
        self,
        consul: ConsulAPI,
        name: str,
        ttl: int = SESSION_TTL,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.consul = consul
        self.name = name
        self.ttl = ttl
        self.id: str | None = None
        # Called when a session this bridge had is found gone: the locks it held went
        # with it, and whoever keeps them (the fleet's users/ locks) should look again now.
        self.on_lost = on_lost
        self._lock = asyncio.Lock()  # one session, however many callers at once

    async def ensure(self) -> str:
        """The session: renewed, or made anew when Consul dropped it (its locks are gone
        then, and whoever held them takes them again)."""
        async with self._lock:
            if self.id is not None:
                if await self.consul.session_renew(self.id):
                    return self.id
                log.warning("consul_session_lost", session=self.id, name=self.name)
                if self.on_lost is not None:
                    self.on_lost()
            self.id = await self.consul.session_create(self.name, self.ttl)
            log.info("consul_session_created", session=self.id, name=self.name)
            return self.id

    async def destroy(self) -> None:
        """Give up the locks now rather than after the TTL (best effort: the TTL does it
        otherwise)."""
        if self.id is not None:
            with contextlib.suppress(ConsulUnavailable, ConsulRejected):
                await self.consul.session_destroy(self.id)
            self.id = None
