"""Where the local hub keeps Xet content, and how a file is rebuilt from it.

Layout under the data dir:

    xet/xorbs/ab/<hash>          a xorb's chunks as uploaded (headers and compressed bytes, no footer)
    xet/xorbs/ab/<hash>.json     its index: per chunk [hash hex, uncompressed size, start, end]
    xet/files/ab/<hash>.json     a file's reconstruction: {sha256, size, terms: [[xorb, start, end, bytes]]}

A file uploaded through Xet is also rebuilt once into the LFS blob store under its sha256 (and checked
there), so commits, classic downloads and `lfs-files/duplicate` see one kind of object. An object
uploaded through classic LFS gets its xorbs and reconstruction on the first Xet read of it, built from
its bytes with the spec's chunking, so every file with a `xetHash` can be read either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfuse.localhub import xet_formats, xethash
from hubfuse.localhub.fsutil import atomic_write_bytes, atomic_write_json, read_json
from hubfuse.localhub.records import RepoId
from hubfuse.localhub.storage import Store


@dataclass(frozen=True)
class IndexedChunk:
    hash: str
    size: int
    start: int
    end: int


@dataclass(frozen=True)
class Term:
    xorb: str
    chunk_start: int
    chunk_end: int  # exclusive
    unpacked_bytes: int


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int
    terms: list[Term]


class XetStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.root = store.root / "xet"

    # ---- xorbs ----------------------------------------------------------------------------------

    def xorb_path(self, xorb: str) -> Path:
        return self.root / "xorbs" / xorb[:2] / xorb

    def has_xorb(self, xorb: str) -> bool:
        return self.xorb_path(xorb).with_suffix(".json").is_file()

    def put_xorb(self, parsed: xet_formats.ParsedXorb, data: bytes) -> bool:
        """Store a verified xorb; False when it was already there."""
        xorb = xethash.hash_hex(parsed.hash)
        if self.has_xorb(xorb):
            return False
        atomic_write_bytes(self.xorb_path(xorb), data[: parsed.body_length])
        index = [[xethash.hash_hex(c.hash), c.size, c.start, c.end] for c in parsed.chunks]
        # The index is written last: a xorb counts as stored only once both files are whole.
        atomic_write_json(self.xorb_path(xorb).with_suffix(".json"), {"chunks": index})
        return True

    def xorb_index(self, xorb: str) -> list[IndexedChunk]:
        raw = read_json(self.xorb_path(xorb).with_suffix(".json"))["chunks"]
        return [IndexedChunk(h, size, start, end) for h, size, start, end in raw]

    def xorb_length(self, xorb: str) -> int:
        return self.xorb_path(xorb).stat().st_size

    # ---- files ----------------------------------------------------------------------------------

    def _file_path(self, file_hash: str) -> Path:
        return self.root / "files" / file_hash[:2] / f"{file_hash}.json"

    def put_file(self, file_hash: str, record: FileRecord) -> None:
        body: dict[str, Any] = {
            "sha256": record.sha256,
            "size": record.size,
            "terms": [[t.xorb, t.chunk_start, t.chunk_end, t.unpacked_bytes] for t in record.terms],
        }
        atomic_write_json(self._file_path(file_hash), body)

    def file_record(self, file_hash: str) -> FileRecord | None:
        path = self._file_path(file_hash)
        if not path.is_file():
            return None
        raw = read_json(path)
        terms = [Term(x, s, e, b) for x, s, e, b in raw["terms"]]
        return FileRecord(raw["sha256"], raw["size"], terms)

    def iter_file_bytes(self, record: FileRecord) -> Iterator[bytes]:
        """The file's bytes, term by term, chunk by chunk (decompressed)."""
        for term in record.terms:
            index = self.xorb_index(term.xorb)
            start, end = index[term.chunk_start].start, index[term.chunk_end - 1].end
            with self.xorb_path(term.xorb).open("rb") as f:
                f.seek(start)
                data = f.read(end - start)
            yield from xet_formats.iter_xorb_chunks(data)

    # ---- classic LFS objects --------------------------------------------------------------------

    def record_for_repo(self, repo: RepoId, file_hash: str) -> FileRecord | None:
        """The reconstruction of the file `repo` holds with this Xet hash, built on first use for
        objects that came through classic LFS; None when `repo` holds no such file."""
        record = self.file_record(file_hash)
        if record is not None:
            return record if self.store.lfs_linked(repo, record.sha256) else None
        markers = self.store.repo_dir(repo) / "lfs"
        if not markers.is_dir():
            return None
        for marker in markers.iterdir():
            sha256 = marker.name
            if self.store.xet_hash(sha256) == file_hash and self.store.lfs_linked(repo, sha256):
                return self._build_from_lfs(sha256, file_hash)
        return None

    def _build_from_lfs(self, sha256: str, file_hash: str) -> FileRecord | None:
        """Chunk an LFS object into uncompressed xorbs; None if its bytes no longer hash as recorded."""
        terms: list[Term] = []
        batch: list[bytes] = []
        batch_bytes = 0
        digest = hashlib.sha256()
        leaves: list[xethash.Node] = []

        def flush() -> None:
            nonlocal batch, batch_bytes
            data = xet_formats.serialize_uncompressed_xorb(batch)
            parsed = xet_formats.parse_xorb(data)
            self.put_xorb(parsed, data)
            terms.append(Term(xethash.hash_hex(parsed.hash), 0, len(batch), batch_bytes))
            batch, batch_bytes = [], 0

        with self.store.lfs_path(sha256).open("rb") as stream:
            for chunk in xethash.iter_chunks(stream):
                if len(batch) == xethash.MAX_XORB_CHUNKS or batch_bytes + len(chunk) > xethash.MAX_XORB_BYTES:
                    flush()
                digest.update(chunk)
                leaves.append((xethash.chunk_hash(chunk), len(chunk)))
                batch.append(chunk)
                batch_bytes += len(chunk)
        if batch:
            flush()
        if digest.hexdigest() != sha256 or xethash.hash_hex(xethash.file_hash_of_chunks(leaves)) != file_hash:
            return None
        record = FileRecord(sha256, sum(t.unpacked_bytes for t in terms), terms)
        self.put_file(file_hash, record)
        return record
