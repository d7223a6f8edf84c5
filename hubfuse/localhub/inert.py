"""Every answer that is not one of the hub's own pages is inert in a browser.

Repo files are anyone's bytes: an `evil.html` in a public repo must never run as a page of the
hub's origin (where it could read the page cookie's private repos). So every non-page answer
(files, API JSON, errors, the admin API) carries a sandboxing CSP and `nosniff`, and repo files
are served under a type no browser renders as a document.
"""

from __future__ import annotations

import mimetypes
from urllib.parse import quote

from starlette.types import Message, Send

INERT_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
# Shown in place by a browser, never run: raster images and JSON (text is served as text/plain).
_INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/json"})
_PLAIN_TEXT = "text/plain; charset=utf-8"


def file_headers(filename: str) -> dict[str, str]:
    """Content-Type and Content-Disposition for a repo file: raster images and JSON as themselves,
    text as text/plain, everything else (HTML, SVG, XML, scripts, binaries) as a download."""
    guessed = mimetypes.guess_type(filename)[0]
    if guessed in _INLINE_TYPES:
        content_type, disposition = guessed, "inline"
    elif guessed is not None and guessed.startswith("text/") and guessed != "text/html":
        content_type, disposition = _PLAIN_TEXT, "inline"
    else:
        content_type, disposition = "application/octet-stream", "attachment"
    quoted = quote(filename)
    return {
        "Content-Type": content_type,
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}; filename=\"{quoted}\"",
    }


def inert_send(send: Send) -> Send:
    """`send`, adding `INERT_HEADERS` to an answer that does not set them itself (the pages do)."""
    missing = [(name.lower().encode(), value.encode()) for name, value in INERT_HEADERS.items()]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {key.lower() for key, _ in message.get("headers", [])}
            extra = [(key, value) for key, value in missing if key not in present]
            if extra:
                message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped
