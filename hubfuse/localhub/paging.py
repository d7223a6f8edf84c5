"""Paged JSON listings as the Hub pages them: a `Link: <...>; rel="next"` header while more remain.

The next page's link carries `?cursor=<pinned commit>:<offset>`, so that later pages of a tree list
the commit the first page listed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response

from hubfuse.localhub.context import Ctx


def cursor(ctx: Ctx) -> tuple[str | None, int]:
    """(pinned commit, offset) from `?cursor=`."""
    pin, _, offset = ctx.query.get("cursor", "").rpartition(":")
    return (pin or None), (int(offset) if offset.isdigit() else 0)


def paged(ctx: Ctx, items: list[Any], page_size: int, *, pin: str | None = None) -> Response:
    """A page of `items`, with a `Link: <...>; rel="next"` header when more remain."""
    _, start = cursor(ctx)
    page = items[start : start + page_size]
    headers = {}
    if start + page_size < len(items):
        params = [(k, v) for k, v in ctx.query.multi_items() if k != "cursor"]
        params.append(("cursor", f"{pin or ''}:{start + page_size}"))
        raw_path = ctx.request.scope.get("raw_path", b"").decode("latin-1") or ctx.request.url.path
        headers["Link"] = f'<{ctx.endpoint}{raw_path}?{urlencode(params)}>; rel="next"'
    return JSONResponse(page, headers=headers)
