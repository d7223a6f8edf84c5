"""Verdicts remembered between runs, keyed by everything they depend on.

A cached verdict never authorises a write: the pipeline uses it only to conclude that there is
nothing left to do (or that a commit already proved unsafe), so an unchanged repo costs a few
API calls and no download. `error` (a worker crashed, was killed or timed out) says nothing about
the commit, so it is never cached. Any change of commit, families, hubfuse, transformers or torch version
is a different key, so the verdict is made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hubfuse import settings
from hubfuse.fusion.verdict import CheckReport


class VerdictCache:
    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @classmethod
    def default(cls) -> VerdictCache:
        if settings.NO_VERDICT_CACHE.value():
            return cls(None)
        from huggingface_hub import constants

        return cls(settings.VERDICT_CACHE.value() or Path(constants.HF_HOME) / "hubfuse" / "verdicts")

    @staticmethod
    def _digest(key: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, key: dict[str, Any]) -> CheckReport | None:
        if self.folder is None:
            return None
        path = self.folder / f"{self._digest(key)}.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("key") != key:
            return None
        try:
            report = CheckReport.from_dict(record["report"])
        except (KeyError, TypeError):
            return None
        return None if report.verdict == "error" else report  # never kept; an older version did

    def put(self, key: dict[str, Any], report: CheckReport) -> None:
        if self.folder is None or report.verdict == "error":
            return  # could not check (crash, OOM kill, timeout): the next run tries again
        self.folder.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"key": key, "report": report.to_dict()})
        # Atomic replace: a killed run never leaves a half-written verdict behind.
        with tempfile.NamedTemporaryFile("w", dir=self.folder, delete=False, suffix=".tmp") as handle:
            handle.write(record)
        os.replace(handle.name, self.folder / f"{self._digest(key)}.json")
