"""`client-config --format` (bridge/surface/client_formats.py): each client's file from the
one list, the token kept out of files and arguments where the client allows it. Used by
real clients in tests/integration/test_client_formats.py."""

from __future__ import annotations

import pytest

from bridge.surface.client_formats import render

CONFIG = {
    "mcpServers": {
        "time": {"type": "http", "url": "http://127.0.0.1:20001/mcp"},
        "git": {
            "type": "http",
            "url": "http://10.0.0.5:20002/mcp",
            "headers": {"Authorization": "Bearer s3cret"},
        },
        "old": {"type": "sse", "url": "https://mcp.example/sse"},
    }
}


def test_mcp_json_is_the_list_as_it_is() -> None:
    assert render(CONFIG, "mcp-json") == CONFIG


def test_vscode_has_servers_and_asks_for_the_token_instead_of_holding_it() -> None:
    out = render(CONFIG, "vscode")
    assert out["servers"]["time"] == {"type": "http", "url": "http://127.0.0.1:20001/mcp"}
    assert out["servers"]["old"] == {"type": "sse", "url": "https://mcp.example/sse"}
    assert out["servers"]["git"]["headers"] == {"Authorization": "Bearer ${input:mcp-bridge-token}"}
    (asked,) = out["inputs"]
    assert asked["id"] == "mcp-bridge-token" and asked["password"] is True
    assert "s3cret" not in str(out)
    assert "inputs" not in render({"mcpServers": {"time": CONFIG["mcpServers"]["time"]}}, "vscode")


def test_claude_desktop_launches_mcp_remote_with_what_it_needs() -> None:
    out = render(CONFIG, "claude-desktop")["mcpServers"]
    assert out["time"] == {  # loopback: plain http allowed as it is
        "command": "npx",
        "args": [
            "-y",
            "mcp-remote",
            "http://127.0.0.1:20001/mcp",
            "--transport",
            "http-only",
            "--protocol",
            "auto",
        ],
    }
    git = out["git"]
    assert git["args"][2:] == [
        "http://10.0.0.5:20002/mcp", "--transport", "http-only", "--protocol", "auto",
        "--allow-http",
        "--header", "Authorization:${MCP_BRIDGE_AUTH}",
    ]  # fmt: skip
    assert git["env"] == {"MCP_BRIDGE_AUTH": "Bearer s3cret"}  # not in the arguments
    assert out["old"]["args"][2:5] == ["https://mcp.example/sse", "--transport", "sse-only"]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="one of mcp-json, vscode, claude-desktop"):
        render(CONFIG, "toml")
