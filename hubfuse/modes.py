"""Full or targeted: which check a checkpoint gets on this machine, and running it.

`auto` picks full mode when the model fits this machine's memory and disk with room to spare:
full mode downloads the weights (a remote repo), loads the whole model in each worker and writes
two re-saves, so it needs about 3x the weights on disk (2x for a local folder) and 1.5x in memory.
Otherwise targeted mode (`hubfuse.fusion.targeted`) proves the same six points on what it can
reach without the model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubfuse.errors import BadInputError
from hubfuse.fusion.downstream import DownstreamPlan
from hubfuse.fusion.verdict import CheckReport
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.machine import available_memory_bytes
from hubfuse.source import LocalSource, RemoteSource, RepoSource, open_remote, parse_repo_spec

MODES = ("auto", "full", "targeted")
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


def open_source(spec: str, hub_factory: Callable[[], Hub] = Hub) -> RepoSource:
    """A folder if `spec` is one, else a Hub repo `ORG/MODEL[@REV]` pinned at its current commit."""
    path = Path(spec)
    if path.exists():
        return LocalSource(label=str(path), folder=path)
    parsed = parse_repo_spec(spec)
    if parsed is None:
        raise BadInputError(
            f"{spec}: no such file or directory, and not a Hub repo id (ORG/MODEL[@REVISION])"
        )
    return open_remote(hub_factory(), *parsed)


def check_source(
    source: RepoSource,
    families: tuple[str, ...] | list[str],
    *,
    mode: str = "auto",
    trust_remote_code: bool = False,
    list_tensors: bool = False,
    logs_dir: Path | None = None,
    timeout: float = 1800.0,
    downstream: DownstreamPlan | None = None,
) -> CheckReport:
    from hubfuse.checkpoint import open_checkpoint
    from hubfuse.fusion.check import check_checkpoint
    from hubfuse.fusion.targeted import check_targeted

    checkpoint = None
    if isinstance(source, LocalSource):
        # Bad input is refused in one line before anything else, whatever the mode.
        checkpoint = open_checkpoint(source.folder, trust_remote_code=trust_remote_code)
        weight_bytes = checkpoint.weight_bytes
    else:
        weight_bytes = source.total_weight_bytes if mode == "auto" else 0
    remote = isinstance(source, RemoteSource)
    chosen = choose_mode(mode, weight_bytes, remote=remote, machine=Machine.this())
    log.info(f"{source.label}: {chosen} mode" + (" (auto)" if mode == "auto" else ""))
    if chosen == "targeted":
        return check_targeted(
            source,
            families,
            trust_remote_code=trust_remote_code,
            logs_dir=logs_dir,
            timeout=timeout,
            downstream=downstream,
        )
    if checkpoint is None:
        from hubfuse.checkpoint import WEIGHT_PATTERNS

        assert isinstance(source, RemoteSource) and source.hub is not None
        source.refuse_oversized_json(WEIGHT_PATTERNS)  # from the listing, before a download
        folder = source.hub.download(source.repo_id, source.sha, WEIGHT_PATTERNS)
        checkpoint = open_checkpoint(folder, trust_remote_code=trust_remote_code)
    report = check_checkpoint(
        checkpoint,
        families,
        list_tensors=list_tensors,
        logs_dir=logs_dir,
        timeout=timeout,
        downstream=downstream,
    )
    report.source = source.label
    return report
