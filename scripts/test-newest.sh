#!/usr/bin/env bash
# The verifier's core tests under the newest transformers the package allows (.venv-newest, built by
# scripts/setup-newest.sh as the index permits: a requirement it lacks is left out and named). The
# release runs as its users have it; only where `kernels` had to be left out (5.25 needs
# kernels>=0.19.1, which some indexes lack) are hub kernels off (USE_HUB_KERNELS=0), the stand-in a
# user without `kernels` has. Run by scripts/test.sh and by the scheduled workflow
# .github/workflows/newest-transformers.yml.
#
# HUBFUSE_NEWEST_TESTS: test files or node ids (tests/test_x.py or tests/test_x.py::test_y),
# space-separated, instead of the core tests. Exit 2: one of them is not such a name.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(tests/test_worker.py tests/test_cli_check.py tests/test_targeted.py)
if [ -n "${HUBFUSE_NEWEST_TESTS:-}" ]; then
  read -r -a tests <<< "$HUBFUSE_NEWEST_TESTS"
  for test in "${tests[@]}"; do
    if ! [[ "$test" =~ ^tests/test_[a-z0-9_]+\.py(::[A-Za-z0-9_]+)?$ ]] || [ ! -f "${test%%::*}" ]; then
      echo "error: HUBFUSE_NEWEST_TESTS: '$test' is not a test file or node id of this repository (e.g. tests/test_worker.py)" >&2
      exit 2
    fi
  done
fi
scripts/setup-newest.sh
transformers="$(.venv-newest/bin/python -c 'import importlib.metadata as m; print(m.version("transformers"))')"
left_out="$(tr '\n' ' ' < .venv-newest/left-out.txt | sed 's/ *$//')"
kernels_flag=()
if grep -qi '^kernels' .venv-newest/left-out.txt; then
  kernels_flag=(USE_HUB_KERNELS=0)
fi
line="core tests under transformers $transformers (left out: ${left_out:-nothing})${kernels_flag:+, ${kernels_flag[*]}}: ${tests[*]}"
echo "test-newest.sh: $line" >&2
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  echo "$line" >> "$GITHUB_STEP_SUMMARY"
fi
# Any worker may take any test (no file here is one scenario): the files are uneven, the cores few.
exec env "${kernels_flag[@]}" .venv-newest/bin/python -m pytest -n "${HUBFUSE_TEST_WORKERS:-2}" --dist load "${tests[@]}"
