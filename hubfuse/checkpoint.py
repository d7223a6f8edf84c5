"""Open a local checkpoint folder and refuse, in one line, anything hubfuse must not run on.

Nothing here imports torch or loads weights: it reads the folder's JSON files (strictly, see
`strictjson`) and the safetensors headers. What passes is recorded as the exact list of files
hubfuse validated; model loads see only those (`stage_validated_files`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfuse import strictjson
from hubfuse.errors import BadInputError, CheckpointError, brief
from hubfuse.transformers_info import known_model_types

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files a checkpoint may carry that hubfuse never copies or publishes: code and pickles.
NEVER_COPIED_SUFFIXES = (".py", ".pyc", *PICKLE_SUFFIXES)
# Keys by which a JSON file makes transformers import the repo's own Python code.
REMOTE_CODE_KEYS = ("auto_map", "custom_pipelines")
# Besides config.json and the weights, the one file transformers reads when loading a model.
LOADED_SIDE_FILES = ("generation_config.json",)
# The files of a Hub repo that verification downloads.
WEIGHT_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "generation_config.json"]


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict[str, Any]
    config_text: str
    model_type: str
    architecture: str
    weight_files: tuple[Path, ...]
    trust_remote_code: bool = False
    existing_fusion_config: Any = field(default=None)
    # Every file a model load may read, each validated: config.json, the safetensors files (and
    # their index) hubfuse indexed, generation_config.json, and with trust_remote_code the *.py.
    validated_files: tuple[Path, ...] = ()

    @property
    def weight_bytes(self) -> int:
        """The size of the weight files (the index included) on disk."""
        return sum(path.stat().st_size for path in self.weight_files)


def read_json(path: Path) -> Any:
    """A JSON file from a checkpoint or repo, read strictly; `CheckpointError` naming it otherwise."""
    try:
        return strictjson.read_file(path)
    except strictjson.StrictJSONError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_config_text(text: str, *, where: str = "config.json") -> dict[str, Any]:
    """config.json text (e.g. as read from the Hub), parsed strictly into an object."""
    try:
        config = strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: expected a JSON object, found {type(config).__name__}")
    return config


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a transformers model folder?)")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    return config_path.read_text(encoding="utf-8"), config


def declares_remote_code(document: Any) -> str | None:
    """The first key of `document` (at any depth) that makes transformers run a repo's own code."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            found = next((key for key in REMOTE_CODE_KEYS if key in node), None)
            if found is not None:
                return found
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return None


def _screen_json_files(path: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Every JSON file in the folder parses within the strict limits and declares no custom code.

    A publish copies the tokenizer and processor files into the variant, and transformers honours
    `auto_map` in any of them: screening config.json alone would republish someone's code.
    """
    for json_path in sorted(path.glob("*.json")):
        document = config if json_path.name == "config.json" else read_json(json_path)
        key = declares_remote_code(document)
        if key is not None and not trust_remote_code:
            raise BadInputError(
                f"{path}: {json_path.name} declares custom code ({key}); rerun with --trust-remote-code "
                "only if you trust this repo's Python files"
            )


def choose_weight_layout(names: Collection[str], config: Mapping[str, Any], where: str) -> str:
    """`model.safetensors` or `model.safetensors.index.json`: the weights transformers loads from
    a checkpoint holding the files `names`, refused in one line otherwise. The one rule of both
    modes (a folder's files, or a repo's listing), decided before any weight byte is read.

    Only the two layouts transformers loads as safetensors are accepted, so that no load can go
    looking for other files (pickles) beside them.
    """
    from hubfuse.verify import INDEX_FILE, SINGLE_FILE

    if not any(name.endswith(".safetensors") for name in names):
        pickles = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(
                f"{where}: only pickle weights ({', '.join(pickles[:3])}); hubfuse never unpickles files, "
                "as loading them can run arbitrary code. Convert the repo to safetensors first "
                "(the Hub's safetensors conversion bot, or safetensors' convert.py) and check that."
            )
        raise CheckpointError(f"{where}: no *.safetensors weight files")
    if SINGLE_FILE not in names and INDEX_FILE not in names:
        found = ", ".join(sorted(name for name in names if name.endswith(".safetensors"))[:3])
        raise CheckpointError(
            f"{where}: no {SINGLE_FILE} or {INDEX_FILE} (found {found}); transformers loads only those "
            "names, so rename the file or add the index"
        )
    chosen = SINGLE_FILE if SINGLE_FILE in names else INDEX_FILE  # transformers' order
    explicit = config.get("transformers_weights")
    if explicit is not None and explicit != chosen:
        raise BadInputError(
            f"{where}/config.json: transformers_weights names {brief(explicit)}, not {chosen}, "
            "the file hubfuse verifies; remove the key or point it at that file"
        )
    return chosen


# Config keys that give a stack's number of layers (at any level: text, vision, audio configs).
LAYER_COUNT_KEYS = frozenset(
    {
        "num_hidden_layers",
        "num_layers",
        "n_layer",
        "n_layers",
        "depth",
        "encoder_layers",
        "decoder_layers",
        "num_encoder_layers",
        "num_decoder_layers",
    }
)
# A config may describe a stack the checkpoint does not store (an unused sub-model), never one
# many times deeper than the checkpoint's deepest: up to this many layers pass unexamined.
UNSTORED_LAYERS_ALLOWED = 64
_NUMBERED = re.compile(r"(?:^|\.)(\d+)(?=\.)")


def deepest_stack(tensor_names: Iterable[str]) -> int:
    """The most modules any numbered stack of the checkpoint holds (`layers.0.`, `layers.1.`: 2)."""
    stacks: dict[str, set[int]] = {}
    for name in tensor_names:
        for match in _NUMBERED.finditer(name):
            stacks.setdefault(name[: match.start()], set()).add(int(match.group(1)))
    return max((len(indices) for indices in stacks.values()), default=0)


def refuse_layers_beyond_headers(config: Mapping[str, Any], tensor_names: Iterable[str], where: str) -> None:
    """Refuse a config claiming far more layers than the headers store, before any worker builds
    the model it describes (the meta model alone grows with every layer claimed)."""
    deepest = deepest_stack(tensor_names)
    allowed = max(UNSTORED_LAYERS_ALLOWED, 2 * deepest)
    pending: list[tuple[str, Any]] = [("", config)]
    while pending:
        path, node = pending.pop()
        for key, value in node.items():
            if key in LAYER_COUNT_KEYS and type(value) is int and value > allowed:
                raise BadInputError(
                    f"{where}/config.json: {path}{key} is {value}, but no stack of numbered modules in "
                    f"the weights holds more than {deepest}; the config does not describe these weights"
                )
            if isinstance(value, dict):
                pending.append((f"{path}{key}.", value))


def validate_fusion_config(value: Any, *, where: str) -> None:
    """Apply transformers' own rules for `fusion_config` values, as one-line errors."""
    from hubfuse.fusion.families import family_names

    if not isinstance(value, dict):
        raise BadInputError(
            f"{where}: fusion_config must be a mapping of family -> true/false/options, got {type(value).__name__}"
        )
    known = family_names()
    for name, option in value.items():
        if name not in known:
            raise BadInputError(
                f"{where}: unknown fusion family {brief(name)} (known: {', '.join(sorted(known))})"
            )
        if not isinstance(option, (bool, dict)):
            raise BadInputError(
                f"{where}: fusion_config[{name!r}] must be true, false or a mapping, got {type(option).__name__}"
            )


@dataclass(frozen=True)
class CheckedConfig:
    text: str
    config: dict[str, Any]
    model_type: str
    architecture: str
    existing_fusion_config: Any


def read_checked_config(path: Path, *, trust_remote_code: bool = False) -> CheckedConfig:
    """config.json (and the JSON files beside it) of the folder `path`, refused in one line if
    hubfuse must not run on it. Targeted mode runs this on a folder holding the repo's config."""
    text, config = _read_config(path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CheckpointError(f"{path / 'config.json'}: no model_type")

    _screen_json_files(path, config, trust_remote_code)
    if model_type not in known_model_types() and not trust_remote_code:
        from importlib.metadata import version

        raise BadInputError(
            f"{path}: model_type {brief(model_type)} is unknown to the installed transformers "
            f"{version('transformers')}; upgrade transformers or check config.json"
        )

    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures or not isinstance(architectures[0], str):
        raise CheckpointError(f"{path / 'config.json'}: no architectures list naming the model class")

    existing = config.get("fusion_config")
    if existing is not None:
        try:
            validate_fusion_config(existing, where=f"{path / 'config.json'}")
        except BadInputError as exc:
            raise BadInputError(
                f"{exc} -- this already breaks every plain from_pretrained of this model"
            ) from exc
    return CheckedConfig(text, config, model_type, architectures[0], existing)


def open_checkpoint(source: str | Path, *, trust_remote_code: bool = False) -> Checkpoint:
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a model folder with config.json)")

    checked = read_checked_config(path, trust_remote_code=trust_remote_code)
    names = {entry.name for entry in path.iterdir() if entry.is_file()}
    chosen = choose_weight_layout(names, checked.config, str(path))
    weight_files = _validated_weight_files(path, chosen, checked.config)

    return Checkpoint(
        path=path,
        config=checked.config,
        config_text=checked.text,
        model_type=checked.model_type,
        architecture=checked.architecture,
        weight_files=weight_files,
        trust_remote_code=trust_remote_code,
        existing_fusion_config=checked.existing_fusion_config,
        validated_files=(
            path / "config.json",
            *weight_files,
            *(path / name for name in LOADED_SIDE_FILES if (path / name).is_file()),
            *(sorted(path.glob("*.py")) if trust_remote_code else ()),
        ),
    )


def _validated_weight_files(path: Path, chosen: str, config: dict[str, Any]) -> tuple[Path, ...]:
    """The weight files transformers will load, every header read and checked.

    Reading every header up front turns a truncated file or lying offsets into a clear error
    before any worker loads the model.
    """
    from hubfuse.verify import INDEX_FILE, index_checkpoint

    index = index_checkpoint(path)
    if not index:
        raise CheckpointError(f"{path}: the checkpoint holds no tensors")
    refuse_layers_beyond_headers(config, index, str(path))
    files = {tensor.file for tensor in index.values()}
    if chosen == INDEX_FILE:
        files.add(path / INDEX_FILE)
    return tuple(sorted(files))


def stage_validated_files(checkpoint: Checkpoint, target: Path) -> Path:
    """`target`, a folder of links to exactly the files hubfuse validated: what every load reads.

    transformers picks its weight files itself (and falls back to `pytorch_model.bin`, unpickled
    with torch.load, when it finds no safetensors it recognises); a folder holding nothing else
    leaves it no other choice.
    """
    target.mkdir(parents=True, exist_ok=True)
    for path in checkpoint.validated_files:
        link = target / path.relative_to(checkpoint.path)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), link)
    return target
