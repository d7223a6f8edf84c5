"""The flags several commands share: spelled and explained the same way everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

FAMILY = click.option(
    "--family",
    "families",
    multiple=True,
    metavar="NAME",
    help="Fusion family (repeatable). Default: every family transformers registers that hubfuse can verify.",
)
JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout (logs stay on stderr)."
)
TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow a repo's own Python code (auto_map). Only for repos you trust.",
)
TIMEOUT = click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=1800.0,
    show_default=True,
    help="Seconds allowed for each model load.",
)
DRY_RUN = click.option("--dry-run", is_flag=True, help="Do everything but the writes.")
DOWNSTREAM_VERSIONS = click.option(
    "--downstream-versions",
    "downstream_versions",
    metavar="SPEC",
    help="transformers releases whose config-only load gates the verdict: a PEP 440 specifier "
    "('>=5.21'; 'A || B' for a union) or 'none'. Default: the latest patch of every release that "
    "reads fusion_config plus the newest one before them ($HUBFUSE_DOWNSTREAM_VERSIONS replaces "
    "that default). Releases of the default outside SPEC are still checked and reported, not gating.",
)


def resolve_downstream(requested: str | None) -> Any:
    """The flag's value as the typed plan the options carry (asks the package index, cached)."""
    from hubfuse.check.downstream import resolve_plan

    return resolve_plan(requested)


def report_dir_option(what: str) -> Any:
    return click.option(
        "--report-dir", type=click.Path(file_okay=False, path_type=Path), help=f"Also write {what} here."
    )


MODE = click.option(
    "--mode",
    type=click.Choice(["auto", "full", "targeted"]),
    default="auto",
    show_default=True,
    help="full: load the whole model; targeted: headers and the touched tensors only (huge repos); "
    "auto: full when the model fits this machine's memory and disk with room to spare.",
)
