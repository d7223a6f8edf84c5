"""Read-only HTML pages: the repos, a repo's card and files, its discussions and pull requests.

They apply the API's access rules through the same `Ctx` checks: a private repo is invisible
outside its namespace, a gated repo's file contents (card, file view, PR diff) need access, exactly
as `resolve` requires. The caller is the token of an `Authorization` header, else the one given
once through the form (`POST /login`) and kept in an HttpOnly, SameSite=Strict cookie. A token is
never read from or put into a URL.

Everything shown is escaped: templates autoescape, Markdown never emits raw HTML (`markup`), and
every page carries a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from hubfuse.localhub import cards, discussions, views
from hubfuse.localhub.apierror import ApiError, bad_request, entry_not_found, revision_not_found
from hubfuse.localhub.context import Ctx, Hub
from hubfuse.localhub.markup import diff_lines, human_size, render_markdown
from hubfuse.localhub.records import Commit, RepoId, RepoNotFound, RevisionNotFound
from hubfuse.localhub.routing import Route, authorize, params, run_handler

logger = logging.getLogger("hubfuse.localhub")

TEXT_VIEW_MAX_BYTES = 512 * 1024
_FORM_MAX_BYTES = 8 * 1024
_STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["size"] = human_size
_ENV.filters["q"] = lambda value: quote(str(value), safe="")
_ENV.filters["qpath"] = lambda value: quote(str(value), safe="/")


def cookie_name(request: Request) -> str:
    # Browsers scope cookies by host, not port: the port in the name keeps two local hubs apart.
    return f"hubfuse_token_{request.url.port or 80}"


async def serve(
    hub: Hub,
    page: Route,
    match: re.Match[str],
    request: Request,
    endpoint: str,
    header_token: str | None,
) -> Response:
    """Run a page route: its access rule first, as for the API; errors become HTML pages, every
    answer gets the security headers."""
    cookie_token = request.cookies.get(cookie_name(request))
    token = header_token or cookie_token
    principal = hub.auth.lookup(token) if token else None
    body = b""
    if request.method == "POST":
        async for chunk in request.stream():
            body += chunk
            if len(body) > _FORM_MAX_BYTES:
                return _with_headers(HTMLResponse("Request body too large", status_code=413))
    ctx = Ctx(hub, request, params(match), principal, endpoint, body=body)
    stale = bool(cookie_token) and not header_token and principal is None
    response = await run_in_threadpool(_run, page, match, ctx, stale)
    return _with_headers(response)


def _with_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _run(page: Route, match: re.Match[str], ctx: Ctx, stale_cookie: bool) -> Response:
    ctx.request.state.stale_cookie = stale_cookie
    try:
        # A page does not follow a moved repo: the old name is a page not found.
        authorize(page, match, ctx, follow_moves=False)
        return run_handler(page, ctx)
    except ApiError as error:
        return _error_page(ctx, error)
    except Exception:
        logger.exception("localhub: unhandled error on page %s", ctx.request.url.path)
        return _error_page(ctx, ApiError(500, "Internal server error"))


def _render(ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    raw_path = ctx.request.scope.get("raw_path", b"").decode("latin-1") or ctx.request.url.path
    query = ctx.request.url.query
    page = _ENV.get_template(template).render(
        user=ctx.principal,
        stale_cookie=getattr(ctx.request.state, "stale_cookie", False),
        here=raw_path + (f"?{query}" if query else ""),
        **values,
    )
    return HTMLResponse(page, status_code=status)


def _error_page(ctx: Ctx, error: ApiError) -> HTMLResponse:
    titles = {
        "RepoNotFound": "Repository not found",
        "RevisionNotFound": "Revision not found",
        "EntryNotFound": "File not found",
        "GatedRepo": "Gated repository",
    }
    message = error.message
    if error.code == "RepoNotFound":
        message = "No such repository, or it is private and your token (if any) cannot see it."
    title = titles.get(error.code or "", f"Error {error.status}")
    return _render(ctx, "error.html", status=error.status, title=title, message=message)


# ---- access ------------------------------------------------------------------------------------------


def _gate(ctx: Ctx, repo: RepoId, meta: dict[str, Any]) -> ApiError | None:
    """Why the caller may not read this repo's file contents (the `resolve` route's check), or None."""
    try:
        ctx.check_gate(repo, meta)
    except ApiError as error:
        return error
    return None


def _resolve(ctx: Ctx, repo: RepoId, revision: str) -> Commit:
    try:
        return ctx.store.resolve(repo, revision).commit
    except RevisionNotFound:
        raise revision_not_found(revision) from None


# ---- pages -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoRow:
    repo: RepoId
    private: bool
    gated: bool
    updated: str
    open_prs: int


def index(ctx: Ctx) -> Response:
    rows = []
    for repo_type in ("model", "dataset"):
        for repo, _ in ctx.store.list_repos(repo_type):
            try:
                meta = ctx.readable(repo)
                head = ctx.store.resolve(repo, "main").commit
            except (ApiError, RepoNotFound, RevisionNotFound):
                continue
            open_prs = sum(
                1
                for d in discussions.list_all(ctx.store, repo)
                if d["isPullRequest"] and d["status"] in ("open", "draft")
            )
            rows.append(
                RepoRow(repo, bool(meta.get("private")), bool(meta.get("gated")), head.date, open_prs)
            )
    rows.sort(key=lambda row: row.updated, reverse=True)
    return _render(ctx, "index.html", rows=rows)


def _repo_values(ctx: Ctx, repo: RepoId, meta: dict[str, Any], tab: str) -> dict[str, Any]:
    all_discussions = discussions.list_all(ctx.store, repo)
    return {
        "repo": repo,
        "base": f"/{repo.url_prefix}{repo.id}",
        "private": bool(meta.get("private")),
        "gated": bool(meta.get("gated")),
        "tab": tab,
        "open_discussions": sum(1 for d in all_discussions if d["status"] in ("open", "draft")),
    }


def _listing(commit: Commit, folder: str) -> list[dict[str, Any]] | None:
    listing = views.tree_listing(commit.tree, folder, recursive=False)
    for item in listing or []:
        item["name"] = item["path"].rsplit("/", 1)[-1]
    return listing


def repo_page(ctx: Ctx) -> Response:
    repo = ctx.repo()
    meta = ctx.readable(repo)
    commit = _resolve(ctx, repo, "main")
    gate = _gate(ctx, repo, meta)
    metadata: list[tuple[str, str]] = []
    body = None
    entry = commit.tree.get("README.md")
    if gate is None and entry is not None and not entry.get("lfs") and entry["size"] <= TEXT_VIEW_MAX_BYTES:
        readme = ctx.store.read_entry(entry)
        metadata = _metadata_rows(cards.card_data(readme))
        body = render_markdown(cards.body(readme.decode("utf-8", "replace")))
    return _render(
        ctx,
        "repo.html",
        **_repo_values(ctx, repo, meta, "card"),
        commit=commit,
        rev="main",
        folder="",
        listing=_listing(commit, "") or [],
        gate=gate,
        metadata=metadata,
        card=body,
        has_readme=entry is not None,
    )


def _metadata_rows(data: dict[str, Any] | None) -> list[tuple[str, str]]:
    rows = []
    for key, value in (data or {}).items():
        if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
            text = ", ".join(str(item) for item in value)
        elif isinstance(value, (dict, list)):
            text = cards.yaml_text(value)
        else:
            text = str(value)
        rows.append((str(key), text))
    return rows


def tree_page(ctx: Ctx) -> Response:
    repo = ctx.repo()
    meta = ctx.readable(repo)
    rev = ctx.params["rev"]
    commit = _resolve(ctx, repo, rev)
    folder = (ctx.params.get("path") or "").strip("/")
    listing = _listing(commit, folder)
    if listing is None and folder in commit.tree:
        base = f"/{repo.url_prefix}{repo.id}"
        return RedirectResponse(f"{base}/blob/{quote(rev, safe='')}/{quote(folder)}", status_code=302)
    if listing is None:
        raise entry_not_found(folder, commit.id)
    refs = ctx.store.refs(repo)
    return _render(
        ctx,
        "tree.html",
        **_repo_values(ctx, repo, meta, "files"),
        commit=commit,
        rev=rev,
        folder=folder,
        listing=listing,
        branches=sorted(refs["branches"]),
        tags=sorted(refs["tags"]),
        pulls=sorted(refs["pulls"], key=int),
    )


def blob_page(ctx: Ctx) -> Response:
    repo = ctx.repo()
    meta = ctx.readable(repo)
    rev = ctx.params["rev"]
    commit = _resolve(ctx, repo, rev)
    path = ctx.params["path"]
    entry = commit.tree.get(path)
    if entry is None:
        raise entry_not_found(path, commit.id)
    ctx.check_gate(repo, meta)
    text = None
    if not entry.get("lfs") and entry["size"] <= TEXT_VIEW_MAX_BYTES:
        try:
            text = ctx.store.read_entry(entry).decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return _render(
        ctx,
        "blob.html",
        **_repo_values(ctx, repo, meta, "files"),
        commit=commit,
        rev=rev,
        path=path,
        entry=entry,
        text=text,
        limit=TEXT_VIEW_MAX_BYTES,
    )


def discussions_page(ctx: Ctx) -> Response:
    repo = ctx.repo()
    meta = ctx.readable(repo)
    found = discussions.list_all(ctx.store, repo)
    return _render(ctx, "discussions.html", **_repo_values(ctx, repo, meta, "community"), discussions=found)


def discussion_page(ctx: Ctx) -> Response:
    repo = ctx.repo()
    meta = ctx.readable(repo)
    disc = discussions.load(ctx.store, repo, discussions.parse_num(ctx.params["num"]))
    events = [_event_view(event) for event in disc["events"]]
    description, events = (
        (events[0], events[1:]) if events and events[0]["type"] == "comment" else (None, events)
    )
    gate = _gate(ctx, repo, meta) if disc["isPullRequest"] else None
    diff = None
    if disc["isPullRequest"] and gate is None:
        diff = diff_lines(discussions.pr_diff(ctx.store, repo, disc, ctx.store.refs(repo)))
    return _render(
        ctx,
        "discussion.html",
        **_repo_values(ctx, repo, meta, "community"),
        disc=disc,
        description=description,
        events=events,
        gate=gate,
        diff=diff,
    )


def _event_view(event: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": event["type"],
        "author": event["author"]["name"],
        "date": event["createdAt"],
        "data": event["data"],
    }
    if event["type"] == "comment":
        data = event["data"]
        view["hidden"] = bool(data.get("hidden"))
        view["html"] = None if view["hidden"] else render_markdown(data["latest"]["raw"])
    return view


# ---- the token form ----------------------------------------------------------------------------------


def _same_origin(ctx: Ctx) -> None:
    origin = ctx.request.headers.get("origin")
    if origin is not None and origin != ctx.endpoint:
        raise ApiError(403, "Cross-origin form posts are refused")


def _local_path(value: str) -> str:
    """`value` if it is a path on this server, else `/` (no open redirects)."""
    if (
        value.startswith("/")
        and not value.startswith(("//", "/\\"))
        and "\r" not in value
        and "\n" not in value
    ):
        return value
    return "/"


def _form(ctx: Ctx) -> dict[str, str]:
    parsed = parse_qs(ctx.body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def login(ctx: Ctx) -> Response:
    _same_origin(ctx)
    form = _form(ctx)
    token = form.get("token", "").strip()
    if not token:
        raise bad_request("Give a token")
    if ctx.hub.auth.lookup(token) is None:
        return _render(
            ctx, "error.html", status=401, title="Token not accepted", message="This hub knows no such token."
        )
    response = RedirectResponse(_local_path(form.get("next", "/")), status_code=303)
    response.set_cookie(
        cookie_name(ctx.request),
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=ctx.request.url.scheme == "https",
    )
    return response


def logout(ctx: Ctx) -> Response:
    _same_origin(ctx)
    response = RedirectResponse(_local_path(_form(ctx).get("next", "/")), status_code=303)
    response.delete_cookie(cookie_name(ctx.request), path="/", httponly=True, samesite="strict")
    return response


def stylesheet(ctx: Ctx) -> Response:
    return Response((_STATIC / "pages.css").read_bytes(), media_type="text/css")
