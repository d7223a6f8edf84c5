"""The steps before any write: resolve the source to a commit, pull its files, verify them.

resolve -> pull -> verify (full or targeted mode, `choose_publish_mode`)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfuse import __version__
from hubfuse.check import verify as verification
from hubfuse.check.families import family_names
from hubfuse.check.modes import CheckRequest, installed_versions
from hubfuse.check.verdict import CheckReport
from hubfuse.checkpoint import read_checked_config
from hubfuse.errors import BadInputError, ConflictError
from hubfuse.hub import Hub
from hubfuse.log import log
from hubfuse.publish.types import PublishOptions
from hubfuse.source import WEIGHT_PATTERNS, LocalSource, RemoteSource

# Besides what verification reads: the files a variant carries over from its source.
VARIANT_EXTRA_PATTERNS = [
    "README.md",
    "tokenizer*",
    "*.model",
    "vocab.*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.*",
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
]

# -- step 1: resolve -------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    repo_id: str
    sha: str
    private: bool
    gated: bool
    pipeline_tag: str | None
    weight_bytes: int | None = None  # from the Hub's safetensors summary, where it has one


def resolve(hub: Hub, repo_id: str, revision: str | None) -> Source:
    info = hub.resolve(repo_id, revision)
    if not getattr(info, "sha", None):
        raise ConflictError(f"{repo_id}@{revision or 'main'}: the Hub returned no commit sha")
    return Source(
        repo_id=repo_id,
        sha=info.sha,
        private=bool(getattr(info, "private", False)),
        gated=bool(getattr(info, "gated", False)),
        pipeline_tag=getattr(info, "pipeline_tag", None),
        weight_bytes=_weight_bytes(getattr(info, "safetensors", None)),
    )


def _weight_bytes(summary: Any) -> int | None:
    """Bytes of the weights, from repo_info's `safetensors` (parameters per dtype): no extra call."""
    from hubfuse.safetensors_header import DTYPE_BITS

    parameters = getattr(summary, "parameters", None)
    if not isinstance(parameters, dict) or not all(d in DTYPE_BITS for d in parameters):
        return None
    return sum(count * DTYPE_BITS[dtype] // 8 for dtype, count in parameters.items())


# -- step 2: pull ----------------------------------------------------------------------------


def pull(hub: Hub, source: Source, *, variant: bool, weights: bool = True) -> Path:
    """The files verification and the variant need; without `weights` (targeted mode) no safetensors."""
    patterns = [p for p in WEIGHT_PATTERNS if weights or not p.endswith(".safetensors")]
    patterns += VARIANT_EXTRA_PATTERNS if variant else []
    remote_source(hub, source).refuse_oversized_json(patterns)  # from the listing, before a download
    with log.group(f"pull {source.repo_id}@{source.sha[:12]}"):
        snapshot = hub.download(source.repo_id, source.sha, patterns)
    if not (snapshot / "config.json").is_file():
        raise BadInputError(f"{source.repo_id}@{source.sha[:12]}: no config.json in the repo")
    return snapshot


# -- step 3: verify --------------------------------------------------------------------------


def verify(snapshot: Path, options: PublishOptions, artifacts: Path, logs: Path) -> CheckReport:
    """Full mode on the pulled snapshot."""
    folder = LocalSource(label=options.repo_id, folder=snapshot)
    report = verification.verify(folder, check_request(options, "full", artifacts, logs))
    report.source = options.repo_id
    return report


def verify_targeted(
    hub: Hub, source: Source, snapshot: Path, options: PublishOptions, artifacts: Path, logs: Path
) -> CheckReport:
    """Targeted mode; the pulled files (config, tokenizer, processor) screened as open_checkpoint does."""
    read_checked_config(
        snapshot, trust_remote_code=options.trust_remote_code, registered_families=family_names
    )
    request = check_request(options, "targeted", artifacts, logs)
    report = verification.verify(remote_source(hub, source), request)
    report.source = options.repo_id
    return report


def remote_source(hub: Hub, source: Source) -> RemoteSource:
    return RemoteSource(
        label=f"{source.repo_id}@{source.sha[:12]}", hub=hub, repo_id=source.repo_id, sha=source.sha
    )


def check_request(
    options: PublishOptions, mode: str, artifacts: Path | None = None, logs: Path | None = None
) -> CheckRequest:
    return CheckRequest(
        families=options.families,
        mode=mode,
        trust_remote_code=options.trust_remote_code,
        logs_dir=logs,
        artifacts_dir=artifacts,
        timeout=options.timeout_s,
        downstream=options.downstream,
        work_dir=options.work_dir,
    )


def choose_publish_mode(hub: Hub, source: Source, options: PublishOptions) -> str:
    request = check_request(options, options.mode)
    return verification.mode_for(remote_source(hub, source), request, weight_bytes=source.weight_bytes)


def verdict_key(source: Source, options: PublishOptions) -> dict[str, Any]:
    """Everything a verdict depends on: a change in any of these re-opens it."""
    return {
        "repo_id": source.repo_id,
        "sha": source.sha,
        "families": sorted(options.families),
        "hubfuse": __version__,
        **installed_versions(),
        "downstream": options.downstream.key() if options.downstream else None,
    }
