"""The laptop stack, end to end: compose/dind brought up, an MCP server started in its
inner Docker engine, and checked from the host.

compose/dind/compose.yaml plus compose.ci.yaml (for hosts that refuse `privileged: true`),
with the images built here and non-default host ports. The fixture MCP server image is
`docker save`d from the host engine into the inner engine over its API, then run there
with mcp.* labels. From the host, the test then sees the service in the stack's Consul
with every check passing (the MCP check is a TTL check the agent reports to after
speaking MCP to the server itself), and the registered address:port answers an MCP
`initialize`, through the port the stack publishes and the agent's forwarder.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from tests.e2e.conftest import (
    COMPOSE_DIR,
    LOCAL_IMAGES,
    MCP_SERVER_IMAGE,
    ComposeStack,
    free_port_block,
    healthy_service,
    http_json,
    run,
    wait_for,
)
from tests.integration.conftest import mcp_initialize

pytestmark = pytest.mark.slow

POOL_SIZE = 10


def test_dind_stack_registers_an_inner_mcp_server_reachable_from_the_host(
    e2e_tools: dict[str, str], stack_guard: list[ComposeStack]
) -> None:
    token = secrets.token_hex(3)
    base = free_port_block(POOL_SIZE + 2)
    pool = f"{base}-{base + POOL_SIZE - 1}"
    consul_port, http_port = base + POOL_SIZE, base + POOL_SIZE + 1
    node = f"e2e-dind-{token}"
    stack = ComposeStack(
        files=[COMPOSE_DIR / "dind" / "compose.yaml", COMPOSE_DIR / "dind" / "compose.ci.yaml"],
        project=f"mcpe2e-dind-{token}",
        variables={
            **LOCAL_IMAGES,
            "HOST_BIND_IP": "127.0.0.1",
            "CONSUL_HOST_PORT": str(consul_port),
            "BRIDGE_HTTP_HOST_PORT": str(http_port),
            "BRIDGE_PORT_RANGE": pool,
            "BRIDGE_NODE_ID": node,
            "BRIDGE_LOG_LEVEL": "debug",
        },
    )
    stack_guard.append(stack)
    stack.up()

    consul = f"http://127.0.0.1:{consul_port}"
    agent = f"http://127.0.0.1:{http_port}"
    ready = wait_for("agent ready", lambda: http_json(agent + "/readyz").get("ready"))
    assert ready is True

    # The inner engine, reached at the dind container's address (not published).
    inner = f"tcp://{stack.address('dind')}:2375"
    started = time.monotonic()
    save = subprocess.Popen(["docker", "save", MCP_SERVER_IMAGE], stdout=subprocess.PIPE)
    load = subprocess.run(
        ["docker", "-H", inner, "load"],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait(timeout=600) == 0, "docker save failed"
    assert load.returncode == 0, load.stderr
    print(f"loaded {MCP_SERVER_IMAGE} into the inner engine in {time.monotonic() - started:.1f}s")

    service = f"e2e-{token}"
    run(
        [
            "docker", "-H", inner, "run", "-d",
            # survives an inner engine restart (the host engine may restart under it)
            "--restart", "unless-stopped",
            "--name", f"mcp-e2e-{token}",
            "--label", "mcp.enable=true",
            "--label", f"mcp.name={service}",
            "--label", "mcp.port=8000",
            "--label", "mcp.tags=e2e",
            "--label", "mcp.check.interval=2s",
            MCP_SERVER_IMAGE,
        ]
    )  # fmt: skip
    started = time.monotonic()

    def passing_and_probed() -> list[dict[str, object]] | None:
        entries = healthy_service(consul, service)
        if entries and "mcp_server_name" in (entries[0]["Service"]["Meta"] or {}):
            return entries
        return None

    entries = wait_for(f"{service} passing in the stack's Consul", passing_and_probed)
    print(f"{service} registered and passing {time.monotonic() - started:.1f}s after docker run")
    assert len(entries) == 1
    registered = entries[0]["Service"]
    meta = registered["Meta"]
    assert meta["managed_by"] == "mcp-bridge"
    assert meta["bridge_node"] == node
    assert meta["expose"] == "proxy"
    assert meta["mcp_server_name"] == "fixture-mcp"
    assert "e2e" in registered["Tags"] and "mcp" in registered["Tags"]
    checks = {c["CheckID"]: c for c in entries[0]["Checks"]}
    mcp_check = checks[f"{node}:mcp-e2e-{token}:mcp"]
    assert mcp_check["Status"] == "passing"
    assert "MCP 2026-07-28 OK: server/discover" in mcp_check["Output"]

    # What Consul says is reachable from the host, as it is.
    address, port = registered["Address"], registered["Port"]
    assert address == "127.0.0.1"
    assert base <= port < base + POOL_SIZE
    result = mcp_initialize(f"http://{address}:{port}{meta['path']}")
    assert result["serverInfo"]["name"] == "fixture-mcp"
    assert result["protocolVersion"]

    status = http_json(agent + "/v1/status")
    print(f"agent status: {str(status)[:400]}")
