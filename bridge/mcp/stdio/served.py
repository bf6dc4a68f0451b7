"""The stdio servers the bridge serves, kept equal to what the pass wants (as the
forwarders are for proxy ports).

Per service: an HTTP listener on its pool port at BRIDGE_LISTEN_ADDRESS, opened before the
service is registered and closed when it is withdrawn, serving the StdioEndpoint; and one
task that attaches to the container's process, does the handshake once per process (or
takes the one kept for that very process from before a bridge restart), serves it until its
output ends, then attaches again. An attach to a stopped container waits until it runs, so
`docker restart` needs nothing from the pass; a removed container ends the task.

The Docker side comes in as two functions (the mcp package does not import the docker
one): `attach` (container id -> the attach stream) and `identify` (container id -> the
running process's StartedAt, which with the id names one process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web

from bridge.core.model import StdioReading, StdioTarget, container_of
from bridge.mcp.stdio.endpoint import StdioEndpoint
from bridge.mcp.stdio.handshake import Handshake, handshake, own_channel
from bridge.mcp.stdio.http import ServeRules, rpc_error
from bridge.mcp.stdio.process import Channel, Counters, StdioServer, Stream

log = structlog.get_logger("bridge.stdio")

HANDSHAKE_WAIT = 60.0  # seconds for the server's first answers (npx may still be starting)
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # backoff between attaches the engine refused
NOT_RUNNING_WAIT = 1.0  # at most, between looks at a stopped container
SERVED_A_WHILE = 1.0  # seconds a process must have been served for the next attach at once
CLOSE_WAIT = 1.0  # seconds a closing listener lets requests under way finish
FORBIDDEN = -32003  # JSON-RPC error of a refused source address or a full connection limit


class AttachRefused(Exception):
    """What the `attach` function raises; `gone` when the container is not there."""

    def __init__(self, reason: str, *, gone: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.gone = reason, gone


Attach = Callable[[str], Awaitable[Stream]]
Identify = Callable[[str], Awaitable[str]]


class Handshakes(Protocol):
    """Where the handshake of each live process is kept across bridge restarts."""

    async def get(self, container_id: str, started_at: str) -> Handshake | None:
        """Raises KeptUnreadable when the store cannot say."""
        ...

    async def put(self, container_id: str, started_at: str, shook: Handshake) -> None: ...

    async def sent(self, container_id: str, started_at: str) -> bool:
        """Whether an `initialize` may have reached this process without its answer kept."""
        ...

    async def mark_sent(self, container_id: str, started_at: str) -> None: ...

    async def forget(self, container_id: str, started_at: str) -> None: ...


@dataclass(frozen=True, slots=True)
class StdioSettings:
    listen_address: str
    rules: ServeRules
    request_timeout: float
    tls: ssl.SSLContext | None = None


class KeptUnreadable(Exception):
    """The kept handshakes could not be read (Handshakes.get or .sent): whether this
    process was initialized is not known, so nothing is sent to it until they can be."""


def _not_the_process(exc: Exception) -> bool:
    return isinstance(exc, KeptUnreadable | AttachRefused)


class Served:
    """One stdio service: its listener and its attach loop."""

    def __init__(
        self, sid: str, target: StdioTarget, settings: StdioSettings, parts: StdioSet
    ) -> None:
        self.sid, self.target, self.settings, self.parts = sid, target, settings, parts
        rules = settings.rules
        self.endpoint = StdioEndpoint(
            ServeRules(
                path=target.path,
                max_message=rules.max_message,
                max_sessions=rules.max_sessions,
                session_idle=rules.session_idle,
                allowed_origins=rules.allowed_origins,
                token=rules.token,
            )
        )
        self.state = "attaching"  # for status: attaching | serving | why it is not
        self.server: StdioServer | None = None
        self.own: Channel | None = None
        self.shook: Handshake | None = None
        self.serving = asyncio.Event()  # set while a process is attached and served
        self.processes = 0  # processes attached to so far
        self.active = 0  # requests and streams open now (mcp.max_connections)
        self.ended = Counters()  # the counts of the processes that ended
        self._last: StdioServer | None = None  # the process attached to now
        self._stderr: tuple[str, ...] = ()
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    def _fields(self) -> dict[str, Any]:
        return {"container": self.target.container, "service_id": self.sid}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._access], client_max_size=0)
        self.endpoint.add_routes(app)
        # handler_cancellation: a client that goes away cancels its handler, which is how
        # a 2026-07-28 client's closed stream becomes a cancellation at the server.
        # shutdown_timeout: closing a service must not hold the pass for long requests
        # (they have had their answer: the process ended, or the agent is stopping).
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=CLOSE_WAIT
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            self.settings.listen_address,
            self.target.listen_port,
            ssl_context=self.settings.tls,
            backlog=1024,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._task = asyncio.create_task(self._attach_loop(), name=f"stdio {self.sid}")

    @web.middleware
    async def _access(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """mcp.allow and mcp.max_connections, before anything is read or reaches the
        server. The limit counts requests and streams open at once."""
        access = self.target.access
        refused = access.refuse(request.remote or "", self.active)
        if refused is not None:
            self.parts.refused[self.sid] = self.parts.refused.get(self.sid, 0) + 1
            if refused == "address":
                return rpc_error(403, FORBIDDEN, "this address may not use this server")
            return rpc_error(
                503, FORBIDDEN, f"at most {access.max_connections} at once", **{"Retry-After": "1"}
            )
        self.active += 1
        try:
            return await handler(request)
        finally:
            self.active -= 1

    async def _attach_loop(self) -> None:
        """Attach, serve until the process ends, and again, until the pass closes the
        service: whatever fails is retried, never the end of serving."""
        wait = RETRY_FIRST
        while True:
            served, began = self.processes, time.monotonic()
            try:
                await self._attach_once()
                if self.processes > served and time.monotonic() - began >= SERVED_A_WHILE:
                    wait = RETRY_FIRST  # a process served, then ended: the next, at once
                    continue
                # Nothing served, or only for a moment (a stream that ends at once, a
                # handshake that fails): again, but not in a tight loop.
                pause = wait
            except AttachRefused as exc:
                self.state = f"not attached: {exc.reason}"
                log.warning("stdio_attach_failed", **self._fields(), error=exc.reason)
                # A stopped container: the pass withdraws the service soon, or it runs again.
                pause = min(wait, NOT_RUNNING_WAIT) if exc.gone else wait
            except Exception as exc:  # a bug must not end serving silently
                self.state = f"not attached: {type(exc).__name__}: {exc}"
                log.exception("stdio_attach_loop_failed", **self._fields())
                pause = wait
            await asyncio.sleep(pause)
            wait = min(wait * 2, RETRY_MAX)

    async def _attach_once(self) -> None:
        """One process: which one (StartedAt) before anything is sent, then serve it."""
        cid = self.target.container_id
        started_at = await self.parts.identify(cid)  # not running: AttachRefused(gone)
        stream = await self.parts.attach(cid)
        try:
            if await self.parts.identify(cid) != started_at:
                raise AttachRefused("the container restarted while the bridge attached")
        except BaseException:
            await stream.close()
            raise
        await self._serve(cid, started_at, stream)

    async def _serve(self, cid: str, started_at: str, stream: Stream) -> None:
        def on_skipped(line: str) -> None:  # once per process: banners are common
            log.warning("stdio_line_skipped", **self._fields(), line=line[:200])

        server = StdioServer(
            stream,
            max_message=self.settings.rules.max_message,
            request_timeout=self.settings.request_timeout,
            on_skipped=on_skipped,
        )
        self._last = server
        reading = asyncio.create_task(server.run(), name=f"stdio read {self.sid}")
        try:
            await self._shake_hands(server, cid, started_at)
        except Exception as exc:
            # Never a second initialize to this process: it is left alone until it ends.
            # (A store that cannot be read is not this process's fault: tried again.)
            if _not_the_process(exc):
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                await stream.close()
                raise
            why = str(exc) or type(exc).__name__
            self.state = f"not serving: handshake failed: {why}"
            log.warning("stdio_handshake_failed", **self._fields(), error=why)
        except BaseException:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            await stream.close()  # run() closes it, unless it was cancelled before it began
            raise
        try:
            await reading
        finally:
            reading.cancel()  # when this task is cancelled: the stream is closed with it
            await asyncio.gather(reading, return_exceptions=True)
            self.serving.clear()  # cancelled too (closed): nobody waits on a dead process
        self.server = self.own = self.shook = None
        self._add_ended(server)
        await self.endpoint.gone()
        if await self._ended(cid, started_at):
            await self.parts.handshakes.forget(cid, started_at)
        if self.state == "serving":
            self.state = f"not attached: {server.why_ended or 'the process ended'}"
        log.info("stdio_process_ended", **self._fields(), reason=server.why_ended)

    async def _shake_hands(self, server: StdioServer, cid: str, started_at: str) -> None:
        """The process's one handshake: the one kept for it, or done now and kept. Once an
        `initialize` may have been sent, it is marked as sent; a close in the middle lets
        it finish (for a moment) and be kept, so nobody sends the process another."""
        handshakes = self.parts.handshakes
        own = own_channel(server)
        shook = await handshakes.get(cid, started_at)
        how = "kept"
        if shook is None:
            again = await handshakes.sent(cid, started_at)
            how = "repeated" if again else "done"
            await handshakes.mark_sent(cid, started_at)
            doing = asyncio.ensure_future(
                asyncio.wait_for(handshake(server, own, again=again), HANDSHAKE_WAIT)
            )
            try:
                shook = await asyncio.shield(doing)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    done = await asyncio.wait_for(doing, CLOSE_WAIT)
                    await handshakes.put(cid, started_at, done)
                raise
            await handshakes.put(cid, started_at, shook)
        self.server, self.own, self.shook = server, own, shook
        self.serving.set()
        self.endpoint.serve(server, shook)
        self.processes += 1
        self.state = "serving"
        log.info(
            "stdio_attached",
            **self._fields(),
            era=shook.era,
            version=shook.version,
            server=shook.server_info.get("name"),
            handshake=how,
            started_at=started_at,
        )

    def _add_ended(self, server: StdioServer) -> None:
        self._last = None
        self._stderr = tuple(server.stderr)[-5:]  # a crashed server's last words, for status
        for name in ("requests", "answered", "failed", "stray_answers", "skipped_lines"):
            setattr(self.ended, name, getattr(self.ended, name) + getattr(server.counters, name))

    def reading(self) -> StdioReading:
        ended, last = self.ended, self._last
        now = last.counters if last is not None else Counters()
        return StdioReading(
            state=self.state,
            processes=self.processes,
            sessions=len(self.endpoint.sessions),
            in_flight=last.mux.in_flight() if last is not None else 0,
            requests=ended.requests + now.requests,
            answered=ended.answered + now.answered,
            failed=ended.failed + now.failed,
            stray_answers=ended.stray_answers + now.stray_answers,
            skipped_lines=ended.skipped_lines + now.skipped_lines,
            refused=self.parts.refused.get(self.sid, 0),
            stderr=tuple(last.stderr)[-5:] if last is not None else self._stderr,
        )

    async def _ended(self, cid: str, started_at: str) -> bool:
        """Whether the process is gone for sure, not just the attach stream (an engine
        restarted with live-restore keeps it running; an engine that does not answer says
        nothing): only then is its handshake of no more use."""
        try:
            return await self.parts.identify(cid) != started_at
        except AttachRefused as exc:
            return exc.gone

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.server = None
        self.serving.clear()
        await self.endpoint.gone()
        if self._runner is not None:
            await self._runner.cleanup()


class StdioSet:
    """The set of served stdio servers, kept equal to the stdio services the pass wants."""

    def __init__(
        self, settings: StdioSettings, attach: Attach, identify: Identify, handshakes: Handshakes
    ) -> None:
        self.settings = settings
        self.attach, self.identify, self.handshakes = attach, identify, handshakes
        self.served: dict[str, Served] = {}
        self.refused: dict[str, int] = {}  # service id -> requests refused by access rules

    async def sync(
        self, desired: Mapping[str, StdioTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        errors: dict[str, str] = {}
        considered = self.served if scope is None else scope
        for sid in [s for s in considered if s in self.served and s not in desired]:
            await self._close(sid, "withdrawn")
        for sid, target in desired.items():
            current = self.served.get(sid)
            if current is not None and current.target == target and current.running:
                continue
            if current is not None:
                await self._close(sid, "changed")
            served = Served(sid, target, self.settings, self)
            try:
                await served.start()
            except OSError as exc:
                where = f"{self.settings.listen_address}:{target.listen_port}"
                errors[sid] = f"cannot listen on {where}: {exc}"
                log.error("stdio_listen_failed", container=target.container, service_id=sid,
                          port=target.listen_port, error=str(exc))  # fmt: skip
                continue
            self.served[sid] = served
            log.info("stdio_served", container=target.container, service_id=sid,
                     port=target.listen_port, path=target.path)  # fmt: skip
        return errors

    def readings(self) -> dict[str, StdioReading]:
        return {sid: served.reading() for sid, served in self.served.items()}

    async def _close(self, sid: str, why: str) -> None:
        self.refused.pop(sid, None)
        served = self.served.pop(sid)
        await served.close()
        log.info("stdio_closed", container=container_of(sid), service_id=sid, reason=why)

    async def close(self) -> None:
        for sid in list(self.served):
            await self._close(sid, "agent stopping")
