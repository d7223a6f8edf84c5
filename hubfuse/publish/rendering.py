"""A publish report as the terminal, the Actions job summary and --report-dir show it, and the
local hub's pages that show what the run did."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from hubfuse.log import redact
from hubfuse.publish.types import PublishReport
from hubfuse.render.report import downstream_lines, skipped_lines, to_json
from hubfuse.render.tables import FAMILY_HEADER, family_rows, text_table


def render_publish_text(report: PublishReport) -> str:
    lines = [
        f"{report.repo_id}@{report.revision} -> {report.sha or '?'}"
        + (" (dry run)" if report.dry_run else "")
    ]
    if report.check is not None:
        lines += ["", *text_table(FAMILY_HEADER, family_rows(report.check))]
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
