"""The batch ledger: one record per repo, so an unchanged repo costs no download next time.

A record holds the repo's commit, the families, the hubfuse / transformers / torch versions, the
downstream matrix (a digest of its releases: a new release re-opens the record) and the outcome.
It is written after every repo, so a killed run resumes where it stopped.

Records are read tolerantly: fields this version does not know (a newer hubfuse wrote them) are
kept and written back, and a record it cannot read at all settles nothing and is kept as it was.
`error` (could not check: a worker crashed, was killed or timed out) is never final: the repo is
tried again after a bounded back-off, at once with a larger timeout or other versions.

Two stores, one interface:
- `HubLedger`: a JSON file in a Hub dataset repo, where the next scheduled run finds it. Each
  write is read-merge-commit with the head it read as parent; a concurrent shard's commit makes
  the Hub refuse ours, and we merge again, so no shard ever loses another's records.
- `LocalLedger`: a JSON file on disk under an exclusive file lock (runs without a ledger repo).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from hubfuse import settings
from hubfuse.errors import BadInputError, ConflictError
from hubfuse.hub import Hub
from hubfuse.log import log, redact

FINAL_OUTCOMES = {"published", "up_to_date", "unsafe", "not_applicable", "opted_out", "dry_run"}
KILL_SWITCH_FILE = "KILL_SWITCH"
ERROR_BACKOFF_MAX_S = 7 * 24 * 3600.0
_TYPES: dict[str, type | tuple[type, ...]] = {
    "repo_id": str,
    "sha": str,
    "families": list,
    "hubfuse": str,
    "transformers": str,
    "torch": str,
    "outcome": str,
    "detail": str,
    "actions": list,
    "updated_at": (int, float),
    "errors": int,
    "retry_after": (int, float, type(None)),
    "timeout_s": (int, float, type(None)),
}


def error_backoff_s(errors: int) -> float:
    """Seconds before a repo that could not be checked `errors` times in a row is tried again:
    doubling from HUBFUSE_ERROR_BACKOFF_S (default one hour), never more than a week."""
    base = settings.ERROR_BACKOFF.value()
    return min(base * 2 ** max(errors - 1, 0), ERROR_BACKOFF_MAX_S)


@dataclass
class Record:
    repo_id: str
    sha: str
    families: list[str]
    hubfuse: str
    transformers: str
    torch: str
    outcome: str
    detail: str = ""
    downstream: str = ""  # digest of the downstream matrix (hubfuse.fusion.downstream.matrix_digest)
    actions: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)
    errors: int = 0  # could-not-check verdicts in a row on this commit, families and versions
    retry_after: float | None = None  # after an `error`: no new try before this time (epoch s)
    timeout_s: float | None = None  # the load timeout that `error` ran under
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know
    unreadable: Any = field(default=None, repr=False)  # a record it cannot read at all, verbatim

    @classmethod
    def from_dict(cls, repo_id: str, data: Any) -> Record:
        known = {f.name for f in fields(cls)} - {"extra", "unreadable"}
        if isinstance(data, dict) and all(
            isinstance(data[name], _TYPES.get(name, object)) for name in known if name in data
        ):
            try:
                return cls(
                    **{k: v for k, v in data.items() if k in known and k != "repo_id"},
                    repo_id=repo_id,
                    extra={k: v for k, v in data.items() if k not in known},
                )
            except TypeError:  # a required field is missing
                pass
        log.warning(
            f"ledger: the record of {repo_id} is unreadable; kept as it is, the repo is checked again"
        )
        return cls(repo_id, "", [], "", "", "", "unreadable", updated_at=0.0, unreadable=data)

    def to_dict(self) -> Any:
        if self.unreadable is not None:
            return self.unreadable
        document = asdict(self)
        del document["extra"], document["unreadable"]
        return {**self.extra, **document}

    def same_check(self, sha: str, families: list[str], versions: dict[str, str]) -> bool:
        """Whether this record is about `sha` with these families and versions."""
        return (
            self.sha == sha
            and sorted(self.families) == sorted(families)
            and self.hubfuse == versions["hubfuse"]
            and self.transformers == versions["transformers"]
            and self.torch == versions["torch"]
            and self.downstream == versions.get("downstream", "")
        )

    def settles(self, sha: str, families: list[str], versions: dict[str, str]) -> bool:
        """Whether this record already answers for `sha` with these families and versions."""
        return self.outcome in FINAL_OUTCOMES and self.same_check(sha, families, versions)

    def backing_off(
        self, sha: str, families: list[str], versions: dict[str, str], timeout_s: float, now: float
    ) -> bool:
        """After `error` on this very check: wait out the back-off, unless the timeout grew."""
        return (
            self.outcome == "error"
            and self.retry_after is not None
            and now < self.retry_after
            and (self.timeout_s is None or timeout_s <= self.timeout_s)
            and self.same_check(sha, families, versions)
        )


def _decode(text: str | None, where: str) -> dict[str, Record]:
    if not text:
        return {}
    try:
        data = json.loads(text)
        records = data.get("records", {})
        if not isinstance(records, dict):
            raise ValueError("'records' is not a mapping")
    except (ValueError, AttributeError) as exc:
        raise BadInputError(f"the ledger {where} is not a hubfuse ledger: {exc}") from None
    return {repo: Record.from_dict(repo, record) for repo, record in records.items()}


def _encode(records: dict[str, Record]) -> str:
    body = {"format": 1, "records": {repo: r.to_dict() for repo, r in sorted(records.items())}}
    return redact(json.dumps(body, indent=1, sort_keys=True)) + "\n"


def _merge(current: dict[str, Record], updates: list[Record]) -> dict[str, Record]:
    merged = dict(current)
    for update in updates:
        existing = merged.get(update.repo_id)
        if existing is None or existing.updated_at <= update.updated_at:
            merged[update.repo_id] = update
    return merged


class Ledger(Protocol):
    location: str

    def load(self) -> dict[str, Record]: ...
    def record(self, records: list[Record]) -> None: ...
    def kill_switch(self) -> bool: ...


class LocalLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def load(self) -> dict[str, Record]:
        try:
            return _decode(self.path.read_text(encoding="utf-8"), self.location)
        except FileNotFoundError:
            return {}

    def record(self, records: list[Record]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = _merge(self.load(), records)
            with tempfile.NamedTemporaryFile(
                "w", dir=self.path.parent, delete=False, suffix=".tmp"
            ) as handle:
                handle.write(_encode(merged))
            os.replace(handle.name, self.path)

    def kill_switch(self) -> bool:
        return (self.path.parent / KILL_SWITCH_FILE).exists()


class HubLedger:
    MAX_ATTEMPTS = 8

    def __init__(self, hub: Hub, repo_id: str, spec_name: str) -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.filename = f"ledgers/{spec_name}.json"
        self.location = f"{hub.repo_url(repo_id, 'dataset')}/blob/main/{self.filename}"
        self._files: list[str] = []

    def _head(self) -> str | None:
        info = self.hub.info_or_none(self.repo_id, repo_type="dataset")
        if info is None:
            return None
        self._files = [s.rfilename for s in (info.siblings or [])]
        return str(info.sha)

    def _read(self, head: str | None) -> dict[str, Record]:
        if head is None or self.filename not in self._files:
            return {}
        return _decode(
            self.hub.read_text(self.repo_id, head, self.filename, repo_type="dataset"), self.location
        )

    def load(self) -> dict[str, Record]:
        return self._read(self._head())

    def kill_switch(self) -> bool:
        self._head()
        return KILL_SWITCH_FILE in self._files

    def record(self, records: list[Record]) -> None:
        from huggingface_hub import CommitOperationAdd

        for attempt in range(1, self.MAX_ATTEMPTS + 1):
            head = self._head()
            if head is None:
                self.hub.create_repo(self.repo_id, private=True, repo_type="dataset")
                head = self._head()
            merged = _merge(self._read(head), records)
            try:
                self.hub.commit(
                    self.repo_id,
                    [CommitOperationAdd(self.filename, _encode(merged).encode("utf-8"))],
                    message=f"ledger: {len(records)} record(s)",
                    description=redact("\n".join(f"{r.repo_id}@{r.sha[:12]}: {r.outcome}" for r in records)),
                    parent=head,
                    repo_type="dataset",
                )
                return
            except ConflictError:
                log.info(f"ledger moved (another shard wrote); merging again ({attempt})")
                time.sleep(0.05 * attempt)
        raise ConflictError(f"could not write the ledger {self.repo_id} after {self.MAX_ATTEMPTS} attempts")
