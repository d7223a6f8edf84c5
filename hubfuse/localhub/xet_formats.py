"""The Xet protocol's binary formats, from its specification (huggingface.co/docs/xet): xorbs and shards.

A leaf module beside xethash.py. Every parser treats its input as hostile: lengths are checked before
they are used, decompression is bounded by the length the chunk header announces, and a malformed
body raises `XetFormatError` (the CAS routes answer it with 400).

- Xorb: chunks back to back, each an 8-byte header (version 0, 3-byte little-endian compressed length,
  compression scheme, 3-byte uncompressed length) and its compressed bytes; schemes 0 (none),
  1 (LZ4 frame) and 2 (byte grouping by 4, then LZ4 frame). An optional footer starts with `XETBLOB`
  and ends with its own length as a u32. Uploads carry the chunks only (the footer is not part of the
  upload), older clients may append it.
- Shard: a 48-byte header (tag, version 2, footer size), the file-info section (per file a header,
  its segments, their verification entries, the sha256 extension), an all-ones bookend; the xorb-info
  section (per xorb a header and its chunks), a bookend; then an optional footer. Every entry is
  48 bytes, integers little-endian, hashes as their 32 raw bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import lz4.frame
import numpy as np

from hubfuse.localhub import xethash

CHUNK_HEADER_BYTES = 8
XORB_FOOTER_IDENT = b"XETBLOB"
SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2

SHARD_TAG = bytes(
    [72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85,
     105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)  # fmt: skip
SHARD_VERSION = 2
SHARD_ENTRY_BYTES = 48
BOOKEND_HASH = b"\xff" * xethash.HASH_BYTES
FILE_FLAG_VERIFICATION = 1 << 31
FILE_FLAG_METADATA_EXT = 1 << 30


class XetFormatError(ValueError):
    """A xorb or shard that does not parse, or whose content does not hash as it claims."""


# ---- xorbs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XorbChunk:
    hash: bytes  # the chunk hash of the uncompressed bytes, recomputed here
    size: int  # uncompressed bytes
    start: int  # offset of the chunk header in the serialized xorb
    end: int  # offset just past the chunk's compressed bytes


@dataclass(frozen=True)
class ParsedXorb:
    hash: bytes  # recomputed from the chunks
    chunks: list[XorbChunk]
    body_length: int  # bytes of chunks (the footer, if any, follows)


def _bg4_regroup(grouped: bytes) -> bytes:
    """Undo byte grouping: the groups hold bytes 0, 1, 2, 3 (mod 4) of the original, in order."""
    n = len(grouped)
    split, rem = divmod(n, 4)
    sizes = [split + (1 if rem > i else 0) for i in range(4)]
    source = np.frombuffer(grouped, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint8)
    offset = 0
    for lane, size in enumerate(sizes):
        out[lane::4] = source[offset : offset + size]
        offset += size
    return out.tobytes()


def _lz4_decompress(payload: bytes, expected: int) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        # One byte past the announced length is enough to tell a chunk that lies about its size.
        data = decompressor.decompress(payload, max_length=expected + 1)
    except RuntimeError as exc:
        raise XetFormatError(f"chunk is not a valid LZ4 frame: {exc}") from None
    if len(data) != expected or not decompressor.eof:
        raise XetFormatError("chunk's LZ4 frame does not decompress to the length its header announces")
    return data


def decompress_chunk(scheme: int, payload: bytes, expected: int) -> bytes:
    if scheme == SCHEME_NONE:
        data = payload
    elif scheme == SCHEME_LZ4:
        data = _lz4_decompress(payload, expected)
    elif scheme == SCHEME_BG4_LZ4:
        data = _bg4_regroup(_lz4_decompress(payload, expected))
    else:
        raise XetFormatError(f"unknown chunk compression scheme {scheme}")
    if len(data) != expected:
        raise XetFormatError("chunk does not decompress to the length its header announces")
    return data


def _chunk_header(data: bytes | memoryview, offset: int) -> tuple[int, int, int]:
    """(compression scheme, compressed length, uncompressed length) of the chunk at `offset`."""
    header = bytes(data[offset : offset + CHUNK_HEADER_BYTES])
    if len(header) < CHUNK_HEADER_BYTES:
        raise XetFormatError(f"truncated chunk header at byte {offset}")
    version, scheme = header[0], header[4]
    compressed = int.from_bytes(header[1:4], "little")
    uncompressed = int.from_bytes(header[5:8], "little")
    if version != 0:
        raise XetFormatError(f"chunk header version {version} at byte {offset}; only version 0 exists")
    if uncompressed == 0 or uncompressed > xethash.MAX_CHUNK_SIZE:
        raise XetFormatError(f"chunk at byte {offset} announces {uncompressed} bytes (1 to 128 KiB allowed)")
    if compressed > 2 * xethash.MAX_CHUNK_SIZE:
        raise XetFormatError(f"chunk at byte {offset} announces {compressed} compressed bytes")
    return scheme, compressed, uncompressed


def iter_xorb_chunks(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The uncompressed chunks of a serialized xorb (or of the chunk-aligned byte range given)."""
    end = len(data) if end is None else end
    offset = start
    while offset < end:
        scheme, compressed, uncompressed = _chunk_header(data, offset)
        payload_start = offset + CHUNK_HEADER_BYTES
        payload = bytes(data[payload_start : payload_start + compressed])
        if len(payload) != compressed:
            raise XetFormatError(f"truncated chunk at byte {offset}")
        yield decompress_chunk(scheme, payload, uncompressed)
        offset = payload_start + compressed


def _check_footer(data: bytes, offset: int, computed: bytes) -> None:
    footer = data[offset:]
    if len(footer) < len(XORB_FOOTER_IDENT) + 1 + xethash.HASH_BYTES + 4:
        raise XetFormatError("truncated xorb footer")
    (info_length,) = struct.unpack_from("<I", footer, len(footer) - 4)
    if info_length + 4 != len(footer):
        raise XetFormatError("xorb footer's length field does not match the bytes after the chunks")
    declared = footer[len(XORB_FOOTER_IDENT) + 1 : len(XORB_FOOTER_IDENT) + 1 + xethash.HASH_BYTES]
    if declared != computed:
        raise XetFormatError("xorb footer names another xorb hash than its chunks hash to")


def parse_xorb(data: bytes) -> ParsedXorb:
    """Parse and verify a serialized xorb: every chunk decompressed and hashed, the xorb hash recomputed."""
    chunks: list[XorbChunk] = []
    total = 0
    offset = 0
    while offset < len(data) and data[offset : offset + len(XORB_FOOTER_IDENT)] != XORB_FOOTER_IDENT:
        scheme, compressed, uncompressed = _chunk_header(data, offset)
        payload_start = offset + CHUNK_HEADER_BYTES
        payload = data[payload_start : payload_start + compressed]
        if len(payload) != compressed:
            raise XetFormatError(f"truncated chunk at byte {offset}")
        raw = decompress_chunk(scheme, payload, uncompressed)
        chunks.append(XorbChunk(xethash.chunk_hash(raw), uncompressed, offset, payload_start + compressed))
        total += uncompressed
        if len(chunks) > xethash.MAX_XORB_CHUNKS or total > xethash.MAX_XORB_BYTES:
            raise XetFormatError("xorb holds more than 8192 chunks or 64 MiB")
        offset = payload_start + compressed
    if not chunks:
        raise XetFormatError("xorb holds no chunks")
    computed = xethash.xorb_hash((chunk.hash, chunk.size) for chunk in chunks)
    if offset < len(data):
        _check_footer(data, offset, computed)
    return ParsedXorb(computed, chunks, offset)


def serialize_uncompressed_xorb(chunks: Iterable[bytes]) -> bytes:
    """A xorb of `chunks` stored without compression (what the local hub builds from an LFS object)."""
    parts: list[bytes] = []
    for chunk in chunks:
        size = len(chunk).to_bytes(3, "little")
        parts += [bytes([0]), size, bytes([SCHEME_NONE]), size, chunk]
    return b"".join(parts)


# ---- shards -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSegment:
    xorb_hash: bytes
    unpacked_bytes: int
    chunk_start: int
    chunk_end: int  # exclusive
    range_hash: bytes | None  # the verification entry's hash, when the shard carries them


@dataclass(frozen=True)
class ShardFile:
    file_hash: bytes
    segments: list[FileSegment]
    sha256: bytes | None  # raw digest from the metadata extension


@dataclass(frozen=True)
class ShardXorb:
    xorb_hash: bytes
    chunk_hashes: list[bytes]
    chunk_sizes: list[int]


@dataclass(frozen=True)
class ParsedShard:
    files: list[ShardFile]
    xorbs: list[ShardXorb]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, length: int) -> bytes:
        if self.offset + length > len(self.data):
            raise XetFormatError("truncated shard")
        piece = self.data[self.offset : self.offset + length]
        self.offset += length
        return piece

    def entry(self) -> bytes:
        return self.take(SHARD_ENTRY_BYTES)

    def count(self, claimed: int) -> int:
        """A claimed entry count, refused when the rest of the body could not hold that many."""
        if claimed * SHARD_ENTRY_BYTES > len(self.data) - self.offset:
            raise XetFormatError("shard entry count runs past the end of the shard")
        return claimed


def _file_entry(reader: _Reader, header: bytes) -> ShardFile:
    flags, num_entries = struct.unpack_from("<II", header, 32)
    raw_segments = [reader.entry() for _ in range(reader.count(num_entries))]
    range_hashes: list[bytes | None] = [None] * len(raw_segments)
    if flags & FILE_FLAG_VERIFICATION:
        range_hashes = [reader.entry()[:32] for _ in range(reader.count(num_entries))]
    sha256 = reader.entry()[:32] if flags & FILE_FLAG_METADATA_EXT else None
    segments = []
    for raw, range_hash in zip(raw_segments, range_hashes, strict=True):
        _flags, unpacked, start, end = struct.unpack_from("<IIII", raw, 32)
        if end <= start:
            raise XetFormatError("file segment with an empty or reversed chunk range")
        segments.append(FileSegment(raw[:32], unpacked, start, end, range_hash))
    return ShardFile(header[:32], segments, sha256)


def parse_shard(data: bytes) -> ParsedShard:
    reader = _Reader(data)
    header = reader.take(SHARD_ENTRY_BYTES)
    if header[:32] != SHARD_TAG:
        raise XetFormatError("not a shard (wrong tag)")
    (version,) = struct.unpack_from("<Q", header, 32)
    if version != SHARD_VERSION:
        raise XetFormatError(f"shard header version {version}; expected {SHARD_VERSION}")
    files: list[ShardFile] = []
    while (entry := reader.entry())[:32] != BOOKEND_HASH:
        files.append(_file_entry(reader, entry))
    xorbs: list[ShardXorb] = []
    while (entry := reader.entry())[:32] != BOOKEND_HASH:
        (num_chunks,) = struct.unpack_from("<I", entry, 36)
        hashes, sizes = [], []
        for _ in range(reader.count(num_chunks)):
            chunk = reader.entry()
            hashes.append(chunk[:32])
            sizes.append(struct.unpack_from("<I", chunk, 36)[0])
        xorbs.append(ShardXorb(entry[:32], hashes, sizes))
    return ParsedShard(files, xorbs)
