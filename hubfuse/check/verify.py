"""The one entry to checking: `verify(source, request)` runs full or targeted mode on a source.

A local folder is validated first, whatever the mode (bad input is refused in one line before
anything else); `auto` then picks the mode for this machine (`hubfuse.check.modes`). Full mode on
a Hub repo downloads the files every load reads; targeted mode reads headers and byte ranges only.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hubfuse.check.downstream import prepared_launcher
from hubfuse.check.families import family_names
from hubfuse.check.full import FullMode
from hubfuse.check.modes import CheckMode, CheckRequest, Machine, check_families, choose_mode
from hubfuse.check.targeted import TargetedMode
from hubfuse.check.verdict import CheckReport
from hubfuse.checkpoint import Checkpoint, open_checkpoint
from hubfuse.errors import BadInputError
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.source import (
    WEIGHT_PATTERNS,
    LocalSource,
    RemoteSource,
    RepoSource,
    open_remote,
    parse_repo_spec,
)


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


def open_checked(folder: Path, *, trust_remote_code: bool = False) -> Checkpoint:
    """The checkpoint folder, every file a load reads validated (`hubfuse.checkpoint`)."""
    return open_checkpoint(folder, trust_remote_code=trust_remote_code, registered_families=family_names)


def mode_for(source: RepoSource, request: CheckRequest, *, weight_bytes: int | None = None) -> str:
    """Full or targeted for `source` on this machine; `weight_bytes` where already known."""
    if request.mode != "auto":
        return request.mode
    if weight_bytes is None:
        weight_bytes = source.total_weight_bytes
    remote = isinstance(source, RemoteSource)
    return choose_mode("auto", weight_bytes, remote=remote, machine=Machine.this(request.work_dir))


def verify(source: RepoSource, request: CheckRequest) -> CheckReport:
    """Every requested family checked on `source`, in the mode `request` asks for or this machine fits."""
    checkpoint = None
    weight_bytes = None
    if isinstance(source, LocalSource):
        # Bad input is refused in one line before anything else, whatever the mode.
        checkpoint = open_checked(source.folder, trust_remote_code=request.trust_remote_code)
        weight_bytes = checkpoint.weight_bytes
    chosen = mode_for(source, request, weight_bytes=weight_bytes)
    log.info(f"{source.label}: {chosen} mode" + (" (auto)" if request.mode == "auto" else ""))
    # The downstream probes' host starts now: it imports torch while the installed check runs.
    with _scratch_dir(chosen) as work, prepared_launcher(request.downstream) as launcher:
        mode: CheckMode
        if chosen == "targeted":
            mode = TargetedMode(source, request, work, launcher)
        else:
            mode = FullMode(checkpoint or _download(source, request), request, launcher)
        report = check_families(mode, request, work, source=source.label)
    return report


def _download(source: RepoSource, request: CheckRequest) -> Checkpoint:
    assert isinstance(source, RemoteSource) and source.hub is not None
    source.refuse_oversized_json(WEIGHT_PATTERNS)  # from the listing, before a download
    folder = source.hub.download(source.repo_id, source.sha, WEIGHT_PATTERNS)
    return open_checked(folder, trust_remote_code=request.trust_remote_code)


@contextmanager
def _scratch_dir(mode: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hubfuse-check-" if mode == "full" else "hubfuse-targeted-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
