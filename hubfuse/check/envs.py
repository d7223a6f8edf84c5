"""Isolated environments for other transformers releases, sharing the installed torch.

One virtual environment per (transformers version, extras, requirements left out) under
`envs_root()` (hubfuse/check/envs_root.py), created on first use with only transformers' required
dependencies, by uv (`uv venv` + `uv pip install`, hubfuse/check/uv.py: one cache, files
hard-linked, torch excluded). Each environment gets the installed torch through a `.pth` file
(hubfuse/check/shared_torch.py), never a copy. The releases themselves are listed by
hubfuse/check/releases.py.

An environment is built in a temporary folder and renamed into place: a killed creation never
leaves a half environment behind. It is trusted only through the build record hubfuse wrote
(`hubfuse-build.json`, equal to what `ensure_env` would build, and its interpreter the one that
built it), never through a folder's mere presence, and the environments root is refused when
another user can write it or a folder above it.

A release whose required dependency the index cannot satisfy raises `RequirementUnavailable`
naming it; `ensure_env(..., without=(name,))` then builds the honest stand-in: that release with
the named requirement left out, said so in its name and record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hubfuse.check.env_commands import EnvError, run_command
from hubfuse.check.envs_root import atomic_write, discard, envs_root, installed_torch, python_tag
from hubfuse.check.shared_torch import SHARED_TORCH_PTH, SHARED_TORCH_VAR, shared_torch_environ
from hubfuse.check.uv import RequirementUnavailable, uv_binary, uv_environ, uv_install
from hubfuse.log import log

BUILD_RECORD = "hubfuse-build.json"
RECORD_FORMAT = 2  # environments of the pip era (format 1) are never reused
# The environment columns of the matrix: nothing optional installed, and with torchvision (the
# fusion's patching path of some releases imports every image processor, torchvision's included).
BASE_ENV = "base"
TORCHVISION_ENV = "torchvision"
ENV_EXTRAS: dict[str, tuple[str, ...]] = {BASE_ENV: (), TORCHVISION_ENV: ("torchvision",)}


@dataclass(frozen=True)
class Env:
    transformers: str
    extras: tuple[str, ...]
    path: Path
    without: tuple[str, ...] = ()  # requirements of the release left out (an honest stand-in)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def env_name(transformers: str, extras: tuple[str, ...], without: tuple[str, ...] = ()) -> str:
    suffix = "".join(f"-without-{name}" for name in without) + "".join(f"+{extra}" for extra in extras)
    return f"env-transformers-{transformers}{suffix}-torch-{installed_torch()}-{python_tag()}"


def _base_interpreter() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _expected_record(
    transformers: str, extras: tuple[str, ...], without: tuple[str, ...]
) -> dict[str, object]:
    return {
        "format": RECORD_FORMAT,
        "transformers": transformers,
        "extras": list(extras),
        "without": list(without),
        "torch": installed_torch(),
        "python": _base_interpreter(),
    }


def build_record(env: Env) -> dict[str, object] | None:
    """The record hubfuse wrote when it built `env`, if the folder holds exactly that."""
    record_file = env.path / BUILD_RECORD
    try:
        if record_file.is_symlink():
            return None
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    expected = _expected_record(env.transformers, env.extras, env.without)
    if {key: record.get(key) for key in expected} != expected:
        return None
    if os.path.realpath(env.python) != expected["python"]:  # a planted interpreter
        return None
    return record


def _normalized(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({canonicalize_name(name) for name in names}))


def planned_env(transformers: str, extras: tuple[str, ...] = (), without: Iterable[str] = ()) -> Env:
    """The environment `ensure_env` builds for these arguments (it may not exist yet)."""
    left_out = _normalized(without)
    return Env(transformers, extras, envs_root() / env_name(transformers, extras, left_out), left_out)


def ensure_env(
    transformers: str, extras: tuple[str, ...] = (), *, without: Iterable[str] = ()
) -> tuple[Env, float | None]:
    """The environment, created if missing; the second value is the creation time (None: cached).

    `without`: requirement names of the release to leave out (the stand-in for a release whose
    requirement the index lacks). Raises RequirementUnavailable when the release needs what the
    index cannot satisfy, EnvError on any other failure.
    """
    env = planned_env(transformers, extras, without)
    left_out, root = env.without, envs_root()
    if build_record(env) is not None:
        return env, None
    start = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if env.path.exists() or env.path.is_symlink():
        log.warning(f"  {env.path.name} was not built by hubfuse (no matching build record): replacing it")
        discard(env.path, root)
    building = Path(tempfile.mkdtemp(prefix=f".building-{env.path.name}-", dir=root))
    try:
        dropped = _build(building, transformers, extras, left_out)
        record = {**_expected_record(transformers, extras, left_out), "left_out": dropped}
        (building / BUILD_RECORD).write_text(json.dumps(record))
        try:
            building.rename(env.path)
        except OSError:
            if build_record(env) is None:  # not a concurrent creation
                raise
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    log.info(
        f"  created {env.path.name} in {seconds:.1f} s ({disk_mb(env.path):.0f} MB, hard-linked from the uv cache)"
    )
    return env, seconds


def _build(target: Path, transformers: str, extras: tuple[str, ...], without: tuple[str, ...]) -> list[str]:
    """A new environment at `target` (an empty folder); the requirement strings left out."""
    run_command(
        [uv_binary(), "venv", "--quiet", "--no-config", "--python", sys.executable, str(target)],
        "uv venv",
        env=uv_environ(),
    )
    (_site_packages(target) / "hubfuse-shared-torch.pth").write_text(SHARED_TORCH_PTH)
    python = target / "bin" / "python"
    if transformers:
        dropped = install_release(python, transformers, extras, without)
    else:  # a trial of the extras alone (extra_unavailable)
        dropped = []
        uv_install(python, list(extras), "uv pip install " + " ".join(extras))
    probe = "import importlib.metadata as m, torch; print(m.version('torch'), torch.__file__)"
    env = shared_torch_environ()
    out = run_command([str(python), "-I", "-c", probe], "torch check", env=env).split()
    if out[0] != installed_torch() or not out[1].startswith(env[SHARED_TORCH_VAR]):
        raise EnvError(f"the new environment does not use the shared torch ({' '.join(out)})")
    return dropped


def install_release(
    python: Path,
    transformers: str,
    extras: tuple[str, ...] = (),
    without: Iterable[str] = (),
    constraints: Iterable[Path] = (),
) -> list[str]:
    """Install transformers==`transformers` (and `extras`) into `python`'s environment with uv.

    Without `without`: everything it requires, or RequirementUnavailable naming the requirement
    the index cannot satisfy. With it: transformers without its dependencies, then every other
    requirement it declares; returns the requirement strings left out. `constraints`: more
    constraint files (scripts/setup-newest.sh pins hubfuse's own test dependencies).
    """
    left_out = set(_normalized(without))
    release = f"transformers=={transformers}"
    what = f"uv pip install {release}"
    if not left_out:
        uv_install(python, [release, *extras], " ".join([what, *extras]), constraints, transformers)
        return []
    uv_install(python, [release], what + " --no-deps", constraints, transformers, "--no-deps")
    kept, dropped = [], []
    for text in _declared_requirements(python, "transformers"):
        (dropped if canonicalize_name(Requirement(text).name) in left_out else kept).append(text)
    missing = left_out - {canonicalize_name(Requirement(text).name) for text in dropped}
    if missing:
        raise EnvError(f"transformers {transformers} does not require {', '.join(sorted(missing))}")
    if kept or extras:
        uv_install(python, [*kept, *extras], f"{what}'s other requirements", constraints, transformers)
    return dropped


def install_leaving_out_unavailable(
    python: Path, transformers: str, constraints: Iterable[Path] = ()
) -> list[str]:
    """install_release, leaving out each requirement the index cannot satisfy; those returned."""
    without: list[str] = []
    while True:
        try:
            return install_release(python, transformers, (), without, constraints)
        except RequirementUnavailable as exc:
            if exc.name in without:
                raise
            without.append(exc.name)


def _declared_requirements(python: Path, name: str) -> list[str]:
    """What an installed distribution requires unconditionally (no extras) on this platform."""
    environment = {k: str(v) for k, v in default_environment().items()}
    dist = next(iter(metadata.distributions(name=name, path=[str(_site_packages(python.parent.parent))])))
    required = []
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
            required.append(text)
    return required


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


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
        _build(trial, "", (extra,), ())
        run_command(
            [str(trial / "bin" / "python"), "-I", "-c", f"import {extra}; print({extra}.__version__)"],
            f"import {extra}",
            env=shared_torch_environ(),
        )
        reason = None
    except EnvError as exc:
        reason = str(exc)
    finally:
        shutil.rmtree(trial, ignore_errors=True)
    atomic_write(record, json.dumps({"unavailable": reason, "torch": installed_torch()}))
    return reason
