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
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from hubfuse.check import transformers_fusion
from hubfuse.check.shrink import LAYER_INDEX_LIST, VOCAB, config_fields, ints, shrink_overrides, token_id_map
from hubfuse.check.twin import build_model

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


def tiny_config(model_type: str) -> PretrainedConfig:
    """A tiny but valid config of `model_type`: the class defaults, shrunk through every sub-config.

    Patch-embedding geometry (patch_size, temporal_patch_size, in_channels) is kept as it is, so
    the Conv3d keeps the structure the fusion looks at.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_cls = CONFIG_MAPPING[model_type]
    default = config_cls()
    token_ids = token_id_map(default)
    overrides = shrink_overrides(default, token_ids)
    return config_cls(**overrides)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def build_tiny_model(
    model_type: str, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> PreTrainedModel:
    """A tiny `model_type` model in `dtype`, every parameter drawn from a generator seeded with `seed`."""
    return build_model(model_class(model_type), tiny_config(model_type), dtype=dtype, seed=seed)


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
    model = build_model(model_class(model_type), config, dtype=dtype, seed=seed)
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
        for name, value in config_fields(default_vision)
        if not isinstance(value, PretrainedConfig)
    }
    old_depth = overrides["depth"]
    overrides["depth"] = depth
    for name, value in overrides.items():
        if LAYER_INDEX_LIST.search(name) and ints(value):
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

A {params:,}-parameter `{model_type}` model with **random weights**, made by `hubfuse.testing.synth` to
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
    free = (i for i in range(VOCAB - 1, -1, -1) if i not in specials.values())
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        specials[name] = next(free)
    vocab = {token: index for index, token in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update(specials)
    taken = set(vocab.values())
    # Fill the gap between the byte alphabet and the specials: ids contiguous up to the vocab size.
    vocab.update({f"<|extra_{i}|>": i for i in range(VOCAB) if i not in taken})
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
