"""Facts about the installed transformers, read without importing it (and so without torch).

The CLI process only validates input and orchestrates; every model load happens in a worker.
Importing transformers' auto classes would pull in torch (seconds, hundreds of MB) just to learn
which model types exist, so the pure-data mapping module is executed on its own instead.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any


@functools.cache
def transformers_dir() -> Path | None:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _auto_mappings() -> dict[str, Any]:
    root = transformers_dir()
    path = root / "models" / "auto" / "auto_mappings.py" if root else None
    if path is not None and path.is_file():
        namespace: dict[str, Any] = {"__name__": "hubfuse._transformers_auto_mappings"}
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
        if "CONFIG_MAPPING_NAMES" in namespace:
            return namespace
    # Another layout of transformers: pay the import.
    from transformers.models.auto import configuration_auto

    return vars(configuration_auto)


def known_model_types() -> set[str]:
    return set(_auto_mappings()["CONFIG_MAPPING_NAMES"])


def modeling_modules(model_type: str) -> list[str]:
    """The model's configuration and modeling modules, for the worker's forkserver to preload."""
    root = transformers_dir()
    special = _auto_mappings().get("SPECIAL_MODEL_TYPE_TO_MODULE_NAME", {})
    name = special.get(model_type, model_type.replace("-", "_"))
    if root is None or not (root / "models" / name).is_dir():
        return []
    return [
        f"transformers.models.{name}.{kind}_{name}"
        for kind in ("configuration", "modeling")
        if (root / "models" / name / f"{kind}_{name}.py").is_file()
    ]
