"""One strict JSON reader for everything hubfuse reads from a checkpoint or a repo.

`json.loads` alone turns hostile input into a crash or a CPU sink: nesting a few thousand levels
deep raises RecursionError, an integer of more than 4300 digits raises a ValueError, and integers
just under that limit make any later arithmetic on them quadratic. Here every document is
bounded (size, nesting depth, length of every number) in linear time before Python's parser
sees it, and every refusal is a `StrictJSONError` whose message is one line.

Dependency-free and importable without torch (the local hub reuses it).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

MAX_BYTES = 64 << 20  # the largest JSON a real checkpoint carries (tokenizer.json) is a few tens of MB
MAX_DEPTH = 64  # real configs nest 3-5 levels
MAX_NUMBER_CHARS = 40  # 2**64 has 20 digits, a float's repr at most 24 characters

# A JSON string token (escapes included), written as an unrolled loop so the regex engine never
# backtracks: stripping these leaves only structure, whose brackets then give the nesting depth.
_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_NUMBER_CHARS = "[0-9.eE+\\-]"


class StrictJSONError(ValueError):
    """The document is not JSON, or is JSON beyond the limits; the message is one line."""


def _structure(text: str) -> str:
    """`text` without its string tokens: what is left is brackets, numbers, literals and punctuation."""
    return _STRING_TOKEN.sub("", text)


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of JSON `text`, in linear time and without recursion."""
    return _depth(_structure(text))


def _depth(structure: str) -> int:
    brackets = _NOT_BRACKET.sub("", structure)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))))


@functools.cache
def _number_longer_than(limit: int) -> re.Pattern[str]:
    return re.compile(f"{_NUMBER_CHARS}{{{limit + 1},}}")


def _too_long_number(structure: str, limit: int) -> int | None:
    """The length of the first number token longer than `limit` characters, if any."""
    match = _number_longer_than(limit).search(structure)
    return len(match.group()) if match else None


def loads(
    data: str | bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_number_chars: int = MAX_NUMBER_CHARS,
    allow_constants: bool = True,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """Parse `data` as JSON within the limits, or raise `StrictJSONError`.

    `allow_constants=False` also refuses NaN and ±Infinity, which are not JSON. Exceptions raised
    by `object_pairs_hook` propagate unchanged.
    """
    if len(data) > max_bytes:
        raise StrictJSONError(f"is {len(data)} bytes, over the {max_bytes}-byte limit")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJSONError(
                f"is not valid JSON (not UTF-8 text: {exc.reason} at byte {exc.start})"
            ) from None
    else:
        text = data
    # Both bounds are checked on the structure before json sees it, so parsing never recurses
    # deeply and never converts (or later computes with) a number of thousands of digits.
    structure = _structure(text)
    depth = _depth(structure)
    if depth > max_depth:
        raise StrictJSONError(f"nests {depth} levels deep, over the limit of {max_depth}")
    too_long = _too_long_number(structure, max_number_chars)
    if too_long is not None:
        raise StrictJSONError(f"holds a {too_long}-character number, over the limit of {max_number_chars}")

    def parse_constant(name: str) -> float:
        if not allow_constants:
            raise StrictJSONError(f"contains {name}, which is not JSON")
        return float(name)

    try:
        return json.loads(text, parse_constant=parse_constant, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as exc:
        raise StrictJSONError(
            f"is not valid JSON (malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:  # unreachable within max_depth; kept so no input can escape as a crash
        raise StrictJSONError("nests too deeply to parse") from None


def read_file(path: Path, *, max_bytes: int = MAX_BYTES, **limits: Any) -> Any:
    """`loads` of the file at `path`, reading at most `max_bytes` + 1 bytes of it."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    return loads(data, max_bytes=max_bytes, **limits)
