"""Exit codes and the exceptions that carry them.

Every failure a user can cause or meet ends as one line on stderr and one of these codes;
the CLI turns a `HubfuseError` into exactly that, never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    # 1 is left to Python itself (an uncaught bug), so a hubfuse code never hides one.
    BAD_INPUT = 2  # usage, unreadable checkpoint, invalid spec, repo/revision not found
    UNSAFE = 3  # at least one requested family is unsafe or failed to check
    NOTHING_TO_FUSE = 4  # no requested family applies to this model
    AUTH = 5  # no token, bad token, read-only token, no write access, gated repo
    HUB = 6  # the Hub kept failing (5xx, 429, dropped connections) after bounded retries
    CONFLICT = 7  # the repo moved under us and could not be re-verified, or a name is taken
    BUDGET = 8  # a batch run stopped on its request budget or the kill switch


class HubfuseError(Exception):
    """An expected failure: printed as one line, mapped to an exit code."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInputError(HubfuseError):
    exit_code = ExitCode.BAD_INPUT


class CheckpointError(BadInputError):
    """The checkpoint on disk cannot be read as it claims to be."""


class AuthError(HubfuseError):
    exit_code = ExitCode.AUTH


class HubUnavailableError(HubfuseError):
    exit_code = ExitCode.HUB


class CopyRefusedError(HubUnavailableError):
    """The Hub would not copy LFS files between repos server-side (another storage region, no Xet
    hash, an error from `lfs-files/duplicate`); nothing was committed."""


class ConflictError(HubfuseError):
    exit_code = ExitCode.CONFLICT


class BudgetExhaustedError(HubfuseError):
    exit_code = ExitCode.BUDGET


def brief(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters, for messages quoting input that may be huge."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
