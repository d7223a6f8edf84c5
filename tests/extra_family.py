"""A second fusion family, registered in transformers' real fusion registry.

Imported by every hubfuse worker when `HUBFUSE_WORKER_PRELOAD=extra_family` (and this folder is on
PYTHONPATH): the day transformers ships a family hubfuse has no verifier for, as a test.
"""

from __future__ import annotations

from hubfuse.check import transformers_fusion

FAMILY = "extra_family"
_base = transformers_fusion.patch_embeddings_spec_class()
assert _base is not None, "the installed transformers has no fusion mapping"


class ExtraFamilySpec(_base):  # type: ignore[misc, valid-type]
    """Fuses what patch_embeddings fuses: a working family, but one hubfuse cannot verify."""


transformers_fusion.registry()[FAMILY] = ExtraFamilySpec()
