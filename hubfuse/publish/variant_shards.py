"""A fused variant of a huge repo, shard by shard, never holding the model.

Targeted mode verified the fused layout on the structural twin, which holds the real touched
tensors; its fused-layout save therefore holds their real fused bytes. The variant is the source
repo with only that difference:

- a shard holding a touched tensor is rewritten: same tensors in the same order, the touched ones
  replaced by their fused form (name, shape, bytes from the twin's verified save), every other
  tensor's bytes streamed from the source by range requests;
- every other shard is the source's own file: a server-side copy from the pinned source revision
  (`hubfuse.publish.variant_copies`), streamed through only where the Hub refuses the copy.

Each file is uploaded as soon as it is written and deleted before the next one starts, so the disk
holds at most one shard (two counting a streamed one being uploaded), and one commit references
them all at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubfuse.checkpoint_compare import INDEX_FILE
from hubfuse.errors import BadInputError
from hubfuse.log import log
from hubfuse.publish.variant_copies import STREAM_CHUNK_BYTES, TransferStats, VariantTransfer
from hubfuse.safetensors_header import read_header
from hubfuse.source import RemoteSource, WeightFile


def variant_operations(
    source: RemoteSource, transfer: VariantTransfer, artifacts: Path, work: Path
) -> list[Any]:
    """Commit operations for the variant's weights and index (uploaded already where needed)."""
    from huggingface_hub import CommitOperationAdd

    plan = json.loads((artifacts / "variant.json").read_text())
    if not plan["streamable"]:
        raise BadInputError(
            f"{source.label}: the fused layout changes more than the touched tensors "
            f"({', '.join(plan['other_changes'][:3])}); publish this variant with --mode full"
        )
    fused = _fused_tensors(artifacts / "twin-fused", plan)
    touched = set(plan["touched"])
    tensors = source.tensors()
    weight_map: dict[str, str] = {}
    operations: list[Any] = []
    stats = transfer.stats
    for weight_file in source.weight_files():
        stats.shards += 1
        names = source.names_in(weight_file.name)
        if touched & set(names):
            path = _rewrite_shard(source, weight_file, names, touched, fused, work, stats)
            new_names = [fused[n][0] if n in fused else n for n in names]
            addition = transfer.rewritten(weight_file.name, path)
            stats.rewritten += 1
        else:
            new_names = names
            addition = transfer.untouched(weight_file.name)
        operations.append(addition)
        weight_map.update({name: weight_file.name for name in new_names})
    if len(source.weight_files()) > 1:
        total = sum(loc.nbytes for _, loc in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        operations.append(CommitOperationAdd(INDEX_FILE, (json.dumps(index, indent=2) + "\n").encode()))
    return operations


def _fused_tensors(
    twin_fused: Path, plan: dict[str, Any]
) -> dict[str, tuple[str, str, list[int], Path, int, int]]:
    """touched source name -> (fused name, dtype, shape, file, start, end) from the twin's fused save."""
    located = {
        t.name: t for path in sorted(twin_fused.glob("*.safetensors")) for t in read_header(path).tensors
    }
    result = {}
    for fused_name in plan["fused"]:
        sources = [n for n in plan["touched"] if _same_parameter(fused_name, n)]
        location = located.get(fused_name)
        if location is None or len(sources) != 1:
            raise BadInputError(f"the twin's fused save does not pair {fused_name} with one touched tensor")
        result[sources[0]] = (
            fused_name,
            location.dtype,
            list(location.shape),
            location.file,
            location.start,
            location.end,
        )
    if set(result) != set(plan["touched"]):
        raise BadInputError("the twin's fused save does not cover every touched tensor")
    return result


def _same_parameter(fused_name: str, source_name: str) -> bool:
    """`x.patch_embed.linear_proj.weight` and `[prefix.]x.patch_embed.proj.weight`: one module's
    parameter before and after fusion (a legacy prefix may differ)."""
    fused_module, _, fused_param = fused_name.rpartition(".")
    source_module, _, source_param = source_name.rpartition(".")
    a, b = fused_module.rpartition(".")[0], source_module.rpartition(".")[0]
    return fused_param == source_param and (a == b or a.endswith("." + b) or b.endswith("." + a))


def _rewrite_shard(
    source: RemoteSource,
    weight_file: WeightFile,
    names: list[str],
    touched: set[str],
    fused: dict[str, tuple[str, str, list[int], Path, int, int]],
    work: Path,
    stats: TransferStats,
) -> Path:
    locations = {t.name: t for t in source.header(weight_file.name).tensors}
    header: dict[str, Any] = {}
    metadata = source.header(weight_file.name).metadata
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name in names:
        if name in fused:
            new_name, dtype, shape, _, start, end = fused[name]
            size = end - start
        else:
            new_name, dtype, shape, size = (
                name,
                locations[name].dtype,
                list(locations[name].shape),
                locations[name].nbytes,
            )
        header[new_name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = work / weight_file.name
    log.info(f"  rewriting {weight_file.name} ({len(touched & set(names))} fused tensors)")
    with open(path, "wb") as out:
        out.write(len(raw).to_bytes(8, "little") + raw)
        for name in names:
            if name in fused:
                _, _, _, fused_file, start, end = fused[name]
                with open(fused_file, "rb") as f:
                    f.seek(start)
                    out.write(f.read(end - start))
            else:
                location = locations[name]
                for chunk_start in range(location.start, location.end, STREAM_CHUNK_BYTES):
                    chunk_end = min(chunk_start + STREAM_CHUNK_BYTES, location.end)
                    out.write(source.read(weight_file.name, chunk_start, chunk_end))
                    stats.bytes_downloaded += chunk_end - chunk_start
    stats.peak_disk_bytes = max(stats.peak_disk_bytes, path.stat().st_size)
    return path
