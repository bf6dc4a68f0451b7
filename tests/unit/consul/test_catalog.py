"""Reading Consul's health entries into instances, and the client configuration."""

from __future__ import annotations

from typing import Any

from bridge.consul.catalog import client_config, instance_of


def entry(
    sid: str, node: str, statuses: list[str], *, address: str = "10.0.0.5", **meta: str
) -> dict[str, Any]:
    return {
        "Node": {"Node": node, "Address": "192.0.2.9"},
        "Service": {
            "ID": sid,
            "Service": "weather",
            "Address": address,
            "Port": 11100,
            "Meta": {"path": "/mcp", "bridge_node": node, **meta},
        },
        "Checks": [{"Status": s} for s in statuses],
    }


def test_an_instance_takes_its_worst_check_and_its_url() -> None:
    i = instance_of(entry("h1:mcp-w", "h1", ["passing", "warning"], mcp_tools="3"))
    assert (i.health, i.tools, i.url) == ("warning", 3, "http://10.0.0.5:11100/mcp")
    assert instance_of(entry("x", "h1", ["passing", "critical"])).health == "critical"
    assert instance_of(entry("x", "h1", [])).health == "passing"
    v6 = instance_of(entry("x", "h1", ["passing"], address="fd00::5"))
    assert v6.url == "http://[fd00::5]:11100/mcp"
    # No service address: the node's, as Consul DNS answers.
    assert instance_of(entry("x", "h1", ["passing"], address="")).address == "192.0.2.9"


def test_client_config_one_entry_per_service_or_per_instance_healthy_only() -> None:
    instances = [
        instance_of(entry("h2:mcp-w", "h2", ["warning"])),
        instance_of(entry("h1:mcp-w", "h1", ["passing"], address="10.0.0.1")),
        instance_of(entry("h3:mcp-w", "h3", ["critical"])),
        instance_of(entry("h4:mcp-s", "h4", ["passing"], transport="sse", path="/sse")),
    ]
    instances[3].service = "legacy"
    assert client_config(instances) == {
        "mcpServers": {
            "weather": {"type": "http", "url": "http://10.0.0.1:11100/mcp"},  # the passing one
            "legacy": {"type": "sse", "url": "http://10.0.0.5:11100/sse"},
        }
    }
    assert set(client_config(instances, per_instance=True)["mcpServers"]) == {
        "weather@h1",
        "weather@h2",
        "legacy@h4",
    }


def test_the_serve_token_goes_to_served_stdio_servers_only() -> None:
    stdio = instance_of(entry("h1:mcp-t", "h1", ["passing"], container_transport="stdio"))
    stdio.service = "time"
    http = instance_of(entry("h1:mcp-w", "h1", ["passing"]))
    assert stdio.served and not http.served
    servers = client_config([stdio, http], token="s3cret")["mcpServers"]
    assert servers["time"]["headers"] == {"Authorization": "Bearer s3cret"}
    assert "headers" not in servers["weather"]
    assert "headers" not in client_config([stdio])["mcpServers"]["time"]


def test_a_served_endpoint_behind_tls_is_given_to_clients_as_https() -> None:
    tls = instance_of(
        entry("h1:mcp-t", "h1", ["passing"], container_transport="stdio", scheme="https")
    )
    assert tls.url.startswith("https://")
    tls.service = "time"
    assert client_config([tls])["mcpServers"]["time"]["url"] == tls.url
