#!/usr/bin/env bash
# Create .venv-newest: hubfuse with the NEWEST transformers the package allows (pyproject's range),
# as far as the package index permits. Idempotent: a second run with the same newest release,
# pyproject.toml, constraints.txt and this script installs nothing.
#
# transformers goes in without its dependencies, then every requirement it declares that the index
# can satisfy (hubfuse/check/envs.py's installer); a requirement the index lacks is left out and
# named (transformers 5.25 requires kernels>=0.19.1,<0.20; this machine's index has 0.17.2). Tests
# run there with USE_HUB_KERNELS=0 (scripts/test.sh), the stand-in a user without `kernels` has.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV=.venv-newest
PYTHON="${PYTHON:-python3}"
newest="${HUBFUSE_NEWEST_TRANSFORMERS:-$(.venv/bin/python scripts/newest_transformers.py)}"
stamp="$VENV/.hubfuse-setup-$newest-$(cat pyproject.toml constraints.txt scripts/setup-newest.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
# Everything hubfuse and its tests need at the tested pins, transformers excepted.
grep -v '^transformers==' constraints.txt > "$VENV/constraints.txt"
"${pip[@]}" -c "$VENV/constraints.txt" "torch==2.13.0"
# transformers and every requirement it declares that the index can satisfy, by the matrix's own
# installer (hubfuse/check/envs.py, uv); what it cannot satisfy is left out and listed.
.venv/bin/python scripts/newest_transformers.py install "$VENV" "$newest" "$VENV/constraints.txt" \
  > "$VENV/left-out.txt"
mapfile -t left_out < "$VENV/left-out.txt"
"${pip[@]}" -c "$VENV/constraints.txt" --no-deps -e .
# hubfuse's own requirements and its test extra, as pyproject.toml declares them (torch and
# transformers are in already).
mapfile -t own < <(.venv/bin/python - <<'PY'
import tomllib
from packaging.requirements import Requirement
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for text in project["dependencies"] + project["optional-dependencies"]["test"]:
    if Requirement(text).name not in ("torch", "transformers"):
        print(text)
PY
)
"${pip[@]}" -c "$VENV/constraints.txt" "${own[@]}"
for requirement in "${left_out[@]}"; do
  echo "setup-newest.sh: transformers $newest requires $requirement, which the package index cannot satisfy: left out" >&2
done
rm -f "$VENV"/.hubfuse-setup-*
touch "$stamp"
