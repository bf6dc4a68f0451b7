"""The laptop stack, end to end: compose/dind brought up, an MCP server started in its
inner Docker engine, and checked from the host.

Brought up and used the way the README says, with `scripts/laptop-stack.sh` (compose/dind
plus compose.ci.yaml, for hosts that refuse `privileged: true`, with the images built
here), on non-default host ports: `up`, then `run`, which loads the fixture MCP server
image into the inner engine and starts it there with mcp.* labels. From the host, the
test then sees the service in the stack's Consul with every check passing (the MCP check
is a TTL check the agent reports to after speaking MCP to the server itself), and the
registered address:port answers an MCP `initialize`, through the port the stack publishes
and the agent's forwarder.
"""

from __future__ import annotations

import secrets
import time

import pytest

from tests.e2e.conftest import (
    COMPOSE_DIR,
    LOCAL_IMAGES,
    SCRIPTS,
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
    # The README's one command for the laptop stack from local images.
    script = str(SCRIPTS / "laptop-stack.sh")
    env = {**stack.env, "COMPOSE_PROJECT_NAME": stack.project}
    started = time.monotonic()
    run([script, "up"], env=env, timeout=900)
    print(f"scripts/laptop-stack.sh up took {time.monotonic() - started:.1f}s")

    consul = f"http://127.0.0.1:{consul_port}"
    agent = f"http://127.0.0.1:{http_port}"
    ready = wait_for("agent ready", lambda: http_json(agent + "/readyz").get("ready"))
    assert ready is True

    # `run` loads the MCP server image into the inner engine and starts it there.
    service = f"e2e-{token}"
    started = time.monotonic()
    run(
        [
            script, "run", f"mcp-e2e-{token}",
            "--label", "mcp.enable=true",
            "--label", f"mcp.name={service}",
            "--label", "mcp.port=8000",
            "--label", "mcp.tags=e2e",
            "--label", "mcp.check.interval=2s",
        ],
        env=env,
        timeout=900,
    )  # fmt: skip
    print(f"scripts/laptop-stack.sh run took {time.monotonic() - started:.1f}s")
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

    # A stdio server beside it, as a user runs one: `-i`, the transport label.
    stdio = f"e2e-stdio-{token}"
    run(
        [
            script, "run", f"mcp-e2e-stdio-{token}", "-i", "-e", "MCP_TRANSPORT=stdio",
            "-e", "MCP_SERVER_NAME=stdio-fixture",
            "--label", "mcp.enable=true",
            "--label", f"mcp.name={stdio}",
            "--label", "mcp.transport=stdio",
            "--label", "mcp.check.interval=2s",
        ],
        env=env,
        timeout=300,
    )  # fmt: skip
    served = wait_for(f"{stdio} passing", lambda: healthy_service(consul, stdio))[0]["Service"]
    assert served["Meta"]["container_transport"] == "stdio"
    assert base <= served["Port"] < base + POOL_SIZE
    result = mcp_initialize(f"http://127.0.0.1:{served['Port']}/mcp")
    assert result["serverInfo"]["name"] == "stdio-fixture"

    status = http_json(agent + "/v1/status")
    print(f"agent status: {str(status)[:400]}")
