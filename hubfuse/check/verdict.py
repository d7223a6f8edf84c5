"""Verdicts: the typed result of checking fusion families against one checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from packaging.version import Version

from hubfuse.errors import ExitCode

Verdict = Literal["safe", "unsafe", "not_applicable", "error"]

# Max |fused - plain| allowed on a module's output, relative to max(1, max |plain output|).
# Linear and Conv3d accumulate in different orders: ~1e-7..1e-5 in fp32, exact or a few ulp in
# half precision on a single module.
OUTPUT_TOLERANCE: dict[str, float] = {
    "float32": 1e-4,
    "float64": 1e-10,
    "bfloat16": 1.6e-2,
    "float16": 2e-3,
}


def output_tolerance(dtype: str | None, scale: float) -> float:
    return OUTPUT_TOLERANCE.get(dtype or "float32", 1e-2) * max(1.0, scale)


@dataclass
class Roundtrip:
    """The default save of a fused model against the source checkpoint."""

    tensors_bit_exact: bool | None = None
    tensors_compared: int = 0
    bytes_compared: int = 0
    mismatches: list[dict[str, str]] = field(default_factory=list)
    files_byte_identical: bool | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    config_changes: list[str] = field(default_factory=list)
    tensors: list[dict[str, Any]] | None = None  # every tensor, for `hubfuse verify`


CellOutcome = Literal["safe", "ignored", "unsupported", "crash", "unsafe", "error", "unavailable"]
# What a release's users get: `safe` fused and exact, `ignored` the key has no effect, both proven.
PROVEN_OUTCOMES = ("safe", "ignored")
# `unsupported`: the release does not know the architecture, so its users cannot load the model at
# all, fusion_config or not; the PR changes nothing for them and does not wait for them, but the
# verdict does not hold for that release either (every text lists it as not proven).
# `unavailable`: the release cannot be installed as its users have it (a requirement the index
# lacks); not proven, so never passing.
PASSING_OUTCOMES = (*PROVEN_OUTCOMES, "unsupported")


@dataclass
class DownstreamCell:
    """One transformers release in one environment, loading the way a downstream user does."""

    transformers: str
    env: str
    outcome: CellOutcome
    reason: str = ""
    gating: bool = True  # False: outside an explicit --downstream-versions, reported only
    notes: list[str] = field(default_factory=list)
    proven_on: str | None = None  # repo@sha of the same case this cell was proven on (None: here)
    # An honest stand-in for an `unavailable` cell (that release without the missing requirement,
    # `env` says which): reported beside it, never gating, never counted as the release loading.
    stand_in: bool = False


@dataclass
class LoadCheck:
    """One load with fusion (explicit, through config.json, or from the fused layout).

    With the downstream matrix (`versions` not None), the same load on other transformers
    releases too: `cells` hold one outcome per release and environment, `environments` every
    environment column and why it is unavailable (None: available), `selection` what chose them.
    """

    weights_match: bool | None = None
    max_abs_output_diff: float | None = None
    output_tolerance: float | None = None
    fused_modules: dict[str, str] = field(default_factory=dict)
    selection: str | None = None
    versions: list[str] | None = None
    environments: dict[str, str | None] = field(default_factory=dict)
    cells: list[DownstreamCell] = field(default_factory=list)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> LoadCheck:
        cells = [DownstreamCell(**cell) for cell in document.get("cells", [])]
        return cls(**{**document, "cells": cells})


@dataclass
class FamilyResult:
    name: str
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    fused_modules: dict[str, str] = field(default_factory=dict)
    roundtrip: Roundtrip = field(default_factory=Roundtrip)
    downstream: LoadCheck = field(default_factory=LoadCheck)
    fused_layout: LoadCheck = field(default_factory=LoadCheck)
    timings: dict[str, float] = field(default_factory=dict)
    # Each safety point: {point, holds, how, tensors} (hubfuse.check.proofs).
    proofs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CheckReport:
    source: str
    model_type: str
    architecture: str
    transformers_version: str
    torch_version: str
    hubfuse_version: str
    families: list[FamilyResult]
    dtype: str | None = None
    revision: str | None = None
    # Families transformers registers that were not checked, with why (never a verdict).
    skipped_families: dict[str, str] = field(default_factory=dict)
    mode: str = "full"  # full | targeted (hubfuse.check.targeted)

    @property
    def verdict(self) -> Verdict:
        verdicts = {f.verdict for f in self.families}
        if "unsafe" in verdicts:
            return "unsafe"
        if "error" in verdicts:
            return "error"
        if "safe" in verdicts:
            return "safe"
        return "not_applicable"

    @property
    def exit_code(self) -> ExitCode:
        return {
            "safe": ExitCode.OK,
            "unsafe": ExitCode.UNSAFE,
            "error": ExitCode.UNSAFE,
            "not_applicable": ExitCode.NOTHING_TO_FUSE,
        }[self.verdict]

    @property
    def safe_families(self) -> list[str]:
        return [f.name for f in self.families if f.verdict == "safe"]

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        families = document.pop("families")
        return {**document, "verdict": self.verdict, "families": families}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> CheckReport:
        fields = {k: v for k, v in document.items() if k not in {"verdict", "families"}}
        families = [
            FamilyResult(
                **{
                    **family,
                    "roundtrip": Roundtrip(**family["roundtrip"]),
                    "downstream": LoadCheck.from_dict(family["downstream"]),
                    "fused_layout": LoadCheck.from_dict(family["fused_layout"]),
                }
            )
            for family in document["families"]
        ]
        return cls(**fields, families=families)


def version_range(versions: list[str]) -> str:
    ordered = sorted(versions, key=Version)
    if len(ordered) <= 3:
        return ", ".join(ordered)
    return f"{ordered[0]} ... {ordered[-1]} ({len(ordered)} releases)"
