"""What the next pass must look at: pending work, keyed by container id.

An event only says "look at container X again": each relevant event adds its container id,
with every name that id has been known by (from the event itself and from the last
listing), and wakes the loop. A burst of events for one container collapses into one look,
and events that arrive during a pass are taken by the next. A pass that fails gives its
work back, and the next pass is a full one: nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from bridge.core.model import Container, ContainerEvent

log = structlog.get_logger("bridge.agent")

# Container events that can change what we register; exec_* (HEALTHCHECKs run one every
# interval), attach, resize and the like cannot, and would only cause idle passes.
# "create" is not among them: nothing is registered before a container runs.
RELEVANT_ACTIONS = frozenset(
    {
        "start",
        "restart",
        "stop",
        "die",
        "kill",
        "oom",
        "destroy",
        "remove",  # Podman's destroy
        "rename",
        "pause",
        "unpause",
        "update",
    }
)
# A running container joining or leaving a network can change its address. Docker also
# connects a container's networks while starting it, just before the start event: those
# are left to the start event, or each start would cost two passes.
NETWORK_ACTIONS = frozenset({"network_connect", "network_disconnect"})
# The engine can send a network event a few milliseconds before the container's new
# network settings reach the view its listing reads from (seen with Engine 20.10 under
# load): a network event therefore gets a second look a moment later.
NETWORK_SECOND_LOOK = 1.0
# Podman's `health_status` (no ": healthy" after it) can come before the result is stored
# (4.3 sends it first, as its stale HealthStatus field shows): it gets a second look too.
SECOND_LOOK_ACTIONS = NETWORK_ACTIONS | {"health_status"}
# A burst is over when no new container turned up for BURST_QUIET; never wait longer than
# BURST_SETTLE_MAX before its pass starts.
BURST_QUIET = 0.003
BURST_SETTLE_MAX = 0.05


@dataclass(slots=True)
class Pending:
    """The work of one pass: everything (full), or these containers."""

    full: bool = False
    containers: dict[str, set[str]] = field(default_factory=dict)  # id -> names known by
    # Container name -> when Docker said something happened to it (event -> registered).
    event_times: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.full or bool(self.containers)

    def add(self, container_id: str, names: Iterable[str | None] = ()) -> None:
        self.containers.setdefault(container_id, set()).update(n for n in names if n)

    def merge(self, other: Pending) -> None:
        self.full = self.full or other.full
        for cid, names in other.containers.items():
            self.add(cid, names)
        for name, at in other.event_times.items():  # keep the first time
            self.event_times[name] = min(at, self.event_times.get(name, at))


class Triggers:
    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._pending = Pending(full=True)  # the first pass lists everything
        self._names: dict[str, str] = {}  # container id -> name, as last listed
        self._running: set[str] = set()  # ids of running containers, as last listed
        # The one pending retry after a failed pass: a new failure replaces it, so passes
        # that events wake during an outage never pile up timers that defeat the backoff.
        self.retry: asyncio.TimerHandle | None = None
        self._soon = 0  # passes in a row that left a container waiting on Consul

    def request_full(self) -> None:
        self._pending.full = True
        self.wake.set()

    def look_at(self, container_id: str) -> None:
        self._pending.add(container_id)
        self.wake.set()

    def on_event(self, event: ContainerEvent) -> bool:
        """Take the event if it can change what we register; False when ignored."""
        taken = self._relevant(event)
        log.debug(
            "docker_event",
            container=event.name,
            container_id=event.container_id[:12],
            action=event.action,
            taken=taken,
        )
        if not taken:
            return False
        if event.action in SECOND_LOOK_ACTIONS:
            asyncio.get_running_loop().call_later(
                NETWORK_SECOND_LOOK, self.look_at, event.container_id
            )
        name = event.name.lstrip("/") if event.name else None
        self._pending.add(event.container_id, (name, event.old_name))
        if name:
            self._pending.event_times.setdefault(name, event.time or time.time())
        self.wake.set()
        return True

    def _relevant(self, event: ContainerEvent) -> bool:
        if event.action in NETWORK_ACTIONS:
            return event.container_id in self._running
        return event.action in RELEVANT_ACTIONS or event.action.startswith("health_status")

    async def settle(self) -> None:
        """When several containers are pending at once, a burst is under way (a compose
        stack starting, an engine coming back): wait until its events stop arriving, for
        at most BURST_SETTLE_MAX, so that one pass takes it whole instead of a first pass
        over its head and a second over the rest, each with its own listing and commit.
        A single container's event does not wait."""
        pending = self._pending
        if pending.full or len(pending.containers) < 2:
            return
        deadline = time.monotonic() + BURST_SETTLE_MAX
        seen = len(pending.containers)
        while time.monotonic() < deadline:
            await asyncio.sleep(BURST_QUIET)
            now = len(self._pending.containers)
            if now == seen:
                return
            seen = now

    def take(self) -> Pending:
        """The pending work, with the last listed name of each container; starts afresh."""
        self.wake.clear()
        pending, self._pending = self._pending, Pending()
        for cid, names in pending.containers.items():
            if cid in self._names:
                names.add(self._names[cid])
        return pending

    def give_back(self, pending: Pending, retry_in: float) -> None:
        """A failed pass's work: kept, and the next pass, in `retry_in` seconds at the
        latest, lists everything."""
        self._pending.merge(pending)
        self._pending.full = True
        self.cancel_retry()
        self.retry = asyncio.get_running_loop().call_later(retry_in, self.wake.set)

    def again_soon(self, needed: bool, most: float) -> None:
        """After a pass that left containers waiting on what clears by itself: a full
        pass again soon (0.5 s, doubling, up to `most`), not only at the next resync, so
        they get their ports within seconds of Consul's return, with no event to say so."""
        if not needed:
            self._soon = 0
            return
        loop = asyncio.get_running_loop()
        if self.retry is not None and self.retry.when() > loop.time():
            return  # one is due already: passes that events woke meanwhile back off nothing
        self._soon += 1
        delay = min(most, 0.5 * 2 ** min(self._soon - 1, 8))
        self.retry = loop.call_later(delay, self.request_full)

    def cancel_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    def seen(self, listed: Iterable[Container], pending: Pending) -> None:
        """Remember names and running state from a pass's listing."""
        listed = list(listed)
        if pending.full:
            self._names = {c.id: c.name for c in listed}
            self._running = {c.id for c in listed if c.running}
            return
        for cid in pending.containers:
            self._names.pop(cid, None)
            self._running.discard(cid)
        for c in listed:
            self._names[c.id] = c.name
            if c.running:
                self._running.add(c.id)
