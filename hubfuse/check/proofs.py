"""The six safety points, and how a check proved (or failed to prove) each one.

A family's `proofs` list has one entry per point: `{point, holds, how, tensors}`. `holds` is True,
False (the family is unsafe), or None (not reached: an earlier point failed, or the family is not
applicable). Full mode proves every point on the whole checkpoint; targeted mode says per point
what it ran on (`hubfuse.check.targeted`).
"""

from __future__ import annotations

from typing import Any

from hubfuse.check.verdict import FamilyResult

POINTS = ("discovery", "fused_load", "weights_arrive", "resave", "downstream", "fused_layout")

# The stage timing each point's full-mode probe records (`full.FamilyCheck._probe` / `_timed`).
_FULL_STAGE = {
    "discovery": "discover",
    "fused_load": "fused_load",
    "weights_arrive": "fused_load",
    "resave": "roundtrip",
    "downstream": "downstream",
    "fused_layout": "fused_layout",
}
_FULL_HOW = {
    "discovery": "model class built on the meta device from config.json",
    "fused_load": "from_pretrained with fusion_config on the whole checkpoint; load report read",
    "weights_arrive": "every fused module's weights compared (bytes) with the converted plain weights; outputs",
    "resave": "default save_pretrained compared with the source tensor by tensor (bytes)",
    "downstream": "plain from_pretrained of the checkpoint with fusion_config in config.json",
    "fused_layout": "save_original_format=False save reloaded; weights compared",
}

# Words in a reason that say which point it belongs to.
_REASON_POINT = (
    ("downstream", "downstream"),
    ("fused-layout", "fused_layout"),
    ("re-save", "resave"),
    ("output differs", "weights_arrive"),
    ("fused weights are not", "weights_arrive"),
    ("left weights unloaded", "fused_load"),
    ("modules not fused", "fused_load"),
    ("raises", "fused_load"),
    ("cannot build", "fused_load"),
    ("plain load", "fused_load"),
)


def point_of(reason: str) -> str:
    lowered = reason.lower()
    return next((point for words, point in _REASON_POINT if words in lowered), "fused_load")


def proof(point: str, holds: bool | None, how: str, tensors: str) -> dict[str, Any]:
    return {"point": point, "holds": holds, "how": how, "tensors": tensors}


def full_mode_proofs(result: FamilyResult, tensors_total: int | None) -> list[dict[str, Any]]:
    """What a full-mode check proved, from the stages it ran and the reasons it recorded."""
    failed = {point_of(reason) for reason in result.reasons}
    everything = f"all {tensors_total} tensors" if tensors_total is not None else "the whole checkpoint"
    proofs = []
    for point in POINTS:
        reached = _FULL_STAGE[point] in result.timings
        if point == "discovery":
            holds: bool | None = True if reached else None
            how = _FULL_HOW[point] + (
                ": nothing the family fuses" if result.verdict == "not_applicable" else ""
            )
        else:
            holds = (point not in failed) if reached and result.verdict != "not_applicable" else None
            if result.verdict == "error" and holds:
                holds = None
            how = _FULL_HOW[point]
        proofs.append(proof(point, holds, how, everything))
    return proofs
