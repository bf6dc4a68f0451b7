#!/usr/bin/env bash
# Creates .venv and installs mcp-bridge with its dev tools; cheap when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-from
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip >&2
    .venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' >&2
    echo "$want" > "$stamp"
fi
