"""uv, the installer of every environment, and pip's configuration handed to it.

One uv cache for every environment (`UV_CACHE_DIR`, default `<envs root>/uv-cache`), on the
environments' file system, so `uv pip install --link-mode hardlink` links files from it and an
environment costs seconds and little disk. torch is never downloaded: `uv_install` excludes it from
the resolution and pins it to the installed one as a constraint. uv reads none of pip's
configuration, so pip's effective index settings (`pip config list`: index, extra indexes,
find-links, constraints) are handed to it explicitly (`pip_configuration`).

A release whose required dependency the index cannot satisfy raises `RequirementUnavailable`
naming it (read from uv's explanation of the failed resolution).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from hubfuse import settings
from hubfuse.check.env_commands import EnvError, run_command
from hubfuse.check.envs_root import envs_root, installed_torch, refuse_shared_folder
from hubfuse.childenv import without_hub_tokens


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


def uv_environ() -> dict[str, str]:
    return {
        **without_hub_tokens(),
        **dict(pip_configuration()[1]),
        "UV_CACHE_DIR": str(uv_cache_dir()),
        "UV_NO_PROGRESS": "1",
    }


# uv's explanation when a release's own requirement cannot be met, e.g. "Because only
# kernels<=0.17.2 is available and transformers==5.25.0 depends on kernels>=0.19.1,<0.20, ...",
# or, installing its requirements after it (--no-deps), "... and you require kernels>=0.19.1, ...".
_DEPENDS_ON = re.compile(r"(?:transformers\S* depends? on|you require) (\S+?),? (?:we|and) ")


def unavailable_requirement(message: str) -> str | None:
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


def uv_install(
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
            run_command(command, what, env=uv_environ(), cwd=pins)
        except EnvError as exc:
            missing = unavailable_requirement(str(exc.__cause__ or exc)) if release else None
            if missing is not None and release is not None:
                raise RequirementUnavailable(release, missing) from None
            raise
    finally:
        shutil.rmtree(pins, ignore_errors=True)
