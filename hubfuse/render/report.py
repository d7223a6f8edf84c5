"""Render check reports: a terminal table, Markdown, JSON, and the report folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubfuse import settings
from hubfuse.check.verdict import CheckReport, FamilyResult
from hubfuse.log import redact
from hubfuse.render.tables import (
    FAMILY_HEADER,
    VERDICT_LABEL,
    family_rows,
    first_reasons,
    matrix_rows,
    release_story,
    text_table,
)


def to_json(document: dict[str, Any]) -> str:
    return redact(json.dumps(document, indent=2, sort_keys=False)) + "\n"


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
            lines += ["  " + line for line in text_table(header, rows)]
            lines += [f"  {line}" for line in first_reasons(subject)]
    return lines


def render_text(report: CheckReport, *, list_tensors: bool = False) -> str:
    lines = [
        f"{report.source}: {report.model_type} ({report.architecture}, {report.dtype or 'dtype unknown'})",
        f"transformers {report.transformers_version}, torch {report.torch_version}, hubfuse {report.hubfuse_version}",
        f"mode: {report.mode}",
        "",
        *text_table(FAMILY_HEADER, family_rows(report)),
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
