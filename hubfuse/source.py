"""Where a checkpoint's bytes come from: a local folder, or a Hub repo pinned at a commit.

A `RepoSource` gives what targeted mode reads: config.json, the safetensors files with their sizes
and LFS object ids, each file's header, and byte ranges. A remote source never downloads a whole
weight file: a header costs one or two HTTP range requests, a tensor one more. Every header goes
through the strict parser in `safetensors_header`, so a lying header is refused before any load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from hubfuse.errors import BadInputError, CheckpointError, brief
from hubfuse.safetensors_header import (
    LENGTH_PREFIX_BYTES,
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorLocation,
    parse_header,
    read_header,
)
from hubfuse.verify import INDEX_FILE, SINGLE_FILE

if TYPE_CHECKING:
    from hubfuse.hub import Hub

# One request usually covers the header: the real Hub client reads the first 100 kB the same way.
_FIRST_READ_BYTES = 100_000
_REPO_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^\s@]+))?$")


@dataclass(frozen=True)
class WeightFile:
    name: str
    size: int
    oid: str | None  # the LFS sha256 where the source knows it


@dataclass
class RepoSource:
    """Base: subclasses implement `_list`, `_read` and `config_text`."""

    label: str
    bytes_read: int = 0
    _headers: dict[str, SafetensorsHeader] = field(default_factory=dict)
    _weight_map: dict[str, str] | None = None
    _tensors: dict[str, tuple[str, TensorLocation]] | None = None

    def config_text(self) -> str:
        raise NotImplementedError

    def _list(self) -> dict[str, WeightFile]:
        raise NotImplementedError

    def _read(self, name: str, start: int, end: int) -> bytes:
        raise NotImplementedError

    def read(self, name: str, start: int, end: int) -> bytes:
        data = self._read(name, start, end)
        self.bytes_read += len(data)
        return data

    def weight_files(self) -> list[WeightFile]:
        """The safetensors files transformers would load, chosen by transformers' own rule."""
        files = self._list()
        if SINGLE_FILE in files:
            return [files[SINGLE_FILE]]
        if INDEX_FILE in files:
            shards = sorted(set(self.weight_map().values()))
            absent = [s for s in shards if s not in files]
            if absent:
                raise CheckpointError(
                    f"{self.label}: {INDEX_FILE} names shard {brief(absent[0])}, which is absent"
                )
            return [files[s] for s in shards]
        found = [f for name, f in sorted(files.items()) if name.endswith(".safetensors")]
        if not found:
            raise CheckpointError(f"{self.label}: no *.safetensors weight files")
        return found

    def weight_map(self) -> dict[str, str]:
        if self._weight_map is None:
            self._weight_map = self._read_weight_map()
        return self._weight_map

    def _read_weight_map(self) -> dict[str, str]:
        try:
            document = json.loads(self.read(INDEX_FILE, 0, self._list()[INDEX_FILE].size))
            weight_map = document["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{self.label}: {INDEX_FILE} has no valid weight_map ({exc})") from exc
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{self.label}: {INDEX_FILE}: weight_map must map names to shard files")
        return weight_map

    @property
    def total_weight_bytes(self) -> int:
        return sum(f.size for f in self.weight_files())

    def header(self, name: str) -> SafetensorsHeader:
        if name not in self._headers:
            self._headers[name] = self._read_header(name)
        return self._headers[name]

    def _read_header(self, name: str) -> SafetensorsHeader:
        size = self._list()[name].size
        where = PurePosixPath(self.label) / name
        first = self.read(name, 0, min(size, _FIRST_READ_BYTES))
        if len(first) < LENGTH_PREFIX_BYTES:
            raise CheckpointError(f"{where}: only {size} bytes, too short for a safetensors file")
        header_len = int.from_bytes(first[:LENGTH_PREFIX_BYTES], "little")
        if header_len > MAX_HEADER_BYTES:
            raise CheckpointError(f"{where}: header length {header_len} is over safetensors' limit")
        if header_len > size - LENGTH_PREFIX_BYTES:
            raise CheckpointError(f"{where}: header length {header_len} is beyond the end of the file")
        raw = first[LENGTH_PREFIX_BYTES : LENGTH_PREFIX_BYTES + header_len]
        if len(raw) < header_len:
            raw += self.read(name, len(first), LENGTH_PREFIX_BYTES + header_len)
        return parse_header(raw, path=Path(str(where)), file_size=size)

    def tensors(self) -> dict[str, tuple[str, TensorLocation]]:
        """Every tensor by name: (file name, location), checked against the index like `index_checkpoint`."""
        if self._tensors is None:
            self._tensors = self._index()
        return self._tensors

    def _index(self) -> dict[str, tuple[str, TensorLocation]]:
        files = self.weight_files()
        weight_map = self.weight_map() if len(files) > 1 and INDEX_FILE in self._list() else None
        index: dict[str, tuple[str, TensorLocation]] = {}
        for weight_file in files:
            for tensor in self.header(weight_file.name).tensors:
                if tensor.name in index:
                    raise CheckpointError(
                        f"{self.label}: tensor {brief(tensor.name)} is stored twice, in "
                        f"{index[tensor.name][0]} and {weight_file.name}"
                    )
                if weight_map is not None and weight_map.get(tensor.name) != weight_file.name:
                    raise CheckpointError(
                        f"{self.label}: {weight_file.name} holds {brief(tensor.name)}, which {INDEX_FILE} "
                        "does not map there; the index and the shards disagree"
                    )
                index[tensor.name] = (weight_file.name, tensor)
        if weight_map is not None and set(weight_map) != set(index):
            absent = sorted(set(weight_map) - set(index))
            raise CheckpointError(
                f"{self.label}: {INDEX_FILE} maps {brief(absent[0])} to a shard that lacks it"
            )
        return index

    def tensor_bytes(self, name: str) -> bytes:
        file_name, location = self.tensors()[name]
        return self.read(file_name, location.start, location.end)


@dataclass
class LocalSource(RepoSource):
    folder: Path = Path()

    def config_text(self) -> str:
        return (self.folder / "config.json").read_text(encoding="utf-8")

    def _list(self) -> dict[str, WeightFile]:
        return {
            p.name: WeightFile(p.name, p.stat().st_size, None)
            for p in self.folder.iterdir()
            if p.is_file() and (p.suffix == ".safetensors" or p.name == INDEX_FILE)
        }

    def _read_header(self, name: str) -> SafetensorsHeader:
        return read_header(self.folder / name)

    def _read(self, name: str, start: int, end: int) -> bytes:
        with open(self.folder / name, "rb") as f:
            f.seek(start)
            return f.read(end - start)


@dataclass
class RemoteSource(RepoSource):
    hub: Hub | None = None
    repo_id: str = ""
    sha: str = ""
    _files: dict[str, WeightFile] | None = None

    def _hub(self) -> Hub:
        assert self.hub is not None
        return self.hub

    def config_text(self) -> str:
        text = self._hub().read_text(self.repo_id, self.sha, "config.json")
        if text is None:
            raise BadInputError(f"{self.label}: no config.json in the repo")
        return text

    def _list(self) -> dict[str, WeightFile]:
        if self._files is None:
            self._files = {
                entry.path: WeightFile(entry.path, int(entry.size), entry.lfs.sha256 if entry.lfs else None)
                for entry in self._hub().list_files(self.repo_id, self.sha)
                if "/" not in entry.path and (entry.path.endswith(".safetensors") or entry.path == INDEX_FILE)
            }
        return self._files

    def _read(self, name: str, start: int, end: int) -> bytes:
        return self._hub().read_range(self.repo_id, self.sha, name, start, end)


def parse_repo_spec(text: str) -> tuple[str, str | None] | None:
    """`ORG/MODEL[@REV]` -> (repo id, revision); None if `text` is not shaped like one."""
    match = _REPO_SPEC.match(text)
    return (match["repo"], match["rev"]) if match else None


def open_remote(hub: Hub, repo_id: str, revision: str | None) -> RemoteSource:
    """A repo pinned at the commit `revision` resolves to now; every later read uses that sha."""
    info = hub.resolve(repo_id, revision)
    sha = info.sha
    return RemoteSource(label=f"{repo_id}@{sha[:12]}", hub=hub, repo_id=repo_id, sha=sha)
