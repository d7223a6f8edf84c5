"""One logger for hubfuse: plain lines in a terminal, workflow commands in GitHub Actions.

Everything goes to stderr (stdout is reserved for `--json` documents), and every line passes
through `redact`, so a token can never reach a log, whatever the caller formats into it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO

# Hub tokens by their look (user `hf_...` and OAuth `hf_oauth_...`), for tokens never registered.
_TOKEN_PATTERN = re.compile(r"\bhf_(?:oauth_)?[A-Za-z0-9]{8,}\b")
_secret_forms: set[str] = set()


def clean_token(value: str | None) -> str | None:
    """A token as huggingface_hub reads it from HF_TOKEN or a file: line breaks and outer spaces
    removed; None when nothing is left."""
    if value is None:
        return None
    return value.replace("\r", "").replace("\n", "").strip() or None


def _forms(secret: str) -> set[str]:
    from urllib.parse import quote, quote_plus

    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}
    return {form for form in forms if len(form) >= 4}


def register_secret(value: str | None) -> None:
    """Make `redact` scrub `value`, whatever its prefix, in every form a message can carry it:
    raw, repr- and JSON-escaped, URL-encoded; both as given and as huggingface_hub cleans it."""
    cleaned = clean_token(value)
    if not value or not cleaned or len(cleaned) < 4:
        return
    _secret_forms.update(_forms(cleaned))
    # The value as given (a trailing newline...) only where its form does not already hold the
    # cleaned token: scrubbing that is enough, and leaves the line breaks around it alone.
    _secret_forms.update(form for form in _forms(value) if not any(c in form for c in _forms(cleaned)))


def redact(text: str) -> str:
    for secret in sorted(_secret_forms, key=len, reverse=True):  # longest first: no partial leftovers
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
        self._write(
            f"::warning::{_escape_command_data(redact(message))}" if self.github else f"warning: {message}"
        )

    def error(self, message: str) -> None:
        self._write(
            f"::error::{_escape_command_data(redact(message))}" if self.github else f"error: {message}"
        )

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
