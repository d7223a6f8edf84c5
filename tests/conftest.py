"""Shared test setup. Environment variables that `huggingface_hub` reads at import time go here, first."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# On a GitHub Actions runner (ci.yml, newest-transformers.yml) hubfuse writes its errors as
# `::error::` annotations and a job summary: the tests assert the terminal format, so the CLI
# they start never inherits the runner's; a test of the Actions format sets these itself.
os.environ.pop("GITHUB_ACTIONS", None)
os.environ.pop("GITHUB_STEP_SUMMARY", None)
from pathlib import Path

import pytest

# Uploads and downloads go through Xet, as against the Hub (the local hub speaks it); the client's
# Xet cache (its shards, chunks) lives in this run's temp dir, never in the user's cache.
os.environ.pop("HF_HUB_DISABLE_XET", None)
os.environ["HF_XET_CACHE"] = tempfile.mkdtemp(prefix="hubfuse-test-xet-")
atexit.register(shutil.rmtree, os.environ["HF_XET_CACHE"], ignore_errors=True)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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

    from hubfuse.testing import synth

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
