"""The structural twin of targeted mode: a real config with its stacks pruned, built with random weights.

The twin keeps the real config's patch-embedding widths and geometry (so the tensors fusion
touches have their real shapes) and only loses layers; every other (sub-)config is shrunk by the
rules of `hubfuse.check.shrink`. Runs inside a worker (`targeted_probes.probe_build_twin`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from hubfuse.check.shrink import (
    FFN,
    LAYER_INDEX_LIST,
    LAYER_KEYS,
    LAYERS,
    TOKEN_ID,
    WIDTH,
    config_fields,
    deep_merge,
    ints,
    layer_count,
    remap_layer_index,
    shrink_overrides,
    token_id_map,
)

INIT_STD = 0.02


def twin_config(config: PretrainedConfig) -> PretrainedConfig:
    """A real config with its stacks pruned to what fits: hubfuse's targeted-mode twin.

    Every (sub-)config is shrunk by `shrink_overrides` (as the test factory shrinks class defaults), except those that hold a
    patch embedding (they carry `patch_size`): these keep their widths and geometry, so the twin's
    patch-embedding tensors have the real shapes, and only lose layers.
    """
    token_ids = token_id_map(config)
    overrides = _twin_overrides(config, token_ids)
    return type(config).from_dict(deep_merge(config.to_dict(), overrides))


# Widths of a patch-embedding config that the patch embedding's own tensors do not depend on.
_TWIN_NARROWED = {"intermediate_size": FFN, "out_hidden_size": WIDTH, "spatial_merge_size": 1}


def _twin_overrides(config: PretrainedConfig, token_ids: dict[int, int]) -> dict[str, Any]:
    values = dict(config_fields(config))
    if "patch_size" not in values:
        overrides = shrink_overrides(config, token_ids)
        for name, value in values.items():
            if isinstance(value, PretrainedConfig):
                overrides[name] = {"model_type": value.model_type, **_twin_overrides(value, token_ids)}
        return overrides
    old_layers = layer_count(values)
    overrides = {}
    for name, value in values.items():
        if isinstance(value, PretrainedConfig):
            overrides[name] = {"model_type": value.model_type, **_twin_overrides(value, token_ids)}
        elif name in LAYER_KEYS and isinstance(value, int) and not isinstance(value, bool):
            overrides[name] = min(value, LAYERS)
        elif name in _TWIN_NARROWED and isinstance(value, int) and not isinstance(value, bool):
            overrides[name] = min(value, _TWIN_NARROWED[name])
        elif LAYER_INDEX_LIST.search(name) and old_layers and ints(value):
            overrides[name] = sorted({remap_layer_index(v, old_layers) for v in value})
        elif TOKEN_ID.search(name) and ints(value):
            overrides[name] = (
                token_ids.get(value, value)
                if isinstance(value, int)
                else [token_ids.get(v, v) for v in value]
            )
    return overrides


def build_model(
    cls: type[PreTrainedModel], config: PretrainedConfig, *, dtype: torch.dtype, seed: int
) -> PreTrainedModel:
    from transformers.initialization import no_init_weights

    config.architectures = [cls.__name__]
    # Skip transformers' own init (we overwrite every parameter anyway) and allocate straight in
    # `dtype`, so a large model is never held twice.
    with no_init_weights():
        model = cls._from_config(config, dtype=dtype)
    fill_parameters(model, seed)
    return model.eval()


def fill_parameters(model: nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded random values, independent of memory state.

    Norm scales become 1 + noise, everything else plain noise: no parameter is left constant
    (ones, zeros) or at whatever `torch.empty` held, so two tensors are never equal by accident
    and a weight that fails to load cannot pass for a loaded one.
    """
    generator = torch.Generator().manual_seed(seed)
    norm_params = {
        id(param)
        for module in model.modules()
        if "norm" in type(module).__name__.lower()
        for param in module.parameters(recurse=False)
    }
    with torch.no_grad():
        for param in model.parameters():
            # In place, in the parameter's own dtype: no temporary copy of a large tensor.
            param.normal_(0.0, INIT_STD, generator=generator)
            if id(param) in norm_params:
                param.add_(1.0)
