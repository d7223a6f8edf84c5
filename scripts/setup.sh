#!/usr/bin/env bash
# Create .venv with everything hubfuse, its tests and its benchmarks need. Idempotent: a second
# run with unchanged pyproject.toml and constraints.txt installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.hubfuse-setup-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first, pinned: this is the CPU build; anything unpinned would fetch a CUDA build.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
  rm -f .venv/.hubfuse-setup-*
  touch "$stamp"
fi
