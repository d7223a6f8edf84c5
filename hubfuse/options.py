"""Command options, resolved once from flags and environment into typed objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubfuse.errors import BadInputError


@dataclass(frozen=True)
class CheckOptions:
    source: str
    families: tuple[str, ...]
    as_json: bool
    report_dir: Path | None
    trust_remote_code: bool
    timeout_s: float
    list_tensors: bool


def resolve_families(requested: tuple[str, ...]) -> tuple[str, ...]:
    """The requested families in order, or every family the installed transformers knows."""
    from hubfuse.fusion.families import VERIFIERS, family_names

    known = family_names()
    if not requested:
        return tuple(sorted(known))
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise BadInputError(f"unknown fusion family {unknown[0]!r} (known: {', '.join(sorted(known))})")
    unverifiable = [name for name in requested if name not in VERIFIERS]
    if unverifiable:
        raise BadInputError(f"hubfuse cannot verify family {unverifiable[0]!r} yet; upgrade hubfuse")
    return tuple(dict.fromkeys(requested))
