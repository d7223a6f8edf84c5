"""Text the pages show, made safe: Markdown to inert HTML, unified diffs as classified lines.

Markdown never passes raw HTML through. The parser recognises HTML so that comments (hubfuse's
hidden markers) stay hidden as they do on the Hub; every other piece of HTML is shown as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup


def _html_as_text(self: Any, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    token = tokens[idx]
    if token.content.lstrip().startswith("<!--"):
        return ""
    text = escapeHtml(token.content)
    return f"<p>{text}</p>\n" if token.type == "html_block" else text


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("html_block", _html_as_text)
    md.add_render_rule("html_inline", _html_as_text)
    return md


_MD = _markdown()


def render_markdown(text: str) -> Markup:
    """HTML for `text`; safe to insert into a page as is."""
    return Markup(_MD.render(text))


@dataclass(frozen=True)
class DiffLine:
    kind: str  # file, meta, hunk, add, del, context
    text: str


def diff_lines(diff: str) -> list[DiffLine]:
    lines = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            kind = "file"
        elif line.startswith(("+++ ", "--- ", "index ", "new file", "deleted file", "Binary files", "\\ ")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "context"
        lines.append(DiffLine(kind, line))
    return lines


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
