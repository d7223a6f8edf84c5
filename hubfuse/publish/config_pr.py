"""The config pull request: config.json with `fusion_config` set, opened as one Hub PR.

A run finds hubfuse's own earlier PRs first (`hubfuse_prs`): an open one for this commit is
kept, older ones are superseded, one the owners closed is an opt-out that is respected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hubfuse.check.verdict import CheckReport
from hubfuse.checkpoint import read_config_text
from hubfuse.configedit import set_top_level_key, unified_diff
from hubfuse.errors import HubUnavailableError
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.publish.steps import Source
from hubfuse.publish.types import Action, PublishOptions, PublishReport
from hubfuse.render.cards import pr_title, render_pr_description
from hubfuse.render.markers import PR_MARKER, PR_TITLE_SUFFIX, find_marker


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
