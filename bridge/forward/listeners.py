"""Makes proxy-mode ports real: one listener per service on its pool port, opened before
the service is registered and closed when it is withdrawn; each accepted connection is
relayed to the container by relay.Link.

The agent raises its soft descriptor limit to the hard limit when it starts forwarding:
each connection costs six descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from collections.abc import Callable, Collection, Mapping

import structlog

from bridge.core.model import ForwarderCounters, ForwardTarget, container_of
from bridge.core.net import family
from bridge.forward.relay import Link, close_spare_pipes, reset_close

log = structlog.get_logger("bridge.forwarder")

ACCEPT_BATCH = 64
ACCEPT_RETRY_DELAY = 1.0  # after EMFILE, as asyncio's own servers do
REFUSAL_LOG_INTERVAL = 10.0  # seconds: at most one connection_refused per service and reason


class RefusalLog:
    """`connection_refused` events, at most one per REFUSAL_LOG_INTERVAL per service and
    reason, so a port scan or a client retrying in a loop cannot flood the log: the first
    refusal is logged at once, the next ones within the interval are only counted, and the
    next event says how many were not logged (`suppressed`). The metrics count every one."""

    def __init__(self, service_id: str, port: int, clock: Callable[[], float] = time.monotonic):
        self.service_id, self.port, self.clock = service_id, port, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, reason: str, source: str, limit: int) -> None:
        now = self.clock()
        last = self._last.get(reason)
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        log.warning(
            "connection_refused",
            container=container_of(self.service_id),
            service_id=self.service_id,
            port=self.port,
            source=source,
            reason="not in the allow list" if reason == "address" else f"limit of {limit} reached",
            suppressed=self._suppressed.pop(reason, 0),
        )


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class Forwarder:
    def __init__(self, service_id: str, listen_address: str, target: ForwardTarget) -> None:
        self.service_id = service_id
        self.listen_address = listen_address
        self.target = target
        self.counters = ForwarderCounters()
        self._refusals = RefusalLog(service_id, target.listen_port)
        self.links: set[Link] = set()
        self._listener: socket.socket | None = None
        self._retry: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        listener = socket.create_server(
            (self.listen_address, self.target.listen_port),
            family=family(self.listen_address),
            backlog=1024,
        )
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._on_accept)

    def _on_accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPT_BATCH):
            try:
                client, addr = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                # Out of descriptors: the listener would stay readable and spin the loop.
                log.error(
                    "forwarder_accept_paused",
                    service_id=self.service_id,
                    port=self.target.listen_port,
                    error=str(exc),
                )
                loop.remove_reader(listener.fileno())
                self._retry = loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting)
                return
            refused = self.target.access.refuse(addr[0], self.counters.active)
            if refused is not None:
                # At once, before anything reaches the container; a reset, so the client
                # is not left waiting.
                reset_close(client)
                self._refused(refused, addr[0])
                continue
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(self, client)
            self.links.add(link)
            self.counters.active += 1
            self.counters.total += 1
            link.start()

    def _refused(self, reason: str, source: str) -> None:
        if reason == "address":
            self.counters.refused_address += 1
        else:
            self.counters.refused_limit += 1
        self._refusals.note(reason, source, self.target.access.max_connections)

    def _resume_accepting(self) -> None:
        self._retry = None
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._on_accept)

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for link in list(self.links):
            link.abort()


class ForwarderSet:
    """The set of forwarders, kept equal to the proxy services the agent wants."""

    def __init__(self, listen_address: str) -> None:
        self.listen_address = listen_address
        self.forwarders: dict[str, Forwarder] = {}
        raise_fd_limit()

    async def sync(
        self, desired: Mapping[str, ForwardTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        """Open, retarget and close listeners; returns service id -> error for failures.
        With a scope, only services in it are looked at: `desired` is complete for those."""
        errors: dict[str, str] = {}
        considered = self.forwarders if scope is None else scope
        for sid in [s for s in considered if s in self.forwarders and s not in desired]:
            await self._close(sid, "withdrawn")
        for sid, target in desired.items():
            current = self.forwarders.get(sid)
            if current is not None and current.target == target:
                continue
            if current is not None and current.target.listen_port == target.listen_port:
                # The container moved (restart, new address): new connections go there;
                # connections already open finish where they are.
                current.target = target
                log.info(
                    "forwarder_retargeted",
                    container=container_of(sid),
                    service_id=sid,
                    port=target.listen_port,
                    target=f"{target.address}:{target.port}",
                )
                continue
            if current is not None:
                await self._close(sid, "port changed")
            forwarder = Forwarder(sid, self.listen_address, target)
            try:
                await forwarder.start()
            except OSError as exc:
                errors[sid] = f"cannot listen on {self.listen_address}:{target.listen_port}: {exc}"
                log.error(
                    "forwarder_failed",
                    container=container_of(sid),
                    service_id=sid,
                    port=target.listen_port,
                    error=str(exc),
                )
                continue
            self.forwarders[sid] = forwarder
            log.info(
                "forwarder_opened",
                container=container_of(sid),
                service_id=sid,
                port=target.listen_port,
                target=f"{target.address}:{target.port}",
            )
        return errors

    async def _close(self, sid: str, why: str) -> None:
        forwarder = self.forwarders.pop(sid)
        await forwarder.close()
        log.info(
            "forwarder_closed",
            container=container_of(sid),
            service_id=sid,
            port=forwarder.target.listen_port,
            reason=why,
        )

    def counters(self) -> dict[str, ForwarderCounters]:
        return {sid: f.counters for sid, f in self.forwarders.items()}

    async def close(self) -> None:
        for sid in list(self.forwarders):
            await self._close(sid, "agent stopping")
        close_spare_pipes()
