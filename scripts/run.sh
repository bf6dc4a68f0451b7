#!/usr/bin/env bash
# The README's "run the agent" command.
#
# Uses the Docker engine in DOCKER_HOST and the Consul at BRIDGE_CONSUL_URL when they
# answer; when none is given or nothing answers there, it installs and starts a local
# dockerd and a Consul dev agent first (scripts/local-services.sh). Then it runs
# `mcp-bridge run` in the foreground; Ctrl-C (SIGINT) or SIGTERM stops it cleanly.
# Extra arguments go before `run`, e.g. `scripts/run.sh --env-file bridge.env`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
eval "$(scripts/local-services.sh up)"
echo "mcp-bridge: Docker at $DOCKER_HOST, Consul at $BRIDGE_CONSUL_URL (UI: $BRIDGE_CONSUL_URL/ui/)" >&2
exec .venv/bin/mcp-bridge "$@" run
