#!/usr/bin/env bash
# The project's test command (README, .ci/run): lint, types, then every test.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k pool -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check bridge tests scripts
.venv/bin/ruff format --check bridge tests scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/pytest "$@"
