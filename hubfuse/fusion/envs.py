"""Isolated environments for other transformers releases, sharing the installed torch.

One virtual environment per (transformers version, extras) under `envs_root()`, created on first
use with only transformers' required dependencies. torch is never downloaded: a `.pth` file puts
the folder named by `HUBFUSE_SHARED_TORCH` on the environment's path, after its own packages; the
caller sets it to a folder of symlinks to its own torch and torch's runtime dependencies. An
environment thus holds no path of the interpreter that built it and stays valid when that one
moves (a CI checkout, another virtual environment of the same machine). pip runs with
`torch==<installed>` as a constraint, so it never downloads torch.
An environment is built in a temporary folder and renamed into place: a killed creation never
leaves a half environment behind.

Releases are discovered from the package index (`pip index versions`, through pip's configured
index) and cached for `HUBFUSE_RELEASES_TTL_S` seconds (default a day), so a new release appearing
re-opens verdicts on the next run after the cache expires.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from hubfuse.errors import BadInputError
from hubfuse.log import log

RELEASES_TTL_S = 24 * 3600.0
SHARED_TORCH_VAR = "HUBFUSE_SHARED_TORCH"
# One line of a .pth file that Python's site module executes at start-up (-I included).
_SHARED_TORCH_PTH = (
    f"import os, sys; _p = os.environ.get({SHARED_TORCH_VAR!r}); "
    "_p and _p not in sys.path and sys.path.append(_p)\n"
)
PIP_TIMEOUT_S = 900.0
# The environment columns of the matrix: nothing optional installed, and with torchvision (the
# fusion's patching path of some releases imports every image processor, torchvision's included).
BASE_ENV = "base"
TORCHVISION_ENV = "torchvision"
ENV_EXTRAS: dict[str, tuple[str, ...]] = {BASE_ENV: (), TORCHVISION_ENV: ("torchvision",)}


class EnvError(Exception):
    """An environment could not be created; the matrix reports it as the cell's `error`."""


def envs_root() -> Path:
    configured = os.environ.get("HUBFUSE_ENVS")
    if configured:
        return Path(configured).resolve()
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "hubfuse" / "envs"


def installed_torch() -> str:
    return metadata.version("torch")


def python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


# -- releases ----------------------------------------------------------------------------------


def transformers_releases(*, refresh: bool = False) -> list[Version]:
    """Every final transformers release on the index, newest first (cached with a TTL)."""
    cache = envs_root() / "releases.json"
    ttl = float(os.environ.get("HUBFUSE_RELEASES_TTL_S", RELEASES_TTL_S))
    cached: dict[str, object] | None = None
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = None
    if cached and not refresh and time.time() - float(cached["fetched_at"]) < ttl:  # type: ignore[arg-type]
        return _versions(cached["versions"])  # type: ignore[arg-type]
    try:
        versions = _query_index()
    except EnvError as exc:
        if cached:
            log.warning(f"{exc}; using the release list cached at {cache}")
            return _versions(cached["versions"])  # type: ignore[arg-type]
        raise BadInputError(f"cannot list transformers releases: {exc}") from None
    _atomic_write(cache, json.dumps({"fetched_at": time.time(), "versions": [str(v) for v in versions]}))
    return versions


def _versions(raw: list[str]) -> list[Version]:
    parsed = []
    for text in raw:
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if not version.is_prerelease and not version.is_devrelease:
            parsed.append(version)
    return sorted(parsed, reverse=True)


def _query_index() -> list[Version]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "index",
        "versions",
        "transformers",
        "--disable-pip-version-check",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"pip index versions transformers failed: {exc}") from None
    for line in result.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            return _versions([v.strip() for v in line.split(":", 1)[1].split(",")])
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise EnvError(f"pip index versions transformers: {last}")


# -- environments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    transformers: str
    extras: tuple[str, ...]
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def env_name(transformers: str, extras: tuple[str, ...]) -> str:
    suffix = "".join(f"+{extra}" for extra in extras)
    return f"transformers-{transformers}{suffix}-torch-{installed_torch()}-{python_tag()}"


def ensure_env(transformers: str, extras: tuple[str, ...] = ()) -> tuple[Env, float | None]:
    """The environment, created if missing; the second value is the creation time (None: cached)."""
    root = envs_root()
    env = Env(transformers, extras, root / env_name(transformers, extras))
    if (env.path / "hubfuse-env.json").is_file():
        return env, None
    start = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".building-{env.path.name}-", dir=root))
    try:
        _build(building, [f"transformers=={transformers}", *extras])
        shared_mb = _link_identical_files(building, root)
        (building / "hubfuse-env.json").write_text(
            json.dumps({"transformers": transformers, "extras": list(extras), "torch": installed_torch()})
        )
        try:
            building.rename(env.path)
        except OSError:
            if not (env.path / "hubfuse-env.json").is_file():  # not a concurrent creation
                raise
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    log.info(
        f"  created {env.path.name} in {seconds:.1f} s "
        f"({disk_mb(env.path):.0f} MB, {shared_mb:.0f} MB of it hard links to other environments)"
    )
    return env, seconds


def _build(target: Path, requirements: list[str]) -> None:
    _run([sys.executable, "-m", "venv", "--without-pip", str(target)], "venv")
    site = _site_packages(target)
    (site / "hubfuse-shared-torch.pth").write_text(_SHARED_TORCH_PTH)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(f"torch=={installed_torch()}\n")
    try:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(target / "bin" / "python"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--constraint",
                constraints.name,
                *requirements,
            ],
            "pip install " + " ".join(requirements),
            # pip runs under the new interpreter: it must see the shared torch as installed.
            env=shared_torch_environ(),
        )
    finally:
        os.unlink(constraints.name)
    probe = "import importlib.metadata as m, torch; print(m.version('torch'), torch.__file__)"
    env = shared_torch_environ()
    out = _run([str(target / "bin" / "python"), "-I", "-c", probe], "torch check", env=env).split()
    if out[0] != installed_torch() or not out[1].startswith(env[SHARED_TORCH_VAR]):
        raise EnvError(f"the new environment does not use the shared torch ({' '.join(out)})")


def _link_identical_files(new: Path, root: Path) -> float:
    """Replace files identical to one in an existing environment by hard links; MB shared.

    Most of an environment (numpy, tokenizers, much of transformers itself) is byte-identical
    between releases. Environments are never modified after creation, so sharing is safe.
    """
    import filecmp

    site = _site_packages(new)
    relative = site.relative_to(new)
    others = [p / relative for p in root.glob("transformers-*") if (p / "hubfuse-env.json").is_file()]
    shared = 0
    for dirpath, _dirnames, filenames in os.walk(site):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_symlink() or path.suffix == ".pyc":
                continue
            inner = path.relative_to(site)
            size = path.stat().st_size
            for other_site in others:
                candidate = other_site / inner
                try:
                    same = candidate.stat().st_size == size and filecmp.cmp(path, candidate, shallow=False)
                except OSError:
                    continue
                if same:
                    linked = path.with_name(path.name + ".hubfuse-link")
                    os.link(candidate, linked)
                    os.replace(linked, path)
                    shared += size
                    break
    return shared / 1e6


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"{what}: {exc}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("WARNING:")]
        raise EnvError(f"{what} failed: {(lines or ['exit ' + str(result.returncode)])[-1]}")
    return result.stdout


def shared_torch_environ() -> dict[str, str]:
    """This process's environment plus the variable that puts the shared torch on an env's path."""
    return {**os.environ, SHARED_TORCH_VAR: str(_shared_torch_dir(envs_root()))}


def _shared_torch_dir(root: Path) -> Path:
    """A folder of symlinks to the installed torch and its runtime dependencies (built once).

    Keyed by where torch is installed: two virtual environments of one machine share the envs
    root but each brings its own torch, and a moved or deleted one must never be linked to.
    """
    torch_home = str(Path(str(metadata.distribution("torch").locate_file(""))).resolve())
    digest = hashlib.sha256(torch_home.encode()).hexdigest()[:10]
    target = root / f"shared-torch-{installed_torch()}-{python_tag()}-{digest}"
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-shared-", dir=root))
    for dist in _with_dependencies("torch"):
        for entry in _top_level_entries(dist):
            link = building / entry.name
            if not link.exists():
                link.symlink_to(entry)
    (building / ".complete").touch()
    try:
        building.rename(target)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
    return target


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


def disk_mb(path: Path) -> float:
    """MB the folder holds on disk, each hard-linked file once, symlinks as links (like `du`)."""
    total, seen = 0, set()
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(dirpath, filename))
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_blocks * 512
    return total / 1e6


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def extra_unavailable(extra: str) -> str | None:
    """Why an optional package cannot be installed beside the shared torch (None: it can).

    Tried once per torch version in a throwaway environment (the install and a real import), and
    remembered: PyPI's torchvision wheels are built against another torch build than a CPU one.
    """
    root = envs_root()
    record = root / f"extra-{extra}-torch-{installed_torch()}-{python_tag()}.json"
    try:
        return json.loads(record.read_text(encoding="utf-8"))["unavailable"]
    except (OSError, ValueError, KeyError):
        pass
    root.mkdir(parents=True, exist_ok=True)
    trial = Path(tempfile.mkdtemp(prefix=f".trial-{extra}-", dir=root))
    try:
        _build(trial, [extra])
        _run(
            [str(trial / "bin" / "python"), "-I", "-c", f"import {extra}; print({extra}.__version__)"],
            f"import {extra}",
            env=shared_torch_environ(),
        )
        reason = None
    except EnvError as exc:
        reason = str(exc)
    finally:
        shutil.rmtree(trial, ignore_errors=True)
    _atomic_write(record, json.dumps({"unavailable": reason, "torch": installed_torch()}))
    return reason
