"""`hubfuse publish`: the publishing pipeline, one function per step, each with its own check.

    resolve -> pull -> verify -> config pull request -> fused variant -> report

Verification gates every write: nothing is written unless every requested family that applies
is safe on exactly the commit being written against. Every write is one atomic commit whose
parent is the verified commit; a repo that moved meanwhile is verified again.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubfuse.cards import (
    PR_MARKER,
    PR_TITLE_SUFFIX,
    VARIANT_MARKER,
    find_marker,
    pr_title,
    render_pr_description,
    render_variant_card,
)
from hubfuse.checkpoint import open_checkpoint
from hubfuse.configedit import set_top_level_key, unified_diff
from hubfuse.errors import ConflictError, HubUnavailableError
from hubfuse.fusion.check import check_checkpoint
from hubfuse.fusion.verdict import CheckReport
from hubfuse.hub import Hub
from hubfuse.log import log

WEIGHT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "generation_config.json"]
VARIANT_EXTRA_PATTERNS = [
    "README.md",
    "tokenizer*",
    "*.model",
    "vocab.*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.*",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
]
MAX_REVERIFY = 2


@dataclass(frozen=True)
class PublishOptions:
    repo_id: str
    revision: str | None = None
    families: tuple[str, ...] = ()
    variant: bool = False
    variant_repo: str | None = None
    variant_name_template: str = "{name}-fused"
    dry_run: bool = False
    force: bool = False
    trust_remote_code: bool = False
    timeout_s: float = 1800.0
    work_dir: Path | None = None


@dataclass
class Action:
    step: str  # "config_pr" | "variant"
    status: str  # opened, updated, up_to_date, exists, opted_out, superseded, would_open, ...
    detail: str
    url: str | None = None


@dataclass
class PublishReport:
    repo_id: str
    revision: str
    sha: str | None = None
    check: CheckReport | None = None
    actions: list[Action] = field(default_factory=list)
    dry_run: bool = False
    config_diff: str | None = None
    pr_title: str | None = None
    pr_description: str | None = None
    variant_card: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "sha": self.sha,
            "dry_run": self.dry_run,
            "verdict": self.check.verdict if self.check else None,
            "actions": [asdict(a) for a in self.actions],
            "check": self.check.to_dict() if self.check else None,
            "config_diff": self.config_diff,
            "pr_title": self.pr_title,
            "pr_description": self.pr_description,
            "variant_card": self.variant_card,
        }


# -- step 1: resolve -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    repo_id: str
    sha: str
    private: bool
    gated: bool
    pipeline_tag: str | None


def resolve(hub: Hub, repo_id: str, revision: str | None) -> Source:
    info = hub.resolve(repo_id, revision)
    if not getattr(info, "sha", None):
        raise ConflictError(f"{repo_id}@{revision or 'main'}: the Hub returned no commit sha")
    return Source(
        repo_id=repo_id,
        sha=info.sha,
        private=bool(getattr(info, "private", False)),
        gated=bool(getattr(info, "gated", False)),
        pipeline_tag=getattr(info, "pipeline_tag", None),
    )


# -- step 2: pull ----------------------------------------------------------------------------


def pull(hub: Hub, source: Source, *, variant: bool) -> Path:
    patterns = WEIGHT_PATTERNS + (VARIANT_EXTRA_PATTERNS if variant else [])
    with log.group(f"pull {source.repo_id}@{source.sha[:12]}"):
        snapshot = hub.download(source.repo_id, source.sha, patterns)
    if not (snapshot / "config.json").is_file():
        from hubfuse.errors import BadInputError

        raise BadInputError(f"{source.repo_id}@{source.sha[:12]}: no config.json in the repo")
    return snapshot


# -- step 3: verify --------------------------------------------------------------------------


def verify(snapshot: Path, options: PublishOptions, artifacts: Path, logs: Path) -> CheckReport:
    checkpoint = open_checkpoint(snapshot, trust_remote_code=options.trust_remote_code)
    report = check_checkpoint(
        checkpoint, options.families, logs_dir=logs, artifacts_dir=artifacts, timeout=options.timeout_s
    )
    report.source = options.repo_id
    return report


# -- step 4: the config pull request -----------------------------------------------------------


@dataclass
class _HubfusePR:
    num: int
    status: str
    source_sha: str
    families: tuple[str, ...]
    closed_by_owner: bool
    url: str


def _hubfuse_prs(hub: Hub, repo_id: str) -> list[_HubfusePR]:
    """hubfuse's own earlier pull requests on this repo, recognised by title and marker."""
    found = []
    me = hub.whoami()
    for pr in hub.pull_requests(repo_id):
        if PR_TITLE_SUFFIX not in pr.title:
            continue
        details = hub.discussion_details(repo_id, pr.num)
        texts = [getattr(event, "content", "") or "" for event in details.events]
        marker = next((m for m in (find_marker(t, PR_MARKER) for t in texts) if m), None)
        if marker is None:
            continue
        closers = [e.author for e in details.events if getattr(e, "new_status", None) == "closed"]
        found.append(
            _HubfusePR(
                num=pr.num,
                status=pr.status,
                source_sha=marker.source_sha,
                families=marker.families,
                closed_by_owner=pr.status == "closed" and (not closers or closers[-1] != me),
                url=f"{hub.repo_url(repo_id)}/discussions/{pr.num}",
            )
        )
    return found


def config_pull_request(
    hub: Hub, source: Source, snapshot: Path, report: CheckReport, options: PublishOptions, out: PublishReport
) -> None:
    families = report.safe_families
    wanted = {name: True for name in families}
    original = (snapshot / "config.json").read_text(encoding="utf-8")
    current = json.loads(original).get("fusion_config")
    if current == wanted:
        out.actions.append(
            Action("config_pr", "up_to_date", "config.json already carries this fusion_config")
        )
        return
    edited = set_top_level_key(original, "fusion_config", wanted)
    diff = unified_diff(original, edited)
    title = pr_title(families)
    description = render_pr_description(
        repo_id=source.repo_id,
        report=report,
        source_sha=source.sha,
        config_diff=diff,
        pipeline_tag=source.pipeline_tag,
    )
    out.config_diff, out.pr_title, out.pr_description = diff, title, description

    earlier = _hubfuse_prs(hub, source.repo_id) if hub.token else []
    if not options.force:
        opted_out = [p for p in earlier if p.closed_by_owner]
        if opted_out:
            out.actions.append(
                Action(
                    "config_pr",
                    "opted_out",
                    f"the owners closed hubfuse PR #{opted_out[-1].num}: respected (--force overrides)",
                    opted_out[-1].url,
                )
            )
            return
    open_prs = [p for p in earlier if p.status == "open"]
    current_pr = next(
        (p for p in open_prs if p.source_sha == source.sha and set(p.families) == set(families)), None
    )
    stale = [p for p in open_prs if p is not current_pr]

    if current_pr is not None:
        out.actions.append(
            Action(
                "config_pr", "exists", f"hubfuse PR #{current_pr.num} for this commit is open", current_pr.url
            )
        )
    elif options.dry_run:
        out.actions.append(
            Action(
                "config_pr", "would_open", f"would open a PR on {source.repo_id} against {source.sha[:12]}"
            )
        )
    else:
        current_pr = _open_pr(hub, source, edited, title, description)
        out.actions.append(Action("config_pr", "opened", f"opened PR #{current_pr.num}", current_pr.url))

    for old in stale:
        if options.dry_run:
            out.actions.append(
                Action("config_pr", "would_supersede", f"would close PR #{old.num} (older commit)", old.url)
            )
            continue
        assert current_pr is not None
        hub.close(
            source.repo_id,
            old.num,
            comment=f"Superseded by #{current_pr.num} (verified against a newer commit).",
        )
        out.actions.append(
            Action(
                "config_pr", "superseded", f"closed PR #{old.num}: superseded by #{current_pr.num}", old.url
            )
        )


def _open_pr(hub: Hub, source: Source, edited: str, title: str, description: str) -> _HubfusePR:
    """One commit that creates the PR with its text; if the answer was lost, find what landed."""
    from huggingface_hub import CommitOperationAdd

    def landed() -> _HubfusePR | None:
        return next(
            (
                p
                for p in _hubfuse_prs(hub, source.repo_id)
                if p.status == "open" and p.source_sha == source.sha
            ),
            None,
        )

    for attempt in range(1, hub.retry.attempts + 1):
        try:
            info = hub.commit(
                source.repo_id,
                [CommitOperationAdd("config.json", edited.encode("utf-8"))],
                message=title,
                description=description,
                parent=source.sha,
                create_pr=True,
            )
        except HubUnavailableError:
            found = landed()
            if found is not None:
                return found
            if attempt == hub.retry.attempts:
                raise
            log.warning(f"opening the PR failed; checked that none landed, retrying ({attempt})")
            continue
        num = int(str(info.pr_url).rstrip("/").rsplit("/", 1)[-1]) if info.pr_url else 0
        return _HubfusePR(num, "open", source.sha, (), False, info.pr_url or "")
    raise AssertionError("unreachable")


# -- step 5: the fused variant -----------------------------------------------------------------


def variant_repo_id(source_repo: str, options: PublishOptions) -> str:
    if options.variant_repo:
        return options.variant_repo
    namespace, _, name = source_repo.rpartition("/")
    return f"{namespace}/{options.variant_name_template.format(name=name, namespace=namespace)}".lstrip("/")


def publish_variant(
    hub: Hub,
    source: Source,
    snapshot: Path,
    report: CheckReport,
    artifacts: Path,
    options: PublishOptions,
    out: PublishReport,
) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    target = variant_repo_id(source.repo_id, options)
    upstream_card = (
        (snapshot / "README.md").read_text(encoding="utf-8") if (snapshot / "README.md").is_file() else None
    )
    card = render_variant_card(
        source_repo=source.repo_id,
        source_url=hub.repo_url(source.repo_id),
        variant_repo=target,
        report=report,
        source_sha=source.sha,
        upstream_card=upstream_card,
    )
    out.variant_card = card
    _validate_card(card)

    families = report.safe_families
    if len(families) != 1:
        out.actions.append(
            Action("variant", "skipped", "a variant of several families at once is not supported yet")
        )
        return
    fused_dir = artifacts / families[0]

    existing_head: str | None = None
    existing_files: list[str] = []
    if hub.exists(target):
        info = hub.resolve(target, None)
        existing_head = info.sha
        existing_files = [s.rfilename for s in (info.siblings or [])]
        marker = (
            find_marker(hub.read_text(target, info.sha, "README.md"), VARIANT_MARKER)
            if "README.md" in existing_files
            else None
        )
        if marker is None and not options.force:
            raise ConflictError(
                f"{target} exists and was not made by hubfuse; choose --variant-repo or pass --force"
            )
        if (
            marker is not None
            and marker.source_sha == source.sha
            and set(marker.families) == set(families)
            and not options.force
        ):
            out.actions.append(
                Action(
                    "variant",
                    "up_to_date",
                    f"{target} already holds this commit's variant",
                    hub.repo_url(target),
                )
            )
            return

    files = _variant_files(snapshot, fused_dir)
    operations: list[Any] = [CommitOperationAdd(name, str(path)) for name, path in files.items()]
    operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
    keep = {*files, "README.md", ".gitattributes"}
    operations += [CommitOperationDelete(name) for name in existing_files if name not in keep]

    if options.dry_run:
        verb = "update" if existing_head else "create"
        out.actions.append(
            Action(
                "variant",
                f"would_{verb}",
                f"would {verb} {target} with {len(files) + 1} files",
                hub.repo_url(target),
            )
        )
        return

    created = existing_head is None
    if created:
        hub.create_repo(target, private=source.private or source.gated)
        existing_head = hub.resolve(target, None).sha
    message = f"hubfuse: fused variant of {source.repo_id}@{source.sha[:12]}"
    try:
        hub.commit(
            target,
            operations,
            message=message,
            description=f"Source commit {source.sha}.",
            parent=existing_head,
        )
    except Exception:
        if created:
            hub.delete_repo(target)  # never leave a variant without its card behind
        raise
    out.actions.append(
        Action(
            "variant",
            "created" if created else "updated",
            f"{target} ({len(files) + 1} files, one commit)",
            hub.repo_url(target),
        )
    )


def _variant_files(snapshot: Path, fused_dir: Path) -> dict[str, Path]:
    """The fused save (weights, config) plus the source's tokenizer and processor files."""
    files = {p.name: p for p in fused_dir.iterdir() if p.is_file()}
    for path in snapshot.iterdir():
        if (
            path.is_file()
            and path.name not in files
            and path.name != "README.md"
            and not path.name.endswith(".safetensors")
            and path.name != "model.safetensors.index.json"
            and path.name != "config.json"
        ):
            files[path.name] = path
    return files


def _validate_card(card: str) -> None:
    from huggingface_hub import ModelCard

    from hubfuse.errors import BadInputError

    try:
        ModelCard(card).validate()
    except ValueError as exc:
        raise BadInputError(f"the generated model card does not validate: {exc}") from exc


# -- the whole run ------------------------------------------------------------------------------


def publish(hub: Hub, options: PublishOptions, logs_dir: Path | None = None) -> PublishReport:
    out = PublishReport(repo_id=options.repo_id, revision=options.revision or "main", dry_run=options.dry_run)
    work = Path(tempfile.mkdtemp(prefix="hubfuse-publish-", dir=options.work_dir))
    try:
        for _ in range(MAX_REVERIFY + 1):
            source = resolve(hub, options.repo_id, options.revision)
            out.sha = source.sha
            snapshot = pull(hub, source, variant=options.variant)
            artifacts = work / f"artifacts-{source.sha[:12]}"
            report = verify(snapshot, options, artifacts, logs_dir or work / "logs")
            out.check = report
            if report.verdict != "safe":
                out.actions.append(Action("verify", "stopped", f"verdict {report.verdict}: nothing written"))
                return out
            if not options.dry_run:
                hub.whoami()  # fail on a missing or bad token before any write
            try:
                config_pull_request(hub, source, snapshot, report, options, out)
            except ConflictError:
                moved = resolve(hub, options.repo_id, options.revision)
                if moved.sha == source.sha:
                    raise
                log.warning(f"{options.repo_id} moved to {moved.sha[:12]} during the run: verifying again")
                out.actions.clear()
                continue
            if options.variant:
                publish_variant(hub, source, snapshot, report, artifacts, options, out)
            return out
        raise ConflictError(f"{options.repo_id} kept moving during verification; try again later")
    finally:
        shutil.rmtree(work, ignore_errors=True)
