"""The small interfaces the core sees its adapters through, and the errors they raise.

The agent and the pass speak to Docker, Consul and the forwarders only through these, so
tests run the agent's whole logic against in-memory fakes (tests/fakes.py) in
milliseconds, and the real-server suites prove the real adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from bridge.core.model import (
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


class DockerUnavailable(Exception):
    """Docker did not answer, or refused a call."""


class StreamEnded(Exception):
    """The event stream closed or failed; the agent reconnects and relists."""


class ConsulUnavailable(Exception):
    """Consul did not answer, or answered 5xx, even after a few tries."""


class ConsulRejected(Exception):
    """Consul answered 4xx: retrying the same request would not help."""


EventQueue = asyncio.Queue[ContainerEvent | StreamEnded]


class EventStream(Protocol):
    def close(self) -> None: ...


class DockerAPI(Protocol):
    async def list(self, ids: Iterable[str] | None = None) -> list[Container]:
        """All containers (None), or just these ids."""
        ...

    async def events(self, queue: EventQueue) -> EventStream:
        """Open the event stream: events, then one StreamEnded, go to `queue`."""
        ...

    async def version(self) -> EngineVersion: ...

    async def stdin_of(self, ids: Iterable[str]) -> dict[str, Stdin]:
        """How these containers were created with respect to stdin (gone ones left out)."""
        ...

    async def close(self) -> None: ...


class ConsulAPI(Protocol):
    url: str
    node_id: str
    kv_prefix: str

    async def leader(self) -> str: ...

    async def own_services(self) -> dict[str, Registration]:
        """The services this bridge registered on this node (managed_by + bridge_node)."""
        ...

    async def checks(self) -> dict[str, Mapping[str, Any]]: ...

    async def register(self, reg: Registration) -> None: ...

    async def deregister(self, service_id: str) -> None: ...

    async def update_ttl(self, check_id: str, status: str, output: str) -> None: ...

    async def kv_put(self, key: str, value: bytes) -> None:
        """Only under `<kv_prefix>/<node_id>/`."""
        ...

    async def kv_delete(self, key: str, *, recurse: bool = False) -> None: ...

    async def kv_keys(self, prefix: str) -> list[str]: ...

    async def kv_read(self, prefix: str) -> list[KVEntry]: ...

    async def kv_txn(self, ops: Sequence[Mapping[str, Any]]) -> bool:
        """Atomically; False when a check-and-set or lock failed."""
        ...

    async def session_create(self, name: str, ttl: int) -> str: ...

    async def session_renew(self, session: str) -> bool: ...

    async def session_destroy(self, session: str) -> None: ...

    async def close(self) -> None: ...


class SessionAPI(Protocol):
    """The bridge's Consul session as the locks held with it see it (consul/session.py):
    its id while it has one, and `ensure` to renew it or make it anew."""

    id: str | None

    async def ensure(self) -> str: ...


class ForwarderSetAPI(Protocol):
    async def sync(
        self, desired: Mapping[str, ForwardTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        """Open, retarget and close listeners; service id -> error for those that failed."""
        ...

    def counters(self) -> dict[str, ForwarderCounters]: ...

    async def close(self) -> None: ...


class StdioSetAPI(Protocol):
    """The stdio servers the bridge attaches to and serves (mcp/stdio/served.py)."""

    async def sync(
        self, desired: Mapping[str, StdioTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        """Serve exactly `desired` (within `scope`); service id -> error for failures."""
        ...

    def readings(self) -> dict[str, StdioReading]: ...

    async def close(self) -> None: ...
