"""Isolated environments for other transformers releases, sharing the installed torch.

One virtual environment per (transformers version, extras, requirements left out) under
`envs_root()`, created on first use with only transformers' required dependencies, by uv
(`uv venv` + `uv pip install`, a hubfuse dependency): one uv cache for every environment
(`UV_CACHE_DIR`, default `<envs root>/uv-cache`), files hard-linked from it, so an environment
costs seconds and little disk. torch is never downloaded: uv excludes it from the resolution (and
pins it to the installed one as a constraint), and a `.pth` file puts the folder named by
`HUBFUSE_SHARED_TORCH` on the environment's path, after its own packages; the caller sets it to a
folder of symlinks to its own torch and torch's runtime dependencies. An environment thus holds
no path of the interpreter that built it and stays valid when that one moves (a CI checkout,
another virtual environment of the same machine). uv reads none of pip's configuration, so pip's
effective index settings (`pip config list`: index, extra indexes, find-links, constraints) are
handed to it explicitly.

An environment is built in a temporary folder and renamed into place: a killed creation never
leaves a half environment behind. It is trusted only through the build record hubfuse wrote
(`hubfuse-build.json`, equal to what `ensure_env` would build, and its interpreter the one that
built it), never through a folder's mere presence, and the environments root is refused when
another user can write it or a folder above it.

A release whose required dependency the index cannot satisfy raises `RequirementUnavailable`
naming it; `ensure_env(..., without=(name,))` then builds the honest stand-in: that release with
the named requirement left out, said so in its name and record.

Releases are discovered from the package index (`pip index versions`, through pip's configured
index) and cached for `HUBFUSE_RELEASES_TTL_S` seconds (default a day), so a new release appearing
re-opens verdicts on the next run after the cache expires.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from hubfuse import settings
from hubfuse.childenv import without_hub_tokens
from hubfuse.errors import BadInputError
from hubfuse.log import log

SHARED_TORCH_VAR = "HUBFUSE_SHARED_TORCH"
# One line of a .pth file that Python's site module executes at start-up (-I included).
_SHARED_TORCH_PTH = (
    f"import os, sys; _p = os.environ.get({SHARED_TORCH_VAR!r}); "
    "_p and _p not in sys.path and sys.path.append(_p)\n"
)
INSTALL_TIMEOUT_S = 900.0
BUILD_RECORD = "hubfuse-build.json"
RECORD_FORMAT = 2  # environments of the pip era (format 1) are never reused
# The environment columns of the matrix: nothing optional installed, and with torchvision (the
# fusion's patching path of some releases imports every image processor, torchvision's included).
BASE_ENV = "base"
TORCHVISION_ENV = "torchvision"
ENV_EXTRAS: dict[str, tuple[str, ...]] = {BASE_ENV: (), TORCHVISION_ENV: ("torchvision",)}


class EnvError(Exception):
    """An environment could not be created; the matrix reports it as the cell's `error`."""


class RequirementUnavailable(EnvError):
    """The release requires something the package index cannot satisfy (it cannot be built as
    its users have it); `requirement` is that requirement as the release declares it."""

    def __init__(self, transformers: str, requirement: str) -> None:
        self.transformers, self.requirement = transformers, requirement
        super().__init__(
            f"transformers {transformers} requires {requirement}, which the package index cannot satisfy"
        )

    @property
    def name(self) -> str:
        return canonicalize_name(Requirement(self.requirement).name)


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


# -- releases ----------------------------------------------------------------------------------


def transformers_releases(*, refresh: bool = False) -> list[Version]:
    """Every final transformers release on the index, newest first (cached with a TTL)."""
    cache = envs_root() / "releases.json"
    ttl = settings.RELEASES_TTL.value()
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
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, env=without_hub_tokens()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"pip index versions transformers failed: {exc}") from None
    for line in result.stdout.splitlines():
        if line.strip().startswith("Available versions:"):
            return _versions([v.strip() for v in line.split(":", 1)[1].split(",")])
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise EnvError(f"pip index versions transformers: {last}")


# -- uv and pip's configuration ---------------------------------------------------------------


def uv_binary() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise EnvError("uv is not installed (a hubfuse dependency): pip install uv") from None


def uv_cache_dir() -> Path:
    """One cache for every environment: on the environments' file system, so files hard-link."""
    configured = settings.UV_CACHE.value()
    if not configured:
        return envs_root() / "uv-cache"
    cache = Path(configured).resolve()
    refuse_shared_folder(cache, "uv cache (UV_CACHE_DIR)")  # its files are linked into environments
    return cache


@functools.cache
def pip_configuration() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """pip's effective index settings as (uv options, uv environment variables).

    uv ignores pip's configuration files and PIP_* variables; a machine whose pip reaches extra
    indexes, local wheels or a global constraint would otherwise resolve differently under uv.
    Read once, through pip itself (`pip config list`: files and environment, as pip merges them).
    """
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=without_hub_tokens(),
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    entries: dict[str, str] = {}
    for line in listed.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        with contextlib.suppress(ValueError, SyntaxError):
            entries[key.strip()] = str(ast.literal_eval(raw.strip()))

    def value(name: str) -> str | None:  # the environment over [install] over [global]
        for section in (":env:", "install", "global"):
            if f"{section}.{name}" in entries:
                return entries[f"{section}.{name}"]
        return None

    options: list[str] = ["--index-strategy", "unsafe-best-match"]
    for name, flag in (
        ("index-url", "--index-url"),
        ("extra-index-url", "--extra-index-url"),
        ("find-links", "--find-links"),
        ("constraint", "--constraint"),
        ("trusted-host", "--allow-insecure-host"),
    ):
        for item in (value(name) or "").split():
            local = name in ("find-links", "constraint") and "://" not in item
            options += [flag, os.path.abspath(item) if local else item]  # uv runs in another folder
    if (value("no-index") or "").lower() in ("1", "true", "yes", "on"):
        options.append("--no-index")
    environ = {}
    if value("cert"):
        environ["SSL_CERT_FILE"] = str(value("cert"))
    if value("default-timeout"):
        environ["UV_HTTP_TIMEOUT"] = str(value("default-timeout"))
    return tuple(options), tuple(environ.items())


def _uv_environ() -> dict[str, str]:
    return {
        **without_hub_tokens(),
        **dict(pip_configuration()[1]),
        "UV_CACHE_DIR": str(uv_cache_dir()),
        "UV_NO_PROGRESS": "1",
    }


# -- environments ------------------------------------------------------------------------------


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


def ensure_env(
    transformers: str, extras: tuple[str, ...] = (), *, without: Iterable[str] = ()
) -> tuple[Env, float | None]:
    """The environment, created if missing; the second value is the creation time (None: cached).

    `without`: requirement names of the release to leave out (the stand-in for a release whose
    requirement the index lacks). Raises RequirementUnavailable when the release needs what the
    index cannot satisfy, EnvError on any other failure.
    """
    left_out = _normalized(without)
    root = envs_root()
    env = Env(transformers, extras, root / env_name(transformers, extras, left_out), left_out)
    if build_record(env) is not None:
        return env, None
    start = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    if env.path.exists() or env.path.is_symlink():
        log.warning(f"  {env.path.name} was not built by hubfuse (no matching build record): replacing it")
        _discard(env.path, root)
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


def _discard(path: Path, root: Path) -> None:
    """Move a folder out of the way (never following its links), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=".untrusted-", dir=root)) / path.name
    path.rename(aside)
    if aside.is_symlink():
        aside.unlink()
    shutil.rmtree(aside.parent, ignore_errors=True)


def _build(target: Path, transformers: str, extras: tuple[str, ...], without: tuple[str, ...]) -> list[str]:
    """A new environment at `target` (an empty folder); the requirement strings left out."""
    _run(
        [uv_binary(), "venv", "--quiet", "--no-config", "--python", sys.executable, str(target)],
        "uv venv",
        env=_uv_environ(),
    )
    (_site_packages(target) / "hubfuse-shared-torch.pth").write_text(_SHARED_TORCH_PTH)
    python = target / "bin" / "python"
    if transformers:
        dropped = install_release(python, transformers, extras, without)
    else:  # a trial of the extras alone (extra_unavailable)
        dropped = []
        _uv_install(python, list(extras), "uv pip install " + " ".join(extras))
    probe = "import importlib.metadata as m, torch; print(m.version('torch'), torch.__file__)"
    env = shared_torch_environ()
    out = _run([str(python), "-I", "-c", probe], "torch check", env=env).split()
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
        _uv_install(python, [release, *extras], " ".join([what, *extras]), constraints, transformers)
        return []
    _uv_install(python, [release], what + " --no-deps", constraints, transformers, "--no-deps")
    kept, dropped = [], []
    for text in _declared_requirements(python, "transformers"):
        (dropped if canonicalize_name(Requirement(text).name) in left_out else kept).append(text)
    missing = left_out - {canonicalize_name(Requirement(text).name) for text in dropped}
    if missing:
        raise EnvError(f"transformers {transformers} does not require {', '.join(sorted(missing))}")
    if kept or extras:
        _uv_install(python, [*kept, *extras], f"{what}'s other requirements", constraints, transformers)
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


# uv's explanation when a release's own requirement cannot be met, e.g. "Because only
# kernels<=0.17.2 is available and transformers==5.25.0 depends on kernels>=0.19.1,<0.20, ...",
# or, installing its requirements after it (--no-deps), "... and you require kernels>=0.19.1, ...".
_DEPENDS_ON = re.compile(r"(?:transformers\S* depends on|you require) (\S+?),? (?:we|and) ")


def _unavailable_requirement(message: str) -> str | None:
    message = " ".join(message.split())  # uv wraps its explanation to the terminal's width
    for text in _DEPENDS_ON.findall(message):
        try:
            name = Requirement(text).name
        except InvalidRequirement:
            continue
        if canonicalize_name(name) == "transformers":  # the release itself is missing: not this case
            continue
        said = (f"only {name}", f"no version of {name}", f"{name} was not found", f"no versions of {name}")
        if any(phrase.lower() in message.lower() for phrase in said):
            return text
    return None


def _uv_install(
    python: Path,
    requirements: list[str],
    what: str,
    constraints: Iterable[Path] = (),
    release: str | None = None,
    *flags: str,
) -> None:
    """`uv pip install` into `python`'s environment, torch excluded and pinned to the installed one."""
    pins = Path(tempfile.mkdtemp(prefix="hubfuse-uv-pins-"))
    try:
        (pins / "excludes.txt").write_text("torch\n")
        (pins / "constraints.txt").write_text(f"torch=={installed_torch()}\n")
        command = [
            uv_binary(),
            "pip",
            "install",
            "--quiet",
            "--no-config",
            "--python",
            str(python),
            "--link-mode",
            "hardlink",
            *pip_configuration()[0],
            "--excludes",
            str(pins / "excludes.txt"),
            "--constraint",
            str(pins / "constraints.txt"),
            *[arg for path in constraints for arg in ("--constraint", str(Path(path).resolve()))],
            *flags,
            *requirements,
        ]
        try:
            _run(command, what, env=_uv_environ(), cwd=pins)
        except EnvError as exc:
            missing = _unavailable_requirement(str(exc.__cause__ or exc)) if release else None
            if missing is not None and release is not None:
                raise RequirementUnavailable(release, missing) from None
            raise
    finally:
        shutil.rmtree(pins, ignore_errors=True)


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


class _Failed(Exception):
    """A command's whole stderr, kept as the cause of the one-line EnvError."""


def _run(command: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
            env=without_hub_tokens(env),
            cwd=cwd,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvError(f"{what}: {exc}") from None
    if result.returncode != 0:
        lines = [
            line.strip()
            for line in result.stderr.strip().splitlines()
            if line.strip() and not line.startswith(("WARNING:", "warning:", "hint:"))
        ]
        explained = next((line for line in lines if line.startswith("cause:")), None)
        summary = (explained or (lines or ["exit " + str(result.returncode)])[-1]).removeprefix("cause: ")
        raise EnvError(f"{what} failed: {summary}") from _Failed(result.stderr)
    return result.stdout


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
        _discard(target, root)
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
        _build(trial, "", (extra,), ())
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
