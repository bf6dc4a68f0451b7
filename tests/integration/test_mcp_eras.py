"""Real MCP servers of each era behind every expose mode, checked in the real Consul:
status, meta, the tool records in KV, and what `services` and `client-config` print.

The servers: the official SDK 2.3 (both eras), the SDK 1.x line (handshake only), a 2.3
server that refuses the handshake (modern only), one protected by MCP authorization, and
one whose tools change at run time.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import urllib.error
from typing import Any

import pytest
from mcp.client import Client

from tests.integration.conftest import Bridge, consul_get, wait_for

MODERN = "2026-07-28"
FAST_CHECKS = {"check.interval": "2s", "check.timeout": "2s"}


def kv_record(key: str) -> dict[str, Any] | None:
    try:
        (item,) = consul_get(f"/v1/kv/{key}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    return dict(json.loads(base64.b64decode(item["Value"])))


def tools_key(bridge: Bridge, container: str) -> str:
    node = bridge.agent.node_id
    return f"mcp-bridge/{node}/{node}:{bridge.tag}{container}/tools"


def run_server(
    bridge: Bridge,
    image: str,
    container: str,
    expose: str,
    env: dict[str, str] | None = None,
    **labels: str,
) -> None:
    kwargs: dict[str, Any] = {}
    if expose == "published":
        kwargs["ports"] = {"8000/tcp": ("127.0.0.1", None)}
    bridge.docker.containers.run(
        image,
        name=bridge.tag + container,
        detach=True,
        environment=env or {},
        labels=bridge.labels(
            FAST_CHECKS,
            enable="true",
            port="8000",
            expose="auto" if expose == "published" else expose,
            **labels,
        ),
        **kwargs,
    )


def settled_check(bridge: Bridge, name: str, status: str) -> dict[str, Any]:
    return dict(
        wait_for(
            f"{name} {status}",
            lambda: (c := bridge.check(name)) and c["Status"] == status and c,
            timeout=90,
        )
    )


def service_with(bridge: Bridge, name: str, key: str) -> dict[str, Any]:
    return dict(
        wait_for(
            f"{name} meta {key}",
            lambda: (s := bridge.service(name)) and key in s["Meta"] and s,
            timeout=90,
        )
    )


@pytest.mark.parametrize("expose", ["proxy", "published", "internal"])
def test_each_era_through_each_expose_mode(
    bridge: Bridge, mcp_server_image: str, mcp_server_v1_image: str, expose: str
) -> None:
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "both", expose)
    run_server(bridge, mcp_server_v1_image, "v1", expose)
    run_server(bridge, mcp_server_image, "modern", expose, {"MCP_ERAS": "modern"})
    run_server(bridge, mcp_server_image, "locked", expose, {"MCP_AUTH_TOKEN": "s3cret"})
    run_server(bridge, mcp_server_image, "dyn", expose, {"MCP_DYNAMIC_TOOLS": "1"})

    for name in ("both", "modern"):
        check = settled_check(bridge, name, "passing")
        assert f"MCP {MODERN} OK: server/discover" in check["Output"], check["Output"]
        svc = service_with(bridge, name, "mcp_tools")
        assert svc["Meta"]["mcp_protocol_version"] == MODERN
        assert svc["Meta"]["mcp_server_name"] == "fixture-mcp"
        assert svc["Meta"]["expose"] == ("published" if expose == "published" else expose)

    check = settled_check(bridge, "v1", "passing")
    assert "initialize (server/discover:" in check["Output"], check["Output"]
    svc = service_with(bridge, "v1", "mcp_tools")
    assert svc["Meta"]["mcp_protocol_version"] == "2025-11-25"  # what 1.30 answers

    for name in ("both", "modern", "v1"):
        svc = service_with(bridge, name, "mcp_tools_hash")
        assert svc["Meta"]["mcp_tools"] == "1"
        record = wait_for(f"{name} tools in KV", lambda n=name: kv_record(tools_key(bridge, n)))
        assert [t["name"] for t in record["tools"]] == ["echo"]
        assert record["hash"] == svc["Meta"]["mcp_tools_hash"]
        assert record["tools"][0]["inputSchema"]["type"] == "object"

    locked = settled_check(bridge, "locked", "warning")
    assert "MCP authorization required" in locked["Output"], locked["Output"]
    assert "WWW-Authenticate: Bearer" in locked["Output"]
    assert kv_record(tools_key(bridge, "locked")) is None

    assert_tools_follow(bridge, "dyn")

    # A withdrawn service leaves no record behind.
    bridge.docker.containers.get(bridge.tag + "both").remove(force=True)
    wait_for("record deleted", lambda: kv_record(tools_key(bridge, "both")) is None)


def assert_tools_follow(bridge: Bridge, name: str) -> None:
    """The server `name` (MCP_DYNAMIC_TOOLS) adds a tool when asked; the record in KV and
    the service's meta follow. BRIDGE_TOOLS_INTERVAL stays at 5m: a change seen sooner was
    heard on the server's change stream, not polled."""
    key = tools_key(bridge, name)
    first = wait_for(f"{name}: first record", lambda: kv_record(key))
    assert [t["name"] for t in first["tools"]] == ["add_tool", "echo"]
    svc = service_with(bridge, name, "mcp_tools")
    url = f"http://{svc['Address']}:{svc['Port']}/mcp"

    def meta_hash() -> str | None:
        s = bridge.service(name)
        return s["Meta"].get("mcp_tools_hash") if s else None

    # Meta follows the record: the same listing writes both, the meta by re-registering.
    wait_for(
        f"{name}: meta hash {first['hash']} (first record)", lambda: meta_hash() == first["hash"]
    )

    async def add(tool: str) -> None:
        async with Client(url) as client:
            await client.call_tool("add_tool", {"name": tool})

    asyncio.run(add("late"))
    changed = wait_for(
        f"{name}: record after the change", lambda: (r := kv_record(key)) and r["count"] == 3 and r
    )
    assert [t["name"] for t in changed["tools"]] == ["add_tool", "echo", "late"]
    assert changed["hash"] != first["hash"]
    wait_for(
        f"{name}: meta after the change",
        lambda: (s := bridge.service(name)) and s["Meta"]["mcp_tools"] == "3",
    )
    wait_for(f"{name}: meta hash {changed['hash']}", lambda: meta_hash() == changed["hash"])
    assert bridge.agent.events("tools_list_changed")


def test_tools_off_by_label(bridge: Bridge, mcp_server_image: str) -> None:
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "quiet", "proxy", tools="false")
    settled_check(bridge, "quiet", "passing")
    svc = service_with(bridge, "quiet", "mcp_protocol_version")
    assert "mcp_tools" not in svc["Meta"]
    assert kv_record(tools_key(bridge, "quiet")) is None


def cli(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **bridge.agent.env},
        timeout=60,
    )


def test_services_and_client_config_work_in_the_sdks_client(
    bridge: Bridge, mcp_server_image: str, mcp_server_v1_image: str
) -> None:
    bridge.agent.start()
    run_server(bridge, mcp_server_image, "alpha", "proxy", name=bridge.tag + "alpha")
    run_server(bridge, mcp_server_v1_image, "beta", "internal", name=bridge.tag + "beta")
    for name in ("alpha", "beta"):
        service_with(bridge, name, "mcp_tools")
        settled_check(bridge, name, "passing")
    names = [bridge.tag + "alpha", bridge.tag + "beta"]

    listed = cli(bridge, "services", "--json", "--tools")
    assert listed.returncode == 0, listed.stderr
    ours = {r["service"]: r for r in json.loads(listed.stdout) if r["service"] in names}
    assert set(ours) == set(names)
    for row in ours.values():
        assert row["health"] == "passing" and row["tools"] == 1
        assert row["tool_names"] == ["echo"]
    assert ours[names[0]]["protocol"] == MODERN
    table = cli(bridge, "services", "--tools")
    assert names[0] in table.stdout and "tools: echo" in table.stdout

    made = cli(bridge, "client-config", *(f"--service={n}" for n in names))
    assert made.returncode == 0, made.stderr
    servers = json.loads(made.stdout)["mcpServers"]
    assert set(servers) == set(names)

    async def open_each() -> dict[str, list[str]]:
        found = {}
        for name, entry in servers.items():
            async with Client(entry["url"]) as client:
                found[name] = [t.name for t in (await client.list_tools()).tools]
        return found

    assert asyncio.run(open_each()) == {n: ["echo"] for n in names}
