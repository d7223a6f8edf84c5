"""Strict, dependency-free parsing of safetensors headers.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name to
`{dtype, shape, data_offsets: [begin, end]}` (offsets relative to the first byte after the header),
an optional `"__metadata__"` string map, then the data buffer.

The checks match what the safetensors library itself enforces (tensors, sorted by offset, must
cover the data buffer exactly: no overlap, no gap, no trailing bytes; sizes agree with dtype and
shape), plus a few it is lenient about (duplicate names), so a checkpoint that passes here is one
transformers can load and whose every byte belongs to exactly one tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfuse import strictjson
from hubfuse.errors import CheckpointError, brief

# Element sizes in bits, from safetensors' `Dtype::bitsize` (safetensors 0.8).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

LENGTH_PREFIX_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers
METADATA_KEY = "__metadata__"
MAX_HEADER_DEPTH = 8  # the format itself nests 3 levels: header -> entry -> shape
U64_LIMIT = 1 << 64  # safetensors stores sizes, shapes and offsets as 64-bit unsigned integers
# All of one checkpoint's headers together (summed over its shards). The largest real repos
# (~1T parameters, 100-200k tensors) hold about 20 MB of headers; each parsed header byte costs
# about 14 bytes of memory while it is parsed.
MAX_CHECKPOINT_HEADER_BYTES = MAX_HEADER_BYTES
MAX_CHECKPOINT_TENSORS = 1_000_000
_REDOWNLOAD = "re-download or re-save the checkpoint"


@dataclass(frozen=True)
class TensorLocation:
    """Where one tensor's raw bytes live: `file[start:end]` (absolute file offsets)."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    file_size: int
    data_start: int  # absolute offset of the data buffer
    tensors: tuple[TensorLocation, ...]  # in file-offset order
    metadata: dict[str, str] | None


class HeaderBudget:
    """Header bytes and tensors of one checkpoint, summed over its files: a header that would
    take the sum past a limit is refused before it is read or parsed."""

    def __init__(
        self,
        where: str,
        *,
        max_bytes: int = MAX_CHECKPOINT_HEADER_BYTES,
        max_tensors: int = MAX_CHECKPOINT_TENSORS,
    ) -> None:
        self.where = where
        self.max_bytes = max_bytes
        self.max_tensors = max_tensors
        self.header_bytes = 0
        self.tensor_count = 0

    def spend_header(self, name: str, header_len: int) -> None:
        self.header_bytes += header_len
        if self.header_bytes > self.max_bytes:
            raise CheckpointError(
                f"{self.where}: its safetensors headers hold more than {self.max_bytes} bytes together "
                f"({brief(name)} brings them to {self.header_bytes}); not a checkpoint hubfuse reads"
            )

    def tensors_of(self, header: SafetensorsHeader) -> tuple[TensorLocation, ...]:
        self.tensor_count += len(header.tensors)
        if self.tensor_count > self.max_tensors:
            raise CheckpointError(
                f"{self.where}: its safetensors headers list more than {self.max_tensors} tensors together "
                f"({header.path.name} brings them to {self.tensor_count}); not a checkpoint hubfuse reads"
            )
        return header.tensors


class _HeaderLie(Exception):
    """Raised inside JSON decoding hooks; turned into a CheckpointError naming the file."""


def read_header(path: Path | str, *, budget: HeaderBudget | None = None) -> SafetensorsHeader:
    """Read and validate one safetensors file's header; `CheckpointError` if it is not sound."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            header_len = _read_header_length(path, f.read(LENGTH_PREFIX_BYTES), file_size)
            if budget is not None:
                budget.spend_header(path.name, header_len)
            raw = f.read(header_len)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(raw) != header_len:  # the file shrank since we sized it
        raise CheckpointError(f"{path}: the file is truncated inside its header; {_REDOWNLOAD}")
    return parse_header(raw, path=path, file_size=file_size)


def parse_header(raw: bytes, *, path: Path, file_size: int) -> SafetensorsHeader:
    """Validate header JSON `raw` of a file of `file_size` bytes (length prefix included)."""
    document = _decode_json(raw, path)
    metadata = _parse_metadata(document.pop(METADATA_KEY, None), path)
    data_start = LENGTH_PREFIX_BYTES + len(raw)
    tensors = [_parse_entry(name, entry, path, data_start) for name, entry in document.items()]
    tensors.sort(key=lambda t: (t.start, t.end))
    _check_coverage(tensors, path, data_start=data_start, file_size=file_size)
    return SafetensorsHeader(path, file_size, data_start, tuple(tensors), metadata)


def element_count(shape: tuple[int, ...]) -> int | None:
    """The number of elements of `shape`; None when it overflows 64 bits, as safetensors refuses.

    Multiplied left to right with the overflow checked at every step, like safetensors'
    `checked_mul`: the running product never grows past 128 bits, so a shape of thousands of
    huge dimensions costs linear, not quadratic, time.
    """
    count = 1
    for dim in shape:
        count *= dim
        if count >= U64_LIMIT:
            return None
    return count


def element_bytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Bytes a tensor of `dtype` and `shape` occupies; None when not a whole number of bytes
    or beyond 64 bits."""
    count = element_count(shape)
    if count is None:
        return None
    bits = count * DTYPE_BITS[dtype]
    return bits // 8 if bits % 8 == 0 else None


def _read_header_length(path: Path, prefix: bytes, file_size: int) -> int:
    if len(prefix) < LENGTH_PREFIX_BYTES:
        raise CheckpointError(
            f"{path}: only {file_size} bytes, too short for a safetensors file "
            f"(the 8-byte header length is missing); {_REDOWNLOAD}"
        )
    header_len = int.from_bytes(prefix, "little")
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{path}: header length {header_len} is over safetensors' {MAX_HEADER_BYTES}-byte limit; "
            f"not a safetensors file or corrupt; {_REDOWNLOAD}"
        )
    available = file_size - LENGTH_PREFIX_BYTES
    if header_len > available:
        raise CheckpointError(
            f"{path}: header length {header_len} is beyond the end of the file ({available} bytes "
            f"follow the length prefix): the file is truncated or not safetensors; {_REDOWNLOAD}"
        )
    return header_len


def _decode_json(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        document = strictjson.loads(
            raw,
            max_bytes=MAX_HEADER_BYTES,
            max_depth=MAX_HEADER_DEPTH,
            allow_constants=False,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except _HeaderLie as e:
        raise CheckpointError(f"{path}: header {e}; {_REDOWNLOAD}") from None
    except strictjson.StrictJSONError as e:
        raise CheckpointError(f"{path}: header {e}; {_REDOWNLOAD}") from None
    if not isinstance(document, dict):
        raise CheckpointError(
            f"{path}: header is a JSON {type(document).__name__}, not an object; {_REDOWNLOAD}"
        )
    return document


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            # json.loads keeps the last one silently: a header naming a tensor twice is ambiguous.
            raise _HeaderLie(f"lists key {brief(key)} twice")
        document[key] = value
    return document


def _parse_metadata(value: object, path: Path) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CheckpointError(f"{path}: header {METADATA_KEY} must map strings to strings; {_REDOWNLOAD}")
    return value


def _is_count(value: object) -> bool:
    # `type is`: JSON true/false are not sizes.
    return type(value) is int and 0 <= value < U64_LIMIT


def _parse_entry(name: str, entry: object, path: Path, data_start: int) -> TensorLocation:
    where = f"{path}: tensor {brief(name)}"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(f"{where}: header entry must be an object with dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(
            f"{where} has unknown dtype {brief(dtype)} (safetensors knows {', '.join(DTYPE_BITS)}); "
            "a newer safetensors may be needed, or the file is corrupt"
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CheckpointError(
            f"{where}: shape must be a list of non-negative 64-bit integers, got {brief(shape)}"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise CheckpointError(
            f"{where}: data_offsets must be two non-negative 64-bit integers, got {brief(offsets)}"
        )
    begin, end = offsets
    if begin > end:
        raise CheckpointError(f"{where}: data_offsets begin {begin} is after end {end}; {_REDOWNLOAD}")
    dims = tuple(shape)
    count = element_count(dims)
    if count is None:
        raise CheckpointError(
            f"{where}: shape {brief(shape)} has more elements than 64 bits can count; {_REDOWNLOAD}"
        )
    needed = element_bytes(dtype, dims)
    if needed is None:
        raise CheckpointError(f"{where}: {count} {dtype} elements are not a whole number of bytes")
    if end - begin != needed:
        raise CheckpointError(
            f"{where}: data_offsets span {end - begin} bytes but {dtype} {brief(shape)} needs {needed}; "
            f"the header is wrong; {_REDOWNLOAD}"
        )
    return TensorLocation(name, path, dtype, dims, data_start + begin, data_start + end)


def _check_coverage(tensors: list[TensorLocation], path: Path, *, data_start: int, file_size: int) -> None:
    """Tensors (sorted by offset) must tile the data buffer exactly, as safetensors requires.

    Messages use offsets relative to the data buffer, as the header writes them.
    """
    data_size = file_size - data_start
    if tensors:
        last = max(tensors, key=lambda t: t.end)
        if last.end > file_size:
            raise CheckpointError(
                f"{path}: tensor {brief(last.name)} needs data bytes up to {last.end - data_start} but the file "
                f"holds only {data_size}: the file is truncated (or its header is wrong); {_REDOWNLOAD}"
            )
    covered, previous = data_start, ""
    for tensor in tensors:
        begin, end = tensor.start - data_start, tensor.end - data_start
        if tensor.start < covered:
            raise CheckpointError(
                f"{path}: tensor {brief(tensor.name)} (data bytes {begin}..{end}) overlaps tensor {brief(previous)} "
                f"(ending at {covered - data_start}); the header is wrong; {_REDOWNLOAD}"
            )
        if tensor.start > covered:
            raise CheckpointError(
                f"{path}: data bytes {covered - data_start}..{begin} before tensor {brief(tensor.name)} belong "
                f"to no tensor; safetensors requires tensors to cover the data without gaps; {_REDOWNLOAD}"
            )
        covered, previous = tensor.end, tensor.name
    if covered < file_size:
        raise CheckpointError(
            f"{path}: {file_size - covered} trailing bytes after the last tensor belong to no tensor; "
            f"safetensors requires the data to end the file; {_REDOWNLOAD}"
        )
