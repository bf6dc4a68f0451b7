#!/usr/bin/env bash
# Creates .venv and installs mcp-bridge with its dev tools; cheap when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    # Debian and Ubuntu ship venv's pip bootstrap in a separate package.
    if ! python3 -c 'import ensurepip' 2>/dev/null && command -v apt-get >/dev/null \
        && [ "$(id -u)" = 0 ]; then
        apt-get install -y -q python3-venv >&2 || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; }
    fi
    python3 -m venv .venv || {
        echo "bootstrap: python3 -m venv failed; on Debian or Ubuntu install python3-venv (as root)" >&2
        exit 1
    }
fi
stamp=.venv/.installed-from
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip >&2
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' >&2
    echo "$want" > "$stamp"
fi
