#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, then run the whole test suite, the architecture matrix included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check hubfuse tests bench
.venv/bin/ruff format --check hubfuse tests bench
exec .venv/bin/python -m pytest "$@"
