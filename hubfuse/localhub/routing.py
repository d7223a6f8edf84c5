"""One route run the same way for the API and the pages: its access check, its handler, and the
store's errors mapped to the Hub's error responses.

`app` holds the route table and answers API errors as JSON; `pages` answers them as HTML pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hubfuse.localhub.apierror import ApiError, repo_not_found, revision_not_found
from hubfuse.localhub.context import Access, AccessRule, Ctx
from hubfuse.localhub.records import RepoId, RepoNotFound, RevisionNotFound

Handler = Callable[[Ctx], Response]

JSON_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    access: AccessRule  # checked before the handler runs and before the body is read
    writer: bool  # needs a write token before the body is read
    max_body: int  # bytes; a longer body is refused with 413 unread
    page: bool  # an HTML page (`pages.serve` runs it, with the same access rule)
    spool: bool  # the body goes to a temp file (`Ctx.body_file`), not memory


def route(
    methods: str,
    pattern: str,
    handler: Handler,
    access: AccessRule = Access.METADATA,
    *,
    writer: bool = False,
    max_body: int = JSON_MAX_BODY,
    page: bool = False,
    spool: bool = False,
) -> Route:
    compiled = re.compile(f"^{pattern}$")
    # By construction: a route that names a repo always declares what it reveals of it.
    if ("ns" in compiled.groupindex) == (access is Access.NONE):
        raise ValueError(f"route {pattern}: repo routes need a read access rule, other routes none")
    return Route(frozenset(methods.split()), compiled, handler, access, writer, max_body, page, spool)


def params(match: re.Match[str]) -> dict[str, str]:
    return {k: unquote(v) for k, v in match.groupdict().items() if v is not None}


def authorize(route: Route, match: re.Match[str], ctx: Ctx, *, follow_moves: bool = True) -> Response | None:
    """The route's read access and write-token requirement; with `follow_moves`, a redirect when
    the repo was moved. Raises the Hub's ApiError when the caller may not."""
    if route.access is not Access.NONE:
        repo = ctx.repo()
        if follow_moves and not ctx.store.exists(repo) and (moved := ctx.store.moved_to(repo)) is not None:
            ctx.readable(moved)  # a redirect must not reveal a repo the caller cannot see
            return _moved_redirect(ctx.request, match, moved)
        access = route.access if isinstance(route.access, Access) else route.access(ctx)
        try:
            ctx.meta = ctx.check_read(repo, access)
        except RepoNotFound:  # deleted while we looked
            raise repo_not_found(repo.id, authenticated=ctx.principal is not None) from None
    if route.writer:
        ctx.writer()
    return None


def run_handler(route: Route, ctx: Ctx) -> Response:
    """The route's handler, with the store's errors as the Hub's error responses."""
    try:
        return route.handler(ctx)
    except RepoNotFound:
        raise repo_not_found("", authenticated=ctx.principal is not None) from None
    except RevisionNotFound as exc:
        raise revision_not_found(str(exc)) from None


def error_response(error: ApiError) -> Response:
    return JSONResponse(error.response_body(), status_code=error.status, headers=error.response_headers())


def _moved_redirect(request: Request, match: re.Match[str], moved: RepoId) -> Response:
    """A relative redirect to the same path under the repo's new id, as the Hub answers renamed repos."""
    raw_path = match.string
    start, end = match.start("ns"), match.end("name")
    location = raw_path[:start] + quote(moved.namespace) + "/" + quote(moved.name) + raw_path[end:]
    if query := request.scope.get("query_string", b"").decode("latin-1"):
        location += f"?{query}"
    return Response(b"", status_code=307, headers={"Location": location})
