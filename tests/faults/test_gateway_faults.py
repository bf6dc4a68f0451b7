"""The gateway with Consul restarted under it (a dev agent: it comes back empty, its
index lower): the last catalog is served meanwhile and the reason shown; it recovers
without a restart, and a service registered afterwards reaches its union."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from mcp import Client

from tests.integration.conftest import SERVICES, Bridge, wait_for
from tests.integration.gateway_process import GatewayProcess
from tests.integration.test_gateway import union_names
from tests.integration.test_mcp_eras import run_server, settled_check


def test_consul_restarted_under_the_gateway(
    bridge: Bridge, mcp_server_image: str, mcp_server_v1_image: str, tmp_path: Path
) -> None:
    echo, late = f"{bridge.tag}echo", f"{bridge.tag}late"
    gateway = GatewayProcess.for_services([echo, late], tmp_path / "gateway.log")
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "echo1", "proxy", name=echo)
    settled_check(bridge, "echo1", "passing")
    try:
        gateway.start()
        wait_for("the union", lambda: union_names(gateway) == [f"{echo}__echo"], timeout=90)
        subprocess.run([str(SERVICES), "consul-stop"], check=True, capture_output=True)
        try:
            wait_for("Consul's absence noticed", lambda: gateway.status()["consul_error"])

            async def call() -> str:
                async with Client(gateway.url) as client:
                    said = await client.call_tool(f"{echo}__echo", {"text": "while away"})
                    return str(said.content[0].text)  # type: ignore[union-attr]

            assert asyncio.run(call()) == "while away"  # the last catalog, still served
        finally:
            subprocess.run([str(SERVICES), "consul-start"], check=True, capture_output=True)
        wait_for("recovered", lambda: gateway.status()["consul_error"] is None, timeout=120)
        run_server(bridge, mcp_server_v1_image, "late", "proxy", name=late)
        wanted = [f"{echo}__echo", f"{late}__echo"]
        wait_for("a service after the restart", lambda: union_names(gateway) == wanted, timeout=120)
        assert gateway.proc is not None and gateway.proc.poll() is None  # never restarted
    finally:
        gateway.stop()
