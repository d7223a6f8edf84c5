"""The code that runs inside a fresh worker process: one model load each.

Each `probe_*` function is called by `worker.run_isolated` in its own child, receives only
paths and names, and returns a JSON-able dict. Tensors that several probes need (the plain
model's patch weights, a fixed module input and the plain output) travel through a small
`reference.safetensors` file in the work folder.

This module is preloaded by the forkserver, so importing it must not fuse anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import safetensors.torch
import torch
import transformers
from torch import nn
from transformers.utils import logging as hf_logging

from hubfuse.check import transformers_fusion
from hubfuse.check.families import PLUGINS

hf_logging.disable_progress_bar()


# Same `dir()` result, linear time: ~2 s less per fused load (the adapter says where it applies).
transformers_fusion.use_linear_lazy_module_dir()

REFERENCE_TENSORS = "reference.safetensors"
REFERENCE_INDEX = "reference.json"


def _model_class(
    config: transformers.PretrainedConfig, trust_remote_code: bool
) -> type[transformers.PreTrainedModel]:
    name = config.architectures[0]
    cls = getattr(transformers, name, None)
    if cls is not None:
        return cls
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        for reference in auto_map.values():
            if isinstance(reference, str) and reference.endswith("." + name):
                return get_class_from_dynamic_module(reference, config.name_or_path)
    raise ValueError(f"the installed transformers {transformers.__version__} has no model class {name}")


def _load(
    path: str, trust_remote_code: bool, fusion_config: dict[str, Any] | None
) -> tuple[nn.Module, dict[str, list[str]]]:
    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    cls = _model_class(config, trust_remote_code)
    kwargs: dict[str, Any] = {
        "dtype": "auto",
        "output_loading_info": True,
        "trust_remote_code": trust_remote_code,
        # Never fall back to pickle weights (torch.load), whatever else the folder holds.
        "use_safetensors": True,
    }
    if fusion_config is not None:
        kwargs["fusion_config"] = fusion_config
    model, info = cls.from_pretrained(path, **kwargs)
    model.eval()
    report = {
        "missing_keys": sorted(info.get("missing_keys", ())),
        "unexpected_keys": sorted(info.get("unexpected_keys", ())),
        "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", ())),
        "error_msgs": [str(m) for m in info.get("error_msgs", ())],
    }
    return model, report


def _discover(model: nn.Module, family: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Modules the family would fuse (path -> class name), and candidates it would not (its plugin says)."""
    pattern = transformers_fusion.target_pattern(family)
    fusable = transformers_fusion.fusable_modules(model, family)
    return fusable, PLUGINS[family].unfused_candidates(model, fusable, pattern)


def _fused_modules(model: nn.Module) -> dict[str, str]:
    return transformers_fusion.fused_modules(model)


def _as_bytes_view(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def probe_family_names() -> dict[str, Any]:
    """The registered families, and why this environment cannot load as the release's users do."""
    return {
        "families": transformers_fusion.family_names(),
        "default_load_problem": transformers_fusion.default_load_problem(),
    }


def discover_on_meta(
    config_dir: str, family: str, trust_remote_code: bool
) -> tuple[dict[str, Any], type[nn.Module], Any, nn.Module]:
    """Point 1 on the meta device: what the family fuses, and whether its transforms can be built.

    The result records `fusable`, `unmatched` and `transforms_error`; when transforms cannot be
    built, every fused load raises the same, so no load is needed to call the family unsafe.
    """
    config = transformers.AutoConfig.from_pretrained(config_dir, trust_remote_code=trust_remote_code)
    cls = _model_class(config, trust_remote_code)
    with torch.device("meta"):
        meta_model = cls(config)
    fusable, unmatched = _discover(meta_model, family)
    result: dict[str, Any] = {
        "model_class": cls.__name__,
        "fusable": fusable,
        "unmatched": unmatched,
        "transforms_error": None,
    }
    if fusable:
        result["transforms_error"] = transformers_fusion.transforms_error(family, cls, config)
    return result, cls, config, meta_model


def probe_reference(source: str, family: str, work_dir: str, trust_remote_code: bool) -> dict[str, Any]:
    """Discovery on the meta device, then a plain load that records what fusion must reproduce."""
    result, _cls, _config, _meta_model = discover_on_meta(source, family, trust_remote_code)
    if not result["fusable"] or result["transforms_error"]:
        return result
    fusable_classes = set(result["fusable"].values())

    model, report = _load(source, trust_remote_code, fusion_config={})
    result["plain_load"] = report
    result["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")

    verifier = PLUGINS[family]
    generator = torch.Generator().manual_seed(0)
    tensors: dict[str, torch.Tensor] = {}
    index: dict[str, Any] = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            # transformers patches whole classes, so every instance of a fusable class is fused.
            if type(module).__name__ not in fusable_classes:
                continue
            entry: dict[str, Any] = {"class": type(module).__name__, "params": []}
            for param, value in verifier.expected_fused_state(module).items():
                tensors[f"{name}::expected::{param}"] = value
                entry["params"].append(param)
            for candidate in verifier.module_inputs(module, generator):
                try:
                    output = module(candidate)
                except Exception:
                    continue
                tensors[f"{name}::input"] = candidate.contiguous()
                tensors[f"{name}::output"] = output.detach().contiguous()
                entry["has_io"] = True
                break
            index[name] = entry
    safetensors.torch.save_file(tensors, str(Path(work_dir) / REFERENCE_TENSORS))
    (Path(work_dir) / REFERENCE_INDEX).write_text(json.dumps(index))
    result["reference_modules"] = sorted(index)
    return result


def _check_against_reference(model: nn.Module, work_dir: str) -> dict[str, Any]:
    """Compare every fused module's weights (bytes) and output with the plain reference."""
    index = json.loads((Path(work_dir) / REFERENCE_INDEX).read_text())
    reference = safetensors.torch.load_file(str(Path(work_dir) / REFERENCE_TENSORS))
    modules = dict(model.named_modules())
    weights: dict[str, list[str]] = {}
    outputs: dict[str, dict[str, float] | str] = {}
    with torch.no_grad():
        for name, entry in index.items():
            module = modules.get(name)
            if module is None:
                weights[name] = ["module not found in the loaded model"]
                continue
            problems = []
            state = dict(module.named_parameters())
            for param in entry["params"]:
                expected = reference[f"{name}::expected::{param}"]
                actual = state.get(param)
                if actual is None:
                    problems.append(f"{param} absent")
                elif actual.dtype != expected.dtype:
                    problems.append(f"{param} is {actual.dtype}, expected {expected.dtype}")
                elif tuple(actual.shape) != tuple(expected.shape):
                    problems.append(
                        f"{param} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
                    )
                elif not torch.equal(_as_bytes_view(actual), _as_bytes_view(expected)):
                    differing = int((actual.detach().reshape(-1) != expected.reshape(-1)).sum())
                    problems.append(
                        f"{param} differs from the converted source in {differing} of {expected.numel()} values"
                    )
            weights[name] = problems
            if entry.get("has_io"):
                try:
                    output = module(reference[f"{name}::input"])
                    expected_out = reference[f"{name}::output"]
                    if tuple(output.shape) != tuple(expected_out.shape):
                        outputs[name] = (
                            f"output shape {tuple(output.shape)} != plain {tuple(expected_out.shape)}"
                        )
                    else:
                        diff = (output.float() - expected_out.float()).abs().max().item()
                        scale = expected_out.float().abs().max().item()
                        outputs[name] = {"max_abs_diff": float(diff), "scale": float(scale)}
                except Exception as exc:
                    outputs[name] = f"forward failed: {type(exc).__name__}: {exc}"
    return {"weights": weights, "outputs": outputs}


def probe_fused_load(
    source: str, family: str, work_dir: str, trust_remote_code: bool, resave_dir: str, fused_dir: str
) -> dict[str, Any]:
    """Fused load of the source, then the default (original-format) save and the fused-layout save."""
    model, report = _load(source, trust_remote_code, fusion_config={family: True})
    result: dict[str, Any] = {
        "load": report,
        "fused_modules": _fused_modules(model),
        **_check_against_reference(model, work_dir),
    }
    model.save_pretrained(resave_dir)
    model.save_pretrained(fused_dir, save_original_format=False)
    return result


def probe_reload(path: str, work_dir: str, trust_remote_code: bool) -> dict[str, Any]:
    """A plain `from_pretrained` with no fusion argument, as a downstream user would run it."""
    model, report = _load(path, trust_remote_code, fusion_config=None)
    return {
        "load": report,
        "fused_modules": _fused_modules(model),
        **_check_against_reference(model, work_dir),
    }
