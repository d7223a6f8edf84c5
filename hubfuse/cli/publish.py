"""`hubfuse publish` and `hubfuse demo` (a publish against the local hub)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hubfuse.cli.flags import (
    DOWNSTREAM_VERSIONS,
    DRY_RUN,
    FAMILY,
    JSON,
    MODE,
    TIMEOUT,
    TRUST_REMOTE_CODE,
    report_dir_option,
)
from hubfuse.cli.options import downstream_plan
from hubfuse.settings import MODE as MODE_SETTING
from hubfuse.settings import TIMEOUT as TIMEOUT_SETTING

if TYPE_CHECKING:
    from hubfuse.publish.types import PublishReport


def _exit_code_for(report: PublishReport) -> int:
    if report.check is None:
        return 0
    return int(report.check.exit_code)


def _emit_publish(report: PublishReport, as_json: bool, report_dir: Path | None) -> None:
    from hubfuse.publish.rendering import (
        render_publish_markdown,
        render_publish_text,
        write_publish_report_dir,
    )
    from hubfuse.render.report import append_step_summary, to_json

    if report_dir:
        write_publish_report_dir(report, report_dir)
    append_step_summary(render_publish_markdown(report))
    if as_json:
        click.echo(to_json(report.to_dict()), nl=False)
    else:
        click.echo(render_publish_text(report), nl=False)


@click.command()
@click.argument("repo_id")
@click.option(
    "--revision", help="Branch, tag or commit to verify (default: the default branch). Pinned to its sha."
)
@FAMILY
@click.option("--variant", is_flag=True, help="Also publish the fused layout as a separate repo.")
@click.option("--variant-repo", metavar="ID", help="Variant repo id (default: from --variant-name-template).")
@click.option(
    "--variant-name-template",
    default="{name}-fused",
    show_default=True,
    callback=lambda _ctx, _param, value: _checked_template(value),
    help="Variant repo name; {name} and {namespace} (or {org}) of the source expand.",
)
@DRY_RUN
@JSON
@click.option(
    "--force",
    is_flag=True,
    help="Override an owner's opt-out, or take over a variant repo hubfuse did not make.",
)
@report_dir_option("report.json, report.md and the worker logs")
@TRUST_REMOTE_CODE
@TIMEOUT
@DOWNSTREAM_VERSIONS
@MODE
def publish(
    repo_id: str,
    revision: str | None,
    families: tuple[str, ...],
    variant: bool,
    variant_repo: str | None,
    variant_name_template: str,
    dry_run: bool,
    as_json: bool,
    force: bool,
    report_dir: Path | None,
    trust_remote_code: bool,
    timeout_s: float | None,
    downstream_versions: str | None,
    mode: str | None,
) -> None:
    """Verify REPO_ID and open a config.json pull request enabling its safe fusion families.

    Talks to $HF_ENDPOINT (default: the Hugging Face Hub) with $HF_TOKEN.
    """
    from hubfuse.hub import Hub
    from hubfuse.publish.run import publish as run_publish
    from hubfuse.publish.types import PublishOptions, PublishReport

    _check_repo_id(repo_id)
    options = PublishOptions(
        repo_id=repo_id,
        revision=revision,
        families=families,
        variant=variant or bool(variant_repo),
        variant_repo=variant_repo,
        variant_name_template=variant_name_template,
        dry_run=dry_run,
        force=force,
        trust_remote_code=trust_remote_code,
        timeout_s=TIMEOUT_SETTING.resolve(timeout_s),
        downstream=downstream_plan(downstream_versions),
        mode=MODE_SETTING.resolve(mode),
    )
    hub = Hub()
    report = PublishReport.for_options(options)
    try:
        run_publish(hub, options, logs_dir=report_dir / "logs" if report_dir else None, out=report)
    except Exception as exc:
        # What was verified and written before the failure is reported too (always with --json
        # and --report-dir); the error line and its exit code follow as for every command.
        report.fail(exc)
        if as_json or report_dir or report.check is not None or report.actions:
            _emit_publish(report, as_json, report_dir)
        raise
    if hub.is_local_hub():
        from hubfuse.publish.rendering import local_hub_pages

        report.pages = local_hub_pages(hub.endpoint, report)
    _emit_publish(report, as_json, report_dir)
    sys.exit(_exit_code_for(report))


def _checked_template(template: str) -> str:
    from hubfuse.naming import check_name_template

    check_name_template(template)
    return template


def _check_repo_id(repo_id: str) -> None:
    import re

    from hubfuse.errors import BadInputError

    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id) or ".." in repo_id:
        raise BadInputError(f"{repo_id!r} is not a repo id (expected namespace/name)")


@click.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".hubfuse-demo"),
    show_default=True,
    help="Folder for the local hub, its cache and reports.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the publish report as JSON.")
def demo(data_dir: Path, as_json: bool) -> None:
    """The main job on the embedded default: a local hub, a tiny demo model, a publish with a variant."""
    from hubfuse.demo import run_demo

    report = run_demo(data_dir.resolve())
    _emit_publish(report, as_json, data_dir / "report")
    sys.exit(_exit_code_for(report))
