"""Worker code for targeted mode: transformers' own loading and saving code on a key set, no weights.

`probe_key_set` runs transformers' `from_pretrained` on a state dict of meta tensors that carry
the real checkpoint's names, dtypes and shapes: renaming, conversion ops, the missing /
unexpected / mismatched classification and the original-format save's reverse conversion are
all transformers' own. The one substitution is the step that would copy bytes: it yields a meta
tensor of the converted shape instead, so nothing is read and nothing is allocated.

`probe_build_twin` writes the structural twin: the real config with its stacks pruned, saved by
transformers under the real key names, holding the real bytes of the touched tensors.

Preloaded by the forkserver next to `probes`; importing it must not fuse anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import transformers
import transformers.core_model_loading as core_model_loading
from transformers.modeling_utils import remove_tied_weights_from_state_dict

from hubfuse.check import transformers_fusion
from hubfuse.check.probes import _fused_modules, _model_class, discover_on_meta

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_DTYPE = {value: key for key, value in DTYPES.items()}


@contextmanager
def _no_bytes() -> Iterator[None]:
    """transformers' loader, with its byte copy replaced by a meta tensor of the same shape and dtype.

    Missing parameters stay on the meta device too (transformers would allocate and initialise
    them): the load report is all this load is for, and memory stays flat whatever is missing.
    """
    original = core_model_loading._materialize_copy
    model_cls = transformers.PreTrainedModel
    originals = {name: getattr(model_cls, name) for name in _MISSING_KEY_STEPS}

    def meta_copy(tensor: torch.Tensor, device: Any = None, dtype: Any = None) -> torch.Tensor:
        return torch.empty(tuple(tensor.shape), dtype=dtype or tensor.dtype, device="meta")

    core_model_loading._materialize_copy = meta_copy
    for name in _MISSING_KEY_STEPS:
        setattr(model_cls, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        core_model_loading._materialize_copy = original
        for name, method in originals.items():
            setattr(model_cls, name, method)


_MISSING_KEY_STEPS = ("_move_missing_keys_from_meta_to_device", "_initialize_missing_keys")


def _meta_state_dict(keys: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
    unknown = sorted({dtype for dtype, _ in keys.values() if dtype not in DTYPES})
    if unknown:
        raise ValueError(f"no torch dtype for safetensors dtype(s) {', '.join(unknown)}")
    return {
        name: torch.empty(tuple(shape), dtype=DTYPES[dtype], device="meta")
        for name, (dtype, shape) in keys.items()
    }


def _meta_load(
    cls: type[transformers.PreTrainedModel],
    config: transformers.PretrainedConfig,
    keys: dict[str, list[Any]],
    fusion_config: dict[str, Any] | None,
) -> tuple[torch.nn.Module, dict[str, list[str]]]:
    kwargs: dict[str, Any] = {"dtype": "auto", "output_loading_info": True}
    kwargs.update(transformers_fusion.meta_load_kwargs())
    if fusion_config is not None:
        kwargs["fusion_config"] = fusion_config
    with _no_bytes():
        model, info = cls.from_pretrained(None, config=config, state_dict=_meta_state_dict(keys), **kwargs)
    return model, {
        "missing_keys": sorted(info.get("missing_keys", ())),
        "unexpected_keys": sorted(info.get("unexpected_keys", ())),
        "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", ())),
    }


def saved_keys(model: Any, *, original_format: bool = True) -> dict[str, list[Any]]:
    """What `save_pretrained(save_original_format=...)` would write: name -> [dtype, shape]."""
    state_dict = model.state_dict()
    for ignored in model._keys_to_ignore_on_save or ():
        state_dict.pop(ignored, None)
    state_dict = remove_tied_weights_from_state_dict(state_dict, model)
    if original_format:
        state_dict = core_model_loading.revert_weight_conversion(model, state_dict)
    return {
        name: [SAFETENSORS_DTYPE.get(t.dtype, str(t.dtype)), list(t.shape)] for name, t in state_dict.items()
    }


def _touched_keys(keys: dict[str, list[Any]], fusable: dict[str, str], model: Any) -> dict[str, list[str]]:
    """Checkpoint keys that feed each fusable module: the ones ending in the module's tail + its params."""
    params: dict[str, list[str]] = {}
    modules = dict(model.named_modules())
    for path in fusable:
        tail = path.rsplit(".", 1)[-1]
        names = [f"{tail}.{p}" for p, _ in modules[path].named_parameters()]
        pattern = re.compile(r"(^|\.)(" + "|".join(re.escape(n) for n in names) + r")$")
        params[path] = sorted(k for k in keys if pattern.search(k))
    return params


def probe_key_set(config_dir: str, family: str, keys_path: str, trust_remote_code: bool) -> dict[str, Any]:
    """Points 1, 2 and 4 of targeted mode on the whole model's key set, with no weight bytes."""
    keys: dict[str, list[Any]] = json.loads(Path(keys_path).read_text())
    result, cls, config, meta_model = discover_on_meta(config_dir, family, trust_remote_code)
    fusable = result["fusable"]
    if not fusable or result["transforms_error"]:
        return result

    plain, plain_report = _meta_load(cls, config, keys, fusion_config={})
    result["plain_load"] = plain_report
    touched = _touched_keys(keys, fusable, meta_model)
    result["touched"] = touched
    # transformers itself confirms that those keys, and only they, feed the fusable modules: without
    # them, exactly those modules' parameters are missing. (Loading them alone instead would leave
    # every other parameter missing, and transformers materialises missing parameters.)
    touched_set = {k for names in touched.values() for k in names}
    _, without = _meta_load(
        cls, config, {k: v for k, v in keys.items() if k not in touched_set}, fusion_config={}
    )
    modules = dict(meta_model.named_modules())
    expected = {f"{path}.{name}" for path in touched for name, _ in modules[path].named_parameters()}
    missing = set(without["missing_keys"]) - set(plain_report["missing_keys"])
    result["touched_confirmed"] = bool(touched_set) and missing == expected
    result["touched_unconfirmed"] = sorted(missing ^ expected)

    fused, fused_report = _meta_load(cls, config, keys, fusion_config={family: True})
    result["fused_load"] = fused_report
    result["fused_modules"] = _fused_modules(fused)
    result["plain_save"] = saved_keys(plain)
    result["fused_save"] = saved_keys(fused)
    result["fused_layout_save"] = saved_keys(fused, original_format=False)
    return result


def probe_build_twin(
    config_dir: str, touched_path: str, out_dir: str, dtype: str, trust_remote_code: bool
) -> dict[str, Any]:
    """Save the structural twin to `out_dir` and put the real touched tensors into it."""
    from hubfuse.check.twin import build_model, twin_config

    config = transformers.AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code)
    cls = _model_class(config, trust_remote_code)
    model = build_model(cls, twin_config(config), dtype=DTYPES[dtype], seed=0)
    model.save_pretrained(out_dir)
    del model
    touched = safetensors.torch.load_file(touched_path)
    placed: dict[str, str] = {}
    for shard in sorted(Path(out_dir).glob("*.safetensors")):
        with safetensors.safe_open(str(shard), framework="pt") as handle:
            names = list(handle.keys())
            metadata = handle.metadata()
        hits = [name for name in names if name in touched]
        if not hits:
            continue
        tensors = safetensors.torch.load_file(str(shard))
        for name in hits:
            if tensors[name].shape != touched[name].shape or tensors[name].dtype != touched[name].dtype:
                raise ValueError(
                    f"the pruned twin's {name} is {tensors[name].dtype} {list(tensors[name].shape)}, "
                    f"the repo's is {touched[name].dtype} {list(touched[name].shape)}"
                )
            tensors[name] = touched[name]
            placed[name] = shard.name
        safetensors.torch.save_file(tensors, str(shard), metadata=metadata)
    return {"placed": placed, "missing": sorted(set(touched) - set(placed))}
