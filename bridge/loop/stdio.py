"""The stdio servers' parts put together from the settings: the Docker attach and inspect
the served set needs (mcp/ does not import docker/), the endpoint's rules, TLS."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Protocol

from bridge.core.config import Settings
from bridge.core.protocols import DockerUnavailable, StdioSetAPI
from bridge.docker.attach import AttachFailed, attach, endpoint_from_env
from bridge.docker.engine import DockerEngine
from bridge.mcp.probe import ProbeResult
from bridge.mcp.stdio.check import probe_served
from bridge.mcp.stdio.handshake import Handshake
from bridge.mcp.stdio.http import ServeRules
from bridge.mcp.stdio.process import Stream
from bridge.mcp.stdio.served import AttachRefused, Served, StdioSet, StdioSettings


class StdioServing(StdioSetAPI, Protocol):
    """The served set as the agent sees it: the pass's sync, and the servers to check."""

    @property
    def served(self) -> Mapping[str, Served]: ...


async def probe(stdio: StdioServing, sid: str, budget: float, want_tools: bool) -> ProbeResult:
    """The `mcp` check of one served stdio service (mcp/stdio/check.py)."""
    return await probe_served(stdio.served.get(sid), budget, want_tools=want_tools)


class KeptHandshakes:
    """The handshake of each process attached to in this run, by (container id,
    StartedAt): a re-attach to the same live process (the attach stream broke, the engine
    restarted with live-restore) is served from it, never given a second initialize."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], Handshake] = {}

    def get(self, container_id: str, started_at: str) -> Handshake | None:
        return self._kept.get((container_id, started_at))

    def put(self, container_id: str, started_at: str, shook: Handshake) -> None:
        # One process per container at a time: its earlier ones are gone for good.
        for key in [k for k in self._kept if k[0] == container_id]:
            del self._kept[key]
        self._kept[(container_id, started_at)] = shook


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


def stdio_set(settings: Settings, engine: DockerEngine) -> StdioSet:
    env = dict(os.environ)
    if settings.docker_host is not None:
        env["DOCKER_HOST"] = settings.docker_host
    where = endpoint_from_env(env)

    async def attach_to(container_id: str) -> Stream:
        try:
            return await attach(where, container_id)
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

    parts = StdioSettings(
        settings.listen_address, serve_rules(settings), settings.stdio_request_timeout,
        serve_tls(settings),
    )  # fmt: skip
    return StdioSet(parts, attach_to, identify, KeptHandshakes())
