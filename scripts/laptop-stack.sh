#!/usr/bin/env bash
# The laptop stack (compose/dind: a Docker-in-Docker engine, Consul and mcp-bridge) from
# images built on this machine: no container registry needed.
#
# Usage: scripts/laptop-stack.sh COMMAND
#
#   up                 Build what is missing (mcp-bridge/{dind,consul,bridge,mcp-server}:local,
#                      scripts/build-local-images.sh; Compose v2, scripts/install-compose.sh),
#                      then start the stack and wait until it is healthy.
#   run [NAME [ARGS]]  Start the MCP server image in the stack's inner engine, as NAME
#                      (default mcp-hello, so it is managed by name), loading the image
#                      into that engine first if it is not there. ARGS go to `docker run`,
#                      e.g. --label mcp.check.interval=2s.
#   status             `mcp-bridge status` of the stack's agent.
#   down               Stop and remove everything, inner containers and volumes too.
#
# Variables: those of compose/dind/compose.yaml (HOST_BIND_IP, CONSUL_HOST_PORT (18500),
# BRIDGE_HTTP_HOST_PORT (19105), BRIDGE_PORT_RANGE (12100-12199), BRIDGE_NODE_ID, ...) and
# COMPOSE_PROJECT_NAME (default mcp-bridge-dind). The image variables are set here.
#
# The engine runs without `privileged: true` (compose.ci.yaml's capability set), which
# works where privileged is refused too. With a registry, the public images instead:
#   docker compose -f compose/dind/compose.yaml up -d --wait
set -euo pipefail
cd "$(dirname "$0")/.."

export DIND_IMAGE=mcp-bridge/dind:local
export CONSUL_IMAGE=mcp-bridge/consul:local
export BRIDGE_IMAGE=mcp-bridge/bridge:local
MCP_IMAGE=mcp-bridge/mcp-server:local

log() { printf '[laptop-stack] %s\n' "$*" >&2; }

compose() {
    docker compose --ansi never -f compose/dind/compose.yaml -f compose/dind/compose.ci.yaml "$@"
}

inner() { compose exec -T dind docker "$@"; }

case "${1:-}" in
    up)
        if ! docker info >/dev/null 2>&1; then  # none answers: start one (root)
            eval "$(scripts/local-services.sh docker)"
        fi
        scripts/build-local-images.sh dind consul bridge mcp-server >&2
        docker compose version >/dev/null 2>&1 || scripts/install-compose.sh >&2
        compose up -d --wait --wait-timeout 240 --pull never --no-build
        log "up: Consul http://${HOST_BIND_IP:-127.0.0.1}:${CONSUL_HOST_PORT:-18500}/ui/," \
            "agent http://${HOST_BIND_IP:-127.0.0.1}:${BRIDGE_HTTP_HOST_PORT:-19105}/v1/status"
        ;;
    run)
        shift
        name="${1:-mcp-hello}"
        [ $# -gt 0 ] && shift
        if ! inner image inspect "$MCP_IMAGE" >/dev/null 2>&1; then
            log "loading $MCP_IMAGE into the inner engine"
            docker save "$MCP_IMAGE" | inner load >&2
        fi
        inner run -d --restart unless-stopped --name "$name" "$@" "$MCP_IMAGE"
        ;;
    status)
        compose exec -T bridge mcp-bridge status
        ;;
    down)
        compose down -v --remove-orphans --timeout 10
        ;;
    *)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
        exit 2
        ;;
esac
