"""`hubfuse check` and `hubfuse verify`: verdicts for a local checkpoint folder."""

from __future__ import annotations

import contextlib
import sys
from contextlib import AbstractContextManager
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
)
from hubfuse.cli.options import CheckOptions, downstream_plan
from hubfuse.settings import MODE as MODE_SETTING
from hubfuse.settings import TIMEOUT as TIMEOUT_SETTING
from hubfuse.source import LocalSource, RemoteSource, RepoSource


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


def _proving(source: RepoSource) -> AbstractContextManager[None]:
    from hubfuse.check import cell_store

    if isinstance(source, LocalSource):
        return cell_store.proving(str(source.folder.resolve()), "", local=True)
    if isinstance(source, RemoteSource):
        return cell_store.proving(source.repo_id, source.sha)
    return contextlib.nullcontext()


def _run_check(options: CheckOptions) -> None:
    from hubfuse.check.modes import CheckRequest
    from hubfuse.check.verify import open_source, verify
    from hubfuse.render.report import (
        append_step_summary,
        render_markdown,
        render_text,
        to_json,
        write_report_dir,
    )

    request = CheckRequest(
        families=list(options.families),
        mode=options.mode,
        trust_remote_code=options.trust_remote_code,
        list_tensors=options.list_tensors,
        logs_dir=options.report_dir / "logs" if options.report_dir else None,
        timeout=options.timeout_s,
        downstream=options.downstream,
    )
    source = open_source(options.source)
    with _proving(source):  # the matrix cells this check proves, kept for later checks of the case
        report = verify(source, request)
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
        timeout_s: float | None,
        downstream_versions: str | None,
        mode: str | None,
    ) -> None:
        options = CheckOptions(
            source,
            families,
            as_json,
            report_dir,
            trust_remote_code,
            TIMEOUT_SETTING.resolve(timeout_s),
            list_tensors,
            downstream_plan(downstream_versions),
            MODE_SETTING.resolve(mode),
        )
        _run_check(options)

    return command


check = _check_command(
    "check",
    False,
    "Give a verdict per fusion family for SOURCE: a checkpoint folder or a Hub repo ORG/MODEL[@REV].",
)
verify = _check_command("verify", True, "Like `check`, listing every tensor of the original-format re-save.")
