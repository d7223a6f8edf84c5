"""What `hubfuse publish` is asked to do (PublishOptions) and what it did (PublishReport, Actions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import naming
from hubfuse.check.downstream import DownstreamPlan
from hubfuse.check.verdict import CheckReport
from hubfuse.errors import HubfuseError
from hubfuse.settings import DEFAULT_TIMEOUT_S, MODE


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
    # The downstream matrix (hubfuse/check/downstream.py); None: the installed transformers only.
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
