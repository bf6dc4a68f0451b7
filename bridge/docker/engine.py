"""Docker, behind a thin adapter: one-call listings, the event stream, the reconnecting watch.

The SDK blocks, so every call runs in a worker thread; the event stream gets a thread of
its own because it lives as long as the connection. Calls do not retry: `watch` reconnects
with backoff and tells the agent, which relists after every reconnect. The SDK's errors
leave this module as DockerUnavailable.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import structlog

from bridge.core.model import Container, ContainerEvent, EngineVersion, Stdin
from bridge.core.protocols import DockerAPI, DockerUnavailable, EventQueue, EventStream, StreamEnded
from bridge.core.retry import retry_forever
from bridge.docker.parse import parse_event, parse_inspect, parse_row, parse_version

T = TypeVar("T")

log = structlog.get_logger("bridge.docker")

INSPECT_AT_MOST = 4  # ids a scoped look inspects one by one; more take one listing


class DockerEngine:
    def __init__(
        self,
        docker_host: str | None = None,
        timeout: float = 30.0,
        may_manage: Callable[[Container], bool] = lambda _: True,
    ) -> None:
        """`may_manage`: which listed containers the bridge may manage (as its labels and
        name rules say): on Podman, each running one is inspected in a full listing."""
        self._docker_host = docker_host
        self._timeout = timeout
        self._may_manage = may_manage
        self._podman: bool | None = None  # told by the engine's version
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _api(self) -> Any:
        """The low-level client, made on first use (in a worker thread).

        Made lazily because the SDK asks the engine for its API version when a client is
        made: an agent started while Docker is away must wait for it, not crash.
        """
        with self._lock:
            if self._client is None:
                # from_env honours DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, and
                # negotiates the API version (20.10 speaks 1.41; Engine 29 wants >= 1.44).
                env = dict(os.environ)
                if self._docker_host is not None:
                    env["DOCKER_HOST"] = self._docker_host
                self._client = _client_from_env(env, self._timeout)
            return self._client.api

    async def _call(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            # The next call makes a new client: it reads the TLS files and negotiates the
            # API version again, so a fixed certificate or an upgraded engine needs no restart.
            self.close()
            where = self._docker_host or "the local socket"
            raise DockerUnavailable(f"Docker at {where}: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> bool:
        return bool(await self._call(lambda: self._api().ping()))

    async def version(self) -> EngineVersion:
        """The engine's version and API version (GET /version): Docker's, or Podman's."""
        engine = parse_version(await self._call(lambda: self._api().version()))
        self._podman = engine.podman
        return engine

    async def list(self, ids: Iterable[str] | None = None) -> list[Container]:
        """All containers (None), or just these ids (a gone one is left out).

        A few ids are inspected one by one: the engine answers an inspect at once, while a
        listing filtered by id walks every container it has, which made one event's look
        grow with the engine's size (1.5 ms with 300 containers, 4 ms with 1,000). A
        burst's many ids take one filtered listing instead of as many calls."""
        filters: dict[str, Any] | None = None
        if ids is not None:
            wanted = sorted(set(ids))
            if not wanted:
                return []
            if self._podman is None:
                await self.version()
            if len(wanted) <= INSPECT_AT_MOST or self._podman:
                return await self._call(lambda: self._inspect_each(wanted))
            filters = {"id": wanted}
        podman = self._podman if self._podman is not None else (await self.version()).podman
        return await self._call(lambda: self._listed(filters, podman))

    def _listed(self, filters: dict[str, Any] | None, podman: bool) -> builtins.list[Container]:
        listed = [parse_row(r) for r in self._api().containers(all=True, filters=filters)]
        if not podman:
            return listed
        # Podman's compatible listing leaves out the health ("Up 2 seconds", where Docker
        # says "(healthy)") and the ports exposed but not published: its inspects carry
        # both, so the running containers the bridge may manage are inspected, and a full
        # pass sees what an event's look sees (their stdin settings come with them).
        wanted = [c.id for c in listed if c.running and self._may_manage(c)]
        looked = {c.id: c for c in self._inspect_each(wanted)}
        return [looked.get(c.id, c) for c in listed]

    async def stdin_of(self, ids: Iterable[str]) -> dict[str, Stdin]:
        """How these containers were created with respect to stdin (a gone one is left
        out): one inspect each, which the pass asks once per container id."""
        wanted = sorted(set(ids))
        found = await self._call(lambda: self._inspect_each(wanted)) if wanted else []
        return {c.id: c.stdin for c in found if c.stdin is not None}

    async def started_at(self, container_id: str) -> str:
        """When the container's running process started (State.StartedAt): with the id,
        the name of one process. Empty when the container is gone."""

        def read() -> str:
            try:
                state = self._api().inspect_container(container_id).get("State") or {}
            except docker.errors.NotFound:
                return ""
            return str(state.get("StartedAt") or "") if state.get("Running") else ""

        return await self._call(read)

    def _inspect_each(self, ids: Iterable[str]) -> builtins.list[Container]:
        found = []
        for cid in ids:
            try:
                found.append(parse_inspect(self._api().inspect_container(cid)))
            except docker.errors.NotFound:
                continue  # removed meanwhile: gone, as a listing would say
        return found

    async def events(self, queue: EventQueue) -> StreamHandle:
        """Open the container event stream; events (then one StreamEnded) go to `queue`."""
        stream = await self._call(
            lambda: self._api().events(decode=True, filters={"type": ["container", "network"]})
        )
        handle = StreamHandle(stream, queue, asyncio.get_running_loop())
        handle.start()
        return handle

    def close(self) -> None:
        with self._lock:
            self._podman = None  # the next client may find another engine there
            if self._client is not None:
                self._client.close()
                self._client = None


def _client_from_env(env: dict[str, str], timeout: float) -> docker.DockerClient:
    """docker.from_env, but with TLS the CA of DOCKER_CERT_PATH wins: requests lets
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace the CA a session verifies with (so the
    engine's own CA would be ignored), and the SDK asks the engine for its API version
    while it is made, before trust_env could be turned off. So: ask with a client that
    does not trust the environment, then make the client at the version it said."""
    if not env.get("DOCKER_TLS_VERIFY"):
        return docker.from_env(timeout=int(timeout), environment=env)
    cert_path = Path(env.get("DOCKER_CERT_PATH") or Path.home() / ".docker")
    missing = [f for f in ("ca.pem", "cert.pem", "key.pem") if not (cert_path / f).is_file()]
    if missing:  # the SDK's own message names neither the folder nor the file
        raise docker.errors.TLSParameterError(
            f"DOCKER_TLS_VERIFY is set and DOCKER_CERT_PATH {cert_path} has no {', '.join(missing)}"
        )
    kwargs = docker.utils.kwargs_from_env(environment=env)
    probe = docker.APIClient(version=docker.constants.MINIMUM_DOCKER_API_VERSION, **kwargs)
    probe.trust_env = False
    try:
        api_version = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    client = docker.DockerClient(version=api_version, timeout=int(timeout), **kwargs)
    client.api.trust_env = False
    return client


class StreamHandle:
    """Reads one event stream on its own thread until it ends or is closed."""

    def __init__(
        self,
        stream: Any,
        queue: EventQueue,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._stream = stream
        self._queue = queue
        self._loop = loop
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: ContainerEvent | StreamEnded) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are shutting down
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        reason = "end of stream"
        try:
            for raw in self._stream:
                event = parse_event(raw)
                if event is not None:
                    self._put(event)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not self._closed:
            self._put(StreamEnded(reason))

    def close(self) -> None:
        self._closed = True
        # Closing unblocks the reader thread; a dead stream may fail to close: no matter.
        with contextlib.suppress(Exception):
            self._stream.close()


async def watch(
    docker_api: DockerAPI,
    *,
    on_event: Callable[[ContainerEvent], object],
    on_connected: Callable[[EngineVersion], None],
    on_lost: Callable[[str], None],
) -> None:
    """Follow the event stream forever: connect (waiting out an absent Docker), pass each
    event on, and after a lost stream say so and connect again. Cancel to stop."""
    queue: EventQueue = asyncio.Queue()
    while True:
        stream: EventStream | None = None
        async for attempt in retry_forever("docker_unreachable", log=log):
            with attempt:
                version = await docker_api.version()
                stream = await docker_api.events(queue)
        assert stream is not None
        on_connected(version)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, StreamEnded):
                    on_lost(str(item))
                    break
                on_event(item)
        finally:
            stream.close()
