"""What a fused variant holds besides its card, one builder per verification mode.

Full mode pulled the whole checkpoint and saved the verified fused layout: the variant is that save
plus the source's tokenizer and processor files. Targeted mode never downloaded the weights: the
variant is the source's shards, the touched ones rewritten with their verified fused tensors and
the rest copied server-side (`variant_shards`), with config.json carrying `fusion_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hubfuse.check.verdict import CheckReport
from hubfuse.checkpoint import NEVER_COPIED_SUFFIXES
from hubfuse.checkpoint_compare import INDEX_FILE
from hubfuse.configedit import set_top_level_key
from hubfuse.hub import Hub
from hubfuse.publish.steps import Source, remote_source
from hubfuse.publish.variant_copies import VariantTransfer
from hubfuse.publish.variant_shards import variant_operations
from hubfuse.source import RemoteSource

_VARIANT_SKIP = {"README.md", "config.json", INDEX_FILE, ".gitattributes"}


class VariantFiles(Protocol):
    """The variant's files other than README.md; nothing here reads the Hub before it is asked."""

    def local_files(self) -> dict[str, Path]:
        """Files on disk, by name in the variant (copied server-side where identical to the source's)."""
        ...

    def other_names(self) -> set[str]:
        """The names `operations` writes: with `local_files`, every file the variant keeps."""
        ...

    def operations(self, transfer: VariantTransfer, work: Path) -> list[Any]:
        """Commit operations beyond `local_files` and the card (`work`: a scratch folder)."""
        ...


@dataclass(frozen=True)
class FullVariantFiles:
    snapshot: Path
    fused_dir: Path  # the family's verified fused-layout save

    def local_files(self) -> dict[str, Path]:
        return _variant_files(self.snapshot, self.fused_dir)

    def other_names(self) -> set[str]:
        return set()

    def operations(self, transfer: VariantTransfer, work: Path) -> list[Any]:
        return []


@dataclass(frozen=True)
class TargetedVariantFiles:
    weights: RemoteSource  # the source's shards, listed once when first asked
    snapshot: Path
    family: str
    fused_dir: Path  # the family's artifacts: the twin's verified fused save and variant.json

    def local_files(self) -> dict[str, Path]:
        return _variant_extra_files(self.snapshot)

    def other_names(self) -> set[str]:
        return {"config.json", INDEX_FILE, *(f.name for f in self.weights.weight_files())}

    def operations(self, transfer: VariantTransfer, work: Path) -> list[Any]:
        from huggingface_hub import CommitOperationAdd

        config = set_top_level_key(
            (self.snapshot / "config.json").read_text(encoding="utf-8"), "fusion_config", {self.family: True}
        )
        return [
            CommitOperationAdd("config.json", config.encode("utf-8")),
            *variant_operations(self.weights, transfer, self.fused_dir, work),
        ]


def variant_files(
    hub: Hub, source: Source, snapshot: Path, report: CheckReport, artifacts: Path
) -> VariantFiles:
    """The builder for the mode `report` was verified in, for its one safe family."""
    family = report.safe_families[0]
    if report.mode == "targeted":
        return TargetedVariantFiles(remote_source(hub, source), snapshot, family, artifacts / family)
    return FullVariantFiles(snapshot, artifacts / family)


def _variant_files(snapshot: Path, fused_dir: Path) -> dict[str, Path]:
    """The verified fused save (weights, config) plus the source's tokenizer and processor files.

    Never code or pickles; every JSON among them was screened for custom code by open_checkpoint
    (targeted mode: by read_checked_config on the pulled files).
    """
    files = {p.name: p for p in fused_dir.iterdir() if p.is_file() and p.suffix not in NEVER_COPIED_SUFFIXES}
    return {**_variant_extra_files(snapshot, skip=set(files)), **files}


def _variant_extra_files(snapshot: Path, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Path]:
    """The source's tokenizer and processor files (no weights, config or card)."""
    files: dict[str, Path] = {}
    for path in snapshot.iterdir():
        if (
            path.is_file()
            and path.name not in skip
            and path.name not in _VARIANT_SKIP
            and path.suffix not in (".safetensors", *NEVER_COPIED_SUFFIXES)
        ):
            files[path.name] = path
    return files
