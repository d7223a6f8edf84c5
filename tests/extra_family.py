"""A second fusion family, registered in transformers' real fusion registry.

Imported by every hubfuse worker when `HUBFUSE_WORKER_PRELOAD=extra_family` (and this folder is on
PYTHONPATH): the day transformers ships a family hubfuse has no verifier for, as a test.
"""

from __future__ import annotations

from transformers.fusion_mapping import _FUSION_REGISTRY, PatchEmbeddingsFusionSpec

FAMILY = "extra_family"


class ExtraFamilySpec(PatchEmbeddingsFusionSpec):
    """Fuses what patch_embeddings fuses: a working family, but one hubfuse cannot verify."""


_FUSION_REGISTRY[FAMILY] = ExtraFamilySpec()
