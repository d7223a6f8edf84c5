"""The downstream matrix's cost: `hubfuse check` with the default matrix, first and second run.

    python bench/matrix.py [--versions SPEC] [--large GB] [--out bench/results/matrix.json]
    python bench/matrix.py --models qwen3_vl,qwen2_5_vl,glm4v,qwen3_5 [--versions SPEC]


The first run starts from an empty environments folder and an empty uv cache (as on a new CI
runner: every transformers release and its dependencies come from the package index; torch is
shared, never downloaded); the second run finds every environment cached. Measured: wall time,
environment creation times, disk of the environments folder (hard links counted once), and the
cells. `--large GB` runs the same on bench/verify.py's generated Qwen3-VL checkpoint of that size
(built into bench/.data as bench/verify.py does), with the environments the tiny run created.

`--models` writes the README's release tables instead (bench/results/release-tables.md/.json):
one `hubfuse check DIR --json` per model type on a tiny float32 checkpoint (hubfuse/synth.py),
every model sharing one environments folder and one uv cache ($HUBFUSE_ENVS / $UV_CACHE_DIR when
set, so a rerun reuses them); per model, a table of releases by column, each cell's outcome and
the start of its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, environment, large_checkpoint_folder, md_row, md_rule, write_report

from hubfuse.check.envs import disk_mb
from hubfuse.testing import synth

DATA = REPO / "bench" / ".data"
CREATED = re.compile(r"created (\S+) in ([\d.]+) s")
PROBE_HOST = re.compile(r"probe host: .*")


def run_check(
    folder: Path, envs_dir: Path, uv_cache: Path, versions: str | None, **extra: str
) -> dict[str, Any]:
    env = {
        **os.environ,
        "HUBFUSE_ENVS": str(envs_dir),
        "UV_CACHE_DIR": str(uv_cache),
        "HUBFUSE_RELEASES_TTL_S": "86400",
    }
    # `versions` replaces the default matrix (no --downstream-versions: no non-gating extras).
    env.pop("HUBFUSE_DOWNSTREAM_VERSIONS", None)
    if versions:
        env["HUBFUSE_DOWNSTREAM_VERSIONS"] = versions
    env.update(extra)
    command = [sys.executable, "-m", "hubfuse", "check", str(folder), "--json"]
    load_before = os.getloadavg()
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - start
    load_after = os.getloadavg()  # the machine is shared: its load says what the wall time means
    if result.returncode not in (0, 3):
        raise SystemExit(f"hubfuse check failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    family = report["families"][0]
    created = {name: float(seconds) for name, seconds in CREATED.findall(result.stderr)}
    return {
        "wall_s": round(wall, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "exit_code": result.returncode,
        "verdict": report["verdict"],
        "envs_created": len(created),
        "env_creation_s": created,
        "env_creation_total_s": round(sum(created.values()), 1),
        "envs_disk_mb": round(disk_mb(envs_dir), 1),
        "versions": family["downstream"]["versions"],
        "probe_host": PROBE_HOST.findall(result.stderr),
        "environments": family["downstream"]["environments"],
        "cells": family["downstream"]["cells"],
        "variant_cells": family["fused_layout"]["cells"],
    }


ENVS, UV_CACHE = DATA / "matrix-envs", DATA / "matrix-uv-cache"
REASON_CHARS = 90


RUNS = {
    "first": "first",
    "second": "second (cells from the local cache)",
    "probes": "warm environments, no cell cache: every probe runs",
    "installed": "the installed check alone (matrix off)",
}


def measure(name: str, folder: Path, versions: str | None, *, fresh: bool) -> dict[str, Any]:
    """Four runs; `fresh`: the first one starts without environments and without a uv cache.

    Then the second (cells from the local cache), a rerun with every probe running
    (`HUBFUSE_CELL_CACHE=none`) and the installed check alone, which a release's probes are
    measured against: (probes - installed) / releases.
    """
    if fresh:
        shutil.rmtree(ENVS, ignore_errors=True)
        shutil.rmtree(UV_CACHE, ignore_errors=True)
    first = run_check(folder, ENVS, UV_CACHE, versions)
    second = run_check(folder, ENVS, UV_CACHE, versions)
    probes = run_check(folder, ENVS, UV_CACHE, versions, HUBFUSE_CELL_CACHE="none")
    installed = run_check(folder, ENVS, UV_CACHE, "none", HUBFUSE_CELL_CACHE="none")
    releases = len(first["versions"]) or 1
    return {
        "checkpoint": name,
        "fresh_envs": fresh,
        "first": first,
        "second": second,
        "probes": probes,
        "installed": installed,
        "per_release_s": round((probes["wall_s"] - installed["wall_s"]) / releases, 2),
    }


def large_checkpoint(size_gb: float) -> Path:
    """bench/verify.py's generated checkpoint (same folder, so either benchmark reuses it)."""
    import torch
    from _common import LARGE_MODEL_TYPE, LARGE_SHARD_SIZE

    folder = large_checkpoint_folder(DATA, size_gb)
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        synth.make_large_vision_checkpoint(
            folder,
            target_bytes=size_gb * 1e9,
            dtype=torch.bfloat16,
            model_type=LARGE_MODEL_TYPE,
            max_shard_size=LARGE_SHARD_SIZE,
        )
        (folder / ".complete").write_text("")
    return folder


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Downstream matrix cost (`bench/matrix.py`)",
        "",
        f"{result['environment']['date']}, hubfuse {result['environment']['hubfuse_commit']}, "
        f"{result['environment']['cpus']} CPUs (shared with other work), matrix: {result['selection']}.",
        "",
        md_row("checkpoint", "run", "wall", "envs created", "creation (sum)", "envs disk", "verdict", "load"),
        md_rule("---", "---", "---:", "---:", "---:", "---:", "---", "---"),
    ]
    for measured in result["runs"]:
        for run, label in RUNS.items():
            if run not in measured:
                continue
            r = measured[run]
            lines.append(
                md_row(
                    measured["checkpoint"],
                    label,
                    f"{r['wall_s']} s",
                    r["envs_created"],
                    f"{r['env_creation_total_s']} s",
                    f"{r['envs_disk_mb'] / 1000:.2f} GB",
                    r["verdict"],
                    _load_text(r),
                )
            )
    for measured in result["runs"]:
        if "per_release_s" in measured:
            host = "; ".join(measured["probes"]["probe_host"]) or "no probe host line"
            lines += [
                "",
                f"{measured['checkpoint']}: one release of the warm matrix costs "
                f"{measured['per_release_s']} s of wall time over the installed check alone "
                f"({measured['installed']['wall_s']} s); {host}.",
            ]
    first = result["runs"][0]["first"]
    lines += ["", f"Cells of the first run ({result['runs'][0]['checkpoint']}): config PR and variant.", ""]
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


def _load_text(run: dict[str, Any]) -> str:
    """The 1-minute load average when the run started and when it ended (older results: '-')."""
    if "load_average_before" not in run:
        return "-"
    return f"{run['load_average_before'][0]:g} -> {run['load_average_after'][0]:g}"


def release_tables(models: list[str], versions: str | None, out: Path) -> None:
    """One check per model type, all sharing one environments folder and one uv cache.

    The report is rewritten after each model, so a run cut short keeps the models it finished.
    """
    import torch

    envs = Path(os.environ.get("HUBFUSE_ENVS") or ENVS)
    uv_cache = Path(os.environ.get("UV_CACHE_DIR") or UV_CACHE)
    result: dict[str, Any] = {
        "environment": environment(["torch", "transformers"]),
        "selection": versions or "default",
        "command": shlex.join(["python", "bench/matrix.py", *sys.argv[1:]]),
        "checks": [],
    }
    for model_type in models:
        folder = DATA / f"release-tables-{model_type}"
        shutil.rmtree(folder, ignore_errors=True)
        synth.make_tiny_checkpoint(model_type, folder, dtype=torch.float32)
        print(f"{model_type}: checking", file=sys.stderr, flush=True)
        result["checks"].append({"model_type": model_type, **run_check(folder, envs, uv_cache, versions)})
        write_report(out, result, release_tables_markdown(result))


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    reason = " ".join(cell["reason"].split())
    if len(reason) > REASON_CHARS:
        reason = reason[: REASON_CHARS - 1] + "…"
    text = f"{cell['outcome']}: {reason}" if reason else cell["outcome"]
    return text.replace("|", "\\|")


def release_tables_markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        "# Release tables (`bench/matrix.py --models`)",
        "",
        f"{env['date']}, hubfuse {env['hubfuse_commit']}, torch {env['torch']}, {env['cpus']} CPUs "
        f"(shared with other work), matrix: `{result['selection']}`. Command: `{result['command']}`.",
    ]
    for check in result["checks"]:
        config_cells = {(c["transformers"], c["env"]): c for c in check["cells"]}
        variant_cells = {(c["transformers"], c["env"]): c for c in check["variant_cells"]}
        lines += [
            "",
            f"## {check['model_type']}: verdict {check['verdict']}, {check['wall_s']} s, "
            f"{check['envs_created']} environments created",
            "",
            md_row("transformers", "column", "config PR", "variant"),
            md_rule("---", "---", "---", "---"),
        ]
        for release, column in dict.fromkeys([*config_cells, *variant_cells]):
            stand_in = (config_cells.get((release, column)) or {}).get("stand_in")
            lines.append(
                md_row(
                    release,
                    f"{column} (stand-in)" if stand_in else column,
                    _cell_text(config_cells.get((release, column))),
                    _cell_text(variant_cells.get((release, column))),
                )
            )
        unavailable = {k: v for k, v in check["environments"].items() if v}
        if unavailable:
            lines.append("")
            lines += [f"- `{k}` unavailable: {' '.join(str(v).split())}" for k, v in unavailable.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--versions",
        help="the matrix for both runs, as $HUBFUSE_DOWNSTREAM_VERSIONS (default: the product default)",
    )
    parser.add_argument("--large", type=float, help="also the bench/verify.py checkpoint of this many GB")
    parser.add_argument("--large-only", action="store_true", help="skip the tiny model (envs already made)")
    parser.add_argument("--models", help="comma-separated model types: write the release tables instead")
    parser.add_argument("--out", type=Path, help="default bench/results/matrix.json (release-tables.json)")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    if args.models:
        out = args.out or REPO / "bench" / "results" / "release-tables.json"
        release_tables([m for m in args.models.split(",") if m], args.versions, out)
        return
    tiny = synth.write_demo_checkpoint(DATA / "matrix-demo-model")
    runs = [] if args.large_only else [measure("tiny demo (Qwen3-VL)", tiny, args.versions, fresh=True)]
    if args.large:
        # The environments do not depend on the checkpoint: the large one reuses the tiny run's.
        large = large_checkpoint(args.large)
        runs.append(measure(f"Qwen3-VL {args.large:g} GB bf16", large, args.versions, fresh=False))
    result = {
        "environment": environment(["torch", "transformers"]),
        "selection": args.versions or "default",
        "runs": runs,
    }
    write_report(args.out or REPO / "bench" / "results" / "matrix.json", result, markdown(result))


if __name__ == "__main__":
    main()
