"""Open a local checkpoint folder and refuse, in one line, anything hubfuse must not run on.

Nothing here imports torch or loads weights: it reads config.json and the safetensors headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubfuse.errors import BadInputError, CheckpointError
from hubfuse.transformers_info import known_model_types

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


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


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a transformers model folder?)")
    try:
        text = config_path.read_text(encoding="utf-8")
        config = json.loads(text)
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{config_path}: not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{config_path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object, found {type(config).__name__}")
    return text, config


def _weight_files(path: Path) -> tuple[Path, ...]:
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        return tuple(safetensors)
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{path}: only pickle weights ({', '.join(pickles[:3])}); hubfuse never unpickles files, "
            "as loading them can run arbitrary code. Convert the repo to safetensors first "
            "(the Hub's safetensors conversion bot, or safetensors' convert.py) and check that."
        )
    raise CheckpointError(f"{path}: no *.safetensors weight files")


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
                f"{where}: unknown fusion family {name!r} (known: {', '.join(sorted(known))})"
            )
        if not isinstance(option, (bool, dict)):
            raise BadInputError(
                f"{where}: fusion_config[{name!r}] must be true, false or a mapping, got {type(option).__name__}"
            )


def open_checkpoint(source: str | Path, *, trust_remote_code: bool = False) -> Checkpoint:
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory (expected a model folder with config.json)")

    text, config = _read_config(path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CheckpointError(f"{path / 'config.json'}: no model_type")

    if "auto_map" in config and not trust_remote_code:
        raise BadInputError(
            f"{path}: config.json declares custom code (auto_map); rerun with --trust-remote-code "
            "only if you trust this repo's Python files"
        )
    if model_type not in known_model_types() and not trust_remote_code:
        from importlib.metadata import version

        raise BadInputError(
            f"{path}: model_type {model_type!r} is unknown to the installed transformers "
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

    weight_files = _weight_files(path)
    # Reading every header up front turns a truncated file or lying offsets into a clear error
    # before any worker loads the model.
    from hubfuse.verify import index_checkpoint

    index_checkpoint(path)

    return Checkpoint(
        path=path,
        config=config,
        config_text=text,
        model_type=model_type,
        architecture=architectures[0],
        weight_files=weight_files,
        trust_remote_code=trust_remote_code,
        existing_fusion_config=existing,
    )
