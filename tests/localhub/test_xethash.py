"""The local hub's own Xet hashing (localhub/xethash.py) against the reference client, hf_xet."""

from __future__ import annotations

import io
from pathlib import Path

import hf_xet
import numpy as np
import pytest

from hubfuse.localhub import xethash


def _random_bytes(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(size)


FILES = {
    "empty": b"",
    "one-byte": b"x",
    "small": b"hello world",
    "exactly-min-chunk": _random_bytes(xethash.MIN_CHUNK_SIZE, 1),
    "multi-chunk": _random_bytes(3_000_000, 2),
    "zeros (max-size chunks)": bytes(1_000_000),
    "repeating text": b"the quick brown fox " * 50_000,
}


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xet-samples")
    paths = {}
    for index, (name, data) in enumerate(FILES.items()):
        path = root / f"sample-{index}"
        path.write_bytes(data)
        paths[name] = path
    # More than one xorb's worth (64 MiB) of chunks.
    big = root / "two-xorbs"
    with big.open("wb") as stream:
        for seed in range(17):
            stream.write(_random_bytes(4 * 1024 * 1024, 100 + seed))
    paths["more than one xorb"] = big
    return paths


def test_file_hashes_equal_the_reference_client(sample_files: dict[str, Path]) -> None:
    names = list(sample_files)
    reference = hf_xet.hash_files([str(sample_files[name]) for name in names])
    assert sample_files["more than one xorb"].stat().st_size > xethash.MAX_XORB_BYTES
    mine = {name: xethash.xet_file_hash(sample_files[name]) for name in names}
    theirs = {name: info.hash for name, info in zip(names, reference, strict=True)}
    assert mine == theirs
    assert len(set(mine.values())) == len(mine)  # the samples are distinct, so are their hashes


def test_empty_file_hash_is_the_zero_hash(sample_files: dict[str, Path]) -> None:
    assert xethash.xet_file_hash(sample_files["empty"]) == "0" * 64


def test_chunks_respect_the_size_bounds_and_cover_the_data() -> None:
    data = _random_bytes(2_000_000, 7) + bytes(500_000) + _random_bytes(700_000, 8)
    ends = xethash.chunk_boundaries(data)
    sizes = np.diff([0, *ends])
    assert ends[-1] == len(data)
    assert sizes[:-1].min() >= xethash.MIN_CHUNK_SIZE
    assert sizes.max() <= xethash.MAX_CHUNK_SIZE
    assert (sizes == xethash.MAX_CHUNK_SIZE).sum() >= 500_000 // xethash.MAX_CHUNK_SIZE - 1
    # Content-defined: most chunks are neither at the minimum nor at the maximum.
    assert 20 < len(ends) < 100


def test_chunking_does_not_depend_on_how_the_stream_is_read() -> None:
    data = _random_bytes(1_500_000, 9)
    whole = [len(chunk) for chunk in xethash.iter_chunks(io.BytesIO(data), block_size=len(data) + 1)]
    for block_size in (4097, 65_536, 100_003):
        pieces = [len(chunk) for chunk in xethash.iter_chunks(io.BytesIO(data), block_size=block_size)]
        assert pieces == whole, block_size


def test_an_edit_moves_only_nearby_chunk_boundaries() -> None:
    data = _random_bytes(2_000_000, 10)
    edited = data[:1_000_000] + b"inserted bytes" + data[1_000_000:]
    before = set(xethash.chunk_boundaries(data))
    after = {end - 14 for end in xethash.chunk_boundaries(edited) if end > 1_000_000}
    after |= {end for end in xethash.chunk_boundaries(edited) if end <= 1_000_000}
    assert len(before - after) <= 2


def test_hex_form_reverses_each_eight_byte_word() -> None:
    digest = bytes(range(32))
    text = xethash.hash_hex(digest)
    assert text[:16] == "0706050403020100"
    assert xethash.hash_from_hex(text) == digest
    with pytest.raises(ValueError):
        xethash.hash_from_hex("zz" * 32)
    with pytest.raises(ValueError):
        xethash.hash_from_hex("00" * 31)


def test_xorb_hash_of_one_chunk_is_one_merge_of_it() -> None:
    chunk = b"some chunk"
    node = (xethash.chunk_hash(chunk), len(chunk))
    # A single leaf is its own root: the xorb hash of one chunk is the chunk hash.
    assert xethash.xorb_hash([node]) == node[0]
    two = [node, (xethash.chunk_hash(b"other"), 5)]
    assert xethash.xorb_hash(two) == xethash.merge_nodes(two)[0]
    assert xethash.xorb_hash([]) == xethash.ZERO_HASH
