"""Command options, resolved once from flags, batch spec, environment and defaults
(`hubfuse.settings`) into frozen typed objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hubfuse.settings import DEFAULT_TIMEOUT_S, MODE

if TYPE_CHECKING:
    from hubfuse.batch import Shard
    from hubfuse.fusion.downstream import DownstreamPlan
    from hubfuse.spec import Spec


def downstream_plan(requested: str | None) -> DownstreamPlan:
    """The one resolution of the downstream setting into the typed plan every command carries
    (`requested`: --downstream-versions or the spec's key; asks the package index, cached)."""
    from hubfuse.fusion.downstream import resolve_plan

    return resolve_plan(requested)


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
    mode: str = MODE.default


@dataclass(frozen=True)
class RunOptions:
    """`hubfuse run`: a flag wins over the spec's key of the same setting."""

    spec: Spec
    downstream: DownstreamPlan
    shard: Shard | None = None
    dry_run: bool = False
    as_json: bool = False
    report_dir: Path | None = None
    ledger_dir: Path = Path(".hubfuse/ledgers")
    timeout_s: float = DEFAULT_TIMEOUT_S
    mode: str = MODE.default
