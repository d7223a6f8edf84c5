"""The errors the server answers with, shaped like the real Hub's.

`huggingface_hub` keys its exception classes on the `X-Error-Code` header and appends the
`X-Error-Message` header and the JSON body's `error` to the message it raises.
"""

from __future__ import annotations


def header_safe(text: str) -> str:
    """`text` as a header value: printable ASCII only, anything else backslash-escaped.

    Messages quote what the client sent (paths, revisions); a control character copied into a header
    would make the HTTP layer drop the connection instead of answering, which clients retry.
    """
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if c.isascii() and c.isprintable() else ascii(c)[1:-1] for c in text)


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = body

    def response_headers(self) -> dict[str, str]:
        headers = {name: header_safe(value) for name, value in self.headers.items()}
        headers["X-Error-Message"] = header_safe(self.message)
        if self.code:
            headers["X-Error-Code"] = self.code
        return headers

    def response_body(self) -> dict:
        return self.body if self.body is not None else {"error": self.message}


def repo_not_found(repo_id: str, *, authenticated: bool) -> ApiError:
    # Like the Hub: anonymous callers get 401 (it might exist but be private), others 404.
    if authenticated:
        return ApiError(404, "Repository not found", code="RepoNotFound")
    return ApiError(401, "Invalid username or password.", code="RepoNotFound")


def revision_not_found(revision: str) -> ApiError:
    return ApiError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")


def entry_not_found(path: str, commit: str | None) -> ApiError:
    headers = {"X-Repo-Commit": commit} if commit else {}
    return ApiError(404, f"Entry not found: {path}", code="EntryNotFound", headers=headers)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthorized(message: str = "You must be authenticated to perform this action.") -> ApiError:
    return ApiError(401, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, message)


def conflict(message: str, **body: object) -> ApiError:
    return ApiError(409, message, body={"error": message, **body})
