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
from collections.abc import Collection, Mapping

import structlog

from bridge.model import ForwarderCounters, ForwardTarget, container_of
from bridge.net import family
from bridge.relay import Link

log = structlog.get_logger("bridge.forwarder")

ACCEPT_BATCH = 64
ACCEPT_RETRY_DELAY = 1.0  # after EMFILE, as asyncio's own servers do


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
        self.links: set[Link] = set()
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
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
                client, _addr = listener.accept()
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
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = Link(self, client)
            self.links.add(link)
            self.counters.active += 1
            self.counters.total += 1
            task = loop.create_task(link.run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
        for task in list(self._tasks):
            task.cancel()
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
