"""The commands an environment step runs, and the one error every step raises.

`run_command` runs a command without Hub tokens, within INSTALL_TIMEOUT_S; a failure is one line
(uv's `cause:` line when it gives one, else stderr's last line that is no warning or hint) as an
`EnvError`, whose cause keeps the whole stderr. The matrix reports an `EnvError` as the cell's `error`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hubfuse.childenv import without_hub_tokens

INSTALL_TIMEOUT_S = 900.0


class EnvError(Exception):
    """An environment could not be created; the matrix reports it as the cell's `error`."""


class _Failed(Exception):
    """A command's whole stderr, kept as the cause of the one-line EnvError."""


def run_command(
    command: list[str], what: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> str:
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
