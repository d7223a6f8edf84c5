"""One logger for hubfuse: plain lines in a terminal, workflow commands in GitHub Actions.

Everything goes to stderr (stdout is reserved for `--json` documents), and every line passes
through `redact`, so a token can never reach a log, whatever the caller formats into it.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from hubfuse import settings

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
    return settings.in_github_actions()


def _escape_command_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Logger:
    def __init__(self, stream: TextIO | None = None, *, github: bool | None = None) -> None:
        self._stream = stream
        self.github = in_github_actions() if github is None else github
        self.quiet = False
        self._titles: list[str] = []  # the open groups, outermost first
        self._lock = threading.Lock()  # matrix threads log side by side
        self._status = False  # a progress line is on screen, to be replaced

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def _interactive(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return not self.github and bool(isatty and isatty())

    def _write(self, line: str) -> None:
        with self._lock:
            if self._status:
                self.stream.write("\r\x1b[K")
                self._status = False
            self.stream.write(redact(line) + "\n")
            self.stream.flush()

    def progress(self, message: str) -> None:
        """A progress line: redrawn in place in a terminal, one line each elsewhere (a file, Actions)."""
        if self.quiet:
            return
        if not self._interactive():
            self._write(message)
            return
        with self._lock:
            self.stream.write("\r\x1b[K" + redact(message))
            self.stream.flush()
            self._status = True

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
        """A foldable group in Actions; a timed header line in a terminal.

        Actions cannot nest groups: an inner group closes the outer fold, folds itself as
        `outer › inner`, and the outer one goes on in a fold of its own ("(continued)").
        """
        start = time.monotonic()
        outer = list(self._titles)
        self._titles.append(title)
        if self.github:
            if outer:
                self._write("::endgroup::")
            self._write(f"::group::{' › '.join([*outer, title])}")
        elif not self.quiet:
            self._write(f"==> {title}")
        try:
            yield
        finally:
            self._titles.pop()
            if self.github:
                self._write("::endgroup::")
                if outer:
                    self._write(f"::group::{' › '.join(outer)} (continued)")
            elif not self.quiet:
                self._write(f"    done in {time.monotonic() - start:.1f}s")


log = Logger()
