"""Shrinking a transformers config to a tiny model: the rules the structural twin and the test factory share.

Every width-, head-, layer- and expert-count-like field is capped, token ids are moved into the
tiny vocabulary, per-layer lists keep one layer of each kind, multimodal rope sections follow the
shrunk heads. Patch-embedding geometry (patch_size, temporal_patch_size, in_channels) is never
touched, so a Conv3d keeps the structure fusion looks at. Pure config arithmetic: no weights.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

WIDTH = 32
FFN = 64
_HEADS = 2
_HEAD_DIM = WIDTH // _HEADS
LAYERS = 2
VOCAB = 512
_EXPERTS = 4
_EXPERTS_PER_TOKEN = 2

# Every width-like attribute gets the same value, so that sizes which must agree across
# sub-configs (a vision merger's output and the text hidden size, an audio encoder's output_dim,
# a talker's thinker_hidden_size...) agree without knowing which pairs are tied.
_WIDTH_KEYS = frozenset(
    {
        "hidden_size",
        "embed_dim",
        "out_hidden_size",
        "d_model",
        "output_dim",
        "embedding_size",
        "thinker_hidden_size",
        "projector_hidden_size",
        "decoder_hidden_size",
        "pred_hidden_size",
        "decoder_dim",
        "ple_embed_dim",
        "text_hidden_size",
        "vision_hidden_size",
        "merged_hidden_size",
        "hc_lowrank",
        "emb_dim",
    }
)
_FFN_KEYS = frozenset(
    {
        "intermediate_size",
        "moe_intermediate_size",
        "shared_expert_intermediate_size",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "dense_intermediate_size",
        "shared_intermediate_size",
        "projection_intermediate_size",
        "decoder_intermediate_size",
        "downsample_hidden_size",
    }
)
_HEAD_KEYS = frozenset(
    {
        "num_attention_heads",
        "num_heads",
        "encoder_attention_heads",
        "decoder_attention_heads",
        "decoder_num_attention_heads",
        "pred_num_attention_heads",
        "linear_num_key_heads",
        "linear_num_value_heads",
        "index_n_heads",
    }
)
_HEAD_DIM_KEYS = frozenset(
    {
        "head_dim",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_head_dim",
        "index_head_dim",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "qk_head_dim",
        "v_head_dim",
        "kv_lora_rank",
        "q_lora_rank",
    }
)
LAYER_KEYS = frozenset(
    {
        "num_hidden_layers",
        "depth",
        "encoder_layers",
        "decoder_layers",
        "num_layers",
        "decoder_num_hidden_layers",
        "pred_num_hidden_layers",
        "num_spatial_layers",
        "num_temporal_layers",
        "num_auxiliary_layers",
        "num_pooler_layers",
    }
)
_EXPERT_KEYS = frozenset({"num_experts", "num_local_experts", "n_routed_experts"})
_CAPPED_KEYS = {
    "vocab_size": VOCAB,
    "codebook_size": VOCAB,
    "num_experts_per_tok": _EXPERTS_PER_TOKEN,
    "n_shared_experts": 1,
    "n_group": 1,
    "topk_group": 1,
    # BigVGAN vocoders halve their channels at every upsampling stage, so keep 2**stages.
    "upsample_initial_channel": 64,
    # Speech codecs: one embedding table per residual codebook.
    "num_code_groups": 4,
    "num_quantizers": 4,
}
# Lists of layer indices (full-attention blocks, deepstack taps...) that must stay within depth.
LAYER_INDEX_LIST = re.compile(r"(_indexes|_indices|_layers|_layer_ids)$")
_LAYER_INDEX_INT = re.compile(r"_layer$")
TOKEN_ID = re.compile(r"(token_id|token_ids|token_index|_id)$")
_MROPE_DEFAULT = re.compile(r"""["']mrope_section["']\s*,\s*\[([\d,\s]+)\]""")


def config_fields(config: PretrainedConfig) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(config):
        names = [field.name for field in dataclasses.fields(config)]
    else:
        names = list(vars(config))
    for name in names:
        if not name.startswith("_") and hasattr(config, name):
            yield name, getattr(config, name)


def token_id_map(config: PretrainedConfig) -> dict[int, int]:
    """Map every out-of-vocabulary special token id in the tree to a distinct id near the top."""
    found: set[int] = set()
    _collect_token_ids(config, found)
    large = sorted(token for token in found if token >= VOCAB)
    return {token: VOCAB - 1 - index for index, token in enumerate(large)}


def _collect_token_ids(config: PretrainedConfig, found: set[int]) -> None:
    for name, value in config_fields(config):
        if isinstance(value, PretrainedConfig):
            _collect_token_ids(value, found)
        elif TOKEN_ID.search(name):
            found.update(ints(value))


def ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return []


def shrink_overrides(config: PretrainedConfig, token_ids: dict[int, int]) -> dict[str, Any]:
    """Overrides (a plain dict, nested for sub-configs) that shrink `config` to a tiny model."""
    overrides: dict[str, Any] = {}
    values = dict(config_fields(config))
    old_layers = layer_count(values)
    kept_layers = _kept_layer_indices(values, old_layers)
    for name, value in values.items():
        if isinstance(value, PretrainedConfig):
            # Some parents dispatch on the sub-config's model_type and fail without it.
            overrides[name] = {"model_type": value.model_type, **shrink_overrides(value, token_ids)}
            continue
        new = _shrunk_value(name, value, values, token_ids, old_layers, kept_layers)
        if new is not _KEEP:
            overrides[name] = new
    if kept_layers is not None:
        for key in LAYER_KEYS & values.keys():
            if values[key] == old_layers:
                overrides[key] = len(kept_layers)
    _shrink_rope(config, values, overrides)
    return deep_merge(overrides, _OVERRIDES.get(type(config).__name__, {}))


_KEEP = object()


def _shrunk_value(
    name: str,
    value: Any,
    values: dict[str, Any],
    token_ids: dict[int, int],
    old_layers: int | None,
    kept_layers: list[int] | None,
) -> Any:
    if isinstance(value, bool) or value is None:
        return _KEEP
    if isinstance(value, int):
        return _shrunk_int(name, value, values, token_ids, old_layers)
    if isinstance(value, (list, tuple)):
        return _shrunk_list(name, list(value), token_ids, old_layers, kept_layers)
    return _KEEP


def _shrunk_int(
    name: str, value: int, values: dict[str, Any], token_ids: dict[int, int], old_layers: int | None
) -> Any:
    if name in _WIDTH_KEYS:
        return min(value, WIDTH)
    if name in _FFN_KEYS:
        return min(value, FFN)
    if name in _HEAD_KEYS:
        return min(value, _HEADS)
    if name == "num_key_value_heads":
        heads = values.get("num_attention_heads", values.get("num_heads"))
        return min(value, _HEADS) if value == heads else 1
    if name in _HEAD_DIM_KEYS:
        return min(value, _HEAD_DIM)
    if name == "rotary_dim":
        return max(2, value * _HEAD_DIM // max(_old_head_dim(values), 1)) // 2 * 2
    if name in LAYER_KEYS:
        return min(value, LAYERS)
    if name in _EXPERT_KEYS:
        return min(value, _EXPERTS)
    if name in _CAPPED_KEYS:
        return min(value, _CAPPED_KEYS[name])
    if TOKEN_ID.search(name):
        return token_ids.get(value, value)
    if _LAYER_INDEX_INT.search(name) and old_layers:
        return remap_layer_index(value, old_layers)
    if name in ("image_size", "crop_size"):
        return min(value, 2 * _spatial_patch(values))
    if name in ("num_frames", "frames_per_clip"):
        return min(value, 2 * _temporal_patch(values))
    return _KEEP


def _shrunk_list(
    name: str,
    value: list[Any],
    token_ids: dict[int, int],
    old_layers: int | None,
    kept_layers: list[int] | None,
) -> Any:
    if TOKEN_ID.search(name) and ints(value):
        return [token_ids.get(v, v) for v in value]
    if kept_layers is not None and old_layers and len(value) == old_layers:
        return [value[i] for i in kept_layers]
    if LAYER_INDEX_LIST.search(name) and old_layers and ints(value) and value:
        return sorted({remap_layer_index(v, old_layers) for v in value})
    return _KEEP


def _shrink_rope(config: PretrainedConfig, values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Fit multimodal rope sections (and the head dim they need) to the shrunk attention heads.

    `mrope_section` splits the rotary half-dim between time, height and width; it must sum to
    head_dim * partial_rotary_factor / 2. Many modeling files hard-code a full-size default
    instead of reading it from the config, so that default is read from the source and scaled.
    """
    rope = values.get("rope_parameters")
    # Only a flat rope dict: per-layer-type dicts have no top-level rope_type; axial is for vision.
    if not isinstance(rope, dict) or rope.get("rope_type") in (None, "axial"):
        return
    section = rope.get("mrope_section") or _modeling_mrope_default(config)
    if not section:
        return
    factor = float(rope.get("partial_rotary_factor", 1.0))
    head_dim = overrides.get("head_dim", _HEAD_DIM)
    if isinstance(values.get("head_dim"), int) and values["head_dim"] > 0:
        # A partial rotary factor would leave too few rotary dims to split: widen the heads.
        while int(head_dim * factor) // 2 < 2 * len(section) and head_dim < values["head_dim"]:
            head_dim *= 2
        overrides["head_dim"] = head_dim
    rope = {**rope, **overrides.get("rope_parameters", {})}
    rope["mrope_section"] = _split_proportionally(list(section), int(head_dim * factor) // 2)
    overrides["rope_parameters"] = rope


@functools.cache
def _mrope_defaults_in(module_name: str) -> tuple[int, ...] | None:
    try:
        source = Path(importlib.util.find_spec(module_name).origin).read_text(encoding="utf-8")
    except (AttributeError, ImportError, OSError, ValueError):
        return None
    match = _MROPE_DEFAULT.search(source)
    return tuple(int(part) for part in match.group(1).split(",")) if match else None


def _modeling_mrope_default(config: PretrainedConfig) -> tuple[int, ...] | None:
    return _mrope_defaults_in(type(config).__module__.replace(".configuration_", ".modeling_"))


def _split_proportionally(parts: list[int], total: int) -> list[int]:
    """Scale `parts` to sum to `total`, each part at least 1 (largest remainder rounding)."""
    old_total = sum(parts)
    exact = [max(1.0, p * total / old_total) for p in parts]
    result = [int(x) for x in exact]
    order = sorted(range(len(parts)), key=lambda i: exact[i] - result[i], reverse=True)
    for i in order[: total - sum(result)]:
        result[i] += 1
    return result


def _old_head_dim(values: dict[str, Any]) -> int:
    head_dim = values.get("head_dim")
    if isinstance(head_dim, int) and head_dim > 0:
        return head_dim
    heads = values.get("num_attention_heads") or values.get("num_heads") or 1
    hidden = values.get("hidden_size") or values.get("embed_dim") or WIDTH
    return hidden // heads


def layer_count(values: dict[str, Any]) -> int | None:
    for key in ("num_hidden_layers", "depth", "encoder_layers", "num_layers", "decoder_layers"):
        count = values.get(key)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            return count
    return None


def _kept_layer_indices(values: dict[str, Any], old_layers: int | None) -> list[int] | None:
    """Which layers to keep so that every per-layer list keeps each of its distinct entries.

    Hybrid models (linear + full attention, dense + sparse MLP) would otherwise lose a layer kind
    when simply truncated to the first layers.
    """
    if not old_layers or old_layers <= LAYERS:
        return None
    per_layer = [
        v for v in values.values() if isinstance(v, (list, tuple)) and len(v) == old_layers and not ints(v)
    ]
    kept: set[int] = set()
    for layer_list in per_layer:
        first_seen: dict[Any, int] = {}
        for index, entry in enumerate(layer_list):
            first_seen.setdefault(repr(entry), index)
        kept.update(first_seen.values())
    index = 0
    while len(kept) < LAYERS:
        kept.add(index)
        index += 1
    return sorted(kept)


def remap_layer_index(index: int, old_layers: int) -> int:
    return min(LAYERS - 1, index * LAYERS // old_layers)


def _spatial_patch(values: dict[str, Any]) -> int:
    patch = values.get("patch_size")
    if isinstance(patch, int):
        return patch
    tubelet = values.get("tubelet_size")
    if isinstance(tubelet, (list, tuple)) and len(tubelet) == 3:
        return int(tubelet[1])
    return 16


def _temporal_patch(values: dict[str, Any]) -> int:
    for key in ("temporal_patch_size", "tubelet_size"):
        size = values.get(key)
        if isinstance(size, int):
            return size
        if isinstance(size, (list, tuple)) and len(size) == 3:
            return int(size[0])
    return 1


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Per-config-class fixes where the generic rules cannot produce a working model, applied at any
# depth (so `qwen4_exp` and `qwen4_exp_text` share one entry). Most exist because the *default*
# config of that class does not build at all in this transformers release: values a real
# checkpoint's config.json always carries are missing from the class defaults.
_OVERRIDES: dict[str, dict[str, Any]] = {
    # The text model needs per-layer-type rope parameters; the default has none.
    "CohereCompassTextConfig": {
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [3, 3, 2]}
        }
    },
    # The model maps VQ codes to BPE tokens through `vocabulary_map`; the default is None.
    "Emu3Config": {"vocabulary_map": {"<image>": 8, "<|extra_200|>": 9}},
    # The VQ-VAE's widths are `base_channels * channel_multiplier`, names no generic rule knows.
    "Emu3VQVAEConfig": {"base_channels": 32, "channel_multiplier": [1, 1, 1, 1]},
    # The token2wav DiT's speaker encoder (ECAPA-TDNN) and codec embedding use their own names.
    "Qwen2_5OmniDiTConfig": {
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_attention_channels": 16,
        "enc_se_channels": 16,
        "enc_dim": 32,
        "enc_emb_dim": 32,
        "num_embeds": VOCAB + 1,
    },
    # The talker reads `spatial_merge_size` and its MoE `shared_expert_intermediate_size`, which
    # their config classes never set.
    "Qwen3OmniMoeTalkerConfig": {"spatial_merge_size": 2},
    "Qwen3OmniMoeTalkerTextConfig": {"shared_expert_intermediate_size": FFN},
    # Indexed-attention layers need the QSA indexer fields, which all default to None.
    "Qwen4ExpTextConfig": {
        "indexer_n_heads": _HEADS,
        "indexer_kv_heads": 1,
        "indexer_head_dim": _HEAD_DIM,
        "indexer_budget": 8,
        "indexer_compress_ratio": 4,
    },
}
