"""The case a downstream cell proves, so that repos of the same case can share it.

A cell (one transformers release in one environment column, hubfuse/check/downstream.py) depends
on the release, the column and the case: the model class, the key names modulo layer index, the
shapes and dtypes of the tensors the family converts, and the config fields the family reads (its
own statement in its plugin, hubfuse/check/families/). The case is derived only from what hubfuse already
read and validated: config.json and the safetensors headers. Its digest (of a canonical JSON) keys
the cell; the case itself is stored beside the cell, so a reader can see what was compared.

No case, so no sharing, where hubfuse cannot show two repos to be the same: remote code (the
model class is the repo's own), no fused module, or a fused module whose tensors the headers lack.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from hubfuse.check.families import PLUGINS
from hubfuse.checkpoint import Checkpoint
from hubfuse.safetensors_header import TensorLocation

CASE_FORMAT = 1
LAYER_PLACEHOLDER = "#"
# What the cells are made of: a change to any of these files is another probe, so cells an older
# probe proved never count. The environment modules are those envs.py was split into.
PROBE_FILES = (
    "downstream_probe.py",
    "probe_host.py",
    "probe_launch.py",
    "transformers_fusion.py",
    "downstream.py",
    "envs.py",
    "envs_root.py",
    "env_commands.py",
    "uv.py",
    "shared_torch.py",
    "releases.py",
)
_ABSENT = "<absent>"


@dataclass(frozen=True)
class CellCase:
    case: dict[str, Any]

    @property
    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.case).encode()).hexdigest()


def canonical_json(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_name_modulo_layer(name: str) -> str:
    """`model.layers.12.mlp.up.weight` -> `model.layers.#.mlp.up.weight`."""
    return ".".join(LAYER_PLACEHOLDER if part.isdigit() else part for part in name.split("."))


def touched_tensor_names(
    family: str, fused_modules: list[str] | dict[str, str], names: list[str]
) -> list[str]:
    """Checkpoint keys that feed the fused modules: each module's last name plus a converted parameter.

    Matched on the module's tail, as targeted mode matches them (the checkpoint may carry another
    prefix than the model, e.g. a legacy `visual.` for `model.visual.`).
    """
    parameters = PLUGINS[family].touched_parameters
    touched: set[str] = set()
    for path in fused_modules:
        tail = path.rsplit(".", 1)[-1]
        wanted = "|".join(re.escape(f"{tail}.{p}") for p in parameters)
        pattern = re.compile(rf"(^|\.)({wanted})$")
        touched.update(name for name in names if pattern.search(name))
    return sorted(touched)


def _config_fields(config: dict[str, Any], family: str) -> dict[str, Any]:
    """The family's fields where its conversion reads them (its section if the config has one),
    and the same names at the top level too: whichever a release reads, a difference shows."""
    verifier = PLUGINS[family]
    section = config.get(verifier.config_section) if verifier.config_section else None
    places = {"top": config}
    if isinstance(section, dict):
        places[str(verifier.config_section)] = section
    return {
        place: {name: values.get(name, _ABSENT) for name in verifier.config_fields}
        for place, values in places.items()
    }


def case_for(
    checkpoint: Checkpoint,
    family: str,
    fused_modules: list[str] | dict[str, str],
    tensors: dict[str, TensorLocation],
) -> CellCase | None:
    """The case of `checkpoint` for `family` (None: hubfuse cannot show another repo to be the same)."""
    if checkpoint.trust_remote_code or family not in PLUGINS or not fused_modules:
        return None
    verifier = PLUGINS[family]
    if not verifier.touched_parameters or not verifier.config_fields:
        return None
    names = sorted(tensors)
    touched = touched_tensor_names(family, fused_modules, names)
    if not touched:
        return None
    config = checkpoint.config
    return CellCase(
        {
            "format": CASE_FORMAT,
            "family": family,
            "model_type": checkpoint.model_type,
            "architectures": config.get("architectures"),
            "fused_modules": sorted(fused_modules),
            "key_names": sorted({key_name_modulo_layer(name) for name in names}),
            "touched_tensors": {
                name: {"dtype": tensors[name].dtype, "shape": list(tensors[name].shape)} for name in touched
            },
            "config_fields": _config_fields(config, family),
            "existing_fusion_config": config.get("fusion_config", _ABSENT),
        }
    )


def probe_code_version() -> str:
    """A digest of the matrix code that makes a cell, and of the torch and Python it runs on."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in PROBE_FILES:
        path = here / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    digest.update(f"torch {metadata.version('torch')} python {sys.version_info[:2]}".encode())
    return digest.hexdigest()[:32]


def cell_key(release: str, column: str, case: CellCase, probe: str) -> dict[str, str]:
    return {"release": release, "column": column, "case": case.digest, "probe": probe}


def cell_key_digest(key: dict[str, str]) -> str:
    return hashlib.sha256(canonical_json(key).encode()).hexdigest()[:40]
