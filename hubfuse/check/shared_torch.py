"""The shared torch: every environment uses the installed torch, never a copy of its own.

A `.pth` file in each environment (`SHARED_TORCH_PTH`) puts the folder named by
`HUBFUSE_SHARED_TORCH` on its path, after its own packages; `shared_torch_environ()` sets it to a
folder of symlinks to this interpreter's torch and torch's runtime dependencies (built once per
torch install, under the environments root). An environment thus holds no path of the interpreter
that built it and stays valid when that one moves (a CI checkout, another virtual environment of
the same machine). The folder is used only while it holds exactly the links hubfuse would make.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hubfuse.check.envs_root import discard, envs_root, installed_torch, python_tag
from hubfuse.childenv import without_hub_tokens
from hubfuse.log import log

SHARED_TORCH_VAR = "HUBFUSE_SHARED_TORCH"
# One line of a .pth file that Python's site module executes at start-up (-I included).
SHARED_TORCH_PTH = (
    f"import os, sys; _p = os.environ.get({SHARED_TORCH_VAR!r}); "
    "_p and _p not in sys.path and sys.path.append(_p)\n"
)


def shared_torch_environ() -> dict[str, str]:
    """This process's environment, without Hub tokens, plus the variable that puts the shared
    torch on an environment's path."""
    return {**without_hub_tokens(), SHARED_TORCH_VAR: str(_shared_torch_dir(envs_root()))}


def _shared_torch_dir(root: Path) -> Path:
    """A folder of symlinks to the installed torch and its runtime dependencies (built once).

    Keyed by where torch is installed: two virtual environments of one machine share the envs
    root but each brings its own torch, and a moved or deleted one must never be linked to. Used
    only while it holds exactly the links hubfuse would make (it goes on every probe's path);
    anything else at that name is moved aside and rebuilt.
    """
    torch_home = str(Path(str(metadata.distribution("torch").locate_file(""))).resolve())
    digest = hashlib.sha256(torch_home.encode()).hexdigest()[:10]
    target = root / f"shared-torch-{installed_torch()}-{python_tag()}-{digest}"
    links = _shared_torch_links()
    if _holds_exactly(target, links):
        return target
    root.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        log.warning(f"  {target.name} does not hold the links hubfuse makes: replacing it")
        discard(target, root)
    building = Path(tempfile.mkdtemp(prefix=".building-shared-", dir=root))
    for name, entry in links.items():
        (building / name).symlink_to(entry)
    (building / ".complete").touch()
    try:
        building.rename(target)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return target


@functools.cache
def _shared_torch_links() -> dict[str, str]:
    """name -> what it links to: torch's and its runtime dependencies' top-level entries."""
    links: dict[str, str] = {}
    for dist in _with_dependencies("torch"):
        for entry in sorted(_top_level_entries(dist)):
            links.setdefault(entry.name, str(entry))
    return links


def _holds_exactly(folder: Path, links: dict[str, str]) -> bool:
    try:
        if folder.is_symlink() or not (folder / ".complete").is_file():
            return False
        names = {path.name for path in folder.iterdir()} - {".complete"}
        cache = folder / "__pycache__"  # written by Python for the linked top-level modules
        if cache.exists() and not cache.is_symlink() and cache.is_dir():
            names.discard("__pycache__")
        return names == set(links) and all(os.readlink(folder / name) == links[name] for name in names)
    except OSError:
        return False


def _with_dependencies(name: str) -> list[metadata.Distribution]:
    environment = {k: str(v) for k, v in default_environment().items()}
    found: dict[str, metadata.Distribution] = {}
    pending = [name]
    while pending:
        current = canonicalize_name(pending.pop())
        if current in found:
            continue
        try:
            dist = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            continue
        found[current] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                pending.append(requirement.name)
    return list(found.values())


def _top_level_entries(dist: metadata.Distribution) -> set[Path]:
    """The distribution's files and folders directly in site-packages (its dist-info included)."""
    base = Path(str(dist.locate_file(""))).resolve()
    entries = set()
    for file in dist.files or []:
        parts = Path(str(file)).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        entries.add(base / parts[0])
    return {entry for entry in entries if entry.exists()}
