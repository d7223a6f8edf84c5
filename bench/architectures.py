"""The architecture table in the README: `hubfuse check` on a tiny checkpoint of every
architecture in the installed transformers whose model holds a Conv3d.

    python bench/architectures.py [--out bench/results/architectures.md] [--modes]

`--modes` also checks the bf16 sharded checkpoint in targeted mode (`hubfuse.check.targeted`)
and adds a column: its verdict, or "= full" where it equals full mode's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from hubfuse.check.modes import CheckRequest, installed_versions
from hubfuse.check.verify import open_source, verify
from hubfuse.testing import synth


def _reason(reasons: list[str]) -> str:
    return (reasons[0] if reasons else "").replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/architectures.md"))
    parser.add_argument(
        "--modes", action="store_true", help="also targeted mode on the bf16 sharded checkpoint"
    )
    args = parser.parse_args()
    versions = installed_versions()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in synth.conv3d_architectures():
            verdicts = []
            for dtype, shard in ((torch.float32, None), (torch.bfloat16, "40KB")):
                folder = synth.make_tiny_checkpoint(
                    arch.model_type,
                    Path(tmp) / f"{arch.model_type}-{dtype}",
                    dtype=dtype,
                    max_shard_size=shard,
                )
                full = CheckRequest(families=["patch_embeddings"], mode="full")
                verdicts.append(verify(open_source(str(folder)), full).families[0])
            fp32, bf16 = verdicts
            same = "" if fp32.verdict == bf16.verdict else f" (bf16 sharded: {bf16.verdict})"
            targeted = ""
            if args.modes:
                targeted_request = CheckRequest(families=["patch_embeddings"], mode="targeted")
                family = verify(open_source(str(folder)), targeted_request).families[0]
                targeted = " = full |" if family.verdict == bf16.verdict else f" **{family.verdict}** |"
            rows.append(
                f"| `{arch.model_type}` | `{arch.class_name}` | {fp32.verdict}{same} |{targeted}"
                f" {_reason(fp32.reasons)} |"
            )
    lines = [
        f"transformers {versions['transformers']}, torch {versions['torch']}; fp32 single-file and bf16 sharded agree"
        " unless noted.",
        "",
        "| model_type | class | patch_embeddings |"
        + (" targeted mode |" if args.modes else "")
        + " first reason |",
        "|---|---|---|" + ("---|" if args.modes else "") + "---|",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
