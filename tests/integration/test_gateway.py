"""`mcp-bridge gateway` with real parts: a real agent registering real servers in the real
Consul (the SDK fixture over HTTP in both eras, twice as one service; the SDK 1.x fixture,
handshake only; a stdio server through its bridge endpoint; one behind MCP
authorization), the gateway as a user starts it, and real clients of every kind through
it: the union and its names, calls balanced over two instances, an instance killed under
calls, a new service announced to a listening client, a breaker that opens, and one that
closes again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from tests.integration.agent_process import ROOT
from tests.integration.conftest import Bridge, consul_put, free_tcp_port, wait_for
from tests.integration.gateway_process import GatewayProcess
from tests.integration.stdio_clients import ts_call, ts_client, v1_calls
from tests.integration.test_mcp_eras import run_server, settled_check
from tests.integration.test_stdio_agent import run_stdio

pytestmark = pytest.mark.usefixtures("services")
__all__ = ["ts_client"]  # a fixture, found by name


@pytest.fixture
def gateway(bridge: Bridge, tmp_path: Path) -> Iterator[GatewayProcess]:
    names = [f"{bridge.tag}{n}" for n in ("echo", "v1", "time", "locked", "late")]
    process = GatewayProcess.for_services(
        names, tmp_path / "gateway.log", BRIDGE_GATEWAY_TIMEOUT="3s"
    )
    try:
        yield process
    finally:
        process.stop()


def echo_service(bridge: Bridge) -> str:
    return f"{bridge.tag}echo"


def start_world(bridge: Bridge, mcp_server_image: str, mcp_server_v1_image: str) -> None:
    bridge.agent.start()
    for n in (1, 2):  # two instances of one service
        run_server(bridge, mcp_server_image, f"echo{n}", "proxy", name=echo_service(bridge))
    run_server(bridge, mcp_server_v1_image, "v1", "proxy", name=f"{bridge.tag}v1")
    run_stdio(bridge, mcp_server_image, "time", name=f"{bridge.tag}time")  # served by its bridge
    run_server(bridge, mcp_server_image, "locked", "proxy", {"MCP_AUTH_TOKEN": "s3cret"},
               name=f"{bridge.tag}locked")  # fmt: skip
    for container in ("echo1", "echo2", "v1", "time"):
        settled_check(bridge, container, "passing")
    settled_check(bridge, "locked", "warning")


def union_names(gateway: GatewayProcess) -> list[str]:
    async def main() -> list[str]:
        async with Client(gateway.url) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    return asyncio.run(main())


def test_every_client_kind_uses_the_union_and_calls_are_balanced(
    bridge: Bridge, gateway: GatewayProcess, mcp_server_image: str, mcp_server_v1_image: str,
    ts_client: str,
) -> None:  # fmt: skip
    start_world(bridge, mcp_server_image, mcp_server_v1_image)
    gateway.start()
    t = bridge.tag
    wanted = [f"{t}echo__echo", f"{t}time__echo", f"{t}v1__echo"]
    wait_for("the union", lambda: union_names(gateway) == wanted, timeout=90)
    status = gateway.status()
    assert status["protected"] == [f"{bridge.agent.node_id}:{t}locked"]  # never proxied

    async def sdk2(mode: str, tool: str, n: int) -> str:
        async with Client(gateway.url, mode=mode) as client:  # type: ignore[arg-type]
            said = await client.call_tool(tool, {"text": f"{mode} {n}"})
            assert not said.is_error, said
            return str(said.content[0].text)  # type: ignore[union-attr]

    async def main() -> list[Any]:
        jobs = [sdk2(("auto", "legacy")[n % 2], wanted[n % 3], n) for n in range(12)]
        jobs += [ts_call(ts_client, gateway.url, tool, {"text": f"ts {tool}"}) for tool in wanted]
        v1 = [(gateway.url, tool, {"text": f"v1 {tool}"}) for tool in wanted]
        jobs.append(asyncio.to_thread(v1_calls, mcp_server_v1_image, v1))
        return list(await asyncio.gather(*jobs))

    results = asyncio.run(main())
    assert results[:12] == [f"{('auto', 'legacy')[n % 2]} {n}" for n in range(12)]
    assert [r["said"] for r in results[12:15]] == [f"ts {tool}" for tool in wanted]
    assert [said for _, _, said in results[15]] == [f"v1 {tool}" for tool in wanted]
    node = bridge.agent.node_id
    for n in (1, 2):  # both instances of the one service took calls
        assert gateway.calls_of(f"{node}:{t}echo{n}").get("ok", 0) >= 2


def test_an_instance_killed_under_calls_leaves_every_call_answered(
    bridge: Bridge, gateway: GatewayProcess, mcp_server_image: str, mcp_server_v1_image: str
) -> None:
    start_world(bridge, mcp_server_image, mcp_server_v1_image)
    gateway.start()
    tool = f"{bridge.tag}echo__echo"
    wait_for("the union", lambda: tool in union_names(gateway), timeout=90)
    answers: list[str] = []
    stop = threading.Event()

    async def caller(n: int) -> None:
        async with Client(gateway.url) as client:
            k = 0
            while not stop.is_set():
                try:
                    said = await client.call_tool(tool, {"text": f"{n}.{k}"})
                except Exception as exc:  # a JSON-RPC error: the gateway says why
                    answers.append(str(exc))
                else:
                    text = str(said.content[0].text)  # type: ignore[union-attr]
                    answers.append("ok" if text == f"{n}.{k}" and not said.is_error else text)
                k += 1

    def run() -> None:
        async def main() -> None:
            await asyncio.gather(*(caller(n) for n in range(4)))

        asyncio.run(main())

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_for("calls flowing", lambda: len(answers) > 40)
        bridge.docker.containers.get(bridge.tag + "echo1").kill()
        before = len(answers)
        wait_for("calls go on", lambda: len(answers) > before + 100, timeout=90)
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()  # nothing hanging
    failed = [a for a in answers if a != "ok"]
    # A call the killed instance had taken is answered with an error naming it; every
    # other call is answered by the living one. None is lost.
    node = bridge.agent.node_id
    assert all(f"{node}:{bridge.tag}echo1" in a for a in failed), failed[:5]
    late = answers[-50:]
    assert late.count("ok") == len(late)  # the dead one gets no new calls


def test_a_new_service_is_announced_to_a_listening_client(
    bridge: Bridge, gateway: GatewayProcess, mcp_server_image: str, mcp_server_v1_image: str
) -> None:
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "echo1", "proxy", name=echo_service(bridge))
    settled_check(bridge, "echo1", "passing")
    gateway.start()
    wait_for("the union", lambda: union_names(gateway), timeout=90)
    changed = threading.Event()

    async def listen() -> list[str]:
        async def handle(message: Any) -> None:
            if getattr(message, "method", "") == "notifications/tools/list_changed":
                changed.set()

        async with Client(gateway.url, mode="legacy", message_handler=handle) as client:
            for _ in range(600):
                if changed.is_set():
                    break
                await asyncio.sleep(0.1)
            return sorted(t.name for t in (await client.list_tools()).tools)

    async def main() -> list[str]:
        listening = asyncio.create_task(listen())
        await asyncio.to_thread(wait_for, "its stream open", lambda: gateway.status()["listening"])
        await asyncio.to_thread(
            run_server, bridge, mcp_server_v1_image, "late", "proxy", None, name=f"{bridge.tag}late"
        )
        return await listening

    names = asyncio.run(main())
    assert changed.is_set() and f"{bridge.tag}late__echo" in names


def test_an_instance_that_keeps_failing_is_ejected_and_its_calls_go_elsewhere(
    bridge: Bridge, gateway: GatewayProcess, mcp_server_image: str
) -> None:
    """An instance Consul says is healthy (registered by hand, no check) where nothing
    listens: every call it is chosen for is refused before it is sent, so it goes to the
    living one; five in a row eject it."""
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "echo1", "proxy", name=echo_service(bridge))
    settled_check(bridge, "echo1", "passing")
    ghost = f"{bridge.tag}ghost"
    consul_put("/v1/agent/service/register", {
        "ID": ghost, "Name": echo_service(bridge), "Tags": ["mcp"], "Address": "127.0.0.1",
        "Port": free_tcp_port(), "Meta": {"mcp_protocol_version": "2026-07-28", "path": "/mcp"},
    })  # fmt: skip
    try:
        gateway.start()
        tool = f"{bridge.tag}echo__echo"
        wait_for("the union", lambda: tool in union_names(gateway), timeout=90)

        async def main() -> list[str]:
            async with Client(gateway.url) as client:
                said = [await client.call_tool(tool, {"text": str(n)}) for n in range(12)]
                return [str(s.content[0].text) for s in said]  # type: ignore[union-attr]

        assert asyncio.run(main()) == [str(n) for n in range(12)]  # every call answered
        rows = {r["id"]: r for s in gateway.status()["services"] for r in s["instances"]}
        assert rows[ghost]["breaker"].startswith("open"), rows[ghost]
        assert rows[ghost]["calls"]["not_delivered"] == 5  # then no more were tried
    finally:
        consul_put(f"/v1/agent/service/deregister/{ghost}")


def test_an_ejected_instance_is_tried_again_and_taken_back_once_it_answers(
    bridge: Bridge, mcp_server_image: str, tmp_path: Path
) -> None:
    """The breaker's whole round: an instance where nothing listens is ejected; while it is
    out a real server comes up at its address; once the ejection time is up one trial
    call goes to it, succeeds, and the breaker closes: it takes calls again."""
    echo = echo_service(bridge)
    gateway = GatewayProcess.for_services(
        [echo], tmp_path / "gateway.log", BRIDGE_GATEWAY_EJECTION="3s"
    )
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "echo1", "proxy", name=echo)
    settled_check(bridge, "echo1", "passing")
    ghost, port = f"{bridge.tag}ghost", free_tcp_port()
    consul_put("/v1/agent/service/register", {
        "ID": ghost, "Name": echo, "Tags": ["mcp"], "Address": "127.0.0.1", "Port": port,
        "Meta": {"mcp_protocol_version": "2026-07-28", "path": "/mcp"},
    })  # fmt: skip
    server: subprocess.Popen[bytes] | None = None
    tool = f"{echo}__echo"

    def calls(n: int) -> list[str]:
        async def main() -> list[str]:
            async with Client(gateway.url) as client:
                said = [await client.call_tool(tool, {"text": str(i)}) for i in range(n)]
                return [str(s.content[0].text) for s in said]  # type: ignore[union-attr]

        return asyncio.run(main())

    def breaker() -> str:
        rows = {r["id"]: r for s in gateway.status()["services"] for r in s["instances"]}
        return str(rows[ghost]["breaker"])

    try:
        gateway.start()
        wait_for("the union", lambda: tool in union_names(gateway), timeout=90)
        assert calls(12) == [str(i) for i in range(12)]  # every call answered meanwhile
        assert breaker().startswith("open") and gateway.calls_of(ghost).get("ok", 0) == 0
        server = subprocess.Popen(  # a real server comes up where the ejected one was
            [sys.executable, str(ROOT / "tests" / "fixtures" / "mcp_server.py")],
            env={**os.environ, "MCP_PORT": str(port), "MCP_HOST": "127.0.0.1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("taken back", lambda: calls(4) and gateway.calls_of(ghost).get("ok", 0) >= 1)
        assert breaker() == "closed"
        calls(8)
        assert gateway.calls_of(ghost)["ok"] >= 3  # balanced onto it again
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        consul_put(f"/v1/agent/service/deregister/{ghost}")
        gateway.stop()


def test_a_legacy_sse_server_is_called_through_the_gateway(
    bridge: Bridge, gateway: GatewayProcess, mcp_server_v1_image: str
) -> None:
    """The SDK 1.x fixture on the 2024-11-05 HTTP+SSE transport, registered by the bridge
    (`mcp.transport=sse`), used through the gateway by clients of both eras."""
    bridge.agent.start()
    run_server(bridge, mcp_server_v1_image, "v1", "proxy", {"MCP_TRANSPORT": "sse"},
               name=f"{bridge.tag}v1", transport="sse", path="/sse")  # fmt: skip
    settled_check(bridge, "v1", "passing")
    gateway.start()
    tool = f"{bridge.tag}v1__echo"
    wait_for("the union", lambda: union_names(gateway) == [tool], timeout=90)

    async def use(mode: str, n: int) -> str:
        async with Client(gateway.url, mode=mode) as client:  # type: ignore[arg-type]
            said = await client.call_tool(tool, {"text": f"{mode} {n}"})
            return str(said.content[0].text)  # type: ignore[union-attr]

    async def main() -> list[str]:
        return list(await asyncio.gather(*(use(("auto", "legacy")[n % 2], n) for n in range(6))))

    assert asyncio.run(main()) == [f"{('auto', 'legacy')[n % 2]} {n}" for n in range(6)]
