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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import __version__, naming
from hubfuse.cards import (
    PR_MARKER,
    PR_TITLE_SUFFIX,
    VARIANT_MARKER,
    Marker,
    find_marker,
    marker_from_card_data,
    pr_title,
    render_pr_description,
    render_variant_card,
)
from hubfuse.checkpoint import NEVER_COPIED_SUFFIXES, open_checkpoint, read_config_text
from hubfuse.configedit import set_top_level_key, unified_diff
from hubfuse.errors import BadInputError, ConflictError, HubfuseError, HubUnavailableError
from hubfuse.fusion import cell_store
from hubfuse.fusion.check import check_checkpoint, installed_versions
from hubfuse.fusion.downstream import DownstreamPlan
from hubfuse.fusion.verdict import CheckReport
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.settings import DEFAULT_TIMEOUT_S, MODE
from hubfuse.verdict_cache import VerdictCache

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
    variant_name_template: str = naming.DEFAULT_TEMPLATE
    variant_namespace: str | None = None  # default: the source's namespace
    dry_run: bool = False
    force: bool = False
    trust_remote_code: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    work_dir: Path | None = None
    # The downstream matrix (hubfuse/fusion/downstream.py); None: the installed transformers only.
    downstream: DownstreamPlan | None = None
    mode: str = MODE.default  # one of hubfuse.settings.MODES
    # Called before every write; raises to stop it (the batch runner's kill switch).
    write_guard: Callable[[], None] | None = None

    def before_write(self) -> None:
        if self.write_guard is not None:
            self.write_guard()


@dataclass
class Action:
    step: str  # verify | config_pr | variant | downstream
    status: str  # opened, exists, up_to_date, opted_out, superseded, created, updated, would_*, stopped
    detail: str
    url: str | None = None


@dataclass
class PublishReport:
    repo_id: str
    revision: str
    sha: str | None = None
    check: CheckReport | None = None
    verdict_from_cache: bool = False
    actions: list[Action] = field(default_factory=list)
    dry_run: bool = False
    config_diff: str | None = None
    pr_title: str | None = None
    pr_description: str | None = None
    variant_card: str | None = None
    pages: dict[str, str] = field(default_factory=dict)  # local hub only: what to look at, and where
    # Set when the run failed: what was done and verified until then stays in the report.
    error: str | None = None
    error_exit_code: int | None = None

    variant_transfer: dict[str, Any] | None = None  # bytes uploaded, copied, streamed (variant_copies)

    @classmethod
    def for_options(cls, options: PublishOptions) -> PublishReport:
        return cls(repo_id=options.repo_id, revision=options.revision or "main", dry_run=options.dry_run)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, HubfuseError):
            self.error, self.error_exit_code = str(exc), int(exc.exit_code)
        else:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            self.error, self.error_exit_code = f"internal error: {type(exc).__name__}: {first_line}", 1

    @property
    def wrote(self) -> bool:
        return any(a.status in {"opened", "superseded", "created", "updated"} for a in self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "sha": self.sha,
            "dry_run": self.dry_run,
            "verdict": self.check.verdict if self.check else None,
            "verdict_from_cache": self.verdict_from_cache,
            "actions": [asdict(a) for a in self.actions],
            "check": self.check.to_dict() if self.check else None,
            "config_diff": self.config_diff,
            "pr_title": self.pr_title,
            "pr_description": self.pr_description,
            "variant_card": self.variant_card,
            "pages": self.pages,
            "error": None
            if self.error is None
            else {"message": self.error, "exit_code": self.error_exit_code},
            "variant_transfer": self.variant_transfer,
        }


# -- step 1: resolve -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    repo_id: str
    sha: str
    private: bool
    gated: bool
    pipeline_tag: str | None
    weight_bytes: int | None = None  # from the Hub's safetensors summary, where it has one


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
        weight_bytes=_weight_bytes(getattr(info, "safetensors", None)),
    )


def _weight_bytes(summary: Any) -> int | None:
    """Bytes of the weights, from repo_info's `safetensors` (parameters per dtype): no extra call."""
    from hubfuse.safetensors_header import DTYPE_BITS

    parameters = getattr(summary, "parameters", None)
    if not isinstance(parameters, dict) or not all(d in DTYPE_BITS for d in parameters):
        return None
    return sum(count * DTYPE_BITS[dtype] // 8 for dtype, count in parameters.items())


# -- step 2: pull ----------------------------------------------------------------------------


def pull(hub: Hub, source: Source, *, variant: bool, weights: bool = True) -> Path:
    """The files verification and the variant need; without `weights` (targeted mode) no safetensors."""
    patterns = [p for p in WEIGHT_PATTERNS if weights or not p.endswith(".safetensors")]
    patterns += VARIANT_EXTRA_PATTERNS if variant else []
    remote_source(hub, source).refuse_oversized_json(patterns)  # from the listing, before a download
    with log.group(f"pull {source.repo_id}@{source.sha[:12]}"):
        snapshot = hub.download(source.repo_id, source.sha, patterns)
    if not (snapshot / "config.json").is_file():
        raise BadInputError(f"{source.repo_id}@{source.sha[:12]}: no config.json in the repo")
    return snapshot


# -- step 3: verify --------------------------------------------------------------------------


def verify(snapshot: Path, options: PublishOptions, artifacts: Path, logs: Path) -> CheckReport:
    checkpoint = open_checkpoint(snapshot, trust_remote_code=options.trust_remote_code)
    report = check_checkpoint(
        checkpoint,
        options.families,
        logs_dir=logs,
        artifacts_dir=artifacts,
        timeout=options.timeout_s,
        downstream=options.downstream,
    )
    report.source = options.repo_id
    return report


def verify_targeted(
    hub: Hub, source: Source, snapshot: Path, options: PublishOptions, artifacts: Path, logs: Path
) -> CheckReport:
    """Targeted mode; the pulled files (config, tokenizer, processor) screened as open_checkpoint does."""
    from hubfuse.checkpoint import read_checked_config
    from hubfuse.fusion.targeted import check_targeted

    read_checked_config(snapshot, trust_remote_code=options.trust_remote_code)
    report = check_targeted(
        remote_source(hub, source),
        options.families,
        trust_remote_code=options.trust_remote_code,
        logs_dir=logs,
        artifacts_dir=artifacts,
        timeout=options.timeout_s,
        downstream=options.downstream,
    )
    report.source = options.repo_id
    return report


def remote_source(hub: Hub, source: Source) -> Any:
    from hubfuse.source import RemoteSource

    return RemoteSource(
        label=f"{source.repo_id}@{source.sha[:12]}", hub=hub, repo_id=source.repo_id, sha=source.sha
    )


def choose_publish_mode(hub: Hub, source: Source, options: PublishOptions) -> str:
    from hubfuse.modes import Machine, choose_mode

    if options.mode != "auto":
        return options.mode
    weights = source.weight_bytes
    if weights is None:
        weights = remote_source(hub, source).total_weight_bytes
    return choose_mode("auto", weights, remote=True, machine=Machine.this(options.work_dir))


def verdict_key(source: Source, options: PublishOptions) -> dict[str, Any]:
    """Everything a verdict depends on: a change in any of these re-opens it."""
    return {
        "repo_id": source.repo_id,
        "sha": source.sha,
        "families": sorted(options.families),
        "hubfuse": __version__,
        **installed_versions(),
        "downstream": options.downstream.key() if options.downstream else None,
    }


# -- step 4: the config pull request -----------------------------------------------------------


@dataclass
class HubfusePR:
    num: int
    status: str
    source_sha: str
    families: tuple[str, ...]
    closed_by_owner: bool
    url: str

    @property
    def is_open(self) -> bool:
        # The Hub may open API-created PRs as drafts: still ours, still pending.
        return self.status in ("open", "draft")


def hubfuse_prs(hub: Hub, repo_id: str) -> list[HubfusePR]:
    """hubfuse's own earlier pull requests on this repo: opened by this token's user, with
    hubfuse's title and a marker in that user's own text. Anyone can copy the title and the
    marker; nobody else can be the author, so a copy never counts (README: trust model)."""
    found = []
    me = hub.whoami()
    for pr in hub.pull_requests(repo_id, author=me):
        if pr.author != me or PR_TITLE_SUFFIX not in pr.title:
            continue
        details = hub.discussion_details(repo_id, pr.num)
        texts = [
            getattr(event, "content", "") or ""
            for event in details.events
            if event.type == "comment" and event.author == me
        ]
        marker = next((m for m in (find_marker(t, PR_MARKER) for t in texts) if m), None)
        if marker is None:
            continue
        # An opt-out is our PR closed by someone else (the owners); closing our own
        # superseded PRs is not one.
        closers = [e.author for e in details.events if getattr(e, "new_status", None) == "closed"]
        found.append(
            HubfusePR(
                num=pr.num,
                status=pr.status,
                source_sha=marker.source_sha,
                families=marker.families,
                closed_by_owner=pr.status == "closed" and (not closers or closers[-1] != me),
                url=f"{hub.repo_url(repo_id)}/discussions/{pr.num}",
            )
        )
    return found


@dataclass
class ConfigPlan:
    status: str  # up_to_date | opted_out | exists | open
    original: str
    edited: str | None = None
    current: HubfusePR | None = None
    stale: list[HubfusePR] = field(default_factory=list)
    opted_out: HubfusePR | None = None

    @property
    def needs_write(self) -> bool:
        return self.status == "open" or bool(self.stale)


def plan_config_pr(
    hub: Hub, source: Source, config_text: str, families: list[str], options: PublishOptions
) -> ConfigPlan:
    """Read-only: what the config PR step has to do for these verified families."""
    wanted = {name: True for name in families}
    if read_config_text(config_text).get("fusion_config") == wanted:
        return ConfigPlan("up_to_date", config_text)
    edited = set_top_level_key(config_text, "fusion_config", wanted)
    earlier = hubfuse_prs(hub, source.repo_id) if hub.token else []
    opted_out = [p for p in earlier if p.closed_by_owner]
    if opted_out and not options.force:
        return ConfigPlan("opted_out", config_text, edited, opted_out=opted_out[-1])
    open_prs = [p for p in earlier if p.is_open]
    current = next(
        (p for p in open_prs if p.source_sha == source.sha and set(p.families) == set(families)), None
    )
    stale = [p for p in open_prs if p is not current]
    return ConfigPlan("exists" if current else "open", config_text, edited, current, stale)


def apply_config_pr(
    hub: Hub,
    source: Source,
    plan: ConfigPlan,
    report: CheckReport,
    options: PublishOptions,
    out: PublishReport,
) -> None:
    if plan.status == "up_to_date":
        out.actions.append(
            Action("config_pr", "up_to_date", "config.json already carries this fusion_config")
        )
        return
    assert plan.edited is not None
    families = report.safe_families
    out.config_diff = unified_diff(plan.original, plan.edited)
    out.pr_title = pr_title(families)
    out.pr_description = render_pr_description(
        repo_id=source.repo_id,
        report=report,
        source_sha=source.sha,
        config_diff=out.config_diff,
        pipeline_tag=source.pipeline_tag,
    )
    if plan.status == "opted_out":
        assert plan.opted_out is not None
        out.actions.append(
            Action(
                "config_pr",
                "opted_out",
                f"the owners closed hubfuse PR #{plan.opted_out.num}: respected (--force overrides)",
                plan.opted_out.url,
            )
        )
        return
    current = plan.current
    if current is not None:
        out.actions.append(
            Action("config_pr", "exists", f"hubfuse PR #{current.num} for this commit is open", current.url)
        )
    elif options.dry_run:
        out.actions.append(
            Action(
                "config_pr", "would_open", f"would open a PR on {source.repo_id} against {source.sha[:12]}"
            )
        )
    else:
        options.before_write()
        current = _open_pr(hub, source, plan.edited, out.pr_title, out.pr_description)
        out.actions.append(Action("config_pr", "opened", f"opened PR #{current.num}", current.url))
    for old in plan.stale:
        if current is None or options.dry_run:
            out.actions.append(
                Action("config_pr", "would_supersede", f"would close PR #{old.num} (older commit)", old.url)
            )
            continue
        options.before_write()
        hub.close(
            source.repo_id,
            old.num,
            comment=f"Superseded by #{current.num} (verified against a newer commit).",
        )
        out.actions.append(
            Action("config_pr", "superseded", f"closed PR #{old.num}: superseded by #{current.num}", old.url)
        )


def _open_pr(hub: Hub, source: Source, edited: str, title: str, description: str) -> HubfusePR:
    """One commit that creates the PR with its text; if the answer was lost, find what landed."""
    from huggingface_hub import CommitOperationAdd

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
            landed = [p for p in hubfuse_prs(hub, source.repo_id) if p.is_open and p.source_sha == source.sha]
            if landed:
                return landed[0]
            if attempt == hub.retry.attempts:
                raise
            log.warning(
                f"opening the PR failed and none landed; retrying ({attempt}/{hub.retry.attempts - 1})"
            )
            continue
        url = str(info.pr_url or "")
        num = int(url.rstrip("/").rsplit("/", 1)[-1]) if url else 0
        return HubfusePR(num, "open", source.sha, (), False, url)
    raise AssertionError("unreachable")


# -- step 5: the fused variant -----------------------------------------------------------------


def variant_repo_id(source_repo: str, options: PublishOptions) -> str:
    if options.variant_repo:
        return options.variant_repo
    return naming.variant_repo_id(source_repo, options.variant_name_template, options.variant_namespace)


def _variant_owner(hub: Hub, source: Source, options: PublishOptions) -> tuple[str, Any, Marker | None]:
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
    card: str | None = None  # rendered and validated before anything is written; None: no variant

    @property
    def needs_write(self) -> bool:
        return self.status != "up_to_date"


def plan_variant(hub: Hub, source: Source, families: list[str], options: PublishOptions) -> VariantPlan:
    """Read-only: is the variant repo missing, stale, up to date, or someone else's?"""
    target, info, marker = _variant_owner(hub, source, options)
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


def apply_variant(
    hub: Hub,
    source: Source,
    plan: VariantPlan,
    snapshot: Path,
    report: CheckReport,
    artifacts: Path,
    options: PublishOptions,
    out: PublishReport,
) -> None:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    url = hub.repo_url(plan.target)
    if plan.status == "up_to_date":
        out.actions.append(
            Action("variant", "up_to_date", f"{plan.target} already holds this commit's variant", url)
        )
        return
    families = report.safe_families
    card = plan.card
    if card is None:
        out.actions.append(
            Action("variant", "skipped", "a variant fusing several families at once is not supported yet")
        )
        return
    out.variant_card = card

    targeted = report.mode == "targeted"
    files = (
        _variant_files(snapshot, artifacts / families[0]) if not targeted else _variant_extra_files(snapshot)
    )
    keep = {*files, "README.md", ".gitattributes"}
    if targeted:
        weights = remote_source(hub, source)
        keep |= {"config.json", "model.safetensors.index.json", *(f.name for f in weights.weight_files())}
    deletions = [CommitOperationDelete(name) for name in plan.files if name not in keep]

    if options.dry_run:
        verb = plan.status
        out.actions.append(
            Action("variant", f"would_{verb}", f"would {verb} {plan.target} with {len(files) + 1} files", url)
        )
        return

    options.before_write()
    head = plan.head
    if plan.status == "create":
        try:
            hub.create_repo(plan.target, private=source.private or source.gated, exist_ok=False)
        except ConflictError:
            raise ConflictError(
                f"{plan.target} was created meanwhile by someone else (another shard?); run again"
            ) from None
        head = hub.resolve(plan.target, None).sha
    message = f"hubfuse: fused variant of {source.repo_id}@{source.sha[:12]}"
    from hubfuse.variant_copies import VariantTransfer

    shard_work = Path(tempfile.mkdtemp(prefix="hubfuse-shards-", dir=options.work_dir))
    try:
        # Files identical to the source's go in by server-side copy from the pinned source commit.
        transfer = VariantTransfer(hub, source.repo_id, source.sha, plan.target, shard_work)
        operations: list[Any] = [transfer.local_file(name, path) for name, path in files.items()]
        operations.append(CommitOperationAdd("README.md", card.encode("utf-8")))
        if targeted:
            from hubfuse.variant_shards import variant_operations

            config = set_top_level_key(
                (snapshot / "config.json").read_text(encoding="utf-8"), "fusion_config", {families[0]: True}
            )
            operations.append(CommitOperationAdd("config.json", config.encode("utf-8")))
            operations += variant_operations(weights, transfer, artifacts / families[0], shard_work)
        operations += deletions
        transfer.commit(operations, message=message, description=f"Source commit {source.sha}.", parent=head)
        out.variant_transfer = transfer.stats.to_dict()
    except Exception:
        if plan.status == "create":
            hub.delete_repo(plan.target)  # ours, made just now: never leave it without its card
        raise
    finally:
        shutil.rmtree(shard_work, ignore_errors=True)
    status = "created" if plan.status == "create" else "updated"
    stats = transfer.stats
    detail = (
        f"{plan.target} (one commit: {stats.files_uploaded} files uploaded, {stats.bytes_uploaded} B;"
        f" {stats.files_copied} copied server-side, {stats.bytes_copied} B;"
        f" {stats.files_streamed} streamed, {stats.bytes_streamed} B)"
    )
    out.actions.append(Action("variant", status, detail, url))


_VARIANT_SKIP = {"README.md", "config.json", "model.safetensors.index.json", ".gitattributes"}


def _variant_files(snapshot: Path, fused_dir: Path) -> dict[str, Path]:
    """The verified fused save (weights, config) plus the source's tokenizer and processor files.

    Never code or pickles; every JSON among them was screened for custom code by open_checkpoint
    (targeted mode: by read_checked_config on the pulled files).
    """
    files = {p.name: p for p in fused_dir.iterdir() if p.is_file() and p.suffix not in NEVER_COPIED_SUFFIXES}
    return {**_variant_extra_files(snapshot, skip=set(files)), **files}


def _variant_extra_files(snapshot: Path, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Path]:
    """The source's tokenizer and processor files (no weights, config or card)."""
    files: dict[str, Path] = {}
    for path in snapshot.iterdir():
        if (
            path.is_file()
            and path.name not in skip
            and path.name not in _VARIANT_SKIP
            and path.suffix not in (".safetensors", *NEVER_COPIED_SUFFIXES)
        ):
            files[path.name] = path
    return files


def prepare_variant_card(
    hub: Hub, source: Source, plan: VariantPlan, snapshot: Path, report: CheckReport
) -> None:
    """Render the variant's card into `plan` and have the Hub validate it, before anything is written:
    a source card whose metadata cannot be carried over stops the run with nothing published."""
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


def _validate_card(card: str) -> None:
    from huggingface_hub import ModelCard

    try:
        ModelCard(card).validate()
    except ValueError as exc:
        reason = " ".join(str(exc).split())  # the client's message spans lines; ours is one
        raise BadInputError(f"the generated model card does not validate: {reason}") from exc


# -- the whole run ------------------------------------------------------------------------------


def _config_text(hub: Hub, source: Source) -> str:
    text = hub.read_text(source.repo_id, source.sha, "config.json")
    if text is None:
        raise BadInputError(f"{source.repo_id}@{source.sha[:12]}: no config.json in the repo")
    return text


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
    cached = cache.get(verdict_key(source, options))
    if cached is not None:
        out.check, out.verdict_from_cache = cached, True
        if cached.verdict != "safe":
            out.actions.append(
                Action(
                    "verify", "stopped", f"verdict {cached.verdict} (cached for this commit): nothing written"
                )
            )
            return out
        if _nothing_to_do(hub, source, cached, options, out):
            return out
        out.actions.clear()
        out.verdict_from_cache = False
    if options.variant:
        _variant_owner(hub, source, options)  # a name another source holds fails before any download

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
            if report.verdict != "safe":
                why = (
                    " (could not check: not cached, a later run tries again)"
                    if report.verdict == "error"
                    else ""
                )
                out.actions.append(
                    Action("verify", "stopped", f"verdict {report.verdict}{why}: nothing written")
                )
                return out
            families = report.safe_families
            config_plan = plan_config_pr(
                hub, source, (snapshot / "config.json").read_text(encoding="utf-8"), families, options
            )
            variant_plan = plan_variant(hub, source, families, options) if options.variant else None
            if variant_plan is not None:
                prepare_variant_card(hub, source, variant_plan, snapshot, report)
            writes = config_plan.needs_write or (variant_plan is not None and variant_plan.needs_write)
            # The Hub accepts a PR based on an older commit, so "main moved" is checked here, right
            # before writing, as well as through the parent check of every commit.
            moved = (
                resolve(hub, options.repo_id, options.revision) if writes and not options.dry_run else source
            )
            if moved.sha == source.sha:
                try:
                    apply_config_pr(hub, source, config_plan, report, options, out)
                except ConflictError:
                    moved = resolve(hub, options.repo_id, options.revision)
                    if moved.sha == source.sha:
                        raise
            if moved.sha != source.sha:
                log.warning(f"{options.repo_id} moved to {moved.sha[:12]} during the run: verifying again")
                out.actions.clear()
                source = moved
                continue
            if variant_plan is not None:
                apply_variant(hub, source, variant_plan, snapshot, report, artifacts, options, out)
            return out
        raise ConflictError(f"{options.repo_id} kept moving during verification; try again later")
    finally:
        shutil.rmtree(work, ignore_errors=True)
