"""Stdio servers through the whole agent: `docker run -d -i`, registered on a pool port,
the `mcp` check a round trip to the process, used by the SDK's client in both eras through
the registered address, and served again after `docker restart`, a kill of the server
mid-call and a SIGKILL of the bridge, on the same port."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp import Client

from tests.integration.conftest import Bridge, wait_for

pytestmark = pytest.mark.usefixtures("services")

FAST_CHECKS = {"check.interval": "2s", "check.timeout": "2s"}


def run_stdio(bridge: Bridge, image: str, container: str, **labels: str) -> Any:
    """As `docker run -d -i -e MCP_TRANSPORT=stdio <image>`; `labels` (under the test's
    prefix) may name the service (`name=...`)."""
    return bridge.docker.containers.run(
        image,
        name=bridge.tag + container,
        detach=True,
        stdin_open=True,
        environment={"MCP_TRANSPORT": "stdio"},
        labels=bridge.labels(FAST_CHECKS, enable="true", transport="stdio", **labels),
    )


def passing(bridge: Bridge, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        c = bridge.check(name)
        return c if c and c["Status"] == "passing" else None

    return dict(wait_for(f"{name} passing", check, timeout=90))


def url_of(bridge: Bridge, name: str) -> str:
    service = wait_for(f"{name} registered", lambda: bridge.service(name), timeout=90)
    return f"http://127.0.0.1:{service['Port']}/mcp"


async def use(url: str, mode: str, text: str) -> tuple[list[str], str]:
    async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
        tools = await client.list_tools()
        said = await client.call_tool("echo", {"text": text})
        return [t.name for t in tools.tools], said.content[0].text  # type: ignore[union-attr]


def use_all(url: str, clients: int = 4) -> None:
    async def main() -> list[tuple[list[str], str]]:
        return await asyncio.gather(
            *(use(url, ("auto", "legacy")[n % 2], f"client {n}") for n in range(clients))
        )

    assert asyncio.run(main()) == [(["echo"], f"client {n}") for n in range(clients)]


@pytest.mark.parametrize("which", ["sdk2", "sdk1"])
def test_a_stdio_server_is_registered_passing_and_used_in_both_eras(
    bridge: Bridge, mcp_server_image: str, mcp_server_v1_image: str, which: str
) -> None:
    image = mcp_server_image if which == "sdk2" else mcp_server_v1_image
    bridge.agent.start()
    run_stdio(bridge, image, "s")
    check = passing(bridge, "s")
    assert "over stdio" in check["Output"], check["Output"]
    service = bridge.service("s")
    assert service is not None
    meta = service["Meta"]
    assert meta["container_transport"] == "stdio" and meta["transport"] == "streamable-http"
    assert meta["expose"] == "proxy" and "container_port" not in meta
    assert service["Port"] == int(meta["host_port"])
    wait_for("tools in meta", lambda: (s := bridge.service("s")) and s["Meta"].get("mcp_tools"))
    use_all(url_of(bridge, "s"))
    # One handshake for the process, whatever the clients and checks did.
    assert len(bridge.agent.events("stdio_attached")) == 1


def test_restarts_of_the_server_and_of_the_bridge_keep_the_port_and_serve_again(
    bridge: Bridge, mcp_server_image: str
) -> None:
    bridge.agent.start()
    container = run_stdio(bridge, mcp_server_image, "r")
    passing(bridge, "r")
    url = url_of(bridge, "r")

    container.restart(timeout=2)
    wait_for("attached again", lambda: len(bridge.agent.events("stdio_attached")) >= 2)
    passing(bridge, "r")
    assert url_of(bridge, "r") == url
    use_all(url, 2)

    def endings() -> int:  # the process seen to end, or its service withdrawn first
        return len(bridge.agent.events("stdio_process_ended") + bridge.agent.events("stdio_closed"))

    before = endings()
    container.kill(signal="SIGKILL")  # no answer comes from a dead process
    wait_for("ended", lambda: endings() > before)
    container.start()
    wait_for("attached a third time", lambda: len(bridge.agent.events("stdio_attached")) >= 3)
    passing(bridge, "r")
    use_all(url, 2)

    bridge.agent.kill()  # SIGKILL: the served port goes with the process
    bridge.agent.start()
    # The log is one file across both agents: the new one's attach is the fourth.
    wait_for("attached by the new agent", lambda: len(bridge.agent.events("stdio_attached")) >= 4)
    # The process lives on: its handshake came from the store, no second initialize.
    assert [e["handshake"] for e in bridge.agent.events("stdio_attached")] == [
        "done",
        "done",
        "done",
        "kept",
    ]
    passing(bridge, "r")
    assert url_of(bridge, "r") == url
    use_all(url, 2)


def test_a_reference_stdio_server_needs_no_label_beyond_docker_run_i(
    bridge: Bridge, mcp_server_time_image: str
) -> None:
    """`docker run -d -i <image>`: open stdin and no port is a stdio server."""
    bridge.agent.start()
    bridge.docker.containers.run(
        mcp_server_time_image,
        name=bridge.tag + "time",
        detach=True,
        stdin_open=True,
        labels=bridge.labels(FAST_CHECKS, enable="true"),
    )
    passing(bridge, "time")
    service = bridge.service("time")
    assert service is not None and service["Meta"]["container_transport"] == "stdio"
    assert service["Meta"]["mcp_server_name"] == "mcp-time"

    async def main() -> tuple[list[str], str]:
        async with Client(url_of(bridge, "time")) as client:
            tools = await client.list_tools()
            said = await client.call_tool("get_current_time", {"timezone": "UTC"})
            return sorted(t.name for t in tools.tools), said.content[0].text  # type: ignore[union-attr]

    names, said = asyncio.run(main())
    assert names == ["convert_time", "get_current_time"]
    assert '"timezone": "UTC"' in said or "UTC" in said


def test_the_reference_git_server_reads_its_repository_through_the_bridge(
    bridge: Bridge, mcp_server_git_image: str
) -> None:
    bridge.agent.start()
    bridge.docker.containers.run(
        mcp_server_git_image,
        name=bridge.tag + "git",
        detach=True,
        stdin_open=True,
        labels=bridge.labels(FAST_CHECKS, enable="true"),
    )
    passing(bridge, "git")

    async def main() -> str:
        async with Client(url_of(bridge, "git"), mode="legacy") as client:
            said = await client.call_tool("git_log", {"repo_path": "/repo", "max_count": 1})
            return str(said.content[0].text)  # type: ignore[union-attr]

    assert "A first commit" in asyncio.run(main())
