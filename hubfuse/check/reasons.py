"""The reasons a verdict gives, worded once for full and targeted mode alike.

`hubfuse.check.proofs.point_of` files each reason under a safety point by its words, so a reason
keeps its wording wherever it is raised.
"""

from __future__ import annotations

from typing import Any

from hubfuse.check.families import plugin


def key_list(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def not_applicable_reason(discovery: dict[str, Any], family: str) -> str:
    """Why `family` has nothing to fuse, from a discovery on the meta device (`probes.discover_on_meta`)."""
    unmatched = discovery["unmatched"]
    if not unmatched:
        return f"{discovery['model_class']} has no module the {family} family can fuse"
    details = "; ".join(f"{u['path']}: {u['why']}" for u in unmatched[:2])
    more = f"; +{len(unmatched) - 2} more" if len(unmatched) > 2 else ""
    kind = plugin(family).candidate_kind
    return f"{discovery['model_class']} has {kind}, none fusable by {family} ({details}{more})"


def transforms_error_reason(family: str, error: str) -> str:
    return (
        f"transformers cannot build the {family} weight conversion for this config "
        f"({error}), so every fused load fails"
    )


def unclean_plain_load_reason(load: dict[str, list[str]]) -> str:
    return (
        "the plain load itself is not clean "
        f"(missing {key_list(load['missing_keys'])}; unexpected {key_list(load['unexpected_keys'])})"
    )


def is_unclean(load: dict[str, list[str]], *, mismatched: bool = True) -> bool:
    return bool(load["missing_keys"] or load["unexpected_keys"] or (mismatched and load["mismatched_keys"]))


def unloaded_weights_reason(label: str, load: dict[str, list[str]]) -> str:
    return (
        f"{label} left weights unloaded: missing {key_list(load['missing_keys'])}; "
        f"unexpected {key_list(load['unexpected_keys'])}"
        + (f"; mismatched {key_list(load['mismatched_keys'])}" if load["mismatched_keys"] else "")
    )


def modules_not_fused_reason(label: str, modules: list[str]) -> str:
    return f"{label}: modules not fused: {', '.join(modules)}"
