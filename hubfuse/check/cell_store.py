"""Downstream cells shared by proven case: within a run, across runs, across runners.

A cell is keyed by (release, environment column, case digest, probe code version)
(hubfuse/check/cell_case.py); each stored cell says which repo and commit proved it. Three
places, looked up in this order: this process's memory (`hubfuse run` over many repos), the local
cache (`$HF_HOME/hubfuse/cells`, like the verdict cache), and a shared store the runners reach
(the ledger repo on the Hub, hubfuse/check/shared_cells.py, given by the batch run).

Only hubfuse's own outcomes are shared: safe, crash, unsafe, ignored. `error` (the environment
or the probe failed) says nothing about the case and is never stored. Everything read back is
checked as hostile input: the full key and the full case must be equal, the outcome one of those
four, the texts bounded; anything else is not a cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hubfuse import settings, strictjson
from hubfuse.check.cell_case import CellCase, cell_key, cell_key_digest, probe_code_version
from hubfuse.check.verdict import version_range
from hubfuse.log import log, redact

SHAREABLE_OUTCOMES = ("safe", "crash", "unsafe", "ignored")
MAX_TEXT = 2000


@dataclass(frozen=True)
class Origin:
    """The repo and commit a cell is proven on; `local`: a folder on this machine (`repo` its path)."""

    repo: str
    sha: str
    local: bool = False

    def label(self) -> str:
        if self.local:
            return f"the local folder {self.repo}"
        return f"{self.repo}@{self.sha[:12]}" if self.sha else self.repo


@dataclass
class StoredCell:
    key: dict[str, str]
    case: dict[str, Any]
    subjects: dict[str, dict[str, Any]]  # config / variant -> {outcome, reason, notes}
    repo: str
    sha: str
    proven_at: float = field(default_factory=time.time)
    local: bool = False  # proven on a folder of this machine: kept here, never shared or published

    @property
    def digest(self) -> str:
        return cell_key_digest(self.key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, document: Any) -> StoredCell | None:
        """A stored cell, or None for anything that is not exactly one."""
        if not isinstance(document, dict):
            return None
        key, case, subjects = document.get("key"), document.get("case"), document.get("subjects")
        repo, sha, proven_at = document.get("repo"), document.get("sha"), document.get("proven_at", 0.0)
        local = document.get("local", False)
        if not (
            isinstance(key, dict)
            and all(isinstance(v, str) for v in key.values())
            and isinstance(case, dict)
            and isinstance(subjects, dict)
            and subjects
            and isinstance(repo, str)
            and isinstance(sha, str)
            and isinstance(proven_at, (int, float))
            and isinstance(local, bool)
        ):
            return None
        parsed: dict[str, dict[str, Any]] = {}
        for subject, cell in subjects.items():
            if subject not in ("config", "variant") or not isinstance(cell, dict):
                return None
            outcome, reason, notes = cell.get("outcome"), cell.get("reason", ""), cell.get("notes", [])
            if (
                outcome not in SHAREABLE_OUTCOMES
                or not isinstance(reason, str)
                or not isinstance(notes, list)
                or not all(isinstance(n, str) for n in notes)
            ):
                return None
            parsed[subject] = {
                "outcome": outcome,
                "reason": reason[:MAX_TEXT],
                "notes": [n[:MAX_TEXT] for n in notes[:20]],
            }
        return cls(key, case, parsed, repo[:300], sha[:64], float(proven_at), local)


class SharedCells(Protocol):
    """A store the runners share (hubfuse.check.shared_cells.HubCells)."""

    def get(self, digest: str) -> Any: ...
    def add(self, cell: StoredCell) -> None: ...


class CellStore:
    def __init__(self, folder: Path | None, shared: SharedCells | None = None) -> None:
        self.folder = folder
        self.shared = shared
        self._memory: dict[str, StoredCell] = {}

    @classmethod
    def default(cls, shared: SharedCells | None = None) -> CellStore:
        setting = settings.CELL_CACHE.value() or ""
        if setting.lower() == "none":
            return cls(None, shared)
        if setting:
            return cls(Path(setting), shared)
        from huggingface_hub import constants

        return cls(Path(constants.HF_HOME) / "hubfuse" / "cells", shared)

    def get(self, key: dict[str, str], case: CellCase) -> StoredCell | None:
        digest = cell_key_digest(key)
        for found in (self._memory.get(digest), self._from_folder(digest), self._from_shared(digest)):
            cell = found if isinstance(found, StoredCell) else StoredCell.parse(found)
            if cell is not None and cell.key == key and cell.case == case.case:
                self._memory[digest] = cell
                return cell
        return None

    def _from_folder(self, digest: str) -> Any:
        if self.folder is None:
            return None
        try:
            return strictjson.read_file(self.folder / f"{digest}.json", allow_constants=False)
        except (OSError, ValueError):  # StrictJSONError too
            return None

    def _from_shared(self, digest: str) -> Any:
        return self.shared.get(digest) if self.shared is not None else None

    def put(self, cell: StoredCell) -> None:
        if any(s["outcome"] not in SHAREABLE_OUTCOMES for s in cell.subjects.values()):
            return  # could not check: nothing to share
        self._memory[cell.digest] = cell
        if self.shared is not None and not cell.local:
            self.shared.add(cell)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # Atomic replace: a killed run never leaves a half-written cell behind.
        with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False, suffix=".tmp") as handle:
            handle.write(redact(json.dumps(cell.to_dict())))
        os.replace(handle.name, self.folder / f"{cell.digest}.json")


_store: ContextVar[CellStore | None] = ContextVar("hubfuse_cell_store", default=None)
_origin: ContextVar[Origin | None] = ContextVar("hubfuse_cell_origin", default=None)


@contextlib.contextmanager
def sharing(store: CellStore) -> Iterator[CellStore]:
    """Use `store` for every matrix run inside (a batch run shares one across its repos)."""
    token = _store.set(store)
    try:
        yield store
    finally:
        _store.reset(token)


@contextlib.contextmanager
def proving(repo: str, sha: str, *, local: bool = False) -> Iterator[None]:
    """Cells the matrix proves inside are recorded as proven on repo@sha (`local`: on the folder
    `repo` of this machine; such cells serve only later checks of local folders)."""
    token = _origin.set(Origin(repo, sha, local))
    try:
        yield
    finally:
        _origin.reset(token)


class MatrixCells:
    """One matrix run's view of the store: which cells it can reuse, and recording what it proves."""

    def __init__(self, case: CellCase | None, subjects: tuple[str, ...]) -> None:
        self.case = case
        self.subjects = subjects
        self.store = _store.get() or CellStore.default()
        self.origin = _origin.get()
        self.probe = probe_code_version() if case is not None else ""

    def reused(self, version: str, column: str) -> dict[str, dict[str, Any]] | None:
        """The cells of (version, column) proven before on this case, or None: run the probe."""
        if self.case is None:
            return None
        cell = self.store.get(cell_key(version, column, self.case, self.probe), self.case)
        if cell is None or not set(self.subjects) <= set(cell.subjects):
            return None
        if cell.local and not (self.origin is not None and self.origin.local):
            return None  # a folder of this machine proves nothing a Hub repo's PR could cite
        proven_on = Origin(cell.repo, cell.sha, cell.local).label()
        return {s: {**cell.subjects[s], "proven_on": proven_on} for s in self.subjects}

    def record(self, version: str, column: str, cells: dict[str, Any]) -> None:
        if self.case is None or self.origin is None:
            return  # no case, or no repo and commit to say it was proven on
        subjects = {s: cells[s] for s in self.subjects if s in cells}
        if set(subjects) != set(self.subjects):
            return
        if any(c.get("outcome") not in SHAREABLE_OUTCOMES for c in subjects.values()):
            return
        stored = StoredCell.parse(
            {
                "key": cell_key(version, column, self.case, self.probe),
                "case": self.case.case,
                "subjects": subjects,
                "repo": self.origin.repo,
                "sha": self.origin.sha,
                "local": self.origin.local,
            }
        )
        if stored is not None:
            try:
                self.store.put(stored)
            except OSError as exc:  # a full disk loses a cache entry, never the verdict
                log.warning(f"downstream cell not cached: {exc}")


def reuse_lines(cells: list[Any]) -> list[str]:
    """'proven on org/a@0123abcd (same case): transformers 5.5.4, 5.24.0 (base)' per origin."""

    groups: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        if getattr(cell, "proven_on", None):
            groups.setdefault((cell.proven_on, cell.env), []).append(cell.transformers)
    return [
        f"proven on {origin} (same case): transformers {version_range(versions)} ({env})"
        for (origin, env), versions in groups.items()
    ]
