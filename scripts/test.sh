#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, then run the whole test suite, the architecture matrix included.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The browser tests (tests/test_pages_browser.py) need Chromium; they skip, saying so, without it.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
    >/dev/null 2>&1 || echo "test.sh: could not install chromium; the browser tests will be skipped" >&2
fi
.venv/bin/ruff check hubfuse tests bench
.venv/bin/ruff format --check hubfuse tests bench
# Two workers (the machines have two cores); a file's tests stay together on one worker, in order
# (tests/test_batch.py is one scenario). HUBFUSE_TEST_WORKERS=0 runs everything in this process.
.venv/bin/python -m pytest -n "${HUBFUSE_TEST_WORKERS:-2}" --dist loadfile "$@"
# The verifier's core tests again under the newest transformers the package allows
# (scripts/test-newest.sh, also run daily by .github/workflows/newest-transformers.yml).
# HUBFUSE_SKIP_NEWEST=1 skips.
if [ "${HUBFUSE_SKIP_NEWEST:-0}" != 1 ] && [ "$#" = 0 ]; then
  exec scripts/test-newest.sh
fi
