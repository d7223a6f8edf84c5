"""The fusion families hubfuse can verify: one plugin module each (`protocol.FamilyPlugin`), registered here.

A second family is plugged in by writing its module beside `patch_embeddings.py` and adding its
`PLUGIN` to `PLUGINS`; a family transformers registers without a plugin is skipped, never checked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from hubfuse.check.families import patch_embeddings
from hubfuse.check.families.protocol import FamilyPlugin


@functools.cache
def family_names() -> frozenset[str]:
    """The families the installed transformers registers.

    Asked of a worker process, so that the CLI process never imports torch: bad input fails
    fast, and the parent stays small while workers load models. An environment that cannot load
    as the release's users do (5.25 without `kernels`) is refused here in one line with its fix,
    before any verdict.
    """
    import tempfile

    from hubfuse.check import worker
    from hubfuse.errors import BadInputError

    with tempfile.NamedTemporaryFile(prefix="hubfuse-families-", suffix=".log") as log_file:
        names = worker.run_isolated("probe_family_names", log_path=Path(log_file.name), timeout=300)
    if names.get("default_load_problem"):
        raise BadInputError(names["default_load_problem"])
    return frozenset(names["families"])


PLUGINS: dict[str, FamilyPlugin] = {family.name: family for family in (patch_embeddings.PLUGIN,)}


def plugin(name: str) -> FamilyPlugin:
    return PLUGINS[name]


def family_why(name: str) -> str:
    """Why the family is worth having, in a model card."""
    return PLUGINS[name].why if name in PLUGINS else "fused at load time"


UNVERIFIABLE = "hubfuse has no independent statement of its correct result, so it cannot verify it"


def check_requested_families(requested: tuple[str, ...] | list[str], *, where: str = "--family") -> None:
    """Refuse, before any download or model load, a family hubfuse cannot verify.

    Needs no worker: whatever transformers registers, hubfuse can only verify the families it
    has a verifier for.
    """
    from hubfuse.errors import BadInputError

    for name in requested:
        if name not in PLUGINS:
            raise BadInputError(
                f"{where}: unknown fusion family {name!r}; hubfuse can verify: {', '.join(sorted(PLUGINS))}"
            )


@dataclass(frozen=True)
class FamilySelection:
    families: list[str]  # to check, in order
    skipped: dict[str, str]  # registered by transformers but not checked: family -> why


def resolve_families(requested: tuple[str, ...] | list[str]) -> FamilySelection:
    """The requested families in order, or by default every registered family hubfuse can verify.

    A family transformers registers and hubfuse cannot verify is skipped by default (and said
    so), never checked: a verdict on it would be transformers verifying itself.
    """
    from hubfuse.errors import BadInputError

    check_requested_families(requested)
    known = family_names()
    if requested:
        missing = [name for name in requested if name not in known]
        if missing:
            from importlib.metadata import version

            raise BadInputError(
                f"fusion family {missing[0]!r} is not registered by the installed transformers "
                f"{version('transformers')} (registered: {', '.join(sorted(known)) or 'none'})"
            )
        return FamilySelection(list(dict.fromkeys(requested)), {})
    families = [name for name in sorted(known) if name in PLUGINS]
    skipped = {name: UNVERIFIABLE for name in sorted(known) if name not in PLUGINS}
    if not families:
        raise BadInputError(
            f"hubfuse can verify none of the fusion families transformers registers ({', '.join(sorted(known))})"
        )
    return FamilySelection(families, skipped)
