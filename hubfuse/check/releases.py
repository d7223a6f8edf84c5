"""The transformers releases on the package index.

Discovered with `pip index versions` (through pip's configured index) and cached in the
environments root for `HUBFUSE_RELEASES_TTL_S` seconds (default a day), so a new release appearing
re-opens verdicts on the next run after the cache expires; when the index cannot be reached, the
cached list is used (with a warning), and without one the run stops with a one-line error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from packaging.version import InvalidVersion, Version

from hubfuse import settings
from hubfuse.check.env_commands import EnvError
from hubfuse.check.envs_root import atomic_write, envs_root
from hubfuse.childenv import without_hub_tokens
from hubfuse.errors import BadInputError
from hubfuse.log import log


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
    atomic_write(cache, json.dumps({"fetched_at": time.time(), "versions": [str(v) for v in versions]}))
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
