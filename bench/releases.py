"""Installed-release verdicts: `hubfuse check` of the same tiny checkpoints under .venv and .venv-newest.

    python bench/releases.py [--out bench/results/releases.json]

Checkpoints are written once by .venv's transformers (qwen3_vl, glm4v, qwen2_vl, qwen2_5_vl and a
plain Llama, float32); each is checked with the downstream matrix off by both installed releases.
.venv-newest runs with USE_HUB_KERNELS=0 (scripts/setup-newest.sh: `kernels` left out where the
index lacks it); one run without it records the refusal line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _common import REPO, environment, md_row, md_rule, write_report

from hubfuse.testing import synth

DATA = REPO / "bench" / ".data" / "releases"
MODELS = ("qwen3_vl", "glm4v", "qwen2_vl", "qwen2_5_vl", "llama")
VENVS = {"installed (.venv)": REPO / ".venv", "newest (.venv-newest)": REPO / ".venv-newest"}


def checkpoint(model_type: str) -> Path:
    folder = DATA / model_type
    if not (folder / "config.json").is_file():
        if model_type == "llama":
            synth.make_plain_checkpoint(folder)
        else:
            synth.make_tiny_checkpoint(model_type, folder)
    return folder


def check(venv: Path, folder: Path, kernels_off: bool) -> dict:
    env = {**os.environ, "HUBFUSE_DOWNSTREAM_VERSIONS": "none"}
    if kernels_off:
        env["USE_HUB_KERNELS"] = "0"
    start = time.monotonic()
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "hubfuse", "check", str(folder), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    wall = round(time.monotonic() - start, 1)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        return {"exit": done.returncode, "wall_s": wall, "verdict": "-", "first": (errors or ["?"])[-1]}
    version = report["transformers_version"]
    family = report["families"][0] if report["families"] else {}
    return {
        "exit": done.returncode,
        "wall_s": wall,
        "transformers": version,
        "verdict": family.get("verdict", report.get("verdict")),
        "first": (family.get("reasons") or [""])[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "releases.json")
    args = parser.parse_args()
    runs = []
    for model in MODELS:
        folder = checkpoint(model)
        for name, venv in VENVS.items():
            runs.append({"model": model, "venv": name, **check(venv, folder, kernels_off=True)})
    refusal = check(VENVS["newest (.venv-newest)"], checkpoint("qwen3_vl"), kernels_off=False)
    result = {"environment": environment(["torch", "transformers"]), "runs": runs, "refusal": refusal}
    lines = [
        "# Installed-release verdicts (`bench/releases.py`)",
        "",
        f"{result['environment']['date']}, tiny float32 checkpoints saved by .venv's transformers, "
        "matrix off; .venv-newest with USE_HUB_KERNELS=0.",
        "",
        md_row("model", "environment", "transformers", "verdict", "exit", "wall", "first reason"),
        md_rule("---", "---", "---", "---", "---:", "---:", "---"),
    ]
    for r in runs:
        lines.append(
            md_row(
                r["model"],
                r["venv"],
                r.get("transformers", "-"),
                r["verdict"],
                r["exit"],
                f"{r['wall_s']} s",
                r["first"][:110].replace("|", "\\|"),
            )
        )
    lines += [
        "",
        f"Without USE_HUB_KERNELS=0 (.venv-newest, qwen3_vl): exit {refusal['exit']}, `{refusal['first']}`",
    ]
    write_report(args.out, result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
