"""Prove that a re-saved checkpoint holds exactly the source checkpoint's tensors, bit for bit.

Everything here reads raw bytes through fixed, reused buffers: no mmap, no torch, no
`safe_open().get_tensor` (which keeps every mapped page resident), so memory stays flat whatever
the checkpoint size and the disk is read sequentially.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from hubfuse import strictjson
from hubfuse.errors import CheckpointError, brief
from hubfuse.safetensors_header import HeaderBudget, TensorLocation, read_header

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "INDEX_FILE",
    "SINGLE_FILE",
    "FileCheck",
    "FileIdentity",
    "Mismatch",
    "MismatchKind",
    "TensorComparison",
    "TensorLocation",
    "compare_checkpoints",
    "compare_tensor_bytes",
    "config_changes",
    "files_byte_identical",
    "index_checkpoint",
    "read_tensor_bytes",
]

_MAX_NAME_BYTES = 255  # per path component, on every filesystem hubfuse runs on
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_CHUNK_BYTES = 1 << 20  # two of these stay in L2/L3 cache between the read and the compare

MismatchKind = Literal["missing", "unexpected", "dtype", "shape", "bytes"]
_Pair = tuple[TensorLocation, TensorLocation]  # (source, candidate)


@dataclass(frozen=True)
class Mismatch:
    name: str
    kind: MismatchKind
    detail: str


@dataclass
class TensorComparison:
    tensors_compared: int  # tensors present in both checkpoints
    bytes_compared: int  # per side
    mismatches: list[Mismatch] = field(default_factory=list)
    tensors_bit_exact: bool = field(init=False)

    def __post_init__(self) -> None:
        self.tensors_bit_exact = not self.mismatches

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.tensors_bit_exact:
            return f"{self.tensors_compared} tensors ({self.bytes_compared} bytes) bit-exact"
        return f"{len(self.mismatches)} mismatches in {self.tensors_compared} tensors compared"


@dataclass(frozen=True)
class FileCheck:
    name: str  # relative to the checkpoint folder
    identical: bool
    detail: str


@dataclass
class FileIdentity:
    files: list[FileCheck]
    identical: bool = field(init=False)

    def __post_init__(self) -> None:
        self.identical = bool(self.files) and all(f.identical for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- checkpoint index -------------------------------------------------------------------------


def index_checkpoint(folder: Path | str) -> dict[str, TensorLocation]:
    """Every tensor of the checkpoint in `folder`, by name.

    Like transformers: `model.safetensors` if present, else the shards named by
    `model.safetensors.index.json`, else every `*.safetensors` file in the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (no such directory)")
    if (folder / SINGLE_FILE).is_file():
        return _index_files([folder / SINGLE_FILE])
    if (folder / INDEX_FILE).is_file():
        return _index_sharded(folder)
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not files:
        raise CheckpointError(
            f"{folder}: no safetensors weights (expected {SINGLE_FILE}, {INDEX_FILE} or *.safetensors)"
        )
    return _index_files(files)


def _index_files(files: list[Path]) -> dict[str, TensorLocation]:
    index: dict[str, TensorLocation] = {}
    budget = HeaderBudget(str(files[0].parent))
    for path in files:
        for tensor in budget.tensors_of(read_header(path, budget=budget)):
            if tensor.name in index:
                raise CheckpointError(
                    f"{path.parent}: tensor {brief(tensor.name)} is stored twice, in "
                    f"{index[tensor.name].file.name} and {path.name}; remove the stray file"
                )
            index[tensor.name] = tensor
    return index


def _index_sharded(folder: Path) -> dict[str, TensorLocation]:
    weight_map = _read_weight_map(folder / INDEX_FILE)
    shards: dict[str, dict[str, TensorLocation]] = {}
    budget = HeaderBudget(str(folder))
    for shard in sorted(set(weight_map.values())):
        path = folder / shard
        if not path.is_file():
            example = next(name for name, s in weight_map.items() if s == shard)
            raise CheckpointError(
                f"{folder / INDEX_FILE}: shard {brief(shard)} (holding e.g. {brief(example)}) is missing "
                f"from {folder}; download it"
            )
        shards[shard] = {t.name: t for t in budget.tensors_of(read_header(path, budget=budget))}
    index: dict[str, TensorLocation] = {}
    for name, shard in weight_map.items():
        if name not in shards[shard]:
            raise CheckpointError(
                f"{folder / INDEX_FILE}: maps tensor {brief(name)} to {brief(shard)}, which does not hold it; "
                "the index and the shards disagree, re-download or re-save the checkpoint"
            )
        index[name] = shards[shard][name]
    for shard, tensors in shards.items():
        for name in tensors:
            if weight_map.get(name) != shard:
                raise CheckpointError(
                    f"{folder / shard}: holds tensor {brief(name)}, which {INDEX_FILE} does not map to this "
                    "shard; the index and the shards disagree, re-download or re-save the checkpoint"
                )
    return index


def _read_weight_map(index_path: Path) -> dict[str, str]:
    try:
        with open(index_path, "rb") as f:
            data = f.read(strictjson.MAX_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"{index_path}: cannot read the shard index: {e.strerror or e}") from None
    return parse_weight_map(data, index_path)


def parse_weight_map(data: bytes, index_path: Path | str) -> dict[str, str]:
    """The shard index's `weight_map` (tensor name -> shard file), strictly parsed and checked:
    the one reading of an index, whether from a folder or from a repo."""
    try:
        document = strictjson.loads(data)
    except strictjson.StrictJSONError as e:
        raise CheckpointError(f"{index_path}: the shard index {e}") from None
    weight_map = document.get("weight_map") if isinstance(document, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(f"{index_path}: has no weight_map object of tensor name -> shard file")
    if not weight_map:
        raise CheckpointError(f"{index_path}: its weight_map is empty, so it names no tensor to load")
    for shard in set(weight_map.values()):
        parts = PurePosixPath(shard).parts
        if not parts or shard.startswith(("/", "\\")) or ".." in parts or "\\" in shard:
            raise CheckpointError(
                f"{index_path}: shard name {brief(shard)} points outside the checkpoint folder"
            )
        if not _possible_file_name(parts):
            raise CheckpointError(f"{index_path}: shard name {brief(shard)} is not a possible file name")
    return weight_map


def _possible_file_name(parts: tuple[str, ...]) -> bool:
    """Whether the OS can even look the name up (else stat raises instead of saying "missing")."""
    try:
        return all("\0" not in part and len(part.encode("utf-8")) <= _MAX_NAME_BYTES for part in parts)
    except UnicodeEncodeError:  # lone surrogates, which JSON's \ud800 escapes can produce
        return False


# --- streamed byte comparison -----------------------------------------------------------------


class _Files:
    """Read-only descriptors opened once and reused, with sequential read-ahead advice."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._fds: dict[Path, int] = {}

    def read_into(self, path: Path, offset: int, view: memoryview) -> None:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._open(path)
        filled = 0
        while filled < len(view):
            n = _pread_into(fd, view[filled:], offset + filled)
            if not n:
                raise CheckpointError(
                    f"{path}: the file is truncated (it ended at byte {offset + filled} while reading "
                    f"to byte {offset + len(view)}); was it changed while being verified?"
                )
            filled += n

    def _open(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
        self._stack.callback(os.close, fd)
        if hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):  # advice only; some filesystems refuse it
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._fds[path] = fd
        return fd


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)  # one syscall, no seek, no intermediate bytes object
    os.lseek(fd, offset, os.SEEK_SET)
    with open(fd, "rb", buffering=0, closefd=False) as f:
        return f.readinto(view) or 0


@dataclass
class _Difference:
    first: int | None = None  # byte offset within the compared range
    count: int = 0
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) of differing chunks

    def add_chunk(self, offset: int, a: memoryview, b: memoryview) -> None:
        # Only runs for a chunk already known to differ, so its cost never touches the happy path.
        import numpy as np

        unequal = np.frombuffer(a, dtype=np.uint8) != np.frombuffer(b, dtype=np.uint8)
        if self.first is None:
            self.first = offset + int(unequal.argmax())
        self.count += int(np.count_nonzero(unequal))
        self.chunks.append((offset, len(a)))

    def touches(self, begin: int, end: int) -> bool:
        return any(offset < end and begin < offset + size for offset, size in self.chunks)

    def describe(self, total: int) -> str:
        return f"first differing byte at offset {self.first} of {total}; {self.count} bytes differ"


class _ChunkComparer:
    """Compares byte ranges of two files through two fixed buffers of `chunk_bytes`."""

    def __init__(self, files: _Files, chunk_bytes: int) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self._files = files
        self._chunk = chunk_bytes
        self._a = bytearray(chunk_bytes)
        self._b = bytearray(chunk_bytes)
        self._a_view = memoryview(self._a)
        self._b_view = memoryview(self._b)

    def compare(self, a_path: Path, a_start: int, b_path: Path, b_start: int, length: int) -> _Difference:
        difference = _Difference()
        for offset in range(0, length, self._chunk):
            size = min(self._chunk, length - offset)
            a, b = self._a_view[:size], self._b_view[:size]
            self._files.read_into(a_path, a_start + offset, a)
            self._files.read_into(b_path, b_start + offset, b)
            # bytearray.startswith is a memcmp of a[:size] against b; memoryview == compares item
            # by item, about 100x slower.
            if not self._a.startswith(b):
                difference.add_chunk(offset, a, b)
        return difference


def compare_checkpoints(
    source_dir: Path | str, candidate_dir: Path | str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> TensorComparison:
    """Compare two checkpoints tensor by tensor: names, dtypes, shapes and raw bytes.

    Layout (key order, shard split, header metadata) does not matter, only the tensors do.
    """
    source = index_checkpoint(source_dir)
    candidate = index_checkpoint(candidate_dir)
    mismatches = [
        Mismatch(name, "missing", f"in the source ({_describe(source[name])}), not in the candidate")
        for name in sorted(source.keys() - candidate.keys())
    ]
    mismatches += [
        Mismatch(name, "unexpected", f"in the candidate ({_describe(candidate[name])}), not in the source")
        for name in sorted(candidate.keys() - source.keys())
    ]
    pairs = [(source[name], candidate[name]) for name in source.keys() & candidate.keys()]
    for src, cand in pairs:
        mismatches += _metadata_mismatches(src, cand)
    # Source file order keeps reads sequential (and candidate reads too when the layouts agree).
    same_layout = sorted(
        ((s, c) for s, c in pairs if s.dtype == c.dtype and s.shape == c.shape),
        key=lambda p: (str(p[0].file), p[0].start),
    )
    bytes_compared = 0
    with contextlib.ExitStack() as stack:
        comparer = _ChunkComparer(_Files(stack), chunk_bytes)
        for run in _contiguous_runs(same_layout):
            bytes_compared += run[-1][0].end - run[0][0].start
            mismatches += _compare_run(comparer, run)
    order = {"missing": 0, "unexpected": 1, "dtype": 2, "shape": 3, "bytes": 4}
    mismatches.sort(key=lambda m: (m.name, order[m.kind]))
    return TensorComparison(len(pairs), bytes_compared, mismatches)


def _contiguous_runs(pairs: list[_Pair]) -> Iterator[list[_Pair]]:
    """Group pairs whose bytes follow on from the previous pair's, in both checkpoints.

    One range read per run instead of one per tensor: checkpoints with thousands of small tensors
    (biases, norms) otherwise spend more time in per-tensor calls than in reading.
    """
    run: list[_Pair] = []
    for src, cand in pairs:
        if run and not (
            src.file == run[-1][0].file
            and cand.file == run[-1][1].file
            and src.start == run[-1][0].end
            and cand.start == run[-1][1].end
        ):
            yield run
            run = []
        run.append((src, cand))
    if run:
        yield run


def _compare_run(comparer: _ChunkComparer, run: list[_Pair]) -> list[Mismatch]:
    src0, cand0 = run[0]
    difference = comparer.compare(src0.file, src0.start, cand0.file, cand0.start, run[-1][0].end - src0.start)
    if not difference.count:
        return []
    # Re-read only the tensors that overlap a differing chunk, for their own offsets and counts.
    found = []
    for src, cand in run:
        if difference.touches(src.start - src0.start, src.end - src0.start):
            own = comparer.compare(src.file, src.start, cand.file, cand.start, src.nbytes)
            if own.count:
                found.append(Mismatch(src.name, "bytes", own.describe(src.nbytes)))
    return found


def _describe(tensor: TensorLocation) -> str:
    return f"{tensor.dtype} {list(tensor.shape)} in {tensor.file.name}"


def _metadata_mismatches(src: TensorLocation, cand: TensorLocation) -> list[Mismatch]:
    found = []
    if src.dtype != cand.dtype:
        found.append(Mismatch(src.name, "dtype", f"source {src.dtype}, candidate {cand.dtype}"))
    if src.shape != cand.shape:
        found.append(Mismatch(src.name, "shape", f"source {list(src.shape)}, candidate {list(cand.shape)}"))
    return found


def read_tensor_bytes(location: TensorLocation) -> bytes:
    """One tensor's raw (little-endian, C-order) bytes; meant for small tensors."""
    return bytes(_read_whole(location))


def compare_tensor_bytes(
    location: TensorLocation, expected: bytes | bytearray | memoryview
) -> Mismatch | None:
    """None when the tensor at `location` holds exactly the bytes `expected`, else what differs."""
    expected = memoryview(expected).cast("B")
    if len(expected) != location.nbytes:
        return Mismatch(location.name, "shape", f"holds {location.nbytes} bytes, expected {len(expected)}")
    actual = _read_whole(location)
    if actual.startswith(expected):  # same length, so this is equality (memcmp, see _ChunkComparer)
        return None
    difference = _Difference()
    difference.add_chunk(0, memoryview(actual), expected)
    return Mismatch(location.name, "bytes", difference.describe(location.nbytes))


def _read_whole(location: TensorLocation) -> bytearray:
    buffer = bytearray(location.nbytes)
    with contextlib.ExitStack() as stack:
        _Files(stack).read_into(location.file, location.start, memoryview(buffer))
    return buffer


# --- whole-file identity ----------------------------------------------------------------------


def files_byte_identical(
    source_dir: Path | str, candidate_dir: Path | str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> FileIdentity:
    """Whether each weight file (safetensors files, shard index) is byte-identical in both folders.

    Informational: only a source itself written by save_pretrained can be expected to match.
    """
    source_dir, candidate_dir = Path(source_dir), Path(candidate_dir)
    names = sorted(set(_weight_files(source_dir)) | set(_weight_files(candidate_dir)))
    with contextlib.ExitStack() as stack:
        comparer = _ChunkComparer(_Files(stack), chunk_bytes)
        checks = [_check_file(comparer, source_dir / name, candidate_dir / name, name) for name in names]
    return FileIdentity(checks)


def _weight_files(folder: Path) -> Iterator[str]:
    for pattern in ("*.safetensors", "*.safetensors.index.json"):
        yield from (p.name for p in folder.glob(pattern) if p.is_file())


def _check_file(comparer: _ChunkComparer, source: Path, candidate: Path, name: str) -> FileCheck:
    if not source.is_file():
        return FileCheck(name, False, "only in the candidate")
    if not candidate.is_file():
        return FileCheck(name, False, "only in the source")
    size, other = source.stat().st_size, candidate.stat().st_size
    if size != other:
        return FileCheck(name, False, f"sizes differ: source {size} bytes, candidate {other}")
    difference = comparer.compare(source, 0, candidate, 0, size)
    if difference.count:
        return FileCheck(name, False, difference.describe(size))
    return FileCheck(name, True, f"identical ({size} bytes)")


# --- config diff ------------------------------------------------------------------------------


def config_changes(source_config: Mapping[str, Any], candidate_config: Mapping[str, Any]) -> list[str]:
    """Added (+), removed (-) and changed (~) keys, nested dicts as dotted paths, sorted by key."""
    return list(_diff(source_config, candidate_config, prefix=""))


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> Iterator[str]:
    for key in sorted(old.keys() | new.keys(), key=str):
        path = f"{prefix}{key}"
        if key not in new:
            yield f"- {path} = {old[key]!r}"
        elif key not in old:
            yield f"+ {path} = {new[key]!r}"
        elif isinstance(old[key], Mapping) and isinstance(new[key], Mapping):
            yield from _diff(old[key], new[key], prefix=f"{path}.")
        elif not _same(old[key], new[key]):
            yield f"~ {path}: {old[key]!r} -> {new[key]!r}"


def _same(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart (== does not), as JSON does."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)
