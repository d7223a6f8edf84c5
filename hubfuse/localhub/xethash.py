"""The Xet file hash of a stored file, as the Hub reports it in `xetHash`.

Temporary: a thin wrapper over `hf_xet.hash_files` (hf_xet ships with huggingface_hub). The local
hub's own implementation from the Xet specification replaces it, with the same signature.
"""

from __future__ import annotations

from pathlib import Path


def xet_file_hash(path: Path) -> str:
    import hf_xet

    (info,) = hf_xet.hash_files([str(path)])
    return str(info.hash)
