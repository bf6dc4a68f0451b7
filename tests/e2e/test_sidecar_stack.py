"""The sidecar stack, end to end: compose/sidecar on the host's engine, its example MCP
server found by its labels, registered in the stack's Consul and reachable from the host.

The bridge runs on the host's network with the engine's socket mounted read-only and the
socket's group added. The host's engine is shared with other tests, so
the bridge is made to look only at this test's container: a label prefix of its own
(BRIDGE_LABEL_PREFIX) and a name pattern nothing matches. The example's labels are the
compose file's own, copied under that prefix by an override file. Its forwarders listen
on 127.0.0.1 only. The compose files must also interpolate with no variables at all
(the public defaults a user gets).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    COMPOSE_DIR,
    LOCAL_IMAGES,
    ComposeStack,
    free_port_block,
    healthy_service,
    run,
    wait_for,
)
from tests.integration.conftest import free_tcp_port, mcp_initialize

pytestmark = pytest.mark.slow

POOL_SIZE = 5
SIDECAR = COMPOSE_DIR / "sidecar" / "compose.yaml"


def test_compose_files_interpolate_with_public_defaults(e2e_tools: dict[str, str]) -> None:
    for files in (
        [SIDECAR],
        [COMPOSE_DIR / "dind" / "compose.yaml"],
        [COMPOSE_DIR / "dind" / "compose.yaml", COMPOSE_DIR / "dind" / "compose.ci.yaml"],
    ):
        config = json.loads(
            ComposeStack(files, "mcpe2e-config", {}).compose("config", "--format", "json").stdout
        )
        images = {name: s["image"] for name, s in config["services"].items()}
        assert not any(i.startswith("mcp-bridge/") for i in images.values()), images
        assert images["bridge"] == "mcp-bridge:latest"
        assert config["services"]["bridge"]["build"]["context"] == str(COMPOSE_DIR.parent)
        assert images["consul"] == "hashicorp/consul:1.22"
        if "dind" in images:
            assert images["dind"] == "docker:29-dind"
            assert config["services"]["bridge"]["network_mode"] == "service:dind"


def tool_names(url: str) -> list[str]:
    """tools/list as a 2026-07-28 client sends it (self-contained, JSON answer)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}  # fmt: skip
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/list",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return [t["name"] for t in json.load(response)["result"]["tools"]]


def published_ports(files: list[Path]) -> set[int]:
    """Every host port a stack publishes with its defaults."""
    config = json.loads(
        ComposeStack(files, "mcpe2e-config", {}).compose("config", "--format", "json").stdout
    )
    ports: set[int] = set()
    for service in config["services"].values():
        for port in service.get("ports", []):
            low, _, high = str(port["published"]).partition("-")
            ports.update(range(int(low), int(high or low) + 1))
    return ports


def test_the_stacks_can_run_beside_the_host_set_up(e2e_tools: dict[str, str]) -> None:
    """scripts/run.sh (Consul 8500, agent 9105, pool 11100-11999), the laptop stack and the
    cluster stack, all with their defaults, publish no host port twice."""
    host = {8500, 8600, 9105, *range(11100, 12000)}
    laptop = published_ports([COMPOSE_DIR / "dind" / "compose.yaml"])
    cluster = published_ports([COMPOSE_DIR / "cluster" / "compose.yaml"])
    assert laptop and cluster
    assert not laptop & host, sorted(laptop & host)[:5]
    assert not cluster & host, sorted(cluster & host)[:5]
    assert not laptop & cluster, sorted(laptop & cluster)[:5]


def docker_socket() -> Path:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert host.startswith("unix://"), f"the sidecar needs a local engine socket, not {host}"
    path = Path(host.removeprefix("unix://"))
    assert stat.S_ISSOCK(path.stat().st_mode), f"{path} is not a socket"
    return path


def test_sidecar_stack_registers_the_example_server(
    e2e_tools: dict[str, str], stack_guard: list[ComposeStack], tmp_path: Path
) -> None:
    token = secrets.token_hex(3)
    base = free_port_block(POOL_SIZE + 2)
    consul_port, http_port = base + POOL_SIZE, base + POOL_SIZE + 1
    gateway_port = free_tcp_port()
    prefix = f"e2e{token}."
    socket_path = docker_socket()

    # The example's labels, exactly as the compose file has them, under this test's prefix.
    config = json.loads(
        ComposeStack([SIDECAR], "mcpe2e-config", {}).compose("config", "--format", "json").stdout
    )
    examples = ("mcp-example", "mcp-example-stdio")
    every = {e: config["services"][e]["labels"] for e in examples}
    labels = every["mcp-example"]
    assert labels["mcp.enable"] == "true"
    override = tmp_path / "compose.e2e.yaml"
    override.write_text(  # JSON is YAML
        json.dumps(
            {
                "services": {
                    e: {
                        "labels": {
                            prefix + k.removeprefix("mcp."): v
                            for k, v in every[e].items()
                            if k.startswith("mcp.")
                        }
                    }
                    for e in examples
                }
            }
        )
    )

    node = f"e2e-sidecar-{token}"
    stack = ComposeStack(
        files=[SIDECAR, override],
        project=f"mcpe2e-sidecar-{token}",
        variables={
            **LOCAL_IMAGES,
            "DOCKER_SOCKET": str(socket_path),
            "DOCKER_GID": str(socket_path.stat().st_gid),
            "HOST_BIND_IP": "127.0.0.1",
            "CONSUL_HOST_PORT": str(consul_port),
            "BRIDGE_HTTP_PORT": str(http_port),
            "GATEWAY_ADDR": f"127.0.0.1:{gateway_port}",
            "BRIDGE_PORT_RANGE": f"{base}-{base + POOL_SIZE - 1}",
            "BRIDGE_LISTEN_ADDRESS": "127.0.0.1",
            "BRIDGE_ADVERTISE_ADDRESS": "127.0.0.1",
            "BRIDGE_NODE_ID": node,
            "BRIDGE_LABEL_PREFIX": prefix,
            "BRIDGE_NAME_PATTERN": f"^{prefix}never-",
            "BRIDGE_LOG_LEVEL": "debug",
        },
    )
    stack_guard.append(stack)
    stack.up()
    started = time.monotonic()

    # The agent runs as the image's non-root user, with the socket's group.
    user = run(["docker", "exec", stack.container("bridge"), "id"]).stdout
    assert "uid=10001" in user and f"{socket_path.stat().st_gid}" in user, user

    consul = f"http://127.0.0.1:{consul_port}"
    name = labels["mcp.name"]
    entries = wait_for(
        f"{name} passing in the stack's Consul", lambda: healthy_service(consul, name)
    )
    print(f"{name} passing {time.monotonic() - started:.1f}s after `up --wait` returned")
    registered = entries[0]["Service"]
    assert registered["Meta"]["bridge_node"] == node
    assert registered["Meta"]["expose"] == "proxy"
    assert set(labels["mcp.tags"].split(",")) <= set(registered["Tags"])
    assert registered["Address"] == "127.0.0.1"
    assert base <= registered["Port"] < base + POOL_SIZE
    url = f"http://{registered['Address']}:{registered['Port']}{labels['mcp.path']}"
    assert mcp_initialize(url)["serverInfo"]["name"] == "example-mcp"

    # The stdio example: attached and served by the bridge on a pool port.
    stdio = every["mcp-example-stdio"]
    served = wait_for(
        "the stdio example passing", lambda: healthy_service(consul, stdio["mcp.name"])
    )[0]["Service"]
    assert served["Meta"]["container_transport"] == "stdio"
    assert served["Meta"]["transport"] == "streamable-http"
    assert base <= served["Port"] < base + POOL_SIZE and served["Port"] != registered["Port"]
    url = f"http://{served['Address']}:{served['Port']}/mcp"
    assert mcp_initialize(url)["serverInfo"]["name"] == "example-stdio-mcp"

    # The gateway beside them: both examples' tools through its one endpoint.
    gateway = f"http://127.0.0.1:{gateway_port}/mcp"
    wanted = {f"{labels['mcp.name']}__echo", f"{stdio['mcp.name']}__echo"}
    wait_for("both through the gateway", lambda: wanted <= set(tool_names(gateway)))
