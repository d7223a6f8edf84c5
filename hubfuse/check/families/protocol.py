"""What a fusion family plugin states, so that hubfuse can verify the family independently.

transformers' registry says which modules a family fuses and how it converts weights; the plugin
keeps hubfuse's own statement of the *expected* result (the mathematically correct fused weights
and a module input), so a conversion bug in transformers cannot verify itself. One module per
family under `hubfuse.check.families`; no plugin imports another.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn


class FamilyPlugin(Protocol):
    name: str
    # Why a model card says the family is worth having.
    why: str
    # What the family could fuse but may not, in a not-applicable reason ("Conv3d modules").
    candidate_kind: str
    # What the family reads, for sharing downstream cells between repos (hubfuse.check.cell_case):
    # the parameters of a fusable module it converts (relative to the module), and the config
    # fields its conversion and fused module read, in `config_section` when the config has one.
    touched_parameters: tuple[str, ...]
    config_fields: tuple[str, ...]
    config_section: str | None

    def expected_fused_state(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Plain module -> {fused parameter name: expected tensor}."""
        ...

    def module_inputs(self, module: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
        """Candidate inputs, tried in order until the plain module accepts one."""
        ...

    def unfused_candidates(
        self, model: nn.Module, fusable: dict[str, str], pattern: re.Pattern[str] | None
    ) -> list[dict[str, str]]:
        """Modules of the kind the family fuses that it does not fuse here: [{path, why}]."""
        ...
