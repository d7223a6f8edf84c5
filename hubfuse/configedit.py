"""Set one top-level key of a config.json with the smallest possible text diff.

A config.json pull request is read by people and applied to every downstream load, so the edit
keeps every other byte as it was: key order, indentation, number formatting, trailing newline.
The result is checked by parsing it back: it must equal the original document with exactly that
one key set, or the edit is refused.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from hubfuse import strictjson
from hubfuse.errors import BadInputError

_WHITESPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class _Member:
    key: str
    key_start: int  # index of the key's opening quote
    value_start: int
    value_end: int  # one past the value's last character


def _skip_ws(text: str, pos: int) -> int:
    return _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]


def _top_level_members(text: str) -> tuple[int, int, list[_Member]]:
    """Locate the top-level object's braces and each member's text span."""
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] != "{":
        raise BadInputError("config.json is not a JSON object")
    open_brace = pos
    members: list[_Member] = []
    pos = _skip_ws(text, pos + 1)
    if text[pos : pos + 1] == "}":
        return open_brace, pos, members
    while True:
        key_start = pos
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip_ws(text, pos)
        if text[pos : pos + 1] != ":":
            raise BadInputError("config.json is not valid JSON")
        value_start = _skip_ws(text, pos + 1)
        _, value_end = decoder.raw_decode(text, value_start)
        members.append(_Member(key, key_start, value_start, value_end))
        pos = _skip_ws(text, value_end)
        if text[pos : pos + 1] == ",":
            pos = _skip_ws(text, pos + 1)
            continue
        if text[pos : pos + 1] == "}":
            return open_brace, pos, members
        raise BadInputError("config.json is not valid JSON")


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return text[line_start:pos] if text[line_start:pos].strip() == "" else ""


def _render_value(value: Any, member_indent: str, indent_unit: str | None) -> str:
    if indent_unit is None:
        return json.dumps(value, ensure_ascii=False)
    rendered = json.dumps(value, indent=len(indent_unit), ensure_ascii=False, sort_keys=False)
    return rendered.replace("\n", "\n" + member_indent)


def _indent_unit(text: str, open_brace: int, members: list[_Member]) -> str | None:
    """The per-level indent of a pretty-printed file; None for a single-line file."""
    if not members or "\n" not in text[open_brace : members[0].key_start]:
        return None
    return _line_indent(text, members[0].key_start) or "  "


def set_top_level_key(text: str, key: str, value: Any) -> str:
    """Return `text` with top-level `key` set to `value`, everything else untouched."""
    try:
        original = strictjson.loads(text)
    except strictjson.StrictJSONError as exc:
        raise BadInputError(f"config.json {exc}") from None
    if not isinstance(original, dict):
        raise BadInputError("config.json is not a JSON object")

    open_brace, close_brace, members = _top_level_members(text)
    unit = _indent_unit(text, open_brace, members)
    member_indent = _line_indent(text, members[0].key_start) if members else ""
    rendered = _render_value(value, member_indent, unit)

    existing = [m for m in members if m.key == key]
    if existing:
        member = existing[-1]
        edited = text[: member.value_start] + rendered + text[member.value_end :]
    else:
        edited = _insert_member(text, key, rendered, open_brace, close_brace, members, unit, member_indent)

    expected = dict(original)
    expected[key] = value
    if json.loads(edited) != expected:
        raise BadInputError("refusing to edit config.json: the minimal edit did not round-trip")
    return edited


def _insert_member(
    text: str,
    key: str,
    rendered: str,
    open_brace: int,
    close_brace: int,
    members: list[_Member],
    unit: str | None,
    member_indent: str,
) -> str:
    new_member = f"{json.dumps(key)}: {rendered}"
    if not members:
        if unit is None:
            return text[: open_brace + 1] + new_member + text[close_brace:]
        return text[: open_brace + 1] + f"\n  {new_member}\n" + text[close_brace:]

    # Keep a sorted file sorted (save_pretrained writes sort_keys=True); otherwise append.
    keys = [m.key for m in members]
    following = next((m for m in members if m.key > key), None) if keys == sorted(keys) else None

    if following is not None:
        separator = "," + ("\n" + member_indent if unit is not None else " ")
        return text[: following.key_start] + new_member + separator + text[following.key_start :]

    last = members[-1]
    separator = "," + ("\n" + member_indent if unit is not None else " ")
    return text[: last.value_end] + separator + new_member + text[last.value_end :]


def unified_diff(before: str, after: str, name: str = "config.json") -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
