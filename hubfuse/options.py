"""Command options, resolved once from flags and environment into typed objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubfuse.check.downstream import DownstreamPlan


@dataclass(frozen=True)
class CheckOptions:
    source: str
    families: tuple[str, ...]
    as_json: bool
    report_dir: Path | None
    trust_remote_code: bool
    timeout_s: float
    list_tensors: bool
    downstream: DownstreamPlan | None = None
    mode: str = "auto"  # auto | full | targeted (hubfuse.check.modes)
