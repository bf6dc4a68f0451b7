#!/usr/bin/env bash
# Install Docker Compose v2 as a docker CLI plugin (`docker compose ...`) from Debian
# trixie's `docker-compose` package, with no container registry and without touching the
# host's apt configuration.
#
# Usage: scripts/install-compose.sh [--force]
#
#   --force   fetch and install again even if `docker compose version` already works
#
# How: apt-get with a trixie sources list and its own
# Dir::State::Lists / Dir::Cache folders downloads the .deb (nothing is installed with
# dpkg), `dpkg-deb -x` unpacks it, and usr/libexec/docker/cli-plugins/docker-compose is
# copied to $DOCKER_CONFIG/cli-plugins/ (default ~/.docker/cli-plugins/). Trixie's build
# needs glibc >= 2.34 (bookworm has 2.36).
#
# Idempotent and quick when already installed: it only runs `docker compose version`.
# Progress goes to stderr; the installed version goes to stdout. Works without a
# terminal or stdin (CI=true).
#
# Environment:
#   DOCKER_CONFIG            docker CLI config dir, default ~/.docker
#   MCP_BRIDGE_HOME          cache dir, default /opt/mcp-bridge (root) or
#                            ~/.cache/mcp-bridge (other users)
#   MCP_BRIDGE_DEBIAN_MIRROR default http://deb.debian.org/debian
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive LC_ALL=C
exec </dev/null 3>&1 1>&2

PROG="install-compose"
if [ "$(id -u)" -eq 0 ]; then
    HOME_DIR="${MCP_BRIDGE_HOME:-/opt/mcp-bridge}"
else
    HOME_DIR="${MCP_BRIDGE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-bridge}"
fi
APT_DIR="$HOME_DIR/apt-trixie"
MIRROR="${MCP_BRIDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MIRROR="${MIRROR%/}"
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
PLUGIN="$PLUGIN_DIR/docker-compose"
LOCK_FILE="$HOME_DIR/install-compose.lock"

log() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2; }

FORCE=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument $a" ;;
    esac
done

compose_version() { docker compose version --short 2>/dev/null; }

have docker || die "no docker CLI on PATH"
if [ "$FORCE" -eq 0 ] && v=$(compose_version); then
    log "docker compose $v is already installed"
    echo "$v" >&3
    exit 0
fi

for t in apt-get dpkg-deb flock; do have "$t" || die "$t not found on PATH"; done
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [ -n "$glibc" ] && [ "$(printf '%s\n2.34\n' "$glibc" | sort -V | head -n1)" != 2.34 ]; then
    die "glibc $glibc is older than 2.34, which trixie's docker-compose needs"
fi

mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
exec 9>"$LOCK_FILE"
flock -w 600 9 || die "another install-compose.sh holds $LOCK_FILE"
# someone else may have installed it while we waited
if [ "$FORCE" -eq 0 ] && v=$(compose_version); then
    log "docker compose $v is already installed"
    echo "$v" >&3
    exit 0
fi

echo "deb $MIRROR trixie main" >"$APT_DIR/trixie.list"
opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3
      -o "Dir::Etc::sourcelist=$APT_DIR/trixie.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
      -o APT::Get::List-Cleanup=0)
if [ "$(id -u)" -eq 0 ]; then
    # apt's _apt sandbox user may not write to our folders
    opts+=(-o APT::Sandbox::User=root)
else
    opts+=(-o Debug::NoLocking=1)
fi

t0=$SECONDS
log "apt-get update (trixie lists only, in $APT_DIR)"
apt-get "${opts[@]}" update -qq || die "apt-get update with $APT_DIR/trixie.list failed"
rm -f "$APT_DIR"/debs/docker-compose_*.deb
(cd "$APT_DIR/debs" && apt-get "${opts[@]}" download -q docker-compose) \
    || die "apt-get download docker-compose (trixie) failed"
deb=$(ls "$APT_DIR"/debs/docker-compose_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "apt-get download gave no docker-compose .deb"

x=$(mktemp -d)
trap 'rm -rf "$x"' EXIT
dpkg-deb -x "$deb" "$x"
src="$x/usr/libexec/docker/cli-plugins/docker-compose"
[ -x "$src" ] || die "$(basename "$deb") has no usr/libexec/docker/cli-plugins/docker-compose"
"$src" version >/dev/null 2>&1 || die "the unpacked docker-compose does not run on this machine"

mkdir -p "$PLUGIN_DIR"
install -m 0755 "$src" "$PLUGIN.new"
mv -f "$PLUGIN.new" "$PLUGIN"
v=$(compose_version) || die "installed $PLUGIN, but \`docker compose version\` fails (is $PLUGIN_DIR the docker CLI's plugin dir? set DOCKER_CONFIG)"
log "installed docker compose $v ($(basename "$deb")) as $PLUGIN in $((SECONDS - t0))s"
echo "$v" >&3
