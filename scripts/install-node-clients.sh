#!/usr/bin/env bash
# Installs the MCP clients on Node that the tests use, from the npm registry, into a cache
# folder of its own: the official TypeScript SDK (tests/fixtures/ts_client/), and
# mcp-remote, the stdio-to-HTTP client `client-config --format claude-desktop` launches.
#
# Usage: scripts/install-node-clients.sh
#
# Idempotent: cheap when the cache already holds this SDK version. Installs Debian's
# nodejs and npm when `node` is missing (root needed then). Progress goes to stderr;
# stdout is one line: the path of client.mjs, beside its node_modules (`npx mcp-remote`
# run in that folder finds the one installed there).
#
# Environment:
#   MCP_BRIDGE_HOME      cache root, default /opt/mcp-bridge
#   MCP_TS_SDK_SPEC      the SDK to install, default @modelcontextprotocol/sdk@1.32.2
#   MCP_REMOTE_SPEC      mcp-remote to install, default mcp-remote@0.15.1
set -euo pipefail
exec </dev/null 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SDK="${MCP_TS_SDK_SPEC:-@modelcontextprotocol/sdk@1.32.2}"
REMOTE="${MCP_REMOTE_SPEC:-mcp-remote@0.15.1}"
SPEC="$SDK $REMOTE"
DIR="${MCP_BRIDGE_HOME:-/opt/mcp-bridge}/node-clients"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt-get update -q && apt-get install -y -q nodejs npm
fi
mkdir -p "$DIR"
if [ "$(cat "$DIR/.installed" 2>/dev/null)" != "$SPEC" ]; then
    [ -f "$DIR/package.json" ] || echo '{"name": "mcp-bridge-node-clients", "private": true}' > "$DIR/package.json"
    npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "$SDK" "$REMOTE"
    echo "$SPEC" > "$DIR/.installed"
fi
cp "$ROOT/tests/fixtures/ts_client/client.mjs" "$DIR/client.mjs"
echo "$DIR/client.mjs" >&3
