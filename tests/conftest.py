"""Shared test setup. Environment variables that `huggingface_hub` reads at import time go here, first."""

from __future__ import annotations

import os

# hf_xet is installed: without this, uploads go to Xet, which the local Hub does not serve.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# The downstream matrix is off unless a test asks for one (tests/test_downstream.py); the product
# default (20-odd transformers environments) belongs in bench/matrix.py. Environments a test does
# create are a cache like pip's, in the user's cache folder: reruns and other checkouts of this
# machine reuse them (a new machine builds them on first use, from the package index).
os.environ.setdefault("HUBFUSE_DOWNSTREAM_VERSIONS", "none")
# Cells proven on another repo are reused only where a test asks for it (tests/test_cell_store.py):
# elsewhere a matrix test must run its probes, never find them in the user's cache.
os.environ.setdefault("HUBFUSE_CELL_CACHE", "none")
os.environ.setdefault(
    "HUBFUSE_ENVS",
    str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hubfuse" / "test-envs"),
)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """Build tiny checkpoints once per session: `checkpoints("qwen2_vl", dtype="bfloat16", sharded=True)`."""
    import torch

    from hubfuse import synth

    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[tuple[str, str, bool], Path] = {}

    def build(model_type: str, *, dtype: str = "float32", sharded: bool = False) -> Path:
        key = (model_type, dtype, sharded)
        if key not in built:
            out = root / f"{model_type}-{dtype}-{'sharded' if sharded else 'single'}"
            if model_type == "plain":
                synth.make_plain_checkpoint(out)
            else:
                synth.make_tiny_checkpoint(
                    model_type,
                    out,
                    dtype=getattr(torch, dtype),
                    max_shard_size="40KB" if sharded else None,
                )
            built[key] = out
        return built[key]

    return build
