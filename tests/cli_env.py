"""Running the `hubfuse` CLI as a user would: a subprocess with its own Hub settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def hubfuse_env(endpoint: str, home: Path, token: str | None, **extra: str) -> dict[str, str]:
    """This machine's environment, pointed at `endpoint` with fresh caches under `home`."""
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home / "hf-home"),
        "HUBFUSE_CACHE": str(home / "verdicts"),
        "HUBFUSE_RETRY_BASE_S": "0.01",
    }
    for inherited in ("HF_TOKEN", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        env.pop(inherited, None)
    if token is not None:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def run_hubfuse(
    *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubfuse", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """The command failed as hubfuse promises: exit `code`, one `error:` line naming `needles`."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
