"""The fused variant: a repo of its own holding the verified fused layout, with a generated card.

    plan_variant (read-only: create, update or up to date; whose is it?) -> prepare_variant (the
    card, validated, and the files, before anything is written) -> apply_variant (one commit)

A variant belongs to the one source its marker names; the commit's parent is the head the plan read.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import naming
from hubfuse.check.verdict import CheckReport
from hubfuse.errors import BadInputError, ConflictError
from hubfuse.hub import Hub
from hubfuse.publish.steps import Source
from hubfuse.publish.types import Action, PublishOptions, PublishReport
from hubfuse.publish.variant_copies import TransferStats, VariantTransfer
from hubfuse.publish.variant_files import VariantFiles, variant_files
from hubfuse.render.cards import render_variant_card
from hubfuse.render.markers import VARIANT_MARKER, Marker, find_marker, marker_from_card_data


def variant_repo_id(source_repo: str, options: PublishOptions) -> str:
    if options.variant_repo:
        return options.variant_repo
    return naming.variant_repo_id(source_repo, options.variant_name_template, options.variant_namespace)


def variant_owner(hub: Hub, source: Source, options: PublishOptions) -> tuple[str, Any, Marker | None]:
    """The variant repo's id, info and marker, if it may be written for this source.

    A variant belongs to exactly one source, the one its marker names: any other source that
    maps to the same name is a conflict, never an overwrite (not even with --force, which only
    takes over a repo hubfuse did not make)."""
    target = variant_repo_id(source.repo_id, options)
    info = hub.info_or_none(target)
    if info is None:
        return target, None, None
    marker = marker_from_card_data(getattr(info, "card_data", None))
    if marker is None and "README.md" in [s.rfilename for s in (info.siblings or [])]:
        marker = find_marker(hub.read_text(target, info.sha, "README.md"), VARIANT_MARKER)
    if marker is not None and hub.whoami() not in hub.last_commit_authors(target):
        marker = None  # anyone can copy a marker: only one in a commit of our own user counts
    if marker is None:
        if not options.force:
            raise ConflictError(
                f"{target} exists and was not made by hubfuse (no marker, or its last commit is not"
                f" {hub.whoami()}'s); choose --variant-repo or pass --force"
            )
    elif (marker.source or "").lower() != source.repo_id.lower():
        raise ConflictError(
            f"{target} is the variant of {marker.source or 'an unnamed source'}, not of {source.repo_id}:"
            " use a name_template with {namespace}, or --variant-repo"
        )
    return target, info, marker


@dataclass
class VariantPlan:
    target: str
    status: str  # up_to_date | create | update
    head: str | None = None
    files: list[str] = field(default_factory=list)
    # Set by prepare_variant before anything is written; None: no variant (several families).
    card: str | None = None  # rendered and validated
    content: VariantFiles | None = None

    @property
    def needs_write(self) -> bool:
        return self.status != "up_to_date"


def plan_variant(hub: Hub, source: Source, families: list[str], options: PublishOptions) -> VariantPlan:
    """Read-only: is the variant repo missing, stale, up to date, or someone else's?"""
    target, info, marker = variant_owner(hub, source, options)
    if info is None:
        return VariantPlan(target, "create")
    files = [s.rfilename for s in (info.siblings or [])]
    if (
        marker is not None
        and marker.source_sha == source.sha
        and set(marker.families) == set(families)
        and not options.force
    ):
        return VariantPlan(target, "up_to_date", info.sha, files)
    return VariantPlan(target, "update", info.sha, files)


def prepare_variant(
    hub: Hub, source: Source, plan: VariantPlan, snapshot: Path, report: CheckReport, artifacts: Path
) -> None:
    """Render the variant's card into `plan` and have the Hub validate it, before anything is written:
    a source card whose metadata cannot be carried over stops the run with nothing published. Then
    the files, as the mode `report` was verified in builds them."""
    if not plan.needs_write or len(report.safe_families) != 1:
        return
    readme = snapshot / "README.md"
    plan.card = render_variant_card(
        source_repo=source.repo_id,
        source_url=hub.repo_url(source.repo_id),
        variant_repo=plan.target,
        report=report,
        source_sha=source.sha,
        upstream_card=readme.read_text(encoding="utf-8") if readme.is_file() else None,
    )
    _validate_card(plan.card)
    plan.content = variant_files(hub, source, snapshot, report, artifacts)


def apply_variant(
    hub: Hub, source: Source, plan: VariantPlan, options: PublishOptions, out: PublishReport
) -> None:
    from huggingface_hub import CommitOperationDelete

    url = hub.repo_url(plan.target)
    if plan.status == "up_to_date":
        out.actions.append(
            Action("variant", "up_to_date", f"{plan.target} already holds this commit's variant", url)
        )
        return
    if plan.card is None or plan.content is None:
        out.actions.append(
            Action("variant", "skipped", "a variant fusing several families at once is not supported yet")
        )
        return
    out.variant_card = plan.card
    files = plan.content.local_files()
    keep = {*files, "README.md", ".gitattributes", *plan.content.other_names()}
    deletions = [CommitOperationDelete(name) for name in plan.files if name not in keep]
    if options.dry_run:
        verb = plan.status
        out.actions.append(
            Action("variant", f"would_{verb}", f"would {verb} {plan.target} with {len(files) + 1} files", url)
        )
        return
    options.before_write()
    head = _created(hub, source, plan) if plan.status == "create" else plan.head
    try:
        stats = _commit(hub, source, plan, files, deletions, head, options.work_dir)
    except Exception:
        if plan.status == "create":
            hub.delete_repo(plan.target)  # ours, made just now: never leave it without its card
        raise
    out.variant_transfer = stats.to_dict()
    status = "created" if plan.status == "create" else "updated"
    out.actions.append(Action("variant", status, _transfer_detail(plan.target, stats), url))


def _created(hub: Hub, source: Source, plan: VariantPlan) -> str:
    """Create the variant repo; its first commit's sha (the parent of ours)."""
    try:
        hub.create_repo(plan.target, private=source.private or source.gated, exist_ok=False)
    except ConflictError:
        raise ConflictError(
            f"{plan.target} was created meanwhile by someone else (another shard?); run again"
        ) from None
    return hub.resolve(plan.target, None).sha


def _commit(
    hub: Hub,
    source: Source,
    plan: VariantPlan,
    files: dict[str, Path],
    deletions: list[Any],
    head: str | None,
    work_dir: Path | None,
) -> TransferStats:
    """The variant's one commit: files identical to the source's go in by server-side copy from the
    pinned source commit, the rest is uploaded."""
    from huggingface_hub import CommitOperationAdd

    assert plan.card is not None and plan.content is not None
    shard_work = Path(tempfile.mkdtemp(prefix="hubfuse-shards-", dir=work_dir))
    try:
        transfer = VariantTransfer(hub, source.repo_id, source.sha, plan.target, shard_work)
        operations: list[Any] = [transfer.local_file(name, path) for name, path in files.items()]
        operations.append(CommitOperationAdd("README.md", plan.card.encode("utf-8")))
        operations += plan.content.operations(transfer, shard_work)
        operations += deletions
        transfer.commit(
            operations,
            message=f"hubfuse: fused variant of {source.repo_id}@{source.sha[:12]}",
            description=f"Source commit {source.sha}.",
            parent=head,
        )
        return transfer.stats
    finally:
        shutil.rmtree(shard_work, ignore_errors=True)


def _transfer_detail(target: str, stats: TransferStats) -> str:
    return (
        f"{target} (one commit: {stats.files_uploaded} files uploaded, {stats.bytes_uploaded} B;"
        f" {stats.files_copied} copied server-side, {stats.bytes_copied} B;"
        f" {stats.files_streamed} streamed, {stats.bytes_streamed} B)"
    )


def _validate_card(card: str) -> None:
    from huggingface_hub import ModelCard

    try:
        ModelCard(card).validate()
    except ValueError as exc:
        reason = " ".join(str(exc).split())  # the client's message spans lines; ours is one
        raise BadInputError(f"the generated model card does not validate: {reason}") from exc
