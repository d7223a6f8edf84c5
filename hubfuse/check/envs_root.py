"""The environments root: where environments, the shared torch and the caches live.

`envs_root()` is `HUBFUSE_ENVS` (default `$HF_HOME/hubfuse/envs`), refused when another user can
write it or a folder above it (`refuse_shared_folder`). Names under it carry the installed torch
and the Python (`installed_torch`, `python_tag`). hubfuse's own records there are replaced by a
rename (`atomic_write`), and a folder it does not trust is moved aside before it is deleted
(`discard`), never followed through its links.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from hubfuse import settings
from hubfuse.errors import BadInputError


def envs_root() -> Path:
    configured = settings.ENVS.value()
    if configured:
        root = Path(configured).resolve()
    else:
        from huggingface_hub import constants

        root = (Path(constants.HF_HOME) / "hubfuse" / "envs").resolve()
    refuse_shared_folder(root, "environments folder")
    return root


def refuse_shared_folder(root: Path, what: str) -> None:
    """BadInputError when another user can write `root` or a folder above it.

    Whoever can write there can plant an interpreter hubfuse would run. A folder is safe when it is
    owned by us or by root, and writable by no one else (or sticky, like /tmp: nobody can replace
    another's entries there). `root` itself, when it exists, must be ours.
    """
    me = os.geteuid()
    for folder in [root, *root.parents]:
        try:
            info = folder.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BadInputError(f"{what} {root}: cannot inspect {folder}: {exc}") from None
        owners = (me,) if folder == root else (me, 0)
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
        if info.st_uid not in owners or shared:
            raise BadInputError(
                f"{what} {root}: {folder} can be written by another user "
                f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); "
                "use a folder only you can write"
            )


def installed_torch() -> str:
    return metadata.version("torch")


def python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


def discard(path: Path, root: Path) -> None:
    """Move a folder out of the way (never following its links), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=".untrusted-", dir=root)) / path.name
    path.rename(aside)
    if aside.is_symlink():
        aside.unlink()
    shutil.rmtree(aside.parent, ignore_errors=True)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)
