"""What hubfuse knows about each transformers fusion family, to verify it independently.

transformers' registry says which modules a family fuses and how it converts weights; hubfuse
keeps its own statement of the *expected* result (the mathematically correct fused weights and a
module input), so a conversion bug in transformers cannot verify itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@functools.cache
def family_names() -> frozenset[str]:
    """The families the installed transformers registers.

    Asked of a worker process, so that the CLI process never imports torch: bad input fails
    fast, and the parent stays small while workers load models. An environment that cannot load
    as the release's users do (5.25 without `kernels`) is refused here in one line with its fix,
    before any verdict.
    """
    import tempfile

    from hubfuse.errors import BadInputError
    from hubfuse.fusion import worker

    with tempfile.NamedTemporaryFile(prefix="hubfuse-families-", suffix=".log") as log_file:
        names = worker.run_isolated("probe_family_names", log_path=Path(log_file.name), timeout=300)
    if names.get("default_load_problem"):
        raise BadInputError(names["default_load_problem"])
    return frozenset(names["families"])


@dataclass(frozen=True)
class FamilyVerifier:
    name: str
    # plain module -> {fused parameter name: expected tensor}
    expected_fused_state: Callable[[nn.Module], dict[str, torch.Tensor]]
    # plain module -> candidate inputs, tried in order until the plain module accepts one
    module_inputs: Callable[[nn.Module, torch.Generator], list[torch.Tensor]]
    # What the family reads, for sharing downstream cells between repos (hubfuse.fusion.cell_case):
    # the parameters of a fusable module it converts (relative to the module), and the config
    # fields its conversion and fused module read, in `config_section` when the config has one.
    touched_parameters: tuple[str, ...] = ()
    config_fields: tuple[str, ...] = ()
    config_section: str | None = None


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
        touched_parameters=("proj.weight", "proj.bias"),
        # The weight conversion reads the vision config's patch_size, temporal_patch_size and
        # in_channels; the fused forward the module's embed_dim (hidden_size in the vision config).
        config_fields=("patch_size", "temporal_patch_size", "in_channels", "hidden_size", "embed_dim"),
        config_section="vision_config",
    ),
}


UNVERIFIABLE = "hubfuse has no independent statement of its correct result, so it cannot verify it"


def check_requested_families(requested: tuple[str, ...] | list[str], *, where: str = "--family") -> None:
    """Refuse, before any download or model load, a family hubfuse cannot verify.

    Needs no worker: whatever transformers registers, hubfuse can only verify the families it
    has a verifier for.
    """
    from hubfuse.errors import BadInputError

    for name in requested:
        if name not in VERIFIERS:
            raise BadInputError(
                f"{where}: unknown fusion family {name!r}; hubfuse can verify: {', '.join(sorted(VERIFIERS))}"
            )


@dataclass(frozen=True)
class FamilySelection:
    families: list[str]  # to check, in order
    skipped: dict[str, str]  # registered by transformers but not checked: family -> why


def resolve_families(requested: tuple[str, ...] | list[str]) -> FamilySelection:
    """The requested families in order, or by default every registered family hubfuse can verify.

    A family transformers registers and hubfuse cannot verify is skipped by default (and said
    so), never checked: a verdict on it would be transformers verifying itself.
    """
    from hubfuse.errors import BadInputError

    check_requested_families(requested)
    known = family_names()
    if requested:
        missing = [name for name in requested if name not in known]
        if missing:
            from importlib.metadata import version

            raise BadInputError(
                f"fusion family {missing[0]!r} is not registered by the installed transformers "
                f"{version('transformers')} (registered: {', '.join(sorted(known)) or 'none'})"
            )
        return FamilySelection(list(dict.fromkeys(requested)), {})
    families = [name for name in sorted(known) if name in VERIFIERS]
    skipped = {name: UNVERIFIABLE for name in sorted(known) if name not in VERIFIERS}
    if not families:
        raise BadInputError(
            f"hubfuse can verify none of the fusion families transformers registers ({', '.join(sorted(known))})"
        )
    return FamilySelection(families, skipped)
