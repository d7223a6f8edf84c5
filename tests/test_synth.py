"""Tests for hubfuse.testing.synth: architecture discovery and tiny random-weight checkpoints.

The full matrix (every discovered architecture x fp32/bf16 x one file/sharded) is marked slow;
`REPRESENTATIVE` runs the same checks unmarked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForImageTextToText, AutoTokenizer

from hubfuse.testing import synth

REPRESENTATIVE = "qwen3_vl"
ARCHITECTURES = synth.conv3d_architectures()
MODEL_TYPES = [arch.model_type for arch in ARCHITECTURES]
FORMATS = [
    pytest.param(torch.float32, None, id="fp32-single"),
    pytest.param(torch.bfloat16, None, id="bf16-single"),
    pytest.param(torch.float32, "20KB", id="fp32-sharded"),
    pytest.param(torch.bfloat16, "20KB", id="bf16-sharded"),
]


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_finds_the_known_families() -> None:
    assert synth.discover_conv3d().failures == {}
    for model_type in ("qwen2_vl", "qwen3_vl", "glm4v", "videomae", "vivit", "emu3"):
        assert model_type in MODEL_TYPES


def test_discovery_is_cached() -> None:
    assert synth.discover_conv3d() is synth.discover_conv3d()
    assert synth.conv3d_architectures() == ARCHITECTURES


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=MODEL_TYPES)
def test_discovered_architecture_really_holds_a_conv3d(arch: synth.Architecture) -> None:
    with torch.device("meta"):
        model = synth.model_class(arch.model_type)(synth.tiny_config(arch.model_type))
    assert type(model).__name__ == arch.class_name
    assert arch.conv3d_paths
    for path in arch.conv3d_paths:
        assert isinstance(model.get_submodule(path), nn.Conv3d)
    assert set(arch.fusable_paths) <= set(arch.patch_embed_paths) <= set(arch.conv3d_paths)
    assert all(path.endswith("patch_embed.proj") for path in arch.patch_embed_paths)


def test_discovery_reports_conv3d_the_fusion_does_not_match() -> None:
    by_type = {arch.model_type: arch for arch in ARCHITECTURES}
    assert by_type["qwen3_vl"].named_patch_embed
    assert by_type["qwen3_vl"].fusable_paths == ("model.visual.patch_embed.proj",)
    for model_type in ("videomae", "vivit", "emu3"):
        assert not by_type[model_type].named_patch_embed


def test_sub_models_are_flagged() -> None:
    by_type = {arch.model_type: arch for arch in ARCHITECTURES}
    assert by_type["qwen3_vl_vision"].is_sub_model
    assert not by_type["qwen3_vl"].is_sub_model


# --- tiny configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=MODEL_TYPES)
def test_tiny_config_keeps_the_patch_geometry(arch: synth.Architecture) -> None:
    tiny = synth.tiny_config(arch.model_type)
    default = type(tiny)()
    for tiny_vision, default_vision in zip(_vision_configs(tiny), _vision_configs(default), strict=True):
        for key in ("patch_size", "temporal_patch_size", "in_channels", "tubelet_size"):
            assert getattr(tiny_vision, key, None) == getattr(default_vision, key, None)


def _vision_configs(config: object) -> list[object]:
    found = [config] if hasattr(config, "temporal_patch_size") or hasattr(config, "tubelet_size") else []
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            found.extend(_vision_configs(value))
    return found


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen3_vl", "qwen3_5", "glm4v"])
def test_tiny_config_fits_mrope_sections_to_the_rotary_dims(model_type: str) -> None:
    # Qwen2-VL's default mrope_section lives in its modeling code, Qwen3.5 has partial rotary.
    text = synth.tiny_config(model_type).text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    factor = text.rope_parameters.get("partial_rotary_factor", 1.0)
    sections = text.rope_parameters["mrope_section"]
    assert len(sections) == 3 and min(sections) >= 1
    assert sum(sections) == int(head_dim * factor) // 2


def test_tiny_config_keeps_every_layer_kind_of_a_hybrid_model() -> None:
    default = type(synth.tiny_config("qwen3_5").text_config)()
    text = synth.tiny_config("qwen3_5").text_config
    assert set(text.layer_types) == set(default.layer_types)
    assert len(text.layer_types) == text.num_hidden_layers


# --- tiny checkpoints -----------------------------------------------------------------------------


def _check_round_trip(model_type: str, out: Path, dtype: torch.dtype, shard: str | None) -> None:
    synth.make_tiny_checkpoint(model_type, out, dtype=dtype, max_shard_size=shard)

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [synth.model_class_name(model_type)]
    weights = sorted(out.glob("*.safetensors"))
    if shard is None:
        assert [w.name for w in weights] == ["model.safetensors"]
    else:
        assert len(weights) > 1 and (out / "model.safetensors.index.json").exists()
    assert sum(w.stat().st_size for w in weights) < 5_000_000

    expected = synth.build_tiny_model(model_type, dtype=dtype).state_dict()
    loaded = synth.model_class(model_type).from_pretrained(out).state_dict()
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key


def _check_parameters_are_distinct(model_type: str, dtype: torch.dtype) -> None:
    params = dict(synth.build_tiny_model(model_type, dtype=dtype).named_parameters())
    for name, param in params.items():
        if param.numel() > 1:
            assert param.flatten().unique().numel() > 1, f"{name} is constant"
    by_shape: dict[tuple[int, ...], list[tuple[str, torch.Tensor]]] = {}
    for name, param in params.items():
        by_shape.setdefault(tuple(param.shape), []).append((name, param))
    for group in by_shape.values():
        for i, (name_a, a) in enumerate(group):
            for name_b, b in group[i + 1 :]:
                assert not torch.equal(a, b), f"{name_a} == {name_b}"


@pytest.mark.parametrize(("dtype", "shard"), FORMATS)
def test_representative_checkpoint_round_trips(tmp_path: Path, dtype: torch.dtype, shard: str | None) -> None:
    _check_round_trip(REPRESENTATIVE, tmp_path, dtype, shard)


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "shard"), FORMATS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_checkpoint_round_trips(
    tmp_path: Path, model_type: str, dtype: torch.dtype, shard: str | None
) -> None:
    _check_round_trip(model_type, tmp_path, dtype, shard)


def test_representative_parameters_are_distinct() -> None:
    _check_parameters_are_distinct(REPRESENTATIVE, torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_has_distinct_parameters(model_type: str) -> None:
    _check_parameters_are_distinct(model_type, torch.bfloat16)


def test_checkpoints_are_deterministic_per_seed(tmp_path: Path) -> None:
    first = _tensors(synth.make_tiny_checkpoint(REPRESENTATIVE, tmp_path / "a", seed=1))
    again = _tensors(synth.make_tiny_checkpoint(REPRESENTATIVE, tmp_path / "b", seed=1))
    other = _tensors(synth.make_tiny_checkpoint(REPRESENTATIVE, tmp_path / "c", seed=2))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not any(torch.equal(first[key], other[key]) for key in first)


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            tensors.update({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
    return tensors


# --- plain checkpoint -----------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "vit"])
def test_plain_checkpoint_has_no_conv3d(tmp_path: Path, model_type: str) -> None:
    out = synth.make_plain_checkpoint(tmp_path, model_type=model_type)
    model = synth.model_class(model_type).from_pretrained(out)
    assert not any(isinstance(module, nn.Conv3d) for module in model.modules())
    assert json.loads((out / "config.json").read_text())["architectures"] == [type(model).__name__]


def test_plain_checkpoint_refuses_a_conv3d_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Conv3d"):
        synth.make_plain_checkpoint(tmp_path, model_type=REPRESENTATIVE)


# --- demo and large checkpoints -------------------------------------------------------------------


def test_demo_checkpoint_runs_and_has_a_model_card(tmp_path: Path) -> None:
    out = synth.write_demo_checkpoint(tmp_path)
    front_matter = (out / "README.md").read_text().split("---")[1]
    card = yaml.safe_load(front_matter)
    assert card["license"] == "apache-2.0"
    assert card["pipeline_tag"] == "image-text-to-text"
    assert card["library_name"] == "transformers"

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    grid = torch.tensor([[1, 4, 4]])  # one 64x64 frame pair: 4x4 patches, merged 2x2 -> 4 tokens
    prompt = prompt.replace("<|image_pad|>", "<|image_pad|>" * 4)
    inputs = tokenizer(prompt, return_tensors="pt")
    # What the (unwritten) processor would add: which tokens are image placeholders.
    inputs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).long()
    pixels = torch.randn(16, 3 * 2 * 16 * 16)
    with torch.no_grad():
        logits = model(**inputs, pixel_values=pixels, image_grid_thw=grid).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)


# Runs in a child process: the fusion registry is process-global and would leak into other tests.
_FUSED_LOAD = textwrap.dedent(
    """
    import json, sys
    import torch
    from safetensors.torch import load_file
    from hubfuse.testing import synth

    out = sys.argv[1]
    cls = synth.model_class(synth.DEMO_MODEL_TYPE)
    model, info = cls.from_pretrained(out, fusion_config={"patch_embeddings": True}, output_loading_info=True)
    conv = load_file(f"{out}/model.safetensors")["model.visual.patch_embed.proj.weight"]
    linear = model.model.visual.patch_embed.linear_proj.weight
    print(json.dumps({
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "converted": torch.equal(linear, conv.reshape(conv.shape[0], -1)),
    }))
    """
)


def test_demo_checkpoint_fuses_correctly(tmp_path: Path) -> None:
    out = synth.write_demo_checkpoint(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", _FUSED_LOAD, str(out)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"missing": [], "unexpected": [], "converted": True}


def test_large_vision_checkpoint_hits_its_target(tmp_path: Path) -> None:
    target = 250e6
    config = synth.large_vision_config(
        synth.LARGE_VISION_MODEL_TYPE, target_bytes=target, dtype=torch.bfloat16
    )
    out = synth.make_large_vision_checkpoint(tmp_path, target_bytes=target, max_shard_size="100MB")
    weights = sorted(out.glob("*.safetensors"))
    assert len(weights) > 1
    size = sum(w.stat().st_size for w in weights)
    layer_bytes = 2 * 16e6  # one Qwen3-VL vision block at width 1152, in bf16
    assert abs(size - target) < layer_bytes
    saved = json.loads((out / "config.json").read_text())["vision_config"]
    assert saved["hidden_size"] == 1152
    assert saved["depth"] == config.vision_config.depth
