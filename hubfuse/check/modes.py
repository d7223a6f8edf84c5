"""Full or targeted: the two ways hubfuse checks a checkpoint, one protocol, one loop over the families.

`auto` picks full mode when the model fits this machine's memory and disk with room to spare:
full mode downloads the weights (a remote repo), loads the whole model in each worker and writes
two re-saves, so it needs about 3x the weights on disk (2x for a local folder) and 1.5x in memory.
Otherwise targeted mode (`hubfuse.check.targeted`) proves the same six points on what it can
reach without the model. `hubfuse.check.verify` chooses and runs one.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hubfuse import __version__
from hubfuse.check import worker
from hubfuse.check.downstream import DownstreamPlan
from hubfuse.check.families import resolve_families
from hubfuse.check.verdict import CheckReport, FamilyResult
from hubfuse.log import log
from hubfuse.machine import available_memory_bytes
from hubfuse.settings import DEFAULT_TIMEOUT_S, MODE

T = TypeVar("T")

DISK_FACTOR_REMOTE = 3.0
DISK_FACTOR_LOCAL = 2.0
MEMORY_FACTOR = 1.5


@dataclass(frozen=True)
class Machine:
    memory_bytes: int
    disk_bytes: int

    @classmethod
    def this(cls, work_dir: Path | None = None) -> Machine:
        return cls(available_memory_bytes(), shutil.disk_usage(work_dir or tempfile.gettempdir()).free)


def choose_mode(requested: str, weight_bytes: int, *, remote: bool, machine: Machine) -> str:
    if requested != "auto":
        return requested
    disk_factor = DISK_FACTOR_REMOTE if remote else DISK_FACTOR_LOCAL
    fits = (
        weight_bytes * MEMORY_FACTOR <= machine.memory_bytes
        and weight_bytes * disk_factor <= machine.disk_bytes
    )
    return "full" if fits else "targeted"


@dataclass(frozen=True)
class CheckRequest:
    """What to check and how, whatever the source."""

    families: tuple[str, ...] | list[str] = ()  # default: every registered family hubfuse can verify
    mode: str = MODE.default  # one of settings.MODES
    trust_remote_code: bool = False
    list_tensors: bool = False  # full mode: every tensor of the re-save in the report
    logs_dir: Path | None = None  # keeps the worker logs
    # Keeps, for each safe family, what its variant publishes (`CheckMode.keep_artifacts`).
    artifacts_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    downstream: DownstreamPlan | None = None  # the downstream matrix; None: the installed release only
    work_dir: Path | None = None  # whose free disk `auto` measures (default: the temp folder)


@dataclass(frozen=True)
class FamilyOutcome:
    result: FamilyResult
    dtype: str | None  # the checkpoint's dtype, where the check learnt it


class StopUnsafe(Exception):
    """Raised by a family check that found the family unsafe (its reason recorded): nothing more to prove."""


def settle(result: FamilyResult, check: Callable[[], None]) -> FamilyResult:
    """Run `check`, which records its reasons on `result`, and settle the verdict, in either mode:
    a failed worker is `error` (could not check); any reason on a `safe` verdict makes it `unsafe`."""
    try:
        check()
    except StopUnsafe:
        result.verdict = "unsafe"
    except worker.WorkerFailure as failure:
        result.verdict = "error"
        result.reasons.append(f"{failure} (--report-dir keeps the worker logs)")
    if result.verdict == "safe" and result.reasons:
        result.verdict = "unsafe"
    return result


def timed(result: FamilyResult, stage: str, func: Callable[[], T]) -> T:
    """`func()`, its wall time kept in the report's timings under `stage`."""
    start = time.monotonic()
    try:
        return func()
    finally:
        result.timings[stage] = round(time.monotonic() - start, 3)


class CheckMode(Protocol):
    """One way of checking a checkpoint: `check_families` runs it for each family."""

    name: str  # the report's mode: full | targeted
    where: str  # what the log names as checked
    model_type: str
    architecture: str
    preload: list[str]  # modules every worker imports first

    def check_family(self, family: str, work: Path) -> FamilyOutcome:
        """Check `family`; `work` is its own scratch folder, removed afterwards."""
        ...

    def keep_artifacts(self, work: Path, target: Path) -> None:
        """Keep in `target` what a variant of a safe family needs from `work`."""
        ...

    def log_files(self, family: str, work: Path) -> dict[str, Path]:
        """The worker logs in `work`, by the name they are kept under."""
        ...


def check_families(mode: CheckMode, request: CheckRequest, work: Path, *, source: str) -> CheckReport:
    """Each requested (or, by default, each verifiable) family in its own scratch folder under `work`;
    `source` names the checkpoint in the report."""
    worker.preload(mode.preload)
    selection = resolve_families(request.families)
    results = []
    dtype: str | None = None
    for family, why in selection.skipped.items():
        log.info(f"skipping fusion family {family}: {why}")
    for family in selection.families:
        family_work = work / family
        family_work.mkdir()
        try:
            with log.group(f"check {family} on {mode.where}"):
                outcome = mode.check_family(family, family_work)
                results.append(outcome.result)
                dtype = dtype or outcome.dtype
                if request.artifacts_dir is not None and outcome.result.verdict == "safe":
                    mode.keep_artifacts(family_work, request.artifacts_dir / family)
                if request.logs_dir is not None:
                    request.logs_dir.mkdir(parents=True, exist_ok=True)
                    for name, log_file in mode.log_files(family, family_work).items():
                        shutil.copyfile(log_file, request.logs_dir / name)
        finally:
            shutil.rmtree(family_work, ignore_errors=True)
    return report_for_installed(
        source=source,
        model_type=mode.model_type,
        architecture=mode.architecture,
        families=results,
        dtype=dtype,
        skipped_families=selection.skipped,
        mode=mode.name,
    )


def report_for_installed(**fields: Any) -> CheckReport:
    """A report stamped with the hubfuse, transformers and torch versions its verdicts hold for."""
    versions = installed_versions()
    return CheckReport(
        transformers_version=versions["transformers"],
        torch_version=versions["torch"],
        hubfuse_version=__version__,
        **fields,
    )


def installed_versions() -> dict[str, str]:
    """Versions of the libraries the verdict holds for, without importing them."""
    from importlib.metadata import version

    return {"transformers": version("transformers"), "torch": version("torch")}
