"""How a variant's files reach the Hub: a server-side copy of every file that is the source's own,
an upload of the rest, in one commit.

LFS objects belong to repos on the Hub, so a variant cannot name the source's objects by oid. It
asks for a copy instead (`CommitOperationCopy` with `src_repo_id` and the pinned source revision):
the client reads the source file's `xetHash`, has the source repo duplicate the object into the
variant, and commits it; no bytes pass through the runner. The Hub refuses copies across storage
regions and of files without a Xet hash. Then those files are streamed: a file already on disk
(full mode) is uploaded, any other one (targeted mode's untouched shards) is read from the source
by range requests into one temporary file at a time and uploaded. The report says which, and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfuse.errors import CopyRefusedError
from hubfuse.hub import Hub
from hubfuse.log import log

STREAM_CHUNK_BYTES = 64 << 20
_HASH_CHUNK_BYTES = 8 << 20


@dataclass
class TransferStats:
    """What the variant's commit moved, and how."""

    shards: int = 0  # targeted mode: the source's weight files
    rewritten: int = 0  # targeted mode: shards rewritten with their fused tensors
    files_uploaded: int = 0  # the variant's own content: rewritten or changed files
    files_copied: int = 0  # the source's own files, copied server-side
    files_streamed: int = 0  # the source's own files the Hub would not copy: through the runner
    bytes_uploaded: int = 0
    bytes_copied: int = 0
    bytes_streamed: int = 0
    bytes_downloaded: int = 0
    peak_disk_bytes: int = 0
    copy_refused: list[str] = field(default_factory=list)  # why files were streamed instead

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "copy_refused": list(self.copy_refused)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class VariantTransfer:
    """The commit operations of one variant of `source_repo@sha`, and the commit itself."""

    def __init__(self, hub: Hub, source_repo: str, sha: str, target: str, work: Path) -> None:
        self.hub, self.source_repo, self.sha, self.target, self.work = hub, source_repo, sha, target, work
        self.stats = TransferStats()
        self._source_files = {f.path: f for f in hub.list_files(source_repo, sha)}
        self._fallbacks: dict[str, Callable[[], Any]] = {}  # copied path -> how to stream it instead

    def local_file(self, name: str, path: Path) -> Any:
        """A file on disk: copied when it is byte-identical to the source's LFS file of that name."""
        from huggingface_hub import CommitOperationAdd

        size = path.stat().st_size
        source = self._source_files.get(name)
        lfs = source.lfs if source is not None else None
        if lfs is not None and lfs.size == size and file_sha256(path) == lfs.sha256:
            return self._copy_or_stream(name, size, lambda: self._upload_local(name, path))
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += size
        return CommitOperationAdd(name, str(path))

    def rewritten(self, name: str, path: Path) -> Any:
        """A file written for the variant: uploaded now, so the disk holds it only until then."""
        from huggingface_hub import CommitOperationAdd

        addition = CommitOperationAdd(name, str(path))
        self.hub.preupload(self.target, [addition])
        self.stats.files_uploaded += 1
        self.stats.bytes_uploaded += path.stat().st_size
        path.unlink()
        return addition

    def untouched(self, name: str) -> Any:
        """The source's own file, never downloaded: copied, or streamed where it cannot be."""
        size = self._source_files[name].size
        return self._copy_or_stream(name, size, lambda: self._stream_remote(name, size))

    def commit(self, operations: list[Any], **commit_args: Any) -> Any:
        """One commit of `operations`. Where the Hub refuses the copies, the refused files are
        streamed and the same commit is made again (nothing landed: duplication precedes it)."""
        try:
            return self.hub.commit(self.target, operations, **commit_args)
        except CopyRefusedError as refusal:
            return self.hub.commit(self.target, self._stream_refused(operations, refusal), **commit_args)

    # -- internals -------------------------------------------------------------------------

    def _copy_or_stream(self, name: str, size: int, stream: Callable[[], Any]) -> Any:
        from huggingface_hub import CommitOperationCopy

        source = self._source_files.get(name)
        if source is None or source.lfs is None or not source.xet_hash:
            why = "not an LFS file" if source is None or source.lfs is None else "no xet hash"
            self._note_refusal(f"{name}: {why} on {self.source_repo}, so the Hub cannot copy it")
            return self._streamed(size, stream)
        self._fallbacks[name] = lambda: self._streamed(size, stream)
        self.stats.files_copied += 1
        self.stats.bytes_copied += size
        return CommitOperationCopy(
            name,
            name,
            src_repo_id=self.source_repo,
            src_repo_type="model",
            src_revision=self.sha,
        )

    def _stream_refused(self, operations: list[Any], refusal: CopyRefusedError) -> list[Any]:
        from huggingface_hub import CommitOperationCopy

        self._note_refusal(f"the Hub refused the server-side copy: {refusal}")
        replaced = []
        for op in operations:
            if isinstance(op, CommitOperationCopy) and op.path_in_repo in self._fallbacks:
                self.stats.files_copied -= 1
                self.stats.bytes_copied -= self._source_files[op.src_path_in_repo].size
                replaced.append(self._fallbacks.pop(op.path_in_repo)())
            else:
                replaced.append(op)
        return replaced

    def _note_refusal(self, reason: str) -> None:
        log.warning(f"  streaming instead of copying: {reason}")
        self.stats.copy_refused.append(reason)

    def _streamed(self, size: int, stream: Callable[[], Any]) -> Any:
        addition = stream()
        self.stats.files_streamed += 1
        self.stats.bytes_streamed += size
        return addition

    def _upload_local(self, name: str, path: Path) -> Any:
        from huggingface_hub import CommitOperationAdd

        addition = CommitOperationAdd(name, str(path))
        self.hub.preupload(self.target, [addition])
        return addition

    def _stream_remote(self, name: str, size: int) -> Any:
        from huggingface_hub import CommitOperationAdd

        path = self.work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for start in range(0, size, STREAM_CHUNK_BYTES):
                end = min(start + STREAM_CHUNK_BYTES, size)
                out.write(self.hub.read_range(self.source_repo, self.sha, name, start, end))
        self.stats.bytes_downloaded += size
        self.stats.peak_disk_bytes = max(self.stats.peak_disk_bytes, size)
        addition = CommitOperationAdd(name, str(path))
        self.hub.preupload(self.target, [addition])
        path.unlink()
        return addition
