"""In-memory Docker engine, Consul agent and forwarders, behind the agent's Protocols.

They keep the state the real ones keep and nothing more, so the agent's logic runs in
milliseconds without root; tests/integration proves the real adapters. Each can be made
to fail the way the real one does (Docker away, Consul refusing a registration, a port
that cannot be bound).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from bridge.core.model import (
    MANAGED_BY,
    Container,
    ContainerEvent,
    EngineVersion,
    ForwarderCounters,
    ForwardTarget,
    KVEntry,
    Registration,
    Stdin,
    StdioReading,
    StdioTarget,
)
from bridge.core.protocols import (
    ConsulRejected,
    ConsulUnavailable,
    DockerUnavailable,
    EventQueue,
    StreamEnded,
)
from tests.builders import make_container

T = TypeVar("T")


class FakeStream:
    def __init__(self, docker: FakeDocker) -> None:
        self.docker = docker

    def close(self) -> None:
        self.docker.queue = None


class FakeDocker:
    """Containers by id; `down` makes every call fail as an absent engine does."""

    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.queue: EventQueue | None = None
        self.down: str | None = None
        self.listings: list[frozenset[str] | None] = []  # what each list() asked for
        self.inspected: list[str] = []  # the ids stdin_of() was asked for
        self.engine = EngineVersion("20.10.24", "1.41")
        self._ids = itertools.count(1)

    # ---- the DockerAPI ----

    async def list(self, ids: Iterable[str] | None = None) -> list[Container]:
        if self.down:
            raise DockerUnavailable(self.down)
        wanted = None if ids is None else frozenset(ids)
        self.listings.append(wanted)
        # As a listing row: without the stdin settings, which only an inspect gives.
        return [
            dataclasses.replace(c, stdin=None)
            for cid, c in self.containers.items()
            if wanted is None or cid in wanted
        ]

    async def stdin_of(self, ids: Iterable[str]) -> dict[str, Stdin]:
        if self.down:
            raise DockerUnavailable(self.down)
        found = {}
        for cid in ids:
            self.inspected.append(cid)
            c = self.containers.get(cid)
            if c is not None:
                found[cid] = c.stdin or Stdin(open=False, tty=False, once=False)
        return found

    async def events(self, queue: EventQueue) -> FakeStream:
        if self.down:
            raise DockerUnavailable(self.down)
        self.queue = queue
        return FakeStream(self)

    async def version(self) -> EngineVersion:
        if self.down:
            raise DockerUnavailable(self.down)
        return self.engine

    async def close(self) -> None:
        pass

    # ---- what a user does; each returns the event Docker would send ----

    def _event(self, action: str, c: Container, old_name: str | None = None) -> ContainerEvent:
        event = ContainerEvent(c.id, action, c.name, old_name)
        if self.queue is not None:
            self.queue.put_nowait(event)
        return event

    def run(self, name: str, labels: Mapping[str, str] | None = None, **kw: Any) -> ContainerEvent:
        c = make_container(name, labels, cid=f"{next(self._ids):064x}", **kw)
        self.containers[c.id] = c
        return self._event("start", c)

    def by_name(self, name: str) -> Container:
        return next(c for c in self.containers.values() if c.name == name)

    def stop(self, name: str) -> ContainerEvent:
        c = dataclasses.replace(self.by_name(name), state="exited")
        self.containers[c.id] = c
        return self._event("die", c)

    def start(self, name: str) -> ContainerEvent:
        c = dataclasses.replace(self.by_name(name), state="running")
        self.containers[c.id] = c
        return self._event("start", c)

    def remove(self, name: str) -> ContainerEvent:
        c = self.by_name(name)
        del self.containers[c.id]
        return self._event("destroy", c)

    def rename(self, old: str, new: str) -> ContainerEvent:
        c = dataclasses.replace(self.by_name(old), name=new)
        self.containers[c.id] = c
        return self._event("rename", c, old_name=old)

    def drop_stream(self, reason: str = "engine restarted") -> None:
        if self.queue is not None:
            self.queue.put_nowait(StreamEnded(reason))


class FakeConsul:
    """One Consul agent's services and TTL checks; other bridges' services live here too."""

    def __init__(self, node_id: str, url: str = "http://consul.test:8500") -> None:
        self.node_id = node_id
        self.url = url
        self.kv_prefix = "mcp-bridge"
        self.kv: dict[str, bytes] = {}
        self.index: dict[str, int] = {}
        self.locks: dict[str, str] = {}
        self.sessions: set[str] = set()
        self.refuse_sessions = False  # a token without session rights
        self.session_attempts = 0
        self.clock = [0]
        self.services: dict[str, Registration] = {}
        self.ttl: dict[str, tuple[str, str]] = {}
        self.down = False
        self.refuse: dict[str, int] = {}  # service id -> how many registrations to refuse
        self.writes: list[tuple[str, str]] = []  # ("register" | "deregister", service id)
        self.kv_writes: list[tuple[str, str]] = []  # (verb, key) of each applied txn op

    def _check_up(self) -> None:
        if self.down:
            raise ConsulUnavailable(f"{self.url}: connection refused")

    def is_ours(self, reg: Registration) -> bool:
        meta = reg.meta
        return meta.get("managed_by") == MANAGED_BY and meta.get("bridge_node") == self.node_id

    async def leader(self) -> str:
        self._check_up()
        return "127.0.0.1:8300"

    async def own_services(self) -> dict[str, Registration]:
        self._check_up()
        return {sid: r for sid, r in self.services.items() if self.is_ours(r)}

    async def checks(self) -> dict[str, Mapping[str, Any]]:
        self._check_up()
        return {
            cid: {"ServiceID": cid.rsplit(":", 1)[0], "Status": status, "Output": output}
            for cid, (status, output) in self.ttl.items()
        }

    async def register(self, reg: Registration) -> None:
        self._check_up()
        if not self.is_ours(reg):
            raise ValueError(f"refusing to register {reg.service_id} without our meta")
        if self.refuse.get(reg.service_id, 0) > 0:
            self.refuse[reg.service_id] -= 1
            raise ConsulUnavailable(f"register {reg.service_id}: 500 Internal Server Error")
        self.writes.append(("register", reg.service_id))
        self.services[reg.service_id] = reg

    async def deregister(self, service_id: str) -> None:
        self._check_up()
        if not service_id.startswith(f"{self.node_id}:"):
            raise ValueError(f"refusing to deregister {service_id}: not ours")
        self.writes.append(("deregister", service_id))
        self.services.pop(service_id, None)

    async def update_ttl(self, check_id: str, status: str, output: str) -> None:
        self._check_up()
        if not any(check_id.startswith(sid + ":") for sid in self.services):
            raise ConsulRejected(f"check {check_id}: Unknown check")
        self.ttl[check_id] = (status, output)

    def share_kv(self, other: FakeConsul) -> None:
        """One cluster: this agent sees the other's KV and sessions."""
        self.kv, self.index, self.locks = other.kv, other.index, other.locks
        self.sessions, self.clock = other.sessions, other.clock

    async def kv_put(self, key: str, value: bytes) -> None:
        self._check_up()
        assert key.startswith(f"{self.kv_prefix}/{self.node_id}/"), key
        self.kv[key] = value

    async def kv_delete(self, key: str, *, recurse: bool = False) -> None:
        self._check_up()
        assert key.startswith(f"{self.kv_prefix}/{self.node_id}/"), key
        for k in [k for k in self.kv if k == key or (recurse and k.startswith(key))]:
            del self.kv[k]

    async def kv_keys(self, prefix: str) -> list[str]:
        self._check_up()
        return sorted(k for k in self.kv if k.startswith(prefix))

    # KV with indexes and sessions, as /v1/kv and /v1/txn keep them (cluster port scope).
    # Several FakeConsul (hosts) share one `store` and `sessions` to be one cluster.

    async def kv_read(self, prefix: str) -> list[KVEntry]:
        self._check_up()
        return [
            KVEntry(k, v, self.index.get(k, 0), self.locks.get(k))
            for k, v in sorted(self.kv.items())
            if k.startswith(prefix)
        ]

    async def kv_txn(self, ops: Sequence[Mapping[str, Any]]) -> bool:
        self._check_up()
        for op in ops:  # all checks first: a transaction applies whole or not at all
            kv = op["KV"]
            key, verb = kv["Key"], kv["Verb"]
            if verb in ("cas", "delete-cas") and self.index.get(key, 0) != kv["Index"]:
                return False
            if verb == "lock" and self.locks.get(key) not in (None, kv["Session"]):
                return False
            if verb == "lock" and kv["Session"] not in self.sessions:
                return False
        for op in ops:
            kv = op["KV"]
            key, verb = kv["Key"], kv["Verb"]
            self.kv_writes.append((verb, key))
            if verb in ("cas", "lock", "set"):
                self.kv[key] = base64.b64decode(kv.get("Value") or "")
                self.index[key] = self._tick()
                if verb == "lock":
                    self.locks[key] = kv["Session"]
            elif verb in ("delete", "delete-cas"):
                self.kv.pop(key, None)
                self.index.pop(key, None)
                self.locks.pop(key, None)
            elif verb == "delete-tree":
                for k in [k for k in self.kv if k.startswith(key)]:
                    self.kv.pop(k)
                    self.index.pop(k, None)
                    self.locks.pop(k, None)
        return True

    def _tick(self) -> int:
        self.clock[0] += 1
        return self.clock[0]

    async def session_create(self, name: str, ttl: int) -> str:
        self._check_up()
        self.session_attempts += 1
        if self.refuse_sessions:
            raise ConsulRejected("session create: Consul refused it (Permission denied)")
        sid = f"session-{self._tick()}"
        self.sessions.add(sid)
        return sid

    async def session_renew(self, session: str) -> bool:
        self._check_up()
        return session in self.sessions

    async def session_destroy(self, session: str) -> None:
        """As when Consul invalidates a dead node's session: its locked keys go."""
        self.sessions.discard(session)
        for key in [k for k, s in self.locks.items() if s == session]:
            self.kv.pop(key, None)
            self.index.pop(key, None)
            self.locks.pop(key)

    async def close(self) -> None:
        pass


class _FakeListeners(Generic[T]):
    """Listeners by service id, as the forwarders and the stdio set keep them; a port in
    `taken` cannot be bound."""

    def __init__(self) -> None:
        self.open: dict[str, T] = {}
        self.taken: set[int] = set()
        self.scopes: list[frozenset[str] | None] = []  # the scope of each sync

    async def sync(
        self, desired: Mapping[str, T], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        self.scopes.append(None if scope is None else frozenset(scope))
        considered = list(self.open) if scope is None else [s for s in scope if s in self.open]
        for sid in considered:
            if sid not in desired:
                del self.open[sid]
        errors = {}
        for sid, target in desired.items():
            port = target.listen_port  # type: ignore[attr-defined]
            if port in self.taken:
                errors[sid] = f"cannot listen on 0.0.0.0:{port}: address in use"
                self.open.pop(sid, None)
            else:
                self.open[sid] = target
        return errors

    async def close(self) -> None:
        self.open.clear()


class FakeStdio(_FakeListeners[StdioTarget]):
    """Served stdio servers. Nothing is attached, so their checks say so (the real set is
    proven in the stdio suites)."""

    def __init__(self) -> None:
        super().__init__()
        self.served: dict[str, Any] = {}

    def readings(self) -> dict[str, StdioReading]:
        return {}


class FakeForwarders(_FakeListeners[ForwardTarget]):
    def counters(self) -> dict[str, ForwarderCounters]:
        return {sid: ForwarderCounters() for sid in self.open}


async def settle(step: Any, wake: asyncio.Event, limit: int = 20) -> int:
    """Run passes while work is pending; returns how many ran."""
    ran = 0
    while wake.is_set() and ran < limit:
        await step()
        ran += 1
    return ran
