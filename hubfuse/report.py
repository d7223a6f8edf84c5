"""Render check reports: a terminal table, Markdown, JSON, and the report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from hubfuse import settings
from hubfuse.fusion.verdict import CheckReport, DownstreamCell, FamilyResult, LoadCheck, version_range
from hubfuse.log import redact

if TYPE_CHECKING:
    from hubfuse.pipeline import PublishReport

VERDICT_LABEL = {"safe": "SAFE", "unsafe": "UNSAFE", "not_applicable": "N/A", "error": "ERROR"}


def to_json(document: dict[str, Any]) -> str:
    return redact(json.dumps(document, indent=2, sort_keys=False)) + "\n"


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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
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
    from hubfuse.fusion.cell_store import reuse_lines

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
    from hubfuse.fusion.envs import ENV_EXTRAS

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
    from hubfuse.fusion.verdict import PROVEN_OUTCOMES

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


def downstream_lines(family: FamilyResult, *, markdown: bool) -> list[str]:
    """The matrix section of one family (config PR cells, then the variant's)."""
    check = family.downstream
    if check.selection is None:
        return []
    if check.versions is None:
        return [
            f"{family.name}: downstream matrix off: the verdict holds for the installed transformers only"
        ]
    lines = ["", f"{family.name}: transformers releases (config-only load, {check.selection}):"]
    lines += [""] if markdown else []
    lines += [f"{'- ' if markdown else '  '}{line}" for line in release_story(check)]
    for title, subject in (
        ("config-only load", family.downstream),
        ("fused-layout variant load", family.fused_layout),
    ):
        if not subject.cells and subject is family.fused_layout:
            continue
        header, rows = matrix_rows(subject)
        lines += ["", f"{family.name}: downstream {title} ({check.selection}):"]
        if markdown:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines += [""] + [f"- {line}" for line in first_reasons(subject)]
        else:
            lines += ["  " + line for line in _table(header, rows)]
            lines += [f"  {line}" for line in first_reasons(subject)]
    return lines


def render_text(report: CheckReport, *, list_tensors: bool = False) -> str:
    lines = [
        f"{report.source}: {report.model_type} ({report.architecture}, {report.dtype or 'dtype unknown'})",
        f"transformers {report.transformers_version}, torch {report.torch_version}, hubfuse {report.hubfuse_version}",
        f"mode: {report.mode}",
        "",
        *_table(FAMILY_HEADER, family_rows(report)),
    ]
    for family in report.families:
        for reason in family.reasons:
            lines.append(f"  {family.name}: {reason}")
        lines += downstream_lines(family, markdown=False)
        if report.mode == "targeted":
            lines += [f"  {family.name} proof: {_proof_line(proof)}" for proof in family.proofs]
        if list_tensors and family.roundtrip.tensors:
            lines += ["", f"{family.name}: original-format re-save, tensor by tensor"]
            for tensor in family.roundtrip.tensors:
                shape = "x".join(str(d) for d in tensor.get("shape", [])) or "-"
                lines.append(
                    f"  {tensor['status']:<10} {tensor.get('dtype', '-'):<5} {shape:<18} {tensor['name']}"
                )
            for change in family.roundtrip.config_changes:
                lines.append(f"  config.json {change}")
            identical = family.roundtrip.files_byte_identical
            lines.append(f"  files byte-identical: {'yes' if identical else 'no'} (informational)")
    lines += skipped_lines(report, "  ")
    lines += ["", f"verdict: {report.verdict} (exit {int(report.exit_code)})"]
    return redact("\n".join(lines)) + "\n"


def _proof_line(proof: dict[str, Any]) -> str:
    holds = {True: "holds", False: "FAILS", None: "not reached"}[proof["holds"]]
    return f"{proof['point']}: {holds} ({proof['how']}; on {proof['tensors']})"


def render_markdown(report: CheckReport) -> str:
    lines = [
        f"## hubfuse check: `{report.source}`",
        "",
        f"`{report.model_type}` / `{report.architecture}` / {report.dtype or '?'} — "
        f"transformers {report.transformers_version}, torch {report.torch_version}, hubfuse {report.hubfuse_version}",
        "",
        "| " + " | ".join(FAMILY_HEADER) + " |",
        "|" + "---|" * len(FAMILY_HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in family_rows(report)]
    for family in report.families:
        if family.reasons:
            lines += ["", f"**{family.name}** ({VERDICT_LABEL[family.verdict]}):", ""]
            lines += [f"- {reason}" for reason in family.reasons]
        lines += downstream_lines(family, markdown=True)
        if report.mode == "targeted":
            lines += ["", f"**{family.name}**, targeted mode (headers and touched tensors only):", ""]
            lines += [f"- {_proof_line(proof)}" for proof in family.proofs]
    lines += ["", *skipped_lines(report, "- ")] if report.skipped_families else []
    lines += ["", f"**Verdict: {report.verdict}** ({report.mode} mode)", ""]
    return redact("\n".join(lines)) + "\n"


def skipped_lines(report: CheckReport, bullet: str) -> list[str]:
    return [f"{bullet}{name}: skipped, {why}" for name, why in report.skipped_families.items()]


def write_report_dir(report: CheckReport, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(to_json(report.to_dict()), encoding="utf-8")
    (directory / "report.md").write_text(render_markdown(report), encoding="utf-8")


def append_step_summary(markdown: str) -> None:
    """Add to the GitHub Actions job summary when running there."""
    summary = settings.step_summary_path()
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(redact(markdown) + "\n")


def render_publish_text(report: PublishReport) -> str:
    lines = [
        f"{report.repo_id}@{report.revision} -> {report.sha or '?'}"
        + (" (dry run)" if report.dry_run else "")
    ]
    if report.check is not None:
        lines += ["", *_table(FAMILY_HEADER, family_rows(report.check))]
        for family in report.check.families:
            lines += [f"  {family.name}: {reason}" for reason in family.reasons]
            lines += downstream_lines(family, markdown=False)
        lines += skipped_lines(report.check, "  ")
    lines.append("")
    for action in report.actions:
        lines.append(
            f"{action.step:<10} {action.status:<16} {action.detail}"
            + (f"  {action.url}" if action.url else "")
        )
    if report.error:
        lines.append(f"failed: {report.error} (exit {report.error_exit_code})")
    if report.pages:
        lines += ["", "pages on the local hub:"]
        lines += [f"  {label:<20} {url}" for label, url in report.pages.items()]
    if report.dry_run:
        if report.config_diff:
            lines += ["", "config.json diff:", report.config_diff.rstrip()]
        if report.pr_title:
            lines += ["", f"PR title: {report.pr_title}", "PR description:", report.pr_description or ""]
        if report.variant_card:
            lines += ["", "variant model card:", report.variant_card]
    return redact("\n".join(lines)) + "\n"


def local_hub_pages(endpoint: str, report: PublishReport) -> dict[str, str]:
    """The local hub's pages showing what this publish did, as the repo owners would see it."""
    pages = {"repos": f"{endpoint}/", "source repo": f"{endpoint}/{report.repo_id}"}
    for action in report.actions:
        if not action.url:
            continue
        if action.step == "config_pr" and action.status in ("opened", "exists", "opted_out"):
            pages["pull request"] = action.url
            if action.status != "opted_out":
                num = action.url.rstrip("/").rsplit("/", 1)[-1]
                pages["pull request files"] = (
                    f"{endpoint}/{report.repo_id}/tree/{quote(f'refs/pr/{num}', safe='')}"
                )
        elif action.step == "variant" and action.status in ("created", "updated", "up_to_date"):
            pages["variant"] = action.url
    return pages


def render_publish_markdown(report: PublishReport) -> str:
    lines = [
        f"## hubfuse publish: `{report.repo_id}`",
        "",
        f"Commit `{report.sha}`" + (" (dry run)" if report.dry_run else ""),
        "",
    ]
    if report.check is not None:
        lines += ["| " + " | ".join(FAMILY_HEADER) + " |", "|" + "---|" * len(FAMILY_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in family_rows(report.check)]
        for family in report.check.families:
            lines += [f"- {family.name}: {reason}" for reason in family.reasons]
            lines += downstream_lines(family, markdown=True)
        lines += skipped_lines(report.check, "- ")
        lines.append("")
    lines += ["| step | status | detail |", "|---|---|---|"]
    for action in report.actions:
        detail = f"[{action.detail}]({action.url})" if action.url else action.detail
        lines.append(f"| {action.step} | {action.status} | {detail} |")
    if report.error:
        lines += ["", f"**Failed: {report.error} (exit {report.error_exit_code}).**"]
    return redact("\n".join(lines)) + "\n"


def write_publish_report_dir(report: PublishReport, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(to_json(report.to_dict()), encoding="utf-8")
    (directory / "report.md").write_text(render_publish_markdown(report), encoding="utf-8")
