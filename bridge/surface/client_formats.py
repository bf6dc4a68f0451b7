"""`client-config --format`: the one list of servers, in the file each kind of MCP client
reads.

- `mcp-json` (the default): `{"mcpServers": {name: {"type", "url", "headers"}}}`, what
  Claude Code (`.mcp.json`) and Cursor (`.cursor/mcp.json`) read.
- `vscode`: VS Code's `.vscode/mcp.json`: `{"servers": {name: {"type", "url",
  "headers"}}}`. A bearer token is not written into the file (it is often committed): the
  header names an input, `${input:mcp-bridge-token}`, which VS Code asks for once and keeps
  in its secret storage.
- `claude-desktop`: for clients that only launch stdio commands (Claude Desktop's
  `claude_desktop_config.json`): each server through `mcp-remote` (npm), a stdio-to-HTTP
  client. It refuses plain `http://` except to `localhost` and `127.0.0.1`, so other
  addresses get `--allow-http` (the bridges serve plain HTTP unless BRIDGE_SERVE_TLS_* is
  set); the transport is pinned (`http-only` or `sse-only`), since its default tries the
  other on a 404; `--protocol auto` (one `server/discover` first) lets it speak to servers
  that serve only 2026-07-28, which its default, passing the client's `initialize` on,
  cannot; a token goes in the command's environment and mcp-remote puts it into
  the header (`Authorization:${MCP_BRIDGE_AUTH}`, no space: some clients split arguments
  on spaces), so it is in neither the arguments nor the process list.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

FORMATS = ("mcp-json", "vscode", "claude-desktop")
VSCODE_INPUT = "mcp-bridge-token"
AUTH_ENV = "MCP_BRIDGE_AUTH"
MCP_REMOTE_LOOPBACK = ("localhost", "127.0.0.1")  # where mcp-remote allows plain http


def render(config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """`config`: client_config's `{"mcpServers": ...}`; the same servers in `fmt`."""
    servers: dict[str, dict[str, Any]] = config["mcpServers"]
    if fmt == "mcp-json":
        return config
    if fmt == "vscode":
        return _vscode(servers)
    if fmt == "claude-desktop":
        return {"mcpServers": {name: _mcp_remote(entry) for name, entry in servers.items()}}
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")


def _vscode(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"servers": {}}
    asks = False
    for name, entry in servers.items():
        server = {"type": entry["type"], "url": entry["url"]}
        if "Authorization" in entry.get("headers", {}):
            server["headers"] = {"Authorization": f"Bearer ${{input:{VSCODE_INPUT}}}"}
            asks = True
        out["servers"][name] = server
    if asks:
        out["inputs"] = [
            {
                "type": "promptString",
                "id": VSCODE_INPUT,
                "description": "mcp-bridge token (the contents of BRIDGE_SERVE_TOKEN_FILE)",
                "password": True,
            }
        ]
    return out


def _mcp_remote(entry: dict[str, Any]) -> dict[str, Any]:
    url = entry["url"]
    args = ["-y", "mcp-remote", url, "--transport", f"{entry['type']}-only", "--protocol", "auto"]
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in MCP_REMOTE_LOOPBACK:
        args.append("--allow-http")
    command: dict[str, Any] = {"command": "npx", "args": args}
    authorization = entry.get("headers", {}).get("Authorization")
    if authorization is not None:
        args += ["--header", f"Authorization:${{{AUTH_ENV}}}"]
        command["env"] = {AUTH_ENV: authorization}
    return command
