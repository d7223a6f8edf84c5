"""The `hubfuse` command line: thin click commands over the pipeline.

Every expected failure is a `HubfuseError`: one line on stderr and its exit code (see
`hubfuse.errors.ExitCode`). `--json` documents go to stdout, everything else to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hubfuse import __version__
from hubfuse.errors import HubfuseError
from hubfuse.log import log
from hubfuse.options import CheckOptions

if TYPE_CHECKING:
    from hubfuse.pipeline import PublishReport


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubfuseError as exc:
            log.error(str(exc))
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            log.error("interrupted")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("HUBFUSE_DEBUG"):
                raise
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.error(
                f"internal error: {type(exc).__name__}: {first_line} (set HUBFUSE_DEBUG=1 for the traceback)"
            )
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubfuse")
def main() -> None:
    """Verify transformers fusion mappings and publish them to Hugging Face Hub repos.

    \b
    Exit codes:
      0  every requested family is safe (or: nothing left to do)
      2  bad input: usage, unreadable checkpoint, invalid spec, repo or revision not found
      3  at least one family is unsafe or could not be checked
      4  nothing to fuse in this model
      5  authentication: no token, bad token, read-only token, no write access, gated repo
      6  the Hub kept failing after bounded retries
      7  conflict: the repo moved and could not be re-verified, or a name is taken
      8  a batch run stopped on its budget or the kill switch
    """


# The same flags, spelled and explained the same way, on every command that takes them.
FAMILY = click.option(
    "--family",
    "families",
    multiple=True,
    metavar="NAME",
    help="Fusion family (repeatable). Default: every family transformers knows.",
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


def report_dir_option(what: str) -> Any:
    return click.option(
        "--report-dir", type=click.Path(file_okay=False, path_type=Path), help=f"Also write {what} here."
    )


def _check_options(f: Any) -> Any:
    for decorator in (
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
    from hubfuse.checkpoint import open_checkpoint
    from hubfuse.fusion.check import check_checkpoint
    from hubfuse.report import append_step_summary, render_markdown, render_text, to_json, write_report_dir

    checkpoint = open_checkpoint(options.source, trust_remote_code=options.trust_remote_code)
    report = check_checkpoint(
        checkpoint,
        list(options.families),
        list_tensors=options.list_tensors,
        logs_dir=options.report_dir / "logs" if options.report_dir else None,
        timeout=options.timeout_s,
    )
    if options.report_dir:
        write_report_dir(report, options.report_dir)
    append_step_summary(render_markdown(report))
    if options.as_json:
        click.echo(to_json(report.to_dict()), nl=False)
    else:
        click.echo(render_text(report, list_tensors=options.list_tensors), nl=False, err=False)
    sys.exit(int(report.exit_code))


def _check_command(name: str, list_tensors: bool, help_text: str) -> None:
    @main.command(name, help=help_text)
    @_check_options
    def command(
        source: str,
        families: tuple[str, ...],
        as_json: bool,
        report_dir: Path | None,
        trust_remote_code: bool,
        timeout_s: float,
    ) -> None:
        options = CheckOptions(
            source, families, as_json, report_dir, trust_remote_code, timeout_s, list_tensors
        )
        _run_check(options)


_check_command("check", False, "Give a verdict per fusion family for the checkpoint folder SOURCE.")
_check_command("verify", True, "Like `check`, listing every tensor of the original-format re-save.")


def _exit_code_for(report: PublishReport) -> int:
    if report.check is None:
        return 0
    return int(report.check.exit_code)


def _emit_publish(report: PublishReport, as_json: bool, report_dir: Path | None) -> None:
    from hubfuse.report import (
        append_step_summary,
        render_publish_markdown,
        render_publish_text,
        to_json,
        write_publish_report_dir,
    )

    if report_dir:
        write_publish_report_dir(report, report_dir)
    append_step_summary(render_publish_markdown(report))
    if as_json:
        click.echo(to_json(report.to_dict()), nl=False)
    else:
        click.echo(render_publish_text(report), nl=False)


@main.command()
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
    help="Variant repo name; {name} and {namespace} expand.",
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
    timeout_s: float,
) -> None:
    """Verify REPO_ID and open a config.json pull request enabling its safe fusion families.

    Talks to $HF_ENDPOINT (default: the Hugging Face Hub) with $HF_TOKEN.
    """
    from hubfuse.hub import Hub
    from hubfuse.pipeline import PublishOptions
    from hubfuse.pipeline import publish as run_publish

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
        timeout_s=timeout_s,
    )
    report = run_publish(Hub(), options, logs_dir=report_dir / "logs" if report_dir else None)
    _emit_publish(report, as_json, report_dir)
    sys.exit(_exit_code_for(report))


def _check_repo_id(repo_id: str) -> None:
    import re

    from hubfuse.errors import BadInputError

    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id) or ".." in repo_id:
        raise BadInputError(f"{repo_id!r} is not a repo id (expected namespace/name)")


@main.command()
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


@main.command("run")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shard", help="Run shard I of N (e.g. 2/4); repos are split by a stable hash of their id.")
@DRY_RUN
@JSON
@report_dir_option("summary.json and summary.md")
@click.option(
    "--ledger-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".hubfuse/ledgers"),
    show_default=True,
    help="Where the ledger lives when the spec names no ledger repo.",
)
def run_command(
    spec_path: Path,
    shard: str | None,
    dry_run: bool,
    as_json: bool,
    report_dir: Path | None,
    ledger_dir: Path,
) -> None:
    """Run the publish pipeline over every repo a batch SPEC (workflows/*.yml) selects."""
    from hubfuse import batch
    from hubfuse.hub import Hub, RequestBudget
    from hubfuse.report import append_step_summary, to_json
    from hubfuse.spec import load_spec

    spec = load_spec(spec_path)
    parsed_shard = batch.Shard.parse(shard) if shard else None
    hub = Hub(budget=RequestBudget(spec.limits.request_budget))
    summary = batch.run(hub, spec, shard=parsed_shard, dry_run=dry_run, ledger_dir=ledger_dir)
    markdown = batch.render_markdown(summary)
    if report_dir:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "summary.json").write_text(to_json(summary.to_dict()), encoding="utf-8")
        (report_dir / "summary.md").write_text(markdown, encoding="utf-8")
    append_step_summary(markdown)
    if summary.stopped:
        log.warning(f"stopped early: {summary.stopped}")
    click.echo(to_json(summary.to_dict()) if as_json else markdown, nl=False)
    sys.exit(int(summary.exit_code))


@main.command("plan")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON (repos and matrix).")
@click.option(
    "--matrix", "matrix_only", is_flag=True, help="Print only the GitHub Actions matrix, on one line."
)
@click.option("--max-per-shard", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--max-shards", type=click.IntRange(min=1, max=256), default=16, show_default=True)
def plan_command(
    spec_path: Path, as_json: bool, matrix_only: bool, max_per_shard: int, max_shards: int
) -> None:
    """Expand a batch SPEC through the Hub API and print it as a GitHub Actions matrix."""
    import json

    from hubfuse import batch
    from hubfuse.hub import Hub
    from hubfuse.spec import load_spec

    spec = load_spec(spec_path)
    planned = batch.plan(Hub(), spec, max_per_shard=max_per_shard, max_shards=max_shards)
    if matrix_only:
        click.echo(json.dumps(planned["matrix"], separators=(",", ":")))
    elif as_json:
        click.echo(json.dumps(planned, indent=2))
    else:
        click.echo(f"{planned['count']} repos in {len(planned['matrix']['include'])} shard(s)")
        for repo in planned["repos"]:
            click.echo(f"  {repo['repo_id']}  {repo['sha'] or '-'}  {repo['model_type'] or '-'}")


@main.command("validate")
@click.argument(
    "spec_paths", metavar="SPEC...", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def validate_command(spec_paths: tuple[Path, ...]) -> None:
    """Check batch specs against the schema; the first mistake is reported with its line."""
    from hubfuse.spec import load_spec

    for path in spec_paths:
        load_spec(path)
        click.echo(f"{path}: ok")


def _register_optional_commands() -> None:
    try:
        from hubfuse.localhub.cli import hub
    except ImportError:  # pragma: no cover - the local hub is part of the package
        return
    main.add_command(hub)


_register_optional_commands()
