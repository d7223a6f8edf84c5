"""Where a checkpoint's bytes come from: a local folder, or a Hub repo pinned at a commit.

A `RepoSource` gives what targeted mode reads: config.json, the safetensors files with their sizes
and LFS object ids, each file's header, and byte ranges. A remote source never downloads a whole
weight file: a header costs one or two HTTP range requests, a tensor one more. Every header goes
through the strict parser in `safetensors_header`, so a lying header is refused before any load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from hubfuse import strictjson
from hubfuse.checkpoint import choose_weight_layout, read_config_text, refuse_layers_beyond_headers
from hubfuse.checkpoint_compare import INDEX_FILE, SINGLE_FILE, parse_weight_map
from hubfuse.errors import BadInputError, CheckpointError, brief
from hubfuse.safetensors_header import (
    LENGTH_PREFIX_BYTES,
    MAX_HEADER_BYTES,
    HeaderBudget,
    SafetensorsHeader,
    TensorLocation,
    parse_header,
    read_header,
)

if TYPE_CHECKING:
    from hubfuse.hub import Hub

# One request usually covers the header: the real Hub client reads the first 100 kB the same way.
_FIRST_READ_BYTES = 100_000
# What a full check downloads of a repo: everything a load reads, no code, no pickles.
WEIGHT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "generation_config.json"]
_REPO_SPEC = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^\s@]+))?$")


@dataclass(frozen=True)
class WeightFile:
    name: str
    size: int
    oid: str | None  # the LFS sha256 where the source knows it


@dataclass
class RepoSource:
    """Base: subclasses implement `_listing`, `_read` and `_fetch_config_text`."""

    label: str
    bytes_read: int = 0
    _headers: dict[str, SafetensorsHeader] = field(default_factory=dict)
    _weight_map: dict[str, str] | None = None
    _tensors: dict[str, tuple[str, TensorLocation]] | None = None
    _config_text: str | None = None
    _config: dict[str, Any] | None = None

    def _listing(self) -> dict[str, WeightFile]:
        """Every file at the top of the checkpoint, with its size: what a choice is made from."""
        raise NotImplementedError

    def _fetch_config_text(self) -> str:
        raise NotImplementedError

    def _read(self, name: str, start: int, end: int) -> bytes:
        raise NotImplementedError

    def _list(self) -> dict[str, WeightFile]:
        return {
            name: entry
            for name, entry in self._listing().items()
            if name.endswith(".safetensors") or name == INDEX_FILE
        }

    def read(self, name: str, start: int, end: int) -> bytes:
        data = self._read(name, start, end)
        self.bytes_read += len(data)
        return data

    def refuse_oversized_json(self, patterns: Iterable[str] = ("*.json",)) -> None:
        """Every JSON file matching `patterns` must fit the strict reader: refused from the
        listing, before a byte of it is fetched."""
        patterns = list(patterns)
        for name, entry in sorted(self._listing().items()):
            wanted = name.endswith(".json") and any(fnmatch(name, p) for p in patterns)
            if wanted and entry.size > strictjson.MAX_BYTES:
                raise CheckpointError(
                    f"{self.label}/{name}: is {entry.size} bytes, over the {strictjson.MAX_BYTES}-byte "
                    "limit of every JSON hubfuse reads"
                )

    def config_text(self) -> str:
        if self._config_text is None:
            if "config.json" not in self._listing():
                raise BadInputError(f"{self.label}: no config.json in the repo")
            self.refuse_oversized_json(["config.json"])
            self._config_text = self._fetch_config_text()
        return self._config_text

    def config(self) -> dict[str, Any]:
        """config.json, parsed strictly (the checks of `read_checked_config` come on top)."""
        if self._config is None:
            self._config = read_config_text(self.config_text(), where=f"{self.label}/config.json")
        return self._config

    def weight_files(self) -> list[WeightFile]:
        """The safetensors files transformers would load, by full mode's own rule."""
        files = self._listing()
        if choose_weight_layout(files, self.config(), self.label) == SINGLE_FILE:
            return [files[SINGLE_FILE]]
        shards = sorted(set(self.weight_map().values()))
        absent = [s for s in shards if s not in files]
        if absent:
            raise CheckpointError(
                f"{self.label}: {INDEX_FILE} names shard {brief(absent[0])}, which is absent"
            )
        return [files[s] for s in shards]

    def weight_map(self) -> dict[str, str]:
        if self._weight_map is None:
            self.refuse_oversized_json([INDEX_FILE])
            data = self.read(INDEX_FILE, 0, self._listing()[INDEX_FILE].size)
            self._weight_map = parse_weight_map(data, f"{self.label}/{INDEX_FILE}")
        return self._weight_map

    @property
    def total_weight_bytes(self) -> int:
        return sum(f.size for f in self.weight_files())

    def header(self, name: str) -> SafetensorsHeader:
        """One file's header, kept: for the few files a variant rewrites (indexing keeps none)."""
        if name not in self._headers:
            self._headers[name] = self._read_header(name)
        return self._headers[name]

    def _read_header(self, name: str, budget: HeaderBudget | None = None) -> SafetensorsHeader:
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
        if budget is not None:
            budget.spend_header(name, header_len)
        raw = first[LENGTH_PREFIX_BYTES : LENGTH_PREFIX_BYTES + header_len]
        if len(raw) < header_len:
            raw += self.read(name, len(first), LENGTH_PREFIX_BYTES + header_len)
        return parse_header(raw, path=Path(str(where)), file_size=size)

    def tensors(self) -> dict[str, tuple[str, TensorLocation]]:
        """Every tensor by name: (file name, location), checked against the index like `index_checkpoint`."""
        if self._tensors is None:
            self._tensors = self._index()
        return self._tensors

    def names_in(self, file_name: str) -> list[str]:
        """The tensors of one weight file, in the order of their bytes."""
        located = [(loc.start, name) for name, (file, loc) in self.tensors().items() if file == file_name]
        return [name for _, name in sorted(located)]

    def _index(self) -> dict[str, tuple[str, TensorLocation]]:
        files = self.weight_files()
        weight_map = self.weight_map() if len(files) > 1 and INDEX_FILE in self._list() else None
        index: dict[str, tuple[str, TensorLocation]] = {}
        # Summed over the shards and checked before each header is parsed; each parsed header is
        # dropped once its tensors are indexed.
        budget = HeaderBudget(self.label)
        for weight_file in files:
            for tensor in budget.tensors_of(self._read_header(weight_file.name, budget)):
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
        if not index:
            raise CheckpointError(f"{self.label}: the checkpoint holds no tensors")
        refuse_layers_beyond_headers(self.config(), index, self.label)
        return index

    def tensor_bytes(self, name: str) -> bytes:
        file_name, location = self.tensors()[name]
        return self.read(file_name, location.start, location.end)


@dataclass
class LocalSource(RepoSource):
    folder: Path = Path()

    def _fetch_config_text(self) -> str:
        return (self.folder / "config.json").read_text(encoding="utf-8")

    def _listing(self) -> dict[str, WeightFile]:
        return {
            p.name: WeightFile(p.name, p.stat().st_size, None) for p in self.folder.iterdir() if p.is_file()
        }

    def _read_header(self, name: str, budget: HeaderBudget | None = None) -> SafetensorsHeader:
        return read_header(self.folder / name, budget=budget)

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

    def _fetch_config_text(self) -> str:
        text = self._hub().read_text(self.repo_id, self.sha, "config.json")
        if text is None:
            raise BadInputError(f"{self.label}: no config.json in the repo")
        return text

    def _listing(self) -> dict[str, WeightFile]:
        if self._files is None:
            self._files = {
                entry.path: WeightFile(entry.path, int(entry.size), entry.lfs.sha256 if entry.lfs else None)
                for entry in self._hub().list_files(self.repo_id, self.sha)
                if "/" not in entry.path
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
