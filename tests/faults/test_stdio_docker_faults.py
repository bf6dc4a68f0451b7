"""A served stdio server when Docker is in the way: behind a socket proxy that lets GETs
through only (the usual hardening, e.g. docker-socket-proxy with POST=0) attach, a POST,
is refused, so the stdio container is reported with that reason while an HTTP container
beside it is registered and passing; and dockerd restarted under it."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from mcp import Client

from tests.integration.conftest import SERVICES, Bridge, bridge_world, wait_for
from tests.integration.test_stdio_agent import FAST_CHECKS, passing

pytestmark = pytest.mark.usefixtures("services")

DOCKER_SOCKET = "/var/run/docker.sock"


class GetOnlyProxy:
    """A unix socket in front of the engine's: GET and HEAD are passed on (streamed, for
    the event stream), anything else is answered 403 as such proxies do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.refused: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=DOCKER_SOCKET),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            self.refused.append(f"{request.method} {request.path}")
            return web.json_response({"message": "Forbidden"}, status=403)
        async with self._http.request(
            request.method, f"http://docker{request.path_qs}", headers=request.headers
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key in ("Content-Type", "Api-Version", "Docker-Experimental", "Ostype"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._http.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def proxied(
    docker_client: object, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Bridge, GetOnlyProxy]]:
    proxy = GetOnlyProxy(tmp_path / "docker.sock")
    env = {"DOCKER_HOST": f"unix://{proxy.path}"}
    try:
        with bridge_world(docker_client, tmp_path, request, env) as world:  # type: ignore[arg-type]
            yield world, proxy
    finally:
        proxy.close()


def test_a_get_only_socket_proxy_stops_stdio_only_and_says_why(
    proxied: tuple[Bridge, GetOnlyProxy], mcp_server_image: str, mcp_server_time_image: str
) -> None:
    bridge, proxy = proxied
    bridge.agent.start()
    bridge.docker.containers.run(
        mcp_server_image,
        name=bridge.tag + "http",
        detach=True,
        labels=bridge.labels(FAST_CHECKS, enable="true", port="8000"),
    )
    bridge.docker.containers.run(
        mcp_server_time_image,
        name=bridge.tag + "stdio",
        detach=True,
        stdin_open=True,
        labels=bridge.labels(FAST_CHECKS, enable="true"),
    )
    passing(bridge, "http")  # everything but the attach works through the proxy

    def refused_attach() -> dict[str, object] | None:
        for m in bridge.agent.status()["managed"]:
            stdio = m.get("stdio") or {}
            if m["container"] == bridge.tag + "stdio" and "POST" in str(stdio.get("state")):
                return dict(stdio)
        return None

    stdio = wait_for("the stdio container's reason", refused_attach)
    assert "HTTP 403" in str(stdio["state"])
    assert "socket proxy" in str(stdio["state"])
    check = wait_for(
        "its check says so",
        lambda: (c := bridge.check("stdio")) and "POST" in c["Output"] and c,
    )
    assert check["Status"] == "critical"
    assert any("/attach" in r for r in proxy.refused)


@pytest.mark.slow
def test_dockerd_restarted_under_a_served_stdio_server(
    bridge: Bridge, mcp_server_time_image: str
) -> None:
    """The engine goes away with the attach stream; once it is back and the container
    runs again, the same port serves the new process."""
    bridge.agent.start()
    container = bridge.docker.containers.run(
        mcp_server_time_image,
        name=bridge.tag + "time",
        detach=True,
        stdin_open=True,
        restart_policy={"Name": "always"},
        labels=bridge.labels(FAST_CHECKS, enable="true"),
    )
    passing(bridge, "time")
    port = bridge.service("time")["Port"]  # type: ignore[index]
    subprocess.run([str(SERVICES), "dockerd-restart"], check=True, capture_output=True)
    wait_for("reconnected", lambda: len(bridge.agent.events("docker_connected")) >= 2)
    container.reload()
    if container.status != "running":  # an engine that did not restart it: as a user would
        container.start()
    wait_for("attached again", lambda: len(bridge.agent.events("stdio_attached")) >= 2)
    passing(bridge, "time")
    assert bridge.service("time")["Port"] == port  # type: ignore[index]

    async def call() -> str:
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            said = await client.call_tool("get_current_time", {"timezone": "UTC"})
            return str(said.content[0].text)  # type: ignore[union-attr]

    assert "UTC" in asyncio.run(call())
