#!/usr/bin/env bash
# Installs Debian's `chromium` (headless browser for tests/integration/test_consul_ui.py).
#
# Usage: scripts/install-chromium.sh
#
# Idempotent: when a working chromium is already on PATH it only prints its path.
# Otherwise it runs apt-get (non-interactive, root needed) for `chromium` and
# `fonts-liberation` (without fonts screenshots show boxes instead of text), then
# prints the path. Never downloads a browser from Playwright's or puppeteer's CDNs.
#
# Progress goes to stderr; stdout is one line: the absolute path of the browser.
#
# Environment:
#   MCP_BRIDGE_CHROMIUM   use this browser binary instead (must run); nothing is installed
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

PROG="install-chromium"
LOCK_FILE="/run/lock/mcp-bridge-install-chromium.lock"
APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
PACKAGES=(chromium fonts-liberation)

log() { printf '[%s] %s\n' "$PROG" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

# The first candidate that runs; Debian's is /usr/bin/chromium.
find_browser() {
    local c candidates=(chromium chromium-browser)
    if [ -n "${MCP_BRIDGE_CHROMIUM:-}" ]; then candidates=("$MCP_BRIDGE_CHROMIUM"); fi
    for c in "${candidates[@]}"; do
        c=$(command -v "$c" 2>/dev/null) || continue
        if "$c" --version >/dev/null 2>&1; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

fonts_ok() { dpkg-query -W -f='${Status}' fonts-liberation 2>/dev/null | grep -q 'ok installed'; }

if browser=$(find_browser) && { [ -n "${MCP_BRIDGE_CHROMIUM:-}" ] || fonts_ok; }; then
    echo "$browser"
    exit 0
fi
if [ -n "${MCP_BRIDGE_CHROMIUM:-}" ]; then
    die "MCP_BRIDGE_CHROMIUM=$MCP_BRIDGE_CHROMIUM does not run (\`$MCP_BRIDGE_CHROMIUM --version\` failed)"
fi

[ "$(id -u)" -eq 0 ] || die "chromium is not installed and installing it needs root: run \`sudo apt-get install chromium fonts-liberation\`"
command -v apt-get >/dev/null 2>&1 || die "chromium is not installed and there is no apt-get here; install chromium and set MCP_BRIDGE_CHROMIUM"

mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
flock -w 900 9 || die "another install-chromium.sh run holds $LOCK_FILE"
# someone else may have installed it while we waited for the lock
if browser=$(find_browser) && fonts_ok; then
    echo "$browser"
    exit 0
fi

install() {
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${PACKAGES[@]}" </dev/null >&2
}

t0=$SECONDS
log "installing ${PACKAGES[*]} with apt-get"
# Try without `apt-get update` first (fast when the lists are fresh); a stale list
# makes the download 404, and then an update fixes it.
if ! install; then
    log "apt-get update, then retry"
    apt-get "${APT_OPTS[@]}" update -qq >&2 || die "apt-get update failed"
    install || die "apt-get install ${PACKAGES[*]} failed"
fi
browser=$(find_browser) || die "chromium was installed but \`chromium --version\` does not run"
log "installed $("$browser" --version 2>/dev/null) in $((SECONDS - t0))s"
echo "$browser"
