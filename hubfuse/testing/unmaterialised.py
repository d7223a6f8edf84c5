"""Huge checkpoints for benchmarks: written tensor by tensor as `save_pretrained` would name them, never materialised."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from hubfuse.check.targeted_probes import DTYPES, saved_keys
from hubfuse.check.twin import INIT_STD


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
                    values = torch.randn(*shape, generator=generator).mul_(INIT_STD).to(DTYPES[dtype_name])
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
