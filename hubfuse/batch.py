"""`hubfuse run` and `hubfuse plan`: the publish pipeline over the repos a spec selects.

expand (Hub listing) -> select (max_repos, then the shard: the same for plan and run) -> skip what
the ledger settles -> publish each repo in isolation -> record it in the ledger -> summary. One
repo failing never stops the others; the request budget and the kill switch stop the run cleanly
and say what is left.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import __version__, settings
from hubfuse.check import cell_store
from hubfuse.check.downstream import DownstreamPlan, matrix_digest
from hubfuse.check.modes import installed_versions
from hubfuse.check.shared_cells import HubCells
from hubfuse.errors import BadInputError, BudgetExhaustedError, ConflictError, ExitCode, HubfuseError
from hubfuse.hub import Hub
from hubfuse.ledger import HubLedger, Ledger, LocalLedger, Record, error_backoff_s
from hubfuse.log import log, redact
from hubfuse.publish.run import publish
from hubfuse.publish.types import PublishOptions, PublishReport
from hubfuse.settings import DEFAULT_TIMEOUT_S, MODE
from hubfuse.spec import Spec

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


def select(candidates: list[Candidate], spec: Spec, shard: Shard) -> list[Candidate]:
    """The repos one shard works on: the spec's first `max_repos` (by repo id), then the shard's
    share of those. `plan` and `run` both select with this, so a matrix and its runs agree."""
    if spec.limits.max_repos is not None:
        candidates = candidates[: spec.limits.max_repos]
    return [c for c in candidates if shard.owns(c.repo_id)]


def plan(hub: Hub, spec: Spec, *, max_per_shard: int = 25, max_shards: int = 16) -> dict[str, Any]:
    """The expanded repo list and a GitHub Actions matrix that fans it out over shards."""
    expanded = expand(hub, spec)
    candidates = select(expanded, spec, Shard(1, 1))
    shards = max(1, min(max_shards, math.ceil(len(candidates) / max_per_shard)))
    include = []
    for index in range(1, shards + 1):
        count = len(select(expanded, spec, Shard(index, shards)))
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
    # published, up_to_date, unsafe, not_applicable, opted_out, dry_run, skipped,
    # error (could not check, or a failure), conflict, deferred, not_reached
    outcome: str
    detail: str = ""
    links: list[str] = field(default_factory=list)
    seconds: float = 0.0
    verdict: str | None = None  # the check's verdict, when the repo got that far


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
        if any(r.outcome == "conflict" for r in self.repos):
            return ExitCode.CONFLICT
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
        # `error` is "could not check", never "unsafe": it is retried, an unsafe verdict is final.
        reasons = [r for f in report.check.families for r in f.reasons] if report.check else []
        return verdict, (reasons[0] if reasons else verdict or "")
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
        self.every = settings.LEDGER_FLUSH_EVERY.value()
        self.seconds = settings.LEDGER_FLUSH.value()
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
    """Checked before every write to a model repo, never from a cache (one request each): the
    kill switch engaged between two writes stops the second."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def engaged(self) -> bool:
        return settings.KILL_SWITCH.value() or self.ledger.kill_switch()

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
    timeout_s: float = DEFAULT_TIMEOUT_S,
    mode: str = MODE.default,
    downstream: DownstreamPlan,
) -> BatchSummary:
    """Downstream cells are shared across the run's repos of one case, with earlier runs (the
    local cache) and with the other shards (beside the ledger on the Hub)."""
    shared = HubCells(hub, spec.ledger_repo) if spec.ledger_repo else None
    with cell_store.sharing(cell_store.CellStore.default(shared)):
        try:
            summary = _run(hub, spec, shard, dry_run, ledger_dir, timeout_s, mode, downstream)
        finally:
            if shared is not None:
                shared.flush()
    summary.requests = hub.budget.used  # the cells' own write included
    return summary


def _run(
    hub: Hub,
    spec: Spec,
    shard: Shard | None,
    dry_run: bool,
    ledger_dir: Path,
    timeout_s: float,
    mode: str,
    downstream: DownstreamPlan,
) -> BatchSummary:
    shard = shard or Shard(1, 1)
    dry_run = dry_run or spec.dry_run
    ledger = open_ledger(hub, spec, ledger_dir)
    guard = _Guard(ledger)
    summary = BatchSummary(spec.name, f"{shard.index}/{shard.total}", dry_run, ledger.location)
    versions = {"hubfuse": __version__, **installed_versions(), "downstream": matrix_digest(downstream)}
    families = sorted(spec.families)

    try:
        with log.group(f"expand {spec.name}"):
            candidates = select(expand(hub, spec), spec, shard)
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
            elif (
                candidate.sha
                and record is not None
                and record.backing_off(candidate.sha, families, versions, timeout_s, time.time())
            ):
                why = (
                    f"could not check {record.errors} time(s) in a row; next try after "
                    f"{_utc(record.retry_after or 0)} (or with a larger --timeout)"
                )
                summary.repos.append(RepoOutcome(candidate.repo_id, candidate.sha, "deferred", why))
            elif not dry_run and guard.engaged():
                raise BudgetExhaustedError("kill switch engaged")
            elif spec.limits.max_prs is not None and prs_opened >= spec.limits.max_prs and not dry_run:
                why = f"PR limit of {spec.limits.max_prs} reached"
                summary.repos.append(RepoOutcome(candidate.repo_id, candidate.sha, "deferred", why))
            else:
                outcome = _publish_one(hub, spec, candidate, dry_run, guard, timeout_s, downstream, mode)
                summary.repos.append(outcome)
                prs_opened += int(outcome.outcome == "published" and "opened" in outcome.detail)
                if outcome.sha:
                    pending.add(_record(candidate, outcome, families, versions, record, timeout_s))
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
    candidate: Candidate,
    outcome: RepoOutcome,
    families: list[str],
    versions: dict[str, str],
    previous: Record | None,
    timeout_s: float,
) -> Record:
    record = Record(
        repo_id=candidate.repo_id,
        sha=outcome.sha or "",
        families=families,
        hubfuse=versions["hubfuse"],
        transformers=versions["transformers"],
        torch=versions["torch"],
        downstream=versions["downstream"],
        outcome=outcome.outcome,
        detail=outcome.detail,
        extra=previous.extra if previous is not None else {},
    )
    if outcome.verdict == "error":  # could not check: retried, after a back-off that doubles
        again = (
            previous is not None
            and previous.outcome == "error"
            and previous.same_check(record.sha, families, versions)
        )
        record.errors = (previous.errors if again and previous else 0) + 1
        record.retry_after = record.updated_at + error_backoff_s(record.errors)
        record.timeout_s = timeout_s
    return record


def _utc(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch_s))


def _publish_one(
    hub: Hub,
    spec: Spec,
    candidate: Candidate,
    dry_run: bool,
    guard: _Guard,
    timeout_s: float,
    downstream: DownstreamPlan,
    mode: str,
) -> RepoOutcome:
    start = time.monotonic()
    options = PublishOptions(
        repo_id=candidate.repo_id,
        revision=spec.revision,
        families=spec.families,
        variant=spec.variant,
        variant_name_template=spec.variant_name_template,
        variant_namespace=spec.variant_namespace,
        dry_run=dry_run,
        timeout_s=timeout_s,
        write_guard=guard,
        downstream=downstream,
        mode=mode,
    )
    report = PublishReport.for_options(options)
    with log.group(f"publish {candidate.repo_id}"):
        try:
            publish(hub, options, out=report)
        except BudgetExhaustedError:
            raise
        except Exception as exc:  # one repo's failure, even a bug, must not stop the batch
            report.fail(exc)
            log.error(f"{candidate.repo_id}: {report.error}")
            outcome = "conflict" if isinstance(exc, ConflictError) else "error"
            return RepoOutcome(
                candidate.repo_id,
                report.sha or candidate.sha,
                outcome,
                report.error or "",
                links=[a.url for a in report.actions if a.url],
                seconds=round(time.monotonic() - start, 2),
            )
    outcome, detail = _outcome_of(report)
    links = [a.url for a in report.actions if a.url]
    verdict = report.check.verdict if report.check else None
    return RepoOutcome(
        candidate.repo_id, report.sha, outcome, detail, links, round(time.monotonic() - start, 2), verdict
    )


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
    return redact("\n".join(lines)) + "\n"
