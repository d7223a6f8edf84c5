"""Tiny random-weight checkpoints of real transformers architectures, for tests, demos and benchmarks.

Nothing here downloads weights: every checkpoint is built from a config class of the installed
transformers, shrunk to a few kilobytes of parameters, and filled with seeded random values.
`conv3d_architectures()` finds, by inspecting transformers itself, every architecture whose model
holds an `nn.Conv3d`, so the test matrix follows the installed version instead of a hand-kept list.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from hubfuse.fusion import transformers_fusion

_PATCH_FAMILY = "patch_embeddings"

# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------

# Which auto-mapping names the class a checkpoint's config.json `architectures` would name, in
# order of preference: the generation head of a multimodal model over its bare backbone.
_CLASS_MAPPINGS = (
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
    "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
    "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "MODEL_MAPPING_NAMES",
)
_IMPORTS_MODELING = re.compile(r"from \.\.(\w+)\.modeling_\w+ import")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One model type of the installed transformers whose model holds an `nn.Conv3d`."""

    model_type: str
    class_name: str  # what config.json's `architectures` names
    module: str  # the `transformers.models.<module>` package
    conv3d_paths: tuple[str, ...]  # every Conv3d in the (tiny) model, by module path
    # The Conv3d modules that sit as `proj` inside a module the patch_embeddings family targets by
    # name; `fusable_paths` are those whose geometry it also accepts (stride == kernel, ...).
    patch_embed_paths: tuple[str, ...]
    fusable_paths: tuple[str, ...]
    is_sub_model: bool  # a tower of a composite model (e.g. `qwen3_vl_vision`), not a full model

    @property
    def named_patch_embed(self) -> bool:
        """Whether the fusion family's name pattern matches any of this model's Conv3d modules."""
        return bool(self.patch_embed_paths)


@dataclasses.dataclass(frozen=True)
class Discovery:
    architectures: tuple[Architecture, ...]
    # Model types whose source mentions Conv3d but whose model could not be built on the meta
    # device, with the reason: a non-empty mapping means the matrix is missing an architecture.
    failures: Mapping[str, str]


def conv3d_architectures() -> list[Architecture]:
    """Every model type of the installed transformers whose model contains an `nn.Conv3d`."""
    return list(discover_conv3d().architectures)


def conv3d_architecture(model_type: str) -> Architecture:
    for arch in discover_conv3d().architectures:
        if arch.model_type == model_type:
            return arch
    raise KeyError(f"{model_type!r} holds no Conv3d in this transformers release")


@functools.cache
def discover_conv3d() -> Discovery:
    """Find the Conv3d architectures: a source prefilter, confirmed by building each on `meta`."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    modules = _conv3d_modules()
    found: list[Architecture] = []
    failures: dict[str, str] = {}
    for model_type in sorted(CONFIG_MAPPING_NAMES):
        if _module_name(model_type) not in modules:
            continue
        try:
            arch = _inspect_architecture(model_type)
        except Exception as error:  # a broken config must show up as a failure, not stop discovery
            failures[model_type] = f"{type(error).__name__}: {error}"
            continue
        if arch is not None:
            found.append(arch)
    return Discovery(tuple(found), MappingProxyType(failures))


def _module_name(model_type: str) -> str:
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    return model_type_to_module_name(model_type)


def _models_dir() -> Path:
    import transformers.models

    return Path(transformers.models.__file__).parent


def _conv3d_modules() -> set[str]:
    """Model packages whose modeling code mentions Conv3d, or imports modeling code of one that does."""
    sources: dict[str, str] = {}
    for path in _models_dir().rglob("modeling_*.py"):
        package = ".".join(path.parent.relative_to(_models_dir()).parts)
        sources[package] = sources.get(package, "") + path.read_text(encoding="utf-8", errors="replace")
    found = {package for package, source in sources.items() if "Conv3d" in source}
    grew = True
    while grew:
        importers = {
            package
            for package, source in sources.items()
            if package not in found and found.intersection(_IMPORTS_MODELING.findall(source))
        }
        found |= importers
        grew = bool(importers)
    return found


def model_class_name(model_type: str) -> str:
    """The class a checkpoint of `model_type` names in config.json's `architectures`."""
    from transformers.models.auto import modeling_auto

    for mapping_name in _CLASS_MAPPINGS:
        name = getattr(modeling_auto, mapping_name, {}).get(model_type)
        if isinstance(name, str):
            return name
    raise KeyError(f"no model class is mapped for model type {model_type!r}")


def model_class(model_type: str) -> type[PreTrainedModel]:
    import transformers

    name = model_class_name(model_type)
    cls = getattr(transformers, name, None)
    if cls is None:
        module = importlib.import_module(f"transformers.models.{_module_name(model_type)}")
        cls = getattr(module, name)
    return cls


def _inspect_architecture(model_type: str) -> Architecture | None:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        cls = model_class(model_type)
    except KeyError:
        return None  # a config-only sub-model type (e.g. an audio encoder): never a checkpoint's class
    with torch.device("meta"):
        model = cls(tiny_config(model_type))
    conv3d = tuple(name for name, module in model.named_modules() if isinstance(module, nn.Conv3d))
    if not conv3d:
        return None
    patch_embed, fusable = _fusion_targets(model)
    return Architecture(
        model_type=model_type,
        class_name=cls.__name__,
        module=_module_name(model_type),
        conv3d_paths=conv3d,
        patch_embed_paths=patch_embed,
        fusable_paths=fusable,
        is_sub_model=bool(getattr(CONFIG_MAPPING[model_type], "base_config_key", "")),
    )


def _fusion_targets(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The Conv3d paths the patch_embeddings family matches by name, and those it would fuse.

    Read from transformers' own fusion spec rather than re-implemented, so a change of its name
    pattern or geometry check shows up here.
    """
    if _PATCH_FAMILY not in transformers_fusion.registry():  # a release without the fusion mapping
        return (), ()
    spec = transformers_fusion.spec(_PATCH_FAMILY)
    pattern = transformers_fusion.target_pattern(_PATCH_FAMILY)
    named: list[str] = []
    fusable: list[str] = []
    for name, module in model.named_modules():
        if (pattern is None or pattern.search(name)) and isinstance(getattr(module, "proj", None), nn.Conv3d):
            named.append(f"{name}.proj")
            if spec.is_fusable(module):
                fusable.append(f"{name}.proj")
    return tuple(named), tuple(fusable)


# ---------------------------------------------------------------------------------------------
# tiny configs
# ---------------------------------------------------------------------------------------------

_WIDTH = 32
_FFN = 64
_HEADS = 2
_HEAD_DIM = _WIDTH // _HEADS
_LAYERS = 2
_VOCAB = 512
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
_LAYER_KEYS = frozenset(
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
    "vocab_size": _VOCAB,
    "codebook_size": _VOCAB,
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
_LAYER_INDEX_LIST = re.compile(r"(_indexes|_indices|_layers|_layer_ids)$")
_LAYER_INDEX_INT = re.compile(r"_layer$")
_TOKEN_ID = re.compile(r"(token_id|token_ids|token_index|_id)$")
_MROPE_DEFAULT = re.compile(r"""["']mrope_section["']\s*,\s*\[([\d,\s]+)\]""")


def tiny_config(model_type: str) -> PretrainedConfig:
    """A tiny but valid config of `model_type`: the class defaults, shrunk through every sub-config.

    Patch-embedding geometry (patch_size, temporal_patch_size, in_channels) is kept as it is, so
    the Conv3d keeps the structure the fusion looks at.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_cls = CONFIG_MAPPING[model_type]
    default = config_cls()
    token_ids = _token_id_map(default)
    overrides = _shrink(default, token_ids)
    return config_cls(**overrides)


def _config_fields(config: PretrainedConfig) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(config):
        names = [field.name for field in dataclasses.fields(config)]
    else:
        names = list(vars(config))
    for name in names:
        if not name.startswith("_") and hasattr(config, name):
            yield name, getattr(config, name)


def _token_id_map(config: PretrainedConfig) -> dict[int, int]:
    """Map every out-of-vocabulary special token id in the tree to a distinct id near the top."""
    found: set[int] = set()
    _collect_token_ids(config, found)
    large = sorted(token for token in found if token >= _VOCAB)
    return {token: _VOCAB - 1 - index for index, token in enumerate(large)}


def _collect_token_ids(config: PretrainedConfig, found: set[int]) -> None:
    for name, value in _config_fields(config):
        if isinstance(value, PretrainedConfig):
            _collect_token_ids(value, found)
        elif _TOKEN_ID.search(name):
            found.update(_ints(value))


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return []


def _shrink(config: PretrainedConfig, token_ids: dict[int, int]) -> dict[str, Any]:
    """Overrides (a plain dict, nested for sub-configs) that shrink `config` to a tiny model."""
    overrides: dict[str, Any] = {}
    values = dict(_config_fields(config))
    old_layers = _layer_count(values)
    kept_layers = _kept_layer_indices(values, old_layers)
    for name, value in values.items():
        if isinstance(value, PretrainedConfig):
            # Some parents dispatch on the sub-config's model_type and fail without it.
            overrides[name] = {"model_type": value.model_type, **_shrink(value, token_ids)}
            continue
        new = _shrunk_value(name, value, values, token_ids, old_layers, kept_layers)
        if new is not _KEEP:
            overrides[name] = new
    if kept_layers is not None:
        for key in _LAYER_KEYS & values.keys():
            if values[key] == old_layers:
                overrides[key] = len(kept_layers)
    _shrink_rope(config, values, overrides)
    return _deep_merge(overrides, _OVERRIDES.get(type(config).__name__, {}))


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
        return min(value, _WIDTH)
    if name in _FFN_KEYS:
        return min(value, _FFN)
    if name in _HEAD_KEYS:
        return min(value, _HEADS)
    if name == "num_key_value_heads":
        heads = values.get("num_attention_heads", values.get("num_heads"))
        return min(value, _HEADS) if value == heads else 1
    if name in _HEAD_DIM_KEYS:
        return min(value, _HEAD_DIM)
    if name == "rotary_dim":
        return max(2, value * _HEAD_DIM // max(_old_head_dim(values), 1)) // 2 * 2
    if name in _LAYER_KEYS:
        return min(value, _LAYERS)
    if name in _EXPERT_KEYS:
        return min(value, _EXPERTS)
    if name in _CAPPED_KEYS:
        return min(value, _CAPPED_KEYS[name])
    if _TOKEN_ID.search(name):
        return token_ids.get(value, value)
    if _LAYER_INDEX_INT.search(name) and old_layers:
        return _remap_layer_index(value, old_layers)
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
    if _TOKEN_ID.search(name) and _ints(value):
        return [token_ids.get(v, v) for v in value]
    if kept_layers is not None and old_layers and len(value) == old_layers:
        return [value[i] for i in kept_layers]
    if _LAYER_INDEX_LIST.search(name) and old_layers and _ints(value) and value:
        return sorted({_remap_layer_index(v, old_layers) for v in value})
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
    hidden = values.get("hidden_size") or values.get("embed_dim") or _WIDTH
    return hidden // heads


def _layer_count(values: dict[str, Any]) -> int | None:
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
    if not old_layers or old_layers <= _LAYERS:
        return None
    per_layer = [
        v for v in values.values() if isinstance(v, (list, tuple)) and len(v) == old_layers and not _ints(v)
    ]
    kept: set[int] = set()
    for layer_list in per_layer:
        first_seen: dict[Any, int] = {}
        for index, entry in enumerate(layer_list):
            first_seen.setdefault(repr(entry), index)
        kept.update(first_seen.values())
    index = 0
    while len(kept) < _LAYERS:
        kept.add(index)
        index += 1
    return sorted(kept)


def _remap_layer_index(index: int, old_layers: int) -> int:
    return min(_LAYERS - 1, index * _LAYERS // old_layers)


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


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
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
        "num_embeds": _VOCAB + 1,
    },
    # The talker reads `spatial_merge_size` and its MoE `shared_expert_intermediate_size`, which
    # their config classes never set.
    "Qwen3OmniMoeTalkerConfig": {"spatial_merge_size": 2},
    "Qwen3OmniMoeTalkerTextConfig": {"shared_expert_intermediate_size": _FFN},
    # Indexed-attention layers need the QSA indexer fields, which all default to None.
    "Qwen4ExpTextConfig": {
        "indexer_n_heads": _HEADS,
        "indexer_kv_heads": 1,
        "indexer_head_dim": _HEAD_DIM,
        "indexer_budget": 8,
        "indexer_compress_ratio": 4,
    },
}


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------

_INIT_STD = 0.02


def build_tiny_model(
    model_type: str, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> PreTrainedModel:
    """A tiny `model_type` model in `dtype`, every parameter drawn from a generator seeded with `seed`."""
    return _build_model(model_class(model_type), tiny_config(model_type), dtype=dtype, seed=seed)


def make_tiny_checkpoint(
    model_type: str,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny random `model_type` checkpoint to `out_dir` (safetensors; sharded if `max_shard_size`)."""
    model = build_tiny_model(model_type, dtype=dtype, seed=seed)
    return _save(model, out_dir, max_shard_size)


def make_plain_checkpoint(
    out_dir: str | Path,
    *,
    model_type: str = "llama",
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int | None = None,
    seed: int = 0,
) -> Path:
    """A tiny checkpoint with nothing to fuse: no Conv3d anywhere (a Llama by default; "vit" has a Conv2d)."""
    model = build_tiny_model(model_type, dtype=dtype, seed=seed)
    if any(isinstance(module, nn.Conv3d) for module in model.modules()):
        raise ValueError(f"{model_type!r} holds a Conv3d: not a plain model")
    return _save(model, out_dir, max_shard_size)


def _build_model(
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
            param.normal_(0.0, _INIT_STD, generator=generator)
            if id(param) in norm_params:
                param.add_(1.0)


def _save(model: PreTrainedModel, out_dir: str | Path, max_shard_size: str | int | None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    # transformers' default shard size (50GB) keeps a tiny model in one file.
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(out, **kwargs)
    extra = _EXTRA_FILES.get(type(model).__name__)
    if extra is not None:
        extra(out)
    return out


def _write_empty_speaker_dict(out: Path) -> None:
    # Qwen2.5-Omni's from_pretrained refuses a checkpoint without spk_dict.pt (speaker name ->
    # conditioning tensors for speech output); an empty one is enough to load and run text/vision.
    torch.save({}, out / "spk_dict.pt")


# Files besides config and weights that a class's from_pretrained insists on.
_EXTRA_FILES = {"Qwen2_5OmniForConditionalGeneration": _write_empty_speaker_dict}


# ---------------------------------------------------------------------------------------------
# large checkpoint (benchmarks)
# ---------------------------------------------------------------------------------------------

# A model type whose vision tower the patch_embeddings fusion converts correctly. Qwen2-VL and
# Qwen2.5-VL do not qualify: their legacy key renaming takes the patch-embed weight first, so a
# fused load leaves the Linear at random init (see the module's test notes).
LARGE_VISION_MODEL_TYPE = "qwen3_vl"


def make_large_vision_checkpoint(
    out_dir: str | Path,
    *,
    target_bytes: float = 1.6e9,
    dtype: torch.dtype = torch.bfloat16,
    model_type: str = LARGE_VISION_MODEL_TYPE,
    max_shard_size: str | int = "500MB",
    seed: int = 0,
) -> Path:
    """A checkpoint of about `target_bytes`: a vision tower at its real width, a tiny text model.

    The tower keeps the class defaults of `model_type`'s vision config (for Qwen3-VL: width 1152,
    16 heads, patch 16, temporal patch 2); its depth is chosen to reach `target_bytes`. The model
    is allocated once, directly in `dtype`, and filled in place.
    """
    config = large_vision_config(model_type, target_bytes=target_bytes, dtype=dtype)
    model = _build_model(model_class(model_type), config, dtype=dtype, seed=seed)
    return _save(model, out_dir, max_shard_size)


def large_vision_config(model_type: str, *, target_bytes: float, dtype: torch.dtype) -> PretrainedConfig:
    """`tiny_config(model_type)` with its vision tower at real width and a depth that hits `target_bytes`."""
    itemsize = torch.empty((), dtype=dtype).element_size()

    def miss(depth: int) -> float:
        return abs(_param_count(model_type, _real_vision_config(model_type, depth)) * itemsize - target_bytes)

    # Extrapolate from the real depth, then walk to the best neighbour: the size is not linear in
    # depth where layer taps (deepstack mergers) merge into fewer layers.
    real_depth = type(tiny_config(model_type).vision_config)().depth
    base = _param_count(model_type, _real_vision_config(model_type, real_depth))
    per_layer = _param_count(model_type, _real_vision_config(model_type, real_depth + 1)) - base
    depth = max(1, real_depth + round((target_bytes / itemsize - base) / per_layer))
    best = miss(depth)
    for step in (1, -1):
        while depth + step >= 1 and (candidate := miss(depth + step)) < best:
            depth, best = depth + step, candidate
    return _real_vision_config(model_type, depth)


def _real_vision_config(model_type: str, depth: int) -> PretrainedConfig:
    config = tiny_config(model_type)
    default_vision = type(config.vision_config)()
    overrides = {
        name: value
        for name, value in _config_fields(default_vision)
        if not isinstance(value, PretrainedConfig)
    }
    old_depth = overrides["depth"]
    overrides["depth"] = depth
    for name, value in overrides.items():
        if _LAYER_INDEX_LIST.search(name) and _ints(value):
            overrides[name] = sorted({min(depth - 1, index * depth // old_depth) for index in value})
    # The tower's output feeds the (tiny) text model: whichever field names the merger's output.
    text_hidden = config.text_config.hidden_size
    if "out_hidden_size" in overrides:
        overrides["out_hidden_size"] = text_hidden
    elif "embed_dim" in overrides:  # Qwen2-VL style: embed_dim is the width, hidden_size the output
        overrides["hidden_size"] = text_hidden
    config.vision_config = type(default_vision)(**overrides)
    return config


def _param_count(model_type: str, config: PretrainedConfig) -> int:
    with torch.device("meta"):
        model = model_class(model_type)(config)
    return sum(param.numel() for param in model.parameters())


# ---------------------------------------------------------------------------------------------
# demo checkpoint
# ---------------------------------------------------------------------------------------------

DEMO_MODEL_TYPE = "qwen3_vl"

_DEMO_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_DEMO_README = """---
license: apache-2.0
pipeline_tag: image-text-to-text
library_name: transformers
tags:
- hubfuse
- tiny
- random-weights
---

# hubfuse demo: tiny {class_name}

A {params:,}-parameter `{model_type}` model with **random weights**, made by `hubfuse.synth` to
demonstrate checking and publishing a transformers `fusion_config`. It has the structure of the
real architecture (a Conv3d patch embedding with patch size {patch_size} and temporal patch size
{temporal_patch_size}) at toy width, so it loads, runs and fuses in a second on a CPU, but its
outputs are meaningless. The tokenizer is byte-level with no merges.

Do not use it for anything but testing tools.
"""


def write_demo_checkpoint(out_dir: str | Path, *, seed: int = 0) -> Path:
    """The demo model: a tiny Qwen3-VL (fp32, one file) with a tokenizer and a model card.

    No image processor is written: building one needs Pillow or torchvision, which hubfuse does
    not depend on, and a hand-written preprocessor_config.json could not be checked here.
    """
    out = make_tiny_checkpoint(DEMO_MODEL_TYPE, out_dir, seed=seed)
    config = tiny_config(DEMO_MODEL_TYPE)
    _demo_tokenizer(config).save_pretrained(out)
    params = sum(p.numel() for p in build_tiny_model(DEMO_MODEL_TYPE, seed=seed).parameters())
    vision = config.vision_config
    readme = _DEMO_README.format(
        class_name=model_class_name(DEMO_MODEL_TYPE),
        model_type=DEMO_MODEL_TYPE,
        params=params,
        patch_size=vision.patch_size,
        temporal_patch_size=vision.temporal_patch_size,
    )
    (out / "README.md").write_text(readme, encoding="utf-8")
    return out


def _demo_tokenizer(config: PretrainedConfig) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer (no merges) whose special tokens sit at the tiny config's ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "<|vision_start|>": config.vision_start_token_id,
        "<|vision_end|>": config.vision_end_token_id,
        "<|image_pad|>": config.image_token_id,
        "<|video_pad|>": config.video_token_id,
    }
    free = (i for i in range(_VOCAB - 1, -1, -1) if i not in specials.values())
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        specials[name] = next(free)
    vocab = {token: index for index, token in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update(specials)
    taken = set(vocab.values())
    # Fill the gap between the byte alphabet and the specials: ids contiguous up to the vocab size.
    vocab.update({f"<|extra_{i}|>": i for i in range(_VOCAB) if i not in taken})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in specials if t not in ("<|im_end|>", "<|endoftext|>")],
    )
    tokenizer.chat_template = _DEMO_CHAT_TEMPLATE
    return tokenizer


# ---------------------------------------------------------------------------------------------
# structural twin (targeted mode)
# ---------------------------------------------------------------------------------------------


def twin_config(config: PretrainedConfig) -> PretrainedConfig:
    """A real config with its stacks pruned to what fits: hubfuse's targeted-mode twin.

    Every (sub-)config is shrunk as `tiny_config` shrinks class defaults, except those that hold a
    patch embedding (they carry `patch_size`): these keep their widths and geometry, so the twin's
    patch-embedding tensors have the real shapes, and only lose layers.
    """
    token_ids = _token_id_map(config)
    overrides = _twin_overrides(config, token_ids)
    return type(config).from_dict(_deep_merge(config.to_dict(), overrides))


# Widths of a patch-embedding config that the patch embedding's own tensors do not depend on.
_TWIN_NARROWED = {"intermediate_size": _FFN, "out_hidden_size": _WIDTH, "spatial_merge_size": 1}


def _twin_overrides(config: PretrainedConfig, token_ids: dict[int, int]) -> dict[str, Any]:
    values = dict(_config_fields(config))
    if "patch_size" not in values:
        overrides = _shrink(config, token_ids)
        for name, value in values.items():
            if isinstance(value, PretrainedConfig):
                overrides[name] = {"model_type": value.model_type, **_twin_overrides(value, token_ids)}
        return overrides
    old_layers = _layer_count(values)
    overrides = {}
    for name, value in values.items():
        if isinstance(value, PretrainedConfig):
            overrides[name] = {"model_type": value.model_type, **_twin_overrides(value, token_ids)}
        elif name in _LAYER_KEYS and isinstance(value, int) and not isinstance(value, bool):
            overrides[name] = min(value, _LAYERS)
        elif name in _TWIN_NARROWED and isinstance(value, int) and not isinstance(value, bool):
            overrides[name] = min(value, _TWIN_NARROWED[name])
        elif _LAYER_INDEX_LIST.search(name) and old_layers and _ints(value):
            overrides[name] = sorted({_remap_layer_index(v, old_layers) for v in value})
        elif _TOKEN_ID.search(name) and _ints(value):
            overrides[name] = (
                token_ids.get(value, value)
                if isinstance(value, int)
                else [token_ids.get(v, v) for v in value]
            )
    return overrides


# ---------------------------------------------------------------------------------------------
# huge checkpoints (benchmarks): written tensor by tensor, never materialised
# ---------------------------------------------------------------------------------------------


def write_unmaterialised_checkpoint(
    out_dir: str | Path,
    config: PretrainedConfig,
    cls: type[PreTrainedModel],
    *,
    dtype: torch.dtype = torch.bfloat16,
    shard_bytes: int = 2_000_000_000,
    random_prefixes: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """A sharded checkpoint of `cls(config)` as `save_pretrained` would name it, without building the model.

    The model is instantiated on the meta device only, to learn the names, dtypes and shapes the
    default save writes. Tensors whose name starts with one of `random_prefixes` get seeded random
    values; every other tensor is left as zeros, written as a hole (sparse on disk), so a
    checkpoint of many gigabytes costs seconds and no memory.
    """
    import json

    from hubfuse.fusion.targeted_probes import DTYPES, saved_keys

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.architectures = [cls.__name__]
    with torch.device("meta"):
        model = cls._from_config(config, dtype=dtype)
    keys = saved_keys(model)
    shards: list[list[str]] = [[]]
    filled = 0
    for name in sorted(keys):
        size = _nbytes(keys[name], DTYPES)
        if shards[-1] and filled + size > shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    generator = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    total = 0
    for index, names in enumerate(shards, start=1):
        file_name = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in names:
            dtype_name, shape = keys[name]
            size = _nbytes(keys[name], DTYPES)
            header[name] = {"dtype": dtype_name, "shape": shape, "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = file_name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(out / file_name, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for name in names:
                dtype_name, shape = keys[name]
                if name.startswith(random_prefixes):
                    values = torch.randn(*shape, generator=generator).mul_(_INIT_STD).to(DTYPES[dtype_name])
                    f.write(values.reshape(-1).view(torch.uint8).numpy().tobytes())
                else:
                    f.seek(_nbytes(keys[name], DTYPES), 1)
            f.truncate()
        total += offset
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2, sort_keys=True))
    config.save_pretrained(out)
    return out


def _nbytes(entry: list[Any], dtypes: Mapping[str, torch.dtype]) -> int:
    dtype_name, shape = entry
    count = 1
    for dim in shape:
        count *= dim
    return count * torch.empty((), dtype=dtypes[dtype_name]).element_size()
