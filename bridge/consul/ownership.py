"""One bridge per node id: a lock on `<kv prefix>/<node id>/owner`, held with the bridge's
Consul session, whose value says who holds it (the state store's instance id, the host
name, the pid).

Two bridges wrongly started with the same BRIDGE_NODE_ID would otherwise fight over the
same service ids and KV keys, each undoing the other. The one that does not hold the lock
touches nothing in Consul and says so loudly: every pass fails with the holder named,
/readyz is 503, `mcp-bridge status` and `doctor` show it. A holder with this bridge's own
instance id is this bridge before a restart (its session lives on until its TTL): that
session is ended and the lock taken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.consul.session import ConsulSession
from bridge.core.protocols import ConsulAPI, ConsulRejected, ConsulUnavailable

log = structlog.get_logger("bridge.agent")


class NodeIdConflict(Exception):
    """Another bridge holds this node id; this one must not touch Consul."""


def owner_key(prefix: str, node_id: str) -> str:
    return f"{prefix}/{node_id}/owner"


def describe(holder: dict[str, Any]) -> str:
    return (
        f"instance {str(holder.get('instance', '?'))[:12]} on host {holder.get('host', '?')}"
        f" (pid {holder.get('pid', '?')}, since {holder.get('since', '?')})"
    )


async def holder_of(consul: ConsulAPI) -> tuple[dict[str, Any], str] | None:
    """Who holds the node id (what they wrote, their session), if anyone."""
    key = owner_key(consul.kv_prefix, consul.node_id)
    for entry in await consul.kv_read(key):
        if entry.key == key and entry.session:
            try:
                value = json.loads(entry.value or b"{}")
            except ValueError:
                value = {}
            return (value if isinstance(value, dict) else {}), entry.session
    return None


class NodeClaim:
    def __init__(self, consul: ConsulAPI, session: ConsulSession, instance_id: str) -> None:
        self.consul = consul
        self.session = session
        self.key = owner_key(consul.kv_prefix, consul.node_id)
        self.me = {
            "instance": instance_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.conflict: str | None = None  # who holds the node id, when not this bridge
        self.held = False  # confirmed by Consul with the current session
        self.refused: str | None = None  # why Consul refused the claim (ACL), if it did
        self.unchecked = False  # the last check could not reach Consul

    async def ensure(self) -> None:
        """Before a pass touches Consul: the lock confirmed once (later checks run in
        keep()), or NodeIdConflict."""
        if not self.held and self.conflict is None and self.refused is None:
            try:
                await self.check()
            except ConsulRejected as exc:
                self._refused(exc)
        self.require()

    def _refused(self, exc: ConsulRejected) -> None:
        # A token without `session` rights (docs/operations.md): registering goes on, but a
        # second bridge on this node id would go unnoticed. Said once; keep() tries again.
        if self.refused is None:
            log.warning(
                "node_id_unclaimed",
                node_id=self.consul.node_id,
                error=str(exc),
                hint="give the token session write rights to detect duplicate node ids",
            )
        self.refused = str(exc)

    async def keep(self, on_regained: Callable[[], None]) -> None:
        """Renew the session and look at the lock every third of its TTL, for as long as
        the agent runs; `on_regained` when a conflict has ended."""
        while True:
            await asyncio.sleep(self.session.ttl / 3)
            before = self.conflict
            try:
                await self.check()
                self.refused = None
            except ConsulRejected as exc:
                self._refused(exc)
                continue
            except ConsulUnavailable as exc:
                # Passes go on meanwhile (a Consul without a leader still takes
                # registrations at its agents); the next check that gets through says
                # whether the lock outlived the outage.
                if not self.unchecked:
                    log.warning(
                        "node_id_claim_unchecked", node_id=self.consul.node_id, error=str(exc)
                    )
                self.unchecked = True
                continue
            self.unchecked = False
            if before is not None and self.conflict is None:
                on_regained()

    async def check(self) -> None:
        """Hold the lock, or learn who does (self.conflict). Logs each change once."""
        for _ in range(3):
            session = await self.session.ensure()
            holder = await holder_of(self.consul)
            if holder is not None and holder[1] == session:
                return self._settle(None, held=True)
            if holder is not None and holder[0].get("instance") == self.me["instance"]:
                await self.consul.session_destroy(holder[1])  # ours, from before a restart
                continue
            if holder is not None:
                return self._settle(describe(holder[0]))
            value = json.dumps(self.me).encode()
            lock = {
                "KV": {
                    "Verb": "lock",
                    "Key": self.key,
                    "Value": base64.b64encode(value).decode(),
                    "Session": session,
                }
            }
            if await self.consul.kv_txn([lock]):
                return self._settle(None, held=True)
        return None  # raced three times in a row: the next check decides

    def _settle(self, conflict: str | None, held: bool = False) -> None:
        if held and not self.held:
            log.info("node_id_claimed", node_id=self.consul.node_id, key=self.key)
        if conflict is not None and conflict != self.conflict:
            log.error(
                "node_id_conflict",
                node_id=self.consul.node_id,
                holder=conflict,
                hint="another bridge runs with this BRIDGE_NODE_ID: give each its own",
            )
        self.held, self.conflict = held, conflict

    def require(self) -> None:
        """Raise NodeIdConflict while another bridge holds the node id."""
        if self.conflict is not None:
            raise NodeIdConflict(
                f"BRIDGE_NODE_ID {self.consul.node_id} is held by another bridge:"
                f" {self.conflict}; this one touches nothing in Consul until it is free"
            )
