"""Every architecture in the installed transformers whose model holds a Conv3d, checked for real.

The list comes from inspecting transformers (`hubfuse.testing.synth.conv3d_architectures`), not from a
hand-kept list. Each architecture is checked in fp32 single-file and bf16 sharded form; whatever
the verdict, it must be internally consistent and explained.
"""

from __future__ import annotations

import pytest

from hubfuse.check.modes import CheckRequest
from hubfuse.check.verify import open_source, verify
from hubfuse.testing import synth

ARCHITECTURES = synth.conv3d_architectures()
VARIANTS = [("float32", False), ("bfloat16", True)]


def test_discovery_is_complete():
    assert not synth.discover_conv3d().failures
    assert len(ARCHITECTURES) >= 10
    assert "qwen3_vl" in {a.model_type for a in ARCHITECTURES}


@pytest.mark.parametrize(("dtype", "sharded"), VARIANTS, ids=["fp32-single", "bf16-sharded"])
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.model_type)
def test_verdict_is_consistent(checkpoints, architecture, dtype, sharded):
    folder = checkpoints(architecture.model_type, dtype=dtype, sharded=sharded)
    if sharded:
        assert (folder / "model.safetensors.index.json").is_file()
    report = verify(open_source(str(folder)), CheckRequest(families=["patch_embeddings"], mode="full"))
    (family,) = report.families
    assert family.verdict in {"safe", "unsafe", "not_applicable"}, family.reasons
    assert report.dtype in (None, dtype)

    if not architecture.fusable_paths:
        assert family.verdict == "not_applicable"
    if family.verdict == "not_applicable":
        assert not architecture.fusable_paths
        assert family.reasons and "fus" in family.reasons[0]
    elif family.verdict == "safe":
        assert not family.reasons
        assert family.fused_modules
        assert family.roundtrip.tensors_bit_exact and not family.roundtrip.mismatches
        assert family.roundtrip.tensors_compared > 0
        assert "+ fusion_config = {'patch_embeddings': True}" in family.roundtrip.config_changes
        assert family.downstream.weights_match and family.downstream.fused_modules == family.fused_modules
        assert family.downstream.max_abs_output_diff is not None
        assert family.downstream.max_abs_output_diff <= family.downstream.output_tolerance
        assert family.fused_layout.weights_match
    else:
        assert family.reasons
        assert all(len(reason) > 20 for reason in family.reasons)


@pytest.mark.parametrize("sharded", [False, True], ids=["single", "sharded"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_layout_of_a_safe_architecture(checkpoints, dtype, sharded):
    folder = checkpoints("qwen3_vl", dtype=dtype, sharded=sharded)
    report = verify(open_source(str(folder)), CheckRequest(mode="full"))
    (family,) = report.families
    assert family.verdict == "safe", family.reasons
    assert report.dtype == dtype
    assert family.roundtrip.tensors_bit_exact and family.downstream.weights_match
