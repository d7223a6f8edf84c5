"""hubfuse.checkpoint_compare and hubfuse.safetensors_header: the compare must catch every kind of damage."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hubfuse.checkpoint_compare import (
    INDEX_FILE,
    SINGLE_FILE,
    compare_checkpoints,
    compare_tensor_bytes,
    config_changes,
    files_byte_identical,
    index_checkpoint,
    read_tensor_bytes,
)
from hubfuse.errors import CheckpointError, ExitCode
from hubfuse.safetensors_header import DTYPE_BITS, read_header

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL_CHUNK = 1000  # not a divisor of any tensor size: forces several chunks and a partial last one


def make_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(64, 80, generator=generator),  # 20480 bytes: 21 chunks
        "layer.0.weight": torch.randn(32, 32, generator=generator).to(torch.bfloat16),
        "layer.0.bias": torch.randn(32, generator=generator),
        "layer.1.weight": torch.randn(16, 8, generator=generator).to(torch.bfloat16),
        "norm.weight": torch.ones(7),
    }


def save_single(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / SINGLE_FILE), metadata={"format": "pt"})
    return folder


def save_sharded(folder: Path, tensors: dict[str, torch.Tensor], shards: list[list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i, names in enumerate(shards, start=1):
        shard = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({name: tensors[name] for name in names}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard))
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return folder


def write_raw(path: Path, header: dict[str, Any] | bytes, data: bytes) -> Path:
    """A safetensors file with exactly this header and data, however wrong they are."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def entry(begin: int, end: int, shape: list[int] | None = None, dtype: str = "F32") -> dict[str, Any]:
    return {
        "dtype": dtype,
        "shape": [(end - begin) // 4] if shape is None else shape,
        "data_offsets": [begin, end],
    }


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))


def raw_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().view(torch.uint8).numpy().tobytes()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return save_single(tmp_path / "source", make_tensors())


# --- identical checkpoints --------------------------------------------------------------------


def test_identical_copy_is_bit_exact_and_byte_identical(source: Path, tmp_path: Path) -> None:
    candidate = save_single(tmp_path / "candidate", make_tensors())
    result = compare_checkpoints(source, candidate, chunk_bytes=SMALL_CHUNK)
    assert result.tensors_bit_exact
    assert result.mismatches == []
    assert result.tensors_compared == 5
    assert result.bytes_compared == sum(t.nbytes for t in make_tensors().values())
    json.dumps(result.to_dict())  # JSON-serialisable for --json
    identity = files_byte_identical(source, candidate)
    assert identity.identical
    assert [(f.name, f.identical) for f in identity.files] == [(SINGLE_FILE, True)]


def test_resharded_reordered_checkpoint_is_bit_exact_but_not_byte_identical(
    source: Path, tmp_path: Path
) -> None:
    tensors = make_tensors()
    shuffled = dict(reversed(tensors.items()))
    candidate = save_sharded(
        tmp_path / "candidate",
        shuffled,
        [["norm.weight", "embed.weight"], ["layer.1.weight", "layer.0.bias", "layer.0.weight"]],
    )
    assert compare_checkpoints(source, candidate, chunk_bytes=SMALL_CHUNK).tensors_bit_exact
    assert compare_checkpoints(candidate, source).tensors_bit_exact
    identity = files_byte_identical(source, candidate)
    assert not identity.identical
    details = {f.name: f.detail for f in identity.files}
    assert details[SINGLE_FILE] == "only in the source"
    assert details[INDEX_FILE] == "only in the candidate"
    json.dumps(identity.to_dict())


def test_files_byte_identical_reports_size_and_content_differences(source: Path, tmp_path: Path) -> None:
    other = save_single(tmp_path / "other", {**make_tensors(), "extra": torch.zeros(3)})
    [check] = files_byte_identical(source, other).files
    assert not check.identical and "sizes differ" in check.detail
    same_size = save_single(tmp_path / "same_size", make_tensors())
    flip_bit(same_size / SINGLE_FILE, (same_size / SINGLE_FILE).stat().st_size - 1)
    [check] = files_byte_identical(source, same_size, chunk_bytes=SMALL_CHUNK).files
    size = (source / SINGLE_FILE).stat().st_size
    assert not check.identical
    assert check.detail == f"first differing byte at offset {size - 1} of {size}; 1 bytes differ"


# --- damage the compare must catch ------------------------------------------------------------


@pytest.mark.parametrize("position", ["middle", "last", "first"])
def test_one_flipped_bit_is_caught(source: Path, tmp_path: Path, position: str) -> None:
    candidate = save_single(tmp_path / "candidate", make_tensors())
    location = index_checkpoint(candidate)["embed.weight"]
    offset = {"middle": location.nbytes // 2 + 3, "last": location.nbytes - 1, "first": 0}[position]
    flip_bit(location.file, location.start + offset, bit=7)
    result = compare_checkpoints(source, candidate, chunk_bytes=SMALL_CHUNK)
    assert not result.tensors_bit_exact
    [mismatch] = result.mismatches
    assert (mismatch.name, mismatch.kind) == ("embed.weight", "bytes")
    assert mismatch.detail == f"first differing byte at offset {offset} of {location.nbytes}; 1 bytes differ"


def test_differences_across_chunks_are_counted(source: Path, tmp_path: Path) -> None:
    candidate = save_single(tmp_path / "candidate", make_tensors())
    location = index_checkpoint(candidate)["embed.weight"]
    for offset in (1500, 1501, 9999, 20479):
        flip_bit(location.file, location.start + offset)
    [mismatch] = compare_checkpoints(source, candidate, chunk_bytes=SMALL_CHUNK).mismatches
    assert mismatch.detail == "first differing byte at offset 1500 of 20480; 4 bytes differ"


@pytest.mark.parametrize("chunk_bytes", [SMALL_CHUNK, 2**20])
def test_damage_at_a_tensor_boundary_is_blamed_on_the_right_tensors(
    source: Path, tmp_path: Path, chunk_bytes: int
) -> None:
    candidate = save_single(tmp_path / "candidate", make_tensors())
    first, second = sorted(index_checkpoint(candidate).values(), key=lambda t: t.start)[1:3]
    flip_bit(first.file, first.end - 1)
    flip_bit(second.file, second.start)
    flip_bit(second.file, second.start + 1)
    mismatches = compare_checkpoints(source, candidate, chunk_bytes=chunk_bytes).mismatches
    assert {(m.name, m.detail) for m in mismatches} == {
        (first.name, f"first differing byte at offset {first.nbytes - 1} of {first.nbytes}; 1 bytes differ"),
        (second.name, f"first differing byte at offset 0 of {second.nbytes}; 2 bytes differ"),
    }


def test_flip_in_bf16_tensor_of_sharded_candidate(source: Path, tmp_path: Path) -> None:
    tensors = make_tensors()
    candidate = save_sharded(
        tmp_path / "candidate",
        tensors,
        [["embed.weight", "norm.weight"], ["layer.0.weight", "layer.0.bias", "layer.1.weight"]],
    )
    location = index_checkpoint(candidate)["layer.0.weight"]
    flip_bit(location.file, location.start + 100)
    [mismatch] = compare_checkpoints(source, candidate).mismatches
    assert (mismatch.name, mismatch.kind) == ("layer.0.weight", "bytes")


def test_renamed_tensor_is_missing_and_unexpected(source: Path, tmp_path: Path) -> None:
    tensors = make_tensors()
    tensors["norm.gamma"] = tensors.pop("norm.weight")
    result = compare_checkpoints(source, save_single(tmp_path / "candidate", tensors))
    assert [(m.name, m.kind) for m in result.mismatches] == [
        ("norm.gamma", "unexpected"),
        ("norm.weight", "missing"),
    ]
    assert result.tensors_compared == 4


def test_missing_tensor(source: Path, tmp_path: Path) -> None:
    tensors = make_tensors()
    del tensors["layer.0.bias"]
    result = compare_checkpoints(source, save_single(tmp_path / "candidate", tensors))
    [mismatch] = result.mismatches
    assert (mismatch.name, mismatch.kind) == ("layer.0.bias", "missing")
    assert "F32 [32]" in mismatch.detail


def test_dtype_change_with_identical_bytes_is_caught(source: Path, tmp_path: Path) -> None:
    tensors = make_tensors()
    tensors["layer.0.weight"] = tensors["layer.0.weight"].view(torch.float16)  # same bits, F16 not BF16
    candidate = save_single(tmp_path / "candidate", tensors)
    assert read_tensor_bytes(index_checkpoint(candidate)["layer.0.weight"]) == raw_bytes(
        make_tensors()["layer.0.weight"]
    )
    [mismatch] = compare_checkpoints(source, candidate).mismatches
    assert (mismatch.name, mismatch.kind, mismatch.detail) == (
        "layer.0.weight",
        "dtype",
        "source BF16, candidate F16",
    )


def test_shape_change_with_identical_bytes_is_caught(source: Path, tmp_path: Path) -> None:
    tensors = make_tensors()
    tensors["embed.weight"] = tensors["embed.weight"].reshape(80, 64)
    [mismatch] = compare_checkpoints(source, save_single(tmp_path / "candidate", tensors)).mismatches
    assert (mismatch.name, mismatch.kind, mismatch.detail) == (
        "embed.weight",
        "shape",
        "source [64, 80], candidate [80, 64]",
    )


def test_truncated_file(source: Path, tmp_path: Path) -> None:
    candidate = save_single(tmp_path / "candidate", make_tensors())
    path = candidate / SINGLE_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated") as caught:
        compare_checkpoints(source, candidate)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


# --- header validation ------------------------------------------------------------------------

DATA8 = bytes(8)
A_ENTRY = b'"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
BAD_HEADERS: dict[str, tuple[dict[str, Any] | bytes, bytes, str]] = {
    "past EOF": ({"a": entry(0, 4), "b": entry(4, 8)}, bytes(4), "truncated"),
    "offsets past EOF after a valid tensor": ({"a": entry(0, 4), "b": entry(100, 104)}, DATA8, "truncated"),
    "overlap": ({"a": entry(0, 8), "b": entry(4, 8)}, DATA8, "overlaps"),
    "gap": ({"a": entry(0, 4), "b": entry(8, 12)}, bytes(12), "belong to no tensor"),
    "trailing bytes": ({"a": entry(0, 4)}, DATA8, "trailing"),
    "not starting at 0": ({"a": entry(4, 8)}, DATA8, "belong to no tensor"),
    "size does not match shape": ({"a": entry(0, 8, shape=[1])}, DATA8, "needs 4"),
    "begin after end": ({"a": entry(8, 4, shape=[0])}, DATA8, "after end"),
    "float offsets": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]}}, DATA8, "data_offsets"),
    "bool offsets": (
        {"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}},
        bytes(1),
        "data_offsets",
    ),
    "three offsets": (
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}},
        DATA8,
        "data_offsets",
    ),
    "negative shape": ({"a": entry(0, 8, shape=[-2])}, DATA8, "shape"),
    "unknown dtype": ({"a": entry(0, 8, dtype="F31")}, DATA8, "unknown dtype 'F31'"),
    "lowercase dtype": ({"a": entry(0, 8, dtype="f32")}, DATA8, "unknown dtype"),
    "missing shape": (
        {"a": {"dtype": "F32", "data_offsets": [0, 8]}},
        DATA8,
        "dtype, shape and data_offsets",
    ),
    "odd F4 count": ({"a": entry(0, 1, shape=[1], dtype="F4")}, bytes(1), "whole number of bytes"),
    "malformed JSON": (
        b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}',
        DATA8,
        "not valid JSON",
    ),
    "trailing NUL padding": (
        b"{" + A_ENTRY + b"}\0\0",
        DATA8,
        "not valid JSON",
    ),
    "not UTF-8": (b'{"\xff": 1}', b"", "not valid JSON"),
    "JSON array": (b"[]", b"", "not an object"),
    "non-string metadata": ({"__metadata__": {"format": 1}, "a": entry(0, 8)}, DATA8, "__metadata__"),
    "duplicate tensor": (b"{" + A_ENTRY + b"," + A_ENTRY + b"}", DATA8, "twice"),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_lying_header_is_refused(tmp_path: Path, case: str) -> None:
    header, data, message = BAD_HEADERS[case]
    path = write_raw(tmp_path / "ckpt" / SINGLE_FILE, header, data)
    with pytest.raises(CheckpointError, match=message) as caught:
        index_checkpoint(path.parent)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    if case != "duplicate tensor":  # safetensors keeps the last duplicate; we refuse the ambiguity
        with pytest.raises(Exception), safe_open(str(path), framework="pt"):  # noqa: B017
            pass


GOOD_HEADERS: dict[str, tuple[dict[str, Any], bytes]] = {
    "no tensors": ({}, b""),
    "metadata only": ({"__metadata__": {"format": "pt"}}, b""),
    "null metadata": ({"__metadata__": None, "a": entry(0, 8)}, DATA8),
    "zero-size tensors sharing an offset": (
        {"a": entry(0, 0, shape=[0, 3]), "b": entry(0, 0, shape=[0]), "c": entry(0, 8)},
        DATA8,
    ),
    "scalar": ({"a": entry(0, 4, shape=[])}, bytes(4)),
    "keys out of offset order": ({"z": entry(0, 4), "a": entry(4, 8)}, DATA8),
    "unknown extra field": ({"a": {**entry(0, 8), "note": "x"}}, DATA8),
    "even F4 count": ({"a": entry(0, 1, shape=[2], dtype="F4")}, bytes(1)),
    "F6 packed": ({"a": entry(0, 3, shape=[4], dtype="F6_E2M3")}, bytes(3)),
    "complex": ({"a": entry(0, 8, shape=[1], dtype="C64")}, DATA8),
}


@pytest.mark.parametrize("case", GOOD_HEADERS)
def test_headers_safetensors_accepts_are_accepted(tmp_path: Path, case: str) -> None:
    header, data = GOOD_HEADERS[case]
    path = write_raw(tmp_path / SINGLE_FILE, header, data)
    with safe_open(str(path), framework="pt") as f:
        expected = set(f.keys())
    parsed = read_header(path)
    assert {t.name for t in parsed.tensors} == expected
    assert [t.start for t in parsed.tensors] == sorted(t.start for t in parsed.tensors)


def test_dtype_table_matches_torch_element_sizes() -> None:
    for dtype, torch_dtype in {
        "F32": torch.float32,
        "BF16": torch.bfloat16,
        "F16": torch.float16,
        "I64": torch.int64,
        "U8": torch.uint8,
        "BOOL": torch.bool,
        "F64": torch.float64,
        "C64": torch.complex64,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
    }.items():
        assert DTYPE_BITS[dtype] == torch_dtype.itemsize * 8


def test_every_dtype_safetensors_writes_is_known(tmp_path: Path) -> None:
    tensors = {
        str(d): torch.zeros(4, dtype=d)
        for d in (
            torch.float32,
            torch.bfloat16,
            torch.float16,
            torch.float64,
            torch.int8,
            torch.int16,
            torch.int32,
            torch.int64,
            torch.uint8,
            torch.uint16,
            torch.uint32,
            torch.uint64,
            torch.bool,
            torch.complex64,
            torch.float8_e4m3fn,
            torch.float8_e5m2,
            torch.float8_e4m3fnuz,
            torch.float8_e5m2fnuz,
            torch.float8_e8m0fnu,
        )
    }
    save_file(tensors, str(tmp_path / SINGLE_FILE))
    assert len(index_checkpoint(tmp_path)) == len(tensors)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 50) + b"{}", "beyond the end of the file"),
        (struct.pack("<Q", 2**40) + b"{}", "limit"),
    ],
)
def test_unreadable_prefix(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / SINGLE_FILE).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        index_checkpoint(tmp_path)


# --- checkpoint folders -----------------------------------------------------------------------


def test_sharded_index_maps_every_tensor(tmp_path: Path) -> None:
    tensors = make_tensors()
    folder = save_sharded(
        tmp_path,
        tensors,
        [["embed.weight"], ["layer.0.weight", "layer.0.bias", "layer.1.weight", "norm.weight"]],
    )
    index = index_checkpoint(folder)
    assert set(index) == set(tensors)
    assert index["embed.weight"].file.name == "model-00001-of-00002.safetensors"
    assert (index["layer.0.weight"].dtype, index["layer.0.weight"].shape) == ("BF16", (32, 32))
    for name, tensor in tensors.items():
        assert read_tensor_bytes(index[name]) == raw_bytes(tensor)


def test_missing_shard(tmp_path: Path) -> None:
    folder = save_sharded(
        tmp_path,
        make_tensors(),
        [["embed.weight"], ["layer.0.weight", "layer.0.bias", "layer.1.weight", "norm.weight"]],
    )
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard .model-00002-of-00002\.safetensors. .* is missing"):
        index_checkpoint(folder)


def edit_weight_map(folder: Path, **changes: str | None) -> None:
    index = json.loads((folder / INDEX_FILE).read_text())
    for name, shard in changes.items():
        if shard is None:
            del index["weight_map"][name]
        else:
            index["weight_map"][name] = shard
    (folder / INDEX_FILE).write_text(json.dumps(index))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ghost": "model-00001-of-00002.safetensors"}, "maps tensor 'ghost'"),
        ({"norm_weight": None}, "does not map"),
        ({"embed_weight": "model-00002-of-00002.safetensors"}, "does not hold it"),
        ({"embed_weight": "../model-00001-of-00002.safetensors"}, "outside the checkpoint folder"),
        ({"embed_weight": "/etc/passwd"}, "outside the checkpoint folder"),
    ],
)
def test_index_and_shards_must_agree(tmp_path: Path, changes: dict[str, str | None], message: str) -> None:
    tensors = {k.replace(".", "_"): v for k, v in make_tensors().items()}
    folder = save_sharded(
        tmp_path,
        tensors,
        [["embed_weight"], ["layer_0_weight", "layer_0_bias", "layer_1_weight", "norm_weight"]],
    )
    edit_weight_map(folder, **changes)
    with pytest.raises(CheckpointError, match=message):
        index_checkpoint(folder)


def test_malformed_index(tmp_path: Path) -> None:
    folder = save_sharded(tmp_path, make_tensors(), [list(make_tensors())])
    (folder / INDEX_FILE).write_text('{"weight_map": ')
    with pytest.raises(CheckpointError, match="shard index"):
        index_checkpoint(folder)
    (folder / INDEX_FILE).write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="weight_map"):
        index_checkpoint(folder)


def test_loose_safetensors_files_without_index(tmp_path: Path) -> None:
    tensors = make_tensors()
    save_file({"embed.weight": tensors["embed.weight"]}, str(tmp_path / "a.safetensors"))
    save_file({"norm.weight": tensors["norm.weight"]}, str(tmp_path / "b.safetensors"))
    assert set(index_checkpoint(tmp_path)) == {"embed.weight", "norm.weight"}
    save_file({"norm.weight": tensors["norm.weight"]}, str(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match="stored twice"):
        index_checkpoint(tmp_path)


def test_single_file_wins_over_index_like_transformers(tmp_path: Path) -> None:
    save_sharded(tmp_path, make_tensors(), [["embed.weight"], ["norm.weight"]])  # an incomplete stray index
    save_single(tmp_path, make_tensors())
    assert set(index_checkpoint(tmp_path)) == set(make_tensors())


def test_no_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        index_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such directory"):
        index_checkpoint(tmp_path / "absent")


# --- single tensors ---------------------------------------------------------------------------


def test_compare_tensor_bytes(source: Path) -> None:
    location = index_checkpoint(source)["layer.1.weight"]
    expected = raw_bytes(make_tensors()["layer.1.weight"])
    assert compare_tensor_bytes(location, expected) is None
    damaged = bytearray(expected)
    damaged[5] ^= 0xFF
    damaged[9] ^= 0x01
    mismatch = compare_tensor_bytes(location, damaged)
    assert mismatch is not None and mismatch.kind == "bytes"
    assert mismatch.detail == f"first differing byte at offset 5 of {len(expected)}; 2 bytes differ"
    short = compare_tensor_bytes(location, expected[:-2])
    assert short is not None and short.kind == "shape"


# --- config diff ------------------------------------------------------------------------------


def test_config_changes() -> None:
    source = {
        "model_type": "vit",
        "transformers_version": "5.23.0",
        "hidden_size": 8,
        "dropout": 0.0,
        "vision_config": {"patch_size": 16, "flag": 1, "deep": {"x": [1, 2]}},
        "removed": None,
    }
    candidate = {
        "model_type": "vit",
        "transformers_version": "5.24.0",
        "hidden_size": 8,
        "dropout": 0.0,
        "vision_config": {"patch_size": 16, "flag": True, "deep": {"x": [1, 3]}},
        "fusion_config": {"patch_embeddings": True},
    }
    assert config_changes(source, candidate) == [
        "+ fusion_config = {'patch_embeddings': True}",
        "- removed = None",
        "~ transformers_version: '5.23.0' -> '5.24.0'",
        "~ vision_config.deep.x: [1, 2] -> [1, 3]",
        "~ vision_config.flag: 1 -> True",
    ]
    assert config_changes(source, json.loads(json.dumps(source))) == []
    assert config_changes({"a": float("nan")}, {"a": float("nan")}) == []


# --- memory -----------------------------------------------------------------------------------

BIG_TENSOR_BYTES = 50 * 2**20
BIG_TENSORS = 4  # ~200 MB per checkpoint

# Peak RSS comes from VmHWM, not getrusage's ru_maxrss: Linux carries the pre-exec high-water mark
# (here pytest's, with torch loaded: ~230 MB) across execve into ru_maxrss, which would make the
# child's growth read 0 whatever it does. VmHWM belongs to the new process's own address space.
MEMORY_PROBE = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from hubfuse.checkpoint_compare import compare_checkpoints

    def peak_rss() -> int:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024

    before = peak_rss()
    result = compare_checkpoints(sys.argv[1], sys.argv[2])
    print(json.dumps({"before": before, "growth": peak_rss() - before, "bytes": result.bytes_compared,
                      "mismatches": [m.name for m in result.mismatches]}))
    """
)


def write_big_checkpoint(folder: Path, damaged: bool) -> None:
    header = {}
    for i in range(BIG_TENSORS):
        begin = i * BIG_TENSOR_BYTES
        header[f"w{i}"] = entry(begin, begin + BIG_TENSOR_BYTES, shape=[BIG_TENSOR_BYTES])
        header[f"w{i}"]["dtype"] = "U8"
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    block = bytes(range(256)) * (2**20 // 256)
    folder.mkdir()
    with open(folder / SINGLE_FILE, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(BIG_TENSORS * BIG_TENSOR_BYTES // len(block)):
            # The damaged copy differs in every byte of its last tensor: the slow path must stay small too.
            f.write(
                bytes(reversed(block))
                if damaged and i >= (BIG_TENSORS - 1) * BIG_TENSOR_BYTES // len(block)
                else block
            )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc (Linux)")
def test_compare_memory_stays_flat(tmp_path: Path) -> None:
    write_big_checkpoint(tmp_path / "source", damaged=False)
    write_big_checkpoint(tmp_path / "candidate", damaged=True)
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tmp_path / "source"), str(tmp_path / "candidate")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    report = json.loads(completed.stdout)
    assert report["mismatches"] == [f"w{BIG_TENSORS - 1}"]
    assert report["bytes"] == BIG_TENSORS * BIG_TENSOR_BYTES
    assert report["growth"] < 100 * 2**20, f"peak RSS grew by {report['growth'] / 2**20:.0f} MiB"
