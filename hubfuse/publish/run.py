"""`hubfuse publish`: the publishing pipeline, one function per step, each with its own check.

    resolve -> [cached verdict: anything to do?] -> pull -> verify -> config PR -> variant -> report

Verification gates every write: nothing is written unless the families are verified safe, in
this run, on exactly the commit being written against. Each write is one atomic commit whose
parent is the verified commit; a repo that moved meanwhile is verified again. A verdict cached
from an earlier run may only conclude that there is nothing to do.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hubfuse.check import cell_store
from hubfuse.check.verdict import CheckReport
from hubfuse.check.verdict_cache import VerdictCache
from hubfuse.errors import BadInputError, ConflictError
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.publish.config_pr import ConfigPlan, apply_config_pr, plan_config_pr
from hubfuse.publish.steps import (
    Source,
    choose_publish_mode,
    pull,
    resolve,
    verdict_key,
    verify,
    verify_targeted,
)
from hubfuse.publish.types import Action, PublishOptions, PublishReport
from hubfuse.publish.variant import (
    VariantPlan,
    apply_variant,
    plan_variant,
    prepare_variant,
    variant_owner,
)

MAX_REVERIFY = 2


def publish(
    hub: Hub,
    options: PublishOptions,
    logs_dir: Path | None = None,
    cache: VerdictCache | None = None,
    out: PublishReport | None = None,
) -> PublishReport:
    """Publish one repo. `out`, when given, is filled as the run goes: if a step raises, it
    still holds what was verified and written before the failure (for --json and --report-dir)."""
    out = out or PublishReport.for_options(options)
    cache = cache or VerdictCache.default()
    if not options.dry_run:
        hub.require_write_token()  # a missing, bad or read-only token fails before any work
    source = resolve(hub, options.repo_id, options.revision)
    out.sha = source.sha
    if _settled_by_cache(hub, source, cache, options, out):
        return out
    if options.variant:
        variant_owner(hub, source, options)  # a name another source holds fails before any download

    work = Path(tempfile.mkdtemp(prefix="hubfuse-publish-", dir=options.work_dir))
    try:
        for _ in range(MAX_REVERIFY + 1):
            out.sha = source.sha
            mode = choose_publish_mode(hub, source, options)
            snapshot = pull(hub, source, variant=options.variant, weights=mode == "full")
            artifacts = work / f"artifacts-{source.sha[:12]}"
            with cell_store.proving(source.repo_id, source.sha):  # the matrix cells it proves
                if mode == "full":
                    report = verify(snapshot, options, artifacts, logs_dir or work / "logs")
                else:
                    report = verify_targeted(
                        hub, source, snapshot, options, artifacts, logs_dir or work / "logs"
                    )
            cache.put(verdict_key(source, options), report)
            out.check = report
            if _stopped(report, out):
                return out
            writes = _plan_writes(hub, source, snapshot, report, artifacts, options)
            moved = _config_pr_unless_moved(hub, source, writes, report, options, out)
            if moved.sha != source.sha:
                log.warning(f"{options.repo_id} moved to {moved.sha[:12]} during the run: verifying again")
                out.actions.clear()
                source = moved
                continue
            if writes.variant is not None:
                apply_variant(hub, source, writes.variant, options, out)
            return out
        raise ConflictError(f"{options.repo_id} kept moving during verification; try again later")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _settled_by_cache(
    hub: Hub, source: Source, cache: VerdictCache, options: PublishOptions, out: PublishReport
) -> bool:
    """An earlier run's verdict for this exact commit settles the run if it stops it, or if every
    step is done already; it never authorises a write."""
    cached = cache.get(verdict_key(source, options))
    if cached is None:
        return False
    out.check, out.verdict_from_cache = cached, True
    if cached.verdict != "safe":
        out.actions.append(
            Action("verify", "stopped", f"verdict {cached.verdict} (cached for this commit): nothing written")
        )
        return True
    if _nothing_to_do(hub, source, cached, options, out):
        return True
    out.actions.clear()
    out.verdict_from_cache = False
    return False


def _nothing_to_do(
    hub: Hub, source: Source, cached: CheckReport, options: PublishOptions, out: PublishReport
) -> bool:
    """With an earlier run's verdict for this exact commit: is every step already done?"""
    families = cached.safe_families
    config_plan = plan_config_pr(hub, source, _config_text(hub, source), families, options)
    if config_plan.needs_write:
        return False
    variant_plan = plan_variant(hub, source, families, options) if options.variant else None
    if variant_plan is not None and variant_plan.needs_write:
        return False
    apply_config_pr(hub, source, config_plan, cached, options, out)
    if variant_plan is not None:
        out.actions.append(
            Action(
                "variant",
                "up_to_date",
                f"{variant_plan.target} already holds this commit's variant",
                hub.repo_url(variant_plan.target),
            )
        )
    return True


def _config_text(hub: Hub, source: Source) -> str:
    text = hub.read_text(source.repo_id, source.sha, "config.json")
    if text is None:
        raise BadInputError(f"{source.repo_id}@{source.sha[:12]}: no config.json in the repo")
    return text


def _stopped(report: CheckReport, out: PublishReport) -> bool:
    """Anything but a safe verdict stops the run before any write."""
    if report.verdict == "safe":
        return False
    why = " (could not check: not cached, a later run tries again)" if report.verdict == "error" else ""
    out.actions.append(Action("verify", "stopped", f"verdict {report.verdict}{why}: nothing written"))
    return True


@dataclass
class Writes:
    config: ConfigPlan
    variant: VariantPlan | None

    @property
    def needed(self) -> bool:
        return self.config.needs_write or (self.variant is not None and self.variant.needs_write)


def _plan_writes(
    hub: Hub, source: Source, snapshot: Path, report: CheckReport, artifacts: Path, options: PublishOptions
) -> Writes:
    """Read-only: what the config PR and the variant have to write, the variant's card validated."""
    families = report.safe_families
    config_plan = plan_config_pr(
        hub, source, (snapshot / "config.json").read_text(encoding="utf-8"), families, options
    )
    variant_plan = plan_variant(hub, source, families, options) if options.variant else None
    if variant_plan is not None:
        prepare_variant(hub, source, variant_plan, snapshot, report, artifacts)
    return Writes(config_plan, variant_plan)


def _config_pr_unless_moved(
    hub: Hub, source: Source, writes: Writes, report: CheckReport, options: PublishOptions, out: PublishReport
) -> Source:
    """The config PR, unless the repo moved since it was verified: the source as it is now.

    The Hub accepts a PR based on an older commit, so "main moved" is checked here, right before
    writing, as well as through the parent check of every commit."""
    moved = (
        resolve(hub, options.repo_id, options.revision) if writes.needed and not options.dry_run else source
    )
    if moved.sha == source.sha:
        try:
            apply_config_pr(hub, source, writes.config, report, options, out)
        except ConflictError:
            moved = resolve(hub, options.repo_id, options.revision)
            if moved.sha == source.sha:
                raise
    return moved
