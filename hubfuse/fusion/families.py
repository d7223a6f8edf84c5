"""What hubfuse knows about each transformers fusion family, to verify it independently.

transformers' registry says which modules a family fuses and how it converts weights; hubfuse
keeps its own statement of the *expected* result (the mathematically correct fused weights and a
module input), so a conversion bug in transformers cannot verify itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def family_names() -> set[str]:
    from transformers.fusion_mapping import _FUSION_REGISTRY

    return set(_FUSION_REGISTRY)


@dataclass(frozen=True)
class FamilyVerifier:
    name: str
    # plain module -> {fused parameter name: expected tensor}
    expected_fused_state: Callable[[nn.Module], dict[str, torch.Tensor]]
    # plain module -> candidate inputs, tried in order until the plain module accepts one
    module_inputs: Callable[[nn.Module, torch.Generator], list[torch.Tensor]]


def _patch_embeddings_expected(module: nn.Module) -> dict[str, torch.Tensor]:
    proj = module.proj
    expected = {"linear_proj.weight": proj.weight.detach().reshape(proj.out_channels, -1).contiguous()}
    if proj.bias is not None:
        expected["linear_proj.bias"] = proj.bias.detach().contiguous()
    return expected


def _patch_embeddings_inputs(module: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    import torch

    proj = module.proj
    dtype = proj.weight.dtype
    in_channels = proj.in_channels
    kt, kh, kw = proj.kernel_size
    patch_volume = in_channels * math.prod(proj.kernel_size)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float32).to(dtype)

    return [
        randn(8, patch_volume),  # Qwen-style: flattened patches
        randn(1, in_channels, kt * 2, kh * 2, kw * 2),  # video (B, C, T, H, W)
        randn(1, kt * 2, in_channels, kh * 2, kw * 2),  # video (B, T, C, H, W)
    ]


VERIFIERS: dict[str, FamilyVerifier] = {
    "patch_embeddings": FamilyVerifier(
        name="patch_embeddings",
        expected_fused_state=_patch_embeddings_expected,
        module_inputs=_patch_embeddings_inputs,
    ),
}
