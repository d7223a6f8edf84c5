"""`hubfuse run`, `hubfuse plan` and `hubfuse validate`: batch specs under workflows/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hubfuse import settings
from hubfuse.cli.flags import DOWNSTREAM_VERSIONS, DRY_RUN, JSON, MODE, TIMEOUT, report_dir_option
from hubfuse.cli.options import RunOptions, downstream_plan
from hubfuse.errors import BadInputError

if TYPE_CHECKING:
    from hubfuse.check.downstream import DownstreamPlan
    from hubfuse.spec import Spec
from hubfuse.log import log


@click.command("run")
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
@TIMEOUT
@MODE
@DOWNSTREAM_VERSIONS
def run(
    spec_path: Path,
    shard: str | None,
    dry_run: bool,
    as_json: bool,
    report_dir: Path | None,
    ledger_dir: Path,
    timeout_s: float | None,
    mode: str | None,
    downstream_versions: str | None,
) -> None:
    """Run the publish pipeline over every repo a batch SPEC (workflows/*.yml) selects."""
    from hubfuse import batch
    from hubfuse.hub import Hub, RequestBudget
    from hubfuse.render.report import append_step_summary, to_json
    from hubfuse.spec import load_spec

    spec = load_spec(spec_path)
    options = RunOptions(
        spec=spec,
        shard=batch.Shard.parse(shard) if shard else None,
        dry_run=dry_run,
        as_json=as_json,
        report_dir=report_dir,
        ledger_dir=ledger_dir,
        timeout_s=settings.TIMEOUT.resolve(timeout_s),
        mode=settings.MODE.resolve(mode, spec.mode),
        downstream=_downstream(downstream_versions, spec),
    )
    hub = Hub(budget=RequestBudget(spec.limits.request_budget))
    summary = batch.run(
        hub,
        spec,
        shard=options.shard,
        dry_run=options.dry_run,
        ledger_dir=options.ledger_dir,
        timeout_s=options.timeout_s,
        mode=options.mode,
        downstream=options.downstream,
    )
    markdown = batch.render_markdown(summary)
    if options.report_dir:
        options.report_dir.mkdir(parents=True, exist_ok=True)
        (options.report_dir / "summary.json").write_text(to_json(summary.to_dict()), encoding="utf-8")
        (options.report_dir / "summary.md").write_text(markdown, encoding="utf-8")
    append_step_summary(markdown)
    if summary.stopped:
        log.warning(f"stopped early: {summary.stopped}")
    click.echo(to_json(summary.to_dict()) if options.as_json else markdown, nl=False)
    sys.exit(int(summary.exit_code))


def _downstream(flag: str | None, spec: Spec) -> DownstreamPlan:
    """The flag, else the spec's key; a key the releases refuse is named as the spec's."""
    requested = settings.DOWNSTREAM_VERSIONS.resolve(flag, spec.downstream_versions)
    try:
        return downstream_plan(requested)
    except BadInputError as exc:
        if flag is not None or spec.downstream_versions is None:
            raise
        message = str(exc).replace("--downstream-versions", "downstream_versions", 1)
        raise BadInputError(f"{spec.path}: {message}") from None


@click.command("plan")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON (repos and matrix).")
@click.option(
    "--matrix", "matrix_only", is_flag=True, help="Print only the GitHub Actions matrix, on one line."
)
@click.option("--max-per-shard", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--max-shards", type=click.IntRange(min=1, max=256), default=16, show_default=True)
def plan(spec_path: Path, as_json: bool, matrix_only: bool, max_per_shard: int, max_shards: int) -> None:
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


@click.command("validate")
@click.argument(
    "spec_paths", metavar="SPEC...", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def validate(spec_paths: tuple[Path, ...]) -> None:
    """Check batch specs against the schema; the first mistake is reported with its line."""
    from hubfuse.spec import load_spec

    for path in spec_paths:
        load_spec(path)
        click.echo(f"{path}: ok")
