"""The downstream matrix's cost: `hubfuse check` with the default matrix, first and second run.

    python bench/matrix.py [--versions SPEC] [--large GB] [--out bench/results/matrix.json]

The first run starts from an empty environments folder and an empty pip cache (as on a new CI
runner: every transformers release and its dependencies come from the package index; torch is
shared, never downloaded); the second run finds every environment cached. Measured: wall time,
environment creation times, disk of the environments folder (hard links counted once), and the
cells. `--large GB` runs the same on bench/verify.py's generated Qwen3-VL checkpoint of that size
(built by bench/verify.py into bench/.data).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, environment, large_checkpoint_folder, md_row, md_rule, write_report

from hubfuse import synth
from hubfuse.fusion.envs import disk_mb

DATA = REPO / "bench" / ".data"
CREATED = re.compile(r"created (\S+) in ([\d.]+) s")


def run_check(folder: Path, envs_dir: Path, pip_cache: Path, versions: str | None) -> dict[str, Any]:
    env = {
        **os.environ,
        "HUBFUSE_ENVS": str(envs_dir),
        "PIP_CACHE_DIR": str(pip_cache),
        "HUBFUSE_RELEASES_TTL_S": "86400",
    }
    env.pop("HUBFUSE_DOWNSTREAM_VERSIONS", None)
    command = [sys.executable, "-m", "hubfuse", "check", str(folder), "--json"]
    if versions:
        command += ["--downstream-versions", versions]
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    if result.returncode not in (0, 3):
        raise SystemExit(f"hubfuse check failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    family = report["families"][0]
    created = {name: float(seconds) for name, seconds in CREATED.findall(result.stderr)}
    return {
        "wall_s": round(wall, 1),
        "exit_code": result.returncode,
        "verdict": report["verdict"],
        "envs_created": len(created),
        "env_creation_s": created,
        "env_creation_total_s": round(sum(created.values()), 1),
        "envs_disk_mb": round(disk_mb(envs_dir), 1),
        "versions": family["downstream"]["versions"],
        "environments": family["downstream"]["environments"],
        "cells": family["downstream"]["cells"],
        "variant_cells": family["fused_layout"]["cells"],
    }


def measure(name: str, folder: Path, versions: str | None) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    envs_dir, pip_cache = DATA / f"envs-{slug}", DATA / f"pip-cache-{slug}"
    shutil.rmtree(envs_dir, ignore_errors=True)
    shutil.rmtree(pip_cache, ignore_errors=True)
    first = run_check(folder, envs_dir, pip_cache, versions)
    second = run_check(folder, envs_dir, pip_cache, versions)
    return {"checkpoint": name, "first": first, "second": second}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Downstream matrix cost (`bench/matrix.py`)",
        "",
        f"{result['environment']['date']}, hubfuse {result['environment']['hubfuse_commit']}, "
        f"{result['environment']['cpus']} CPUs (shared with other work), matrix: {result['selection']}.",
        "",
        md_row("checkpoint", "run", "wall", "envs created", "creation (sum)", "envs disk", "verdict"),
        md_rule("---", "---", "---:", "---:", "---:", "---:", "---"),
    ]
    for measured in result["runs"]:
        for run in ("first", "second"):
            r = measured[run]
            lines.append(
                md_row(
                    measured["checkpoint"],
                    run,
                    f"{r['wall_s']} s",
                    r["envs_created"],
                    f"{r['env_creation_total_s']} s",
                    f"{r['envs_disk_mb'] / 1000:.2f} GB",
                    r["verdict"],
                )
            )
    first = result["runs"][0]["first"]
    lines += ["", "Cells (config-only load / fused-layout variant):", ""]
    lines += [md_row("transformers", "env", "config PR", "variant", "first reason"), md_rule(*["---"] * 5)]
    variant = {(c["transformers"], c["env"]): c["outcome"] for c in first["variant_cells"]}
    for cell in first["cells"]:
        lines.append(
            md_row(
                cell["transformers"],
                cell["env"],
                cell["outcome"],
                variant.get((cell["transformers"], cell["env"]), "-"),
                cell["reason"][:120].replace("|", "\\|"),
            )
        )
    unavailable = {k: v for k, v in first["environments"].items() if v}
    lines += [""] + [f"- `{k}` column unavailable: {v}" for k, v in unavailable.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--versions", help="--downstream-versions for both runs (default: the product default)"
    )
    parser.add_argument("--large", type=float, help="also the bench/verify.py checkpoint of this many GB")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "matrix.json")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    tiny = synth.write_demo_checkpoint(DATA / "matrix-demo-model")
    runs = [measure("tiny demo (Qwen3-VL)", tiny, args.versions)]
    if args.large:
        large = large_checkpoint_folder(DATA, args.large)
        if not large.is_dir():
            raise SystemExit(f"{large} is missing: build it with bench/verify.py --size-gb {args.large}")
        runs.append(measure(f"Qwen3-VL {args.large:g} GB bf16", large, args.versions))
    result = {
        "environment": environment(["torch", "transformers"]),
        "selection": args.versions or "default",
        "runs": runs,
    }
    write_report(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
