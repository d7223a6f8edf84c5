"""The tables and lines every report, PR text and variant card is built from: the per-family
verdict rows, the downstream matrix by release and environment, and the release story."""

from __future__ import annotations

from hubfuse.check.verdict import CheckReport, DownstreamCell, FamilyResult, LoadCheck, version_range

VERDICT_LABEL = {"safe": "SAFE", "unsafe": "UNSAFE", "not_applicable": "N/A", "error": "ERROR"}


def _roundtrip_cell(family: FamilyResult) -> str:
    roundtrip = family.roundtrip
    if roundtrip.tensors_bit_exact is None:
        return "-"
    if roundtrip.tensors_bit_exact:
        return f"{roundtrip.tensors_compared} bit-exact"
    return f"{len(roundtrip.mismatches)} mismatch(es)"


def _weights_cell(value: bool | None) -> str:
    return {None: "-", True: "exact", False: "WRONG"}[value]


def _diff_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def family_rows(report: CheckReport) -> list[list[str]]:
    return [
        [
            family.name,
            VERDICT_LABEL[family.verdict],
            str(len(family.fused_modules)),
            _roundtrip_cell(family),
            _weights_cell(family.downstream.weights_match),
            _diff_cell(family.downstream.max_abs_output_diff),
        ]
        for family in report.families
    ]


FAMILY_HEADER = ["family", "verdict", "fused", "re-save tensors", "downstream weights", "max |Δ| output"]


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def matrix_rows(check: LoadCheck) -> tuple[list[str], list[list[str]]]:
    """The downstream matrix as a table: one row per release, one column per environment."""
    stand_ins = [c.env for c in check.cells if c.env not in check.environments]  # e.g. base-without-kernels
    columns = [*check.environments, *dict.fromkeys(stand_ins)]
    by_key: dict[tuple[str, str], DownstreamCell] = {(c.transformers, c.env): c for c in check.cells}
    rows = []
    for version in check.versions or []:
        gating = any(c.gating for c in check.cells if c.transformers == version)
        row = [version + ("" if gating else " (not gating)")]
        for column in columns:
            cell = by_key.get((version, column))
            row.append(cell.outcome if cell else "unavailable" if check.environments.get(column) else "-")
        rows.append(row)
    return ["transformers", *columns], rows


def first_reasons(check: LoadCheck) -> list[str]:
    """Each distinct (outcome, reason) once, with the releases it applies to; then where the
    cells proven on another repo of the same case were proven."""
    from hubfuse.check.cell_store import reuse_lines

    groups: dict[tuple[str, str, str], list[str]] = {}
    for cell in check.cells:
        if cell.reason:
            groups.setdefault((cell.outcome, cell.env, cell.reason), []).append(cell.transformers)
    lines = [
        f"{outcome} on {version_range(versions)} ({env}): {reason}"
        for (outcome, env, reason), versions in groups.items()
    ]
    lines += [f"{column} environment unavailable: {why}" for column, why in check.environments.items() if why]
    lines += dict.fromkeys(
        f"{c.env} on {c.transformers} is a stand-in, reported beside, never gating ({c.notes[0]})"
        for c in check.cells
        if c.stand_in and c.notes
    )
    return lines + reuse_lines(check.cells)


def release_runs(subset: list[str], universe: list[str]) -> str:
    """Runs of consecutive releases of `universe`: '5.5.4, 5.21.1-5.24.0' (never a span over a gap)."""
    runs: list[list[str]] = []
    previous_in = False
    for version in universe:
        inside = version in subset
        if inside:
            if previous_in:
                runs[-1].append(version)
            else:
                runs.append([version])
        previous_in = inside
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def env_label(env: str) -> str:
    """'without torchvision' for the column with nothing optional, 'with torchvision' for its own."""
    from hubfuse.check.envs import ENV_EXTRAS

    if env not in ENV_EXTRAS:
        return env
    if ENV_EXTRAS[env]:
        return "with " + ", ".join(ENV_EXTRAS[env])
    others = sorted({extra for extras in ENV_EXTRAS.values() for extra in extras})
    return "without " + ", ".join(others) if others else env


def release_story(check: LoadCheck) -> list[str]:
    """Which releases are safe, which break and how: one line per outcome, from this run's cells.

    The first lines of every PR text and variant card: a release is safe only when all its
    environments are; each failing (outcome, environment, reason) is its own line.
    """
    from hubfuse.check.verdict import PROVEN_OUTCOMES

    universe = list(check.versions or [])
    by_release: dict[str, list[DownstreamCell]] = {}
    stand_ins = [cell for cell in check.cells if cell.stand_in]  # told apart, never the release's own
    own_cells = [cell for cell in check.cells if not cell.stand_in]
    for cell in own_cells:
        by_release.setdefault(cell.transformers, []).append(cell)
    safe = [v for v in universe if v in by_release and all(c.outcome == "safe" for c in by_release[v])]
    unaffected = [
        v
        for v in universe
        if v in by_release and v not in safe and all(c.outcome in PROVEN_OUTCOMES for c in by_release[v])
    ]
    lines = []
    if safe:
        lines.append(
            f"safe on transformers {release_runs(safe, universe)}: fused, with the exact converted weights"
        )
    if unaffected:
        lines.append(
            f"unaffected on transformers {release_runs(unaffected, universe)}: "
            "fusion_config has no effect there, the model loads as before"
        )
    groups: dict[tuple[str, str, str], list[DownstreamCell]] = {}
    for cell in own_cells:
        if cell.outcome in PROVEN_OUTCOMES:
            continue
        # A reason naming its own release ("transformers 5.5.4 does not know ...") groups across releases.
        generic = cell.reason.replace(f"transformers {cell.transformers} ", "this release ")
        env = "" if cell.outcome == "unsupported" else cell.env
        groups.setdefault((cell.outcome, env, generic), []).append(cell)
    for (outcome, env, generic), group in groups.items():
        releases = release_runs(sorted({c.transformers for c in group}), universe)
        where = f"transformers {releases}" + (f" ({env_label(env)})" if env else "")
        reason = group[0].reason if len({c.transformers for c in group}) == 1 else generic
        if outcome in ("crash", "unsafe"):
            lines.append(f"{outcome} on {where}: {reason}")
        else:
            lines.append(f"not proven on {where}: {outcome}, {reason}")
    lines += [f"not checked {env_label(column)}: {why}" for column, why in check.environments.items() if why]
    lines += [
        f"stand-in, not gating, {cell.outcome} on transformers {cell.transformers} ({cell.env}): "
        + "; ".join([*cell.notes[:1], *([cell.reason] if cell.reason else [])])
        for cell in stand_ins
    ]
    return lines
