"""`hubfuse check` and `hubfuse verify`: verdicts for a local checkpoint folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hubfuse.cli.flags import (
    DOWNSTREAM_VERSIONS,
    FAMILY,
    JSON,
    MODE,
    TIMEOUT,
    TRUST_REMOTE_CODE,
    report_dir_option,
    resolve_downstream,
)
from hubfuse.options import CheckOptions


def _check_options(f: Any) -> Any:
    for decorator in (
        DOWNSTREAM_VERSIONS,
        MODE,
        TIMEOUT,
        TRUST_REMOTE_CODE,
        report_dir_option("report.json, report.md and the worker logs"),
        JSON,
        FAMILY,
        click.argument("source"),
    ):
        f = decorator(f)
    return f


def _run_check(options: CheckOptions) -> None:
    from hubfuse.fusion.families import check_requested_families
    from hubfuse.modes import check_source, open_source
    from hubfuse.render.report import (
        append_step_summary,
        render_markdown,
        render_text,
        to_json,
        write_report_dir,
    )

    check_requested_families(options.families)
    report = check_source(
        open_source(options.source),
        list(options.families),
        mode=options.mode,
        trust_remote_code=options.trust_remote_code,
        list_tensors=options.list_tensors,
        logs_dir=options.report_dir / "logs" if options.report_dir else None,
        timeout=options.timeout_s,
        downstream=options.downstream,
    )
    if options.report_dir:
        write_report_dir(report, options.report_dir)
    append_step_summary(render_markdown(report))
    if options.as_json:
        click.echo(to_json(report.to_dict()), nl=False)
    else:
        click.echo(render_text(report, list_tensors=options.list_tensors), nl=False, err=False)
    sys.exit(int(report.exit_code))


def _check_command(name: str, list_tensors: bool, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @_check_options
    def command(
        source: str,
        families: tuple[str, ...],
        as_json: bool,
        report_dir: Path | None,
        trust_remote_code: bool,
        timeout_s: float,
        downstream_versions: str | None,
        mode: str,
    ) -> None:
        options = CheckOptions(
            source,
            families,
            as_json,
            report_dir,
            trust_remote_code,
            timeout_s,
            list_tensors,
            resolve_downstream(downstream_versions),
            mode,
        )
        _run_check(options)

    return command


check = _check_command(
    "check",
    False,
    "Give a verdict per fusion family for SOURCE: a checkpoint folder or a Hub repo ORG/MODEL[@REV].",
)
verify = _check_command("verify", True, "Like `check`, listing every tensor of the original-format re-save.")
