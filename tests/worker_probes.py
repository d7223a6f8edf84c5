"""Probes that misbehave on purpose, for the worker tests (imported inside worker processes)."""

from __future__ import annotations

import os
import signal
import sys
import time


def answer(value: int) -> dict[str, int]:
    print("to the log, not the terminal")
    return {"value": value * 2, "pid": os.getpid()}


def fail() -> dict[str, int]:
    raise ValueError("first line of the cause\nsecond line stays in the log")


def die() -> dict[str, int]:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def exit_quietly() -> dict[str, int]:
    sys.stdout.flush()
    os._exit(3)


def hang() -> dict[str, int]:
    time.sleep(600)
    return {}


def registry_is_clean() -> dict[str, bool]:
    """Whether this fresh worker sees any fusion patch registered by an earlier worker."""
    from transformers.monkey_patching import get_patch_mapping

    return {"clean": not get_patch_mapping()}


def fused_load(path: str) -> dict[str, bool]:
    """A fused load, then a plain one in the same process: what this release's registry keeps."""
    import transformers

    from hubfuse.check import transformers_fusion

    config = transformers.AutoConfig.from_pretrained(path)
    cls = getattr(transformers, config.architectures[0])
    fused = cls.from_pretrained(path, fusion_config={"patch_embeddings": True})
    from transformers.monkey_patching import get_patch_mapping

    registered = bool(get_patch_mapping())
    plain = cls.from_pretrained(path)
    return {
        "fused": bool(transformers_fusion.fused_modules(fused)),
        "registered": registered,
        "plain_after_is_fused": bool(transformers_fusion.fused_modules(plain)),
        "sticky_generation": transformers_fusion.registration_is_sticky(),
    }


def allocate(megabytes: int, how: str) -> dict[str, int]:
    """Take `megabytes` of memory at once: as Python does, or as torch does (its C++ allocator)."""
    if how == "torch":
        import torch

        return {"bytes": torch.ones(megabytes << 20, dtype=torch.uint8).numel()}
    return {"bytes": len(bytearray(megabytes << 20))}


def map_file(path: str) -> dict[str, int]:
    """Map a whole file, as safetensors maps the weights it loads."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return {"bytes": len(mapped)}
