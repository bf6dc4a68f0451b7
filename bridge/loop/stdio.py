"""The stdio servers' parts put together from the settings: the Docker attach and inspect
the served set needs (mcp/ does not import docker/), the endpoint's rules, TLS.

The stdio bridge itself (bridge/mcp/stdio/, the attach) is loaded with the first stdio
container (LazyStdio): an agent that serves none does not carry its code."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Protocol

import structlog

from bridge.core.config import Settings
from bridge.core.model import StdioReading, StdioTarget
from bridge.core.protocols import DockerUnavailable, StdioSetAPI
from bridge.docker.engine import DockerEngine
from bridge.mcp.probe import ProbeResult
from bridge.mcp.stdio.http import ServeRules
from bridge.pool.processes import ProcessStore
from bridge.pool.store import StoreError

if TYPE_CHECKING:
    from bridge.mcp.stdio.handshake import Handshake
    from bridge.mcp.stdio.served import Served, StdioSet

log = structlog.get_logger("bridge.stdio")


class StdioServing(StdioSetAPI, Protocol):
    """The served set as the agent sees it: the pass's sync, and the servers to check."""

    @property
    def served(self) -> Mapping[str, Served]: ...


async def probe(stdio: StdioServing, sid: str, budget: float, want_tools: bool) -> ProbeResult:
    """The `mcp` check of one served stdio service (mcp/stdio/check.py)."""
    from bridge.mcp.stdio.check import probe_served

    return await probe_served(
        stdio.served.get(sid), budget, want_tools=want_tools, find=lambda: stdio.served.get(sid)
    )


SENT = '{"sent": true}'  # the row of a process an `initialize` went to, its answer not kept


class KeptHandshakes:
    """The handshake of each process served, by (container id, StartedAt): in memory for
    this run, and in the bridge's store (pool/processes.py) once the agent has opened it,
    so that neither a re-attach (the attach stream broke, the engine restarted with
    live-restore) nor a restarted bridge sends a live process a second `initialize`.
    Before an `initialize` goes out, the process is marked as sent to (SENT)."""

    def __init__(self) -> None:
        # container id -> (StartedAt, its handshake; None: sent, the answer not kept)
        self._kept: dict[str, tuple[str, Handshake | None]] = {}
        self.store: ProcessStore | None = None

    async def _read(self, container_id: str, started_at: str) -> tuple[bool, Handshake | None]:
        """(known at all, the handshake)."""
        kept = self._kept.get(container_id)
        if kept is not None and kept[0] == started_at:
            return True, kept[1]
        if self.store is None:
            return False, None
        try:
            text = await self.store.get(container_id, started_at)
        except StoreError as exc:
            # Not "none kept": that would send a live process a second initialize.
            log.warning("stdio_handshake_unread", container_id=container_id, error=str(exc))
            from bridge.mcp.stdio.served import KeptUnreadable

            raise KeptUnreadable(str(exc)) from exc
        if text is None:
            return False, None
        shook = _decode(text)
        self._kept[container_id] = (started_at, shook)
        return True, shook

    async def get(self, container_id: str, started_at: str) -> Handshake | None:
        return (await self._read(container_id, started_at))[1]

    async def sent(self, container_id: str, started_at: str) -> bool:
        known, shook = await self._read(container_id, started_at)
        return known and shook is None

    async def mark_sent(self, container_id: str, started_at: str) -> None:
        await self._keep(container_id, started_at, None, SENT)

    async def put(self, container_id: str, started_at: str, shook: Handshake) -> None:
        text = json.dumps({"era": shook.era, "version": shook.version, "result": shook.result})
        await self._keep(container_id, started_at, shook, text)

    async def _keep(
        self, container_id: str, started_at: str, shook: Handshake | None, text: str
    ) -> None:
        self._kept[container_id] = (started_at, shook)
        if self.store is None:
            return
        try:
            await self.store.put(container_id, started_at, text)
        except StoreError as exc:  # served all the same; only a restart would miss it
            log.warning("stdio_handshake_unsaved", container_id=container_id, error=str(exc))

    async def forget(self, container_id: str, started_at: str) -> None:
        kept = self._kept.get(container_id)
        if kept is not None and kept[0] == started_at:
            del self._kept[container_id]
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.forget(container_id, started_at)

    async def keep_only(self, container_ids: set[str]) -> None:
        """After a full listing: the rows of containers that no longer exist go (a
        container removed while its service was withdrawn never saw its process end)."""
        for cid in [c for c in self._kept if c not in container_ids]:
            del self._kept[cid]
        if self.store is not None:
            with contextlib.suppress(StoreError):
                await self.store.keep_only(container_ids)


def _decode(text: str) -> Handshake | None:
    """A kept row as a Handshake; None for SENT, or for anything this module did not
    write (then the process is taken as sent to: no second `initialize` unasked)."""
    from bridge.mcp.stdio.handshake import Handshake

    try:
        data = json.loads(text)
        era = data["era"]
        if era not in ("modern", "handshake"):
            return None
        return Handshake(era, str(data["version"]), dict(data["result"]))
    except (ValueError, KeyError, TypeError):
        return None


def serve_rules(settings: Settings) -> ServeRules:
    token = None
    if settings.serve_token_file is not None:
        token = settings.serve_token_file.read_text().strip() or None
        if token is None:
            raise ValueError(f"BRIDGE_SERVE_TOKEN_FILE {settings.serve_token_file} is empty")
    return ServeRules(
        max_message=int(settings.stdio_max_message),
        max_sessions=settings.stdio_max_sessions,
        session_idle=settings.stdio_session_idle,
        allowed_origins=frozenset(settings.allowed_origins),
        token=token,
    )


def serve_tls(settings: Settings) -> ssl.SSLContext | None:
    if settings.serve_tls_cert is None or settings.serve_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.serve_tls_cert, settings.serve_tls_key)
    return context


class LazyStdio:
    """The served set, built when a pass first wants a stdio service. Until then there is
    nothing served, so nothing to withdraw, and no reading."""

    def __init__(self, build: Callable[[], StdioSet]) -> None:
        self._build = build
        self._set: StdioSet | None = None
        self._failed: str | None = None  # why the last build failed, said once

    @property
    def served(self) -> Mapping[str, Served]:
        return {} if self._set is None else self._set.served

    async def sync(
        self, desired: Mapping[str, StdioTarget], scope: Collection[str] | None = None
    ) -> dict[str, str]:
        if self._set is None:
            if not desired:
                return {}
            try:
                self._set = self._build()
            except Exception as exc:  # a broken install: hold back the stdio services only
                why = f"stdio bridge unavailable: {type(exc).__name__}: {exc}"
                if why != self._failed:
                    log.error("stdio_unavailable", error=why, services=sorted(desired))
                self._failed = why
                return {sid: why for sid in desired}
        return await self._set.sync(desired, scope)

    def readings(self) -> dict[str, StdioReading]:
        return {} if self._set is None else self._set.readings()

    async def close(self) -> None:
        if self._set is not None:
            await self._set.close()


def stdio_set(settings: Settings, engine: DockerEngine, kept: KeptHandshakes) -> LazyStdio:
    # The rules and TLS are read now: a bad token or key file stops the agent at start,
    # not at its first stdio container.
    rules, tls = serve_rules(settings), serve_tls(settings)
    env = dict(os.environ)
    if settings.docker_host is not None:
        env["DOCKER_HOST"] = settings.docker_host

    def build() -> StdioSet:
        from bridge.docker.attach import AttachFailed, attach
        from bridge.docker.endpoint import Endpoint, EndpointError, endpoint_from_env
        from bridge.mcp.stdio.process import Stream
        from bridge.mcp.stdio.served import AttachRefused, StdioSet, StdioSettings

        found: list[Endpoint] = []

        async def attach_to(container_id: str) -> Stream:
            # Read when first needed: a DOCKER_HOST the attach cannot use (ssh://) or TLS
            # files not readable yet must not stop an agent that serves no stdio server.
            try:
                if not found:
                    found.append(endpoint_from_env(env))
                return await attach(found[0], container_id)
            except EndpointError as exc:
                raise AttachRefused(exc.reason) from exc
            except AttachFailed as exc:
                raise AttachRefused(exc.reason, gone=exc.gone) from exc

        async def identify(container_id: str) -> str:
            try:
                started = await engine.started_at(container_id)
            except DockerUnavailable as exc:
                raise AttachRefused(str(exc)) from exc
            if not started:
                raise AttachRefused("the container is not running", gone=True)
            return started

        parts = StdioSettings(settings.listen_address, rules, settings.stdio_request_timeout, tls)
        return StdioSet(parts, attach_to, identify, kept)

    return LazyStdio(build)
