"""Downstream cells the runners share: a JSON file in the ledger repo, beside the ledger.

Read once per run, trusted only when the commit that last changed the file was written by
hubfuse's own user (whoami): a file anyone else touched is ignored (and replaced by hubfuse's own
cells at the next write), so a cell proven nowhere can never stand in for a probe. Written like
the ledger: read-merge-commit with the head it read as parent, merged again when a concurrent
shard's commit makes the Hub refuse ours. Cases are stored once, cells refer to them by digest.
"""

from __future__ import annotations

import json
import time

from hubfuse import strictjson
from hubfuse.check.cell_store import StoredCell
from hubfuse.errors import BudgetExhaustedError, ConflictError, HubfuseError
from hubfuse.hub import Hub
from hubfuse.log import log, redact

CELLS_FILE = "cells/downstream-cells.json"
FORMAT = 1


def _decode(text: str | None) -> dict[str, StoredCell]:
    try:
        document = strictjson.loads(text or "{}", allow_constants=False)
    except ValueError:  # StrictJSONError too
        return {}
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return {}
    cases, cells = document.get("cases"), document.get("cells")
    if not isinstance(cases, dict) or not isinstance(cells, dict):
        return {}
    decoded: dict[str, StoredCell] = {}
    for digest, cell in cells.items():
        if not isinstance(cell, dict):
            continue
        stored = StoredCell.parse({**cell, "case": cases.get(str((cell.get("key") or {}).get("case")))})
        if stored is not None and stored.digest == digest:
            decoded[digest] = stored
    return decoded


def _encode(cells: dict[str, StoredCell]) -> str:
    cases = {cell.key["case"]: cell.case for cell in cells.values()}
    body = {
        "format": FORMAT,
        "cases": cases,
        "cells": {
            digest: {k: v for k, v in cell.to_dict().items() if k != "case"}
            for digest, cell in sorted(cells.items())
        },
    }
    return redact(json.dumps(body, indent=1, sort_keys=True)) + "\n"


class HubCells:
    MAX_ATTEMPTS = 8

    def __init__(self, hub: Hub, repo_id: str) -> None:
        self.hub = hub
        self.repo_id = repo_id
        self.location = f"{hub.repo_url(repo_id, 'dataset')}/blob/main/{CELLS_FILE}"
        self._cells: dict[str, StoredCell] | None = None
        self._pending: dict[str, StoredCell] = {}

    def _read(self) -> tuple[str | None, dict[str, StoredCell]]:
        """(head, the trusted cells at head)."""
        info = self.hub.info_or_none(self.repo_id, repo_type="dataset")
        if info is None:
            return None, {}
        head = str(info.sha)
        if CELLS_FILE not in {s.rfilename for s in (info.siblings or [])}:
            return head, {}
        authors = self.hub.file_last_changed_by(self.repo_id, head, CELLS_FILE, repo_type="dataset")
        if self.hub.whoami() not in authors:
            log.warning(
                f"{self.location}: last changed by {', '.join(authors) or 'an unknown user'}, not by "
                "hubfuse's user: its cells are not trusted (hubfuse's next write replaces them)"
            )
            return head, {}
        return head, _decode(self.hub.read_text(self.repo_id, head, CELLS_FILE, repo_type="dataset"))

    def get(self, digest: str) -> StoredCell | None:
        if self._cells is None:
            try:
                self._cells = self._read()[1]
                log.info(f"shared downstream cells: {len(self._cells)} from {self.location}")
            except BudgetExhaustedError:
                raise
            except HubfuseError as exc:
                log.warning(f"shared downstream cells unreadable ({exc}): every cell is proven here")
                self._cells = {}
        return self._pending.get(digest) or self._cells.get(digest)

    def add(self, cell: StoredCell) -> None:
        self._pending[cell.digest] = cell

    def flush(self) -> None:
        """Write the cells this run proved; a failure loses only the sharing, never a verdict."""
        if not self._pending:
            return
        from huggingface_hub import CommitOperationAdd

        try:
            for attempt in range(1, self.MAX_ATTEMPTS + 1):
                head, current = self._read()
                if head is None:
                    self.hub.create_repo(self.repo_id, private=True, repo_type="dataset")
                    head, current = self._read()
                merged = {**self._pending, **current}  # a cell proven first stays as it was proven
                try:
                    self.hub.commit(
                        self.repo_id,
                        [CommitOperationAdd(CELLS_FILE, _encode(merged).encode("utf-8"))],
                        message=f"downstream cells: {len(self._pending)} proven",
                        description=redact(
                            "\n".join(
                                f"{c.key['release']} {c.key['column']} case {c.key['case'][:12]}: "
                                f"{c.repo}@{c.sha[:12]}"
                                for c in self._pending.values()
                            )
                        ),
                        parent=head,
                        repo_type="dataset",
                    )
                    self._pending.clear()
                    return
                except ConflictError:
                    log.info(f"cells moved (another shard wrote); merging again ({attempt})")
                    time.sleep(0.05 * attempt)
            log.warning(f"could not write {self.location} after {self.MAX_ATTEMPTS} attempts")
        except HubfuseError as exc:  # the request budget too: the run has already stopped on it
            log.warning(f"shared downstream cells not written ({exc}): the next run proves them again")
