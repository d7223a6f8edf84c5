"""`hubfuse run` and `hubfuse plan`: the publish pipeline over the repos a spec selects.

expand (Hub listing) -> shard -> skip what the ledger settles -> publish each repo in isolation
-> record it in the ledger -> summary. One repo failing never stops the others; the request
budget and the kill switch stop the run cleanly and say what is left.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import __version__
from hubfuse.errors import BadInputError, BudgetExhaustedError, ExitCode, HubfuseError
from hubfuse.fusion.check import installed_versions
from hubfuse.hub import Hub
from hubfuse.ledger import HubLedger, Ledger, LocalLedger, Record
from hubfuse.log import log
from hubfuse.pipeline import PublishOptions, PublishReport, publish
from hubfuse.spec import Spec

KILL_SWITCH_ENV = "HUBFUSE_KILL_SWITCH"
_LIST_FIELDS = ["sha", "config", "private", "gated", "pipeline_tag"]


@dataclass(frozen=True)
class Candidate:
    repo_id: str
    sha: str | None
    model_type: str | None


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as people count
    total: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, total = (int(part) for part in text.split("/"))
        except ValueError:
            raise BadInputError(f"--shard {text!r}: expected I/N, e.g. 1/4") from None
        if not 1 <= index <= total:
            raise BadInputError(f"--shard {text!r}: I must be between 1 and N")
        return cls(index, total)

    def owns(self, repo_id: str) -> bool:
        """Stable across runs and machines: the same repo always lands in the same shard."""
        bucket = int.from_bytes(hashlib.sha256(repo_id.encode()).digest()[:8], "big") % self.total
        return bucket == self.index - 1


# -- expansion ----------------------------------------------------------------------------------


def expand(hub: Hub, spec: Spec) -> list[Candidate]:
    selection = spec.repos
    found: dict[str, Candidate] = {}
    for repo_id in selection.ids:
        info = hub.resolve(repo_id, spec.revision)
        found[repo_id] = Candidate(repo_id, info.sha, (getattr(info, "config", None) or {}).get("model_type"))
    if selection.authors or selection.search:
        for author in selection.authors or (None,):
            for model in hub.list_models(author=author, search=selection.search, expand=_LIST_FIELDS):
                sha = None if spec.revision else getattr(model, "sha", None)
                model_type = (getattr(model, "config", None) or {}).get("model_type")
                found.setdefault(model.id, Candidate(model.id, sha, model_type))
    kept = [c for c in found.values() if _selected(c, spec)]
    return sorted(kept, key=lambda c: c.repo_id)


def _selected(candidate: Candidate, spec: Spec) -> bool:
    selection = spec.repos
    if selection.include and not any(fnmatch.fnmatchcase(candidate.repo_id, p) for p in selection.include):
        return False
    if any(fnmatch.fnmatchcase(candidate.repo_id, p) for p in selection.exclude):
        return False
    return not selection.model_types or candidate.model_type in selection.model_types


def plan(hub: Hub, spec: Spec, *, max_per_shard: int = 25, max_shards: int = 16) -> dict[str, Any]:
    """The expanded repo list and a GitHub Actions matrix that fans it out over shards."""
    candidates = expand(hub, spec)
    if spec.limits.max_repos is not None:
        candidates = candidates[: spec.limits.max_repos]
    shards = max(1, min(max_shards, math.ceil(len(candidates) / max_per_shard)))
    include = []
    for index in range(1, shards + 1):
        shard = Shard(index, shards)
        count = sum(shard.owns(c.repo_id) for c in candidates)
        include.append({"spec": str(spec.path), "shard": f"{index}/{shards}", "repos": count})
    return {
        "spec": spec.name,
        "count": len(candidates),
        "repos": [asdict(c) for c in candidates],
        "matrix": {"include": include},
    }


# -- the run ------------------------------------------------------------------------------------


@dataclass
class RepoOutcome:
    repo_id: str
    sha: str | None
    outcome: str  # published, up_to_date, unsafe, not_applicable, opted_out, dry_run, skipped, error, deferred, not_reached
    detail: str = ""
    links: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BatchSummary:
    spec: str
    shard: str
    dry_run: bool
    ledger: str
    hubfuse: str = __version__
    repos: list[RepoOutcome] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early, if it did
    requests: int = 0
    ledger_unsaved: int = 0  # records the ledger could not take: those repos are checked again

    @property
    def exit_code(self) -> ExitCode:
        if self.stopped:
            return ExitCode.BUDGET
        if any(r.outcome == "error" for r in self.repos):
            return ExitCode.UNSAFE
        return ExitCode.OK

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for repo in self.repos:
            counts[repo.outcome] = counts.get(repo.outcome, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts(), "exit_code": int(self.exit_code)}


def _outcome_of(report: PublishReport) -> tuple[str, str]:
    statuses = {a.status for a in report.actions}
    verdict = report.check.verdict if report.check else None
    if verdict in ("unsafe", "error", "not_applicable"):
        reasons = [r for f in report.check.families for r in f.reasons] if report.check else []
        return ("unsafe" if verdict == "error" else verdict), (reasons[0] if reasons else verdict or "")
    if statuses & {"opened", "superseded", "created", "updated"}:
        return "published", ", ".join(sorted(statuses))
    if any(s.startswith("would_") for s in statuses):
        return "dry_run", ", ".join(sorted(statuses))
    if "opted_out" in statuses:
        return "opted_out", "the owners closed hubfuse's PR"
    return "up_to_date", ", ".join(sorted(statuses))


class _PendingRecords:
    """Ledger records written in batches: every N repos or T seconds, and at the end of the run.

    A run killed between flushes loses at most those records; their repos are checked again next
    time and find their PRs already open, so nothing is duplicated. A failed ledger write never
    stops the batch: the records stay pending and the summary says so.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.every = int(os.environ.get("HUBFUSE_LEDGER_FLUSH_EVERY", "10"))
        self.seconds = float(os.environ.get("HUBFUSE_LEDGER_FLUSH_S", "60"))
        self.records: list[Record] = []
        self.last = time.monotonic()

    def add(self, record: Record) -> None:
        self.records.append(record)
        if len(self.records) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self, *, final: bool = False) -> int:
        """Write what is pending; returns how many records could not be written."""
        if self.records:
            try:
                self.ledger.record(self.records)
                self.records = []
            except HubfuseError as exc:
                if not final and isinstance(exc, BudgetExhaustedError):
                    raise
                log.warning(f"ledger write failed, {len(self.records)} record(s) kept for later: {exc}")
        self.last = time.monotonic()
        return len(self.records)


class _Guard:
    """Checked before every write: the kill switch stops them all at once."""

    def __init__(self, ledger: Ledger, refresh_s: float = 30.0) -> None:
        self.ledger = ledger
        self.refresh_s = refresh_s
        self._checked_at = 0.0
        self._on = False

    def engaged(self) -> bool:
        if os.environ.get(KILL_SWITCH_ENV):
            return True
        if time.monotonic() - self._checked_at > self.refresh_s:
            self._on = self.ledger.kill_switch()
            self._checked_at = time.monotonic()
        return self._on

    def __call__(self) -> None:
        if self.engaged():
            raise BudgetExhaustedError("kill switch engaged: no more writes")


def open_ledger(hub: Hub, spec: Spec, local_dir: Path) -> Ledger:
    if spec.ledger_repo:
        return HubLedger(hub, spec.ledger_repo, spec.name)
    return LocalLedger(local_dir / f"{spec.name}.json")


def run(
    hub: Hub,
    spec: Spec,
    *,
    shard: Shard | None = None,
    dry_run: bool = False,
    ledger_dir: Path = Path(".hubfuse/ledgers"),
) -> BatchSummary:
    shard = shard or Shard(1, 1)
    dry_run = dry_run or spec.dry_run
    ledger = open_ledger(hub, spec, ledger_dir)
    guard = _Guard(ledger)
    summary = BatchSummary(spec.name, f"{shard.index}/{shard.total}", dry_run, ledger.location)
    versions = {"hubfuse": __version__, **installed_versions()}
    families = sorted(spec.families)

    try:
        with log.group(f"expand {spec.name}"):
            candidates = [c for c in expand(hub, spec) if shard.owns(c.repo_id)]
            if spec.limits.max_repos is not None:
                candidates = candidates[: spec.limits.max_repos]
            records = ledger.load()
            log.info(f"{len(candidates)} repos in shard {summary.shard}; ledger at {ledger.location}")
    except BudgetExhaustedError as exc:
        summary.stopped = str(exc)
        return summary

    pending = _PendingRecords(ledger)
    prs_opened = 0
    done = 0  # candidates handled: the rest are "not reached" if the run stops early
    try:
        for candidate in candidates:
            record = records.get(candidate.repo_id)
            if candidate.sha and record is not None and record.settles(candidate.sha, families, versions):
                summary.repos.append(
                    RepoOutcome(candidate.repo_id, candidate.sha, "skipped", f"ledger: {record.outcome}")
                )
            elif not dry_run and guard.engaged():
                raise BudgetExhaustedError("kill switch engaged")
            elif spec.limits.max_prs is not None and prs_opened >= spec.limits.max_prs and not dry_run:
                why = f"PR limit of {spec.limits.max_prs} reached"
                summary.repos.append(RepoOutcome(candidate.repo_id, candidate.sha, "deferred", why))
            else:
                outcome = _publish_one(hub, spec, candidate, dry_run, guard)
                summary.repos.append(outcome)
                prs_opened += int(outcome.outcome == "published" and "opened" in outcome.detail)
                if outcome.outcome != "error" and outcome.sha:
                    pending.add(_record(candidate, outcome, families, versions))
            done += 1
    except BudgetExhaustedError as exc:
        summary.stopped = str(exc)
        if len(summary.repos) > done:  # the repo in hand finished; only its ledger write did not
            done += 1
        _not_reached(summary, candidates[done:], summary.stopped)
    finally:
        summary.ledger_unsaved = pending.flush(final=True)
    summary.requests = hub.budget.used
    return summary


def _record(
    candidate: Candidate, outcome: RepoOutcome, families: list[str], versions: dict[str, str]
) -> Record:
    return Record(
        repo_id=candidate.repo_id,
        sha=outcome.sha or "",
        families=families,
        hubfuse=versions["hubfuse"],
        transformers=versions["transformers"],
        torch=versions["torch"],
        outcome=outcome.outcome,
        detail=outcome.detail,
    )


def _publish_one(hub: Hub, spec: Spec, candidate: Candidate, dry_run: bool, guard: _Guard) -> RepoOutcome:
    start = time.monotonic()
    options = PublishOptions(
        repo_id=candidate.repo_id,
        revision=spec.revision,
        families=spec.families,
        variant=spec.variant,
        variant_repo=_variant_repo(spec, candidate.repo_id),
        variant_name_template=spec.variant_name_template,
        dry_run=dry_run,
        write_guard=guard,
    )
    with log.group(f"publish {candidate.repo_id}"):
        try:
            report = publish(hub, options)
        except BudgetExhaustedError:
            raise
        except HubfuseError as exc:
            log.error(f"{candidate.repo_id}: {exc}")
            return RepoOutcome(
                candidate.repo_id, candidate.sha, "error", str(exc), seconds=time.monotonic() - start
            )
        except Exception as exc:  # one repo's bug must not stop the batch
            log.error(f"{candidate.repo_id}: internal error: {type(exc).__name__}: {exc}")
            return RepoOutcome(
                candidate.repo_id,
                candidate.sha,
                "error",
                f"internal error: {type(exc).__name__}: {exc}",
                seconds=time.monotonic() - start,
            )
    outcome, detail = _outcome_of(report)
    links = [a.url for a in report.actions if a.url]
    return RepoOutcome(
        candidate.repo_id, report.sha, outcome, detail, links, round(time.monotonic() - start, 2)
    )


def _variant_repo(spec: Spec, repo_id: str) -> str | None:
    if not spec.variant or not spec.variant_namespace:
        return None
    name = repo_id.rpartition("/")[2]
    return f"{spec.variant_namespace}/{spec.variant_name_template.format(name=name, namespace=spec.variant_namespace)}"


def _not_reached(
    summary: BatchSummary, candidates: list[Candidate], why: str, outcome: str = "not_reached"
) -> None:
    summary.repos += [RepoOutcome(c.repo_id, c.sha, outcome, why) for c in candidates]


# -- rendering ------------------------------------------------------------------------------------


def render_markdown(summary: BatchSummary) -> str:
    counts = ", ".join(f"{k}: {v}" for k, v in summary.counts().items()) or "no repos"
    lines = [
        f"## hubfuse run `{summary.spec}` (shard {summary.shard}){' — dry run' if summary.dry_run else ''}",
        "",
        f"{counts}. Ledger: {summary.ledger}. API calls: {summary.requests}.",
    ]
    if summary.stopped:
        left = sum(r.outcome == "not_reached" for r in summary.repos)
        lines += ["", f"**Stopped early: {summary.stopped}. {left} repos left for the next run.**"]
    if summary.ledger_unsaved:
        lines += [
            "",
            f"**{summary.ledger_unsaved} ledger record(s) could not be written: those repos are checked again next run.**",
        ]
    lines += ["", "| repo | commit | outcome | detail |", "|---|---|---|---|"]
    for repo in summary.repos:
        detail = repo.detail.replace("|", "\\|")
        if repo.links:
            detail += " " + " ".join(f"[link]({url})" for url in repo.links)
        lines.append(f"| `{repo.repo_id}` | `{(repo.sha or '')[:12]}` | {repo.outcome} | {detail} |")
    return "\n".join(lines) + "\n"
