"""One logger for hubfuse: plain lines in a terminal, workflow commands in GitHub Actions.

Everything goes to stderr (stdout is reserved for `--json` documents), and every line passes
through `redact`, so a token can never reach a log, whatever the caller formats into it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO

_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make `redact` scrub `value` too (tokens that do not look like `hf_...`)."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    for secret in _extra_secrets:
        text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_command_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Logger:
    def __init__(self, stream: TextIO | None = None, *, github: bool | None = None) -> None:
        self._stream = stream
        self.github = in_github_actions() if github is None else github
        self.quiet = False
        self._depth = 0

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def _write(self, line: str) -> None:
        self.stream.write(redact(line) + "\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        if not self.quiet:
            self._write(message)

    def warning(self, message: str) -> None:
        self._write(f"::warning::{_escape_command_data(message)}" if self.github else f"warning: {message}")

    def error(self, message: str) -> None:
        self._write(f"::error::{_escape_command_data(message)}" if self.github else f"error: {message}")

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        """A foldable group in Actions (which cannot nest them: inner groups become plain
        headers); a timed header line in a terminal."""
        start = time.monotonic()
        fold = self.github and self._depth == 0
        self._depth += 1
        if fold:
            self._write(f"::group::{title}")
        elif not self.quiet:
            self._write(f"==> {title}")
        try:
            yield
        finally:
            self._depth -= 1
            if fold:
                self._write("::endgroup::")
            elif not self.quiet:
                self._write(f"    done in {time.monotonic() - start:.1f}s")


log = Logger()
