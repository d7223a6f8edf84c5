"""Client failures as hubfuse sees them: which are transient, how long the server asks to wait,
and the one-line hubfuse error (with its exit code) each becomes."""

from __future__ import annotations

from hubfuse.errors import (
    AuthError,
    BadInputError,
    ConflictError,
    CopyRefusedError,
    HubfuseError,
    HubUnavailableError,
)

_RETRY_STATUS = {429, 500, 502, 503, 504}


def http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("Retry-After",):
        value = headers.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                return None
    # IETF RateLimit header: "limit=..., remaining=0, reset=SECONDS" (the Hub sends this shape).
    ratelimit = headers.get("RateLimit", "")
    for part in ratelimit.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key in {"reset", "t"} and value.isdigit():
            return float(value)
    return None


def is_transient(exc: BaseException) -> bool:
    import httpx2

    if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
        return True
    return http_status(exc) in _RETRY_STATUS


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_copy_refusal(exc: BaseException) -> bool:
    """The client's cross-repo copy failed before the commit was sent: the duplicate call answered
    an error or a `failed` list, or the source file has no Xet hash (huggingface_hub >= 1.17)."""
    from huggingface_hub.errors import FileDuplicationError

    if isinstance(exc, FileDuplicationError):
        return True
    if isinstance(exc, ValueError) and "Cannot duplicate LFS file" in str(exc):
        return True
    response = getattr(exc, "response", None)
    try:
        url = str(response.request.url) if response is not None else ""
    except RuntimeError:  # a response built without its request
        return False
    return url.split("?")[0].endswith("/lfs-files/duplicate")


def translate_error(exc: BaseException, what: str) -> HubfuseError:
    """A client exception as a one-line hubfuse error with the right exit code."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, HubfuseError):
        return exc
    if _is_copy_refusal(exc):
        return CopyRefusedError(f"{what}: {first_line(exc)}")
    if isinstance(exc, GatedRepoError):
        return AuthError(f"{what}: the repo is gated and this token has not been granted access")
    if isinstance(exc, RepositoryNotFoundError):
        return BadInputError(f"{what}: repository not found (or private: check HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return BadInputError(f"{what}: revision not found")
    if isinstance(exc, RemoteEntryNotFoundError):
        return BadInputError(f"{what}: file not found in the repo")
    status = http_status(exc)
    if status == 401:
        return AuthError(f"{what}: the Hub refused the token (401): set a valid HF_TOKEN")
    if status == 403:
        return AuthError(f"{what}: this token has no write access here (403)")
    if status in (409, 412):
        return ConflictError(f"{what}: the repo changed meanwhile ({status})")
    if is_transient(exc):
        return HubUnavailableError(f"{what}: the Hub kept failing: {first_line(exc)}")
    if isinstance(exc, HfHubHTTPError):
        return HubfuseError(f"{what}: {first_line(exc)}", exit_code=None)
    return HubUnavailableError(f"{what}: {type(exc).__name__}: {first_line(exc)}")
