"""Read routes: whoami, repo info and listings, tree, refs, commits, file downloads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

from starlette.responses import JSONResponse, Response, StreamingResponse

from hubfuse.localhub import cards, listing, views, xet_cas
from hubfuse.localhub.apierror import ApiError, entry_not_found, revision_not_found, unauthorized
from hubfuse.localhub.context import Ctx
from hubfuse.localhub.inert import file_headers
from hubfuse.localhub.paging import cursor, paged
from hubfuse.localhub.records import RepoId, RepoNotFound, ResolvedRevision, RevisionNotFound

_CHUNK = 1024 * 1024
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def resolve(ctx: Ctx, repo: RepoId, revision: str) -> ResolvedRevision:
    try:
        return ctx.store.resolve(repo, revision)
    except RevisionNotFound:
        raise revision_not_found(revision) from None


def _resolve_paged(ctx: Ctx, repo: RepoId) -> ResolvedRevision:
    pin, _ = cursor(ctx)
    return resolve(ctx, repo, pin or ctx.params["rev"])


def whoami(ctx: Ctx) -> Response:
    if ctx.principal is None:
        raise unauthorized("Invalid credentials in Authorization header")
    p = ctx.principal
    return JSONResponse(views.whoami(p.user, p.role, p.orgs))


def validate_yaml(ctx: Ctx) -> Response:
    content = ctx.json().string("content", required=True)
    errors, warnings = cards.validate(content)
    body = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
    return JSONResponse(body, status_code=400 if errors else 200)


def _expand(ctx: Ctx, repo_type: str) -> list[str]:
    return listing.checked_expand(repo_type, ctx.query.getlist("expand") + ctx.query.getlist("expand[]"))


def repo_info(ctx: Ctx) -> Response:
    repo = ctx.repo()
    asked = _expand(ctx, repo.type)
    revision = ctx.params.get("rev") or "main"
    commit = resolve(ctx, repo, revision).commit
    info = views.repo_info(ctx.store, repo, ctx.meta, commit, blobs=ctx.flag("blobs"))
    return JSONResponse(listing.expanded(info, asked) if asked else info)


def _list_entry(ctx: Ctx, repo_type: str, info: dict[str, Any], asked: list[str]) -> dict[str, Any]:
    """One listing entry: the asked properties; else what `full` or the type's plain listing shows."""
    if asked:
        return listing.expanded(info, asked)
    if ctx.flag("full"):
        return info
    extra = [key for key in ("cardData", "config") if ctx.flag(key)]
    if repo_type == "model":
        return listing.expanded(info, [*listing.MODEL_LIST_FIELDS, *extra])
    return {key: value for key, value in info.items() if key not in {"cardData", "config"} - set(extra)}


def list_repos(ctx: Ctx) -> Response:
    repo_type = ctx.params["type"].removesuffix("s")
    asked = _expand(ctx, repo_type)
    author = ctx.query.get("author")
    searches = [s.lower() for s in ctx.query.getlist("search") if s]
    filters = [value for value in ctx.query.getlist("filter") if value]
    full = ctx.flag("full") or bool(listing.FULL_PROPERTIES & set(asked))
    items = []
    for repo, meta in ctx.store.list_repos(repo_type):
        if author and repo.namespace.lower() != author.lower():
            continue
        if not all(search in repo.id.lower() for search in searches):
            continue
        if meta.get("private") and not (ctx.principal and ctx.principal.member_of(repo.namespace)):
            continue
        try:
            head = ctx.store.resolve(repo, "main").commit
        except (RepoNotFound, RevisionNotFound):
            continue  # deleted meanwhile
        info = views.repo_info(ctx.store, repo, meta, head, blobs=False, full=full)
        if not listing.matches(
            info, filters=filters, gated=ctx.query.get("gated"), pipeline_tag=ctx.query.get("pipeline_tag")
        ):
            continue
        items.append((info, _list_entry(ctx, repo_type, info, asked)))
    sort = ctx.query.get("sort")
    if sort in ("lastModified", "createdAt"):
        items.sort(key=lambda item: item[0][sort], reverse=ctx.query.get("direction") != "1")
    limit = ctx.query.get("limit", "")
    page_size = ctx.hub.page_size
    if limit.isdigit() and int(limit) > 0:
        page_size = min(int(limit), page_size)
    return paged(ctx, [entry for _, entry in items], page_size)


def tree(ctx: Ctx) -> Response:
    repo = ctx.repo()
    resolved = _resolve_paged(ctx, repo)
    base = (ctx.params.get("path") or "").strip("/")
    listing = views.tree_listing(resolved.commit.tree, base, recursive=ctx.flag("recursive"))
    if listing is None:
        raise entry_not_found(base, resolved.commit.id)
    expand = ctx.flag("expand")
    page_size = min(ctx.hub.page_size, 50) if expand else ctx.hub.page_size
    if expand:
        last = views.last_commits(ctx.store, repo, resolved.commit, [item["path"] for item in listing])
        for item in listing:
            commit = last.get(item["path"])
            if commit is not None:
                item["lastCommit"] = {"id": commit.id, "title": commit.title, "date": commit.date}
    _add_xet_hashes(ctx, listing)
    return paged(ctx, listing, page_size, pin=resolved.commit.id)


def _add_xet_hashes(ctx: Ctx, items: list[dict[str, Any]]) -> None:
    """`xetHash` on LFS files, as the Hub lists them (what a cross-repo copy names)."""
    for item in items:
        lfs = item.get("lfs")
        xet_hash = ctx.store.xet_hash(lfs["oid"]) if lfs else None
        if xet_hash:
            item["xetHash"] = xet_hash


def paths_info(ctx: Ctx) -> Response:
    repo = ctx.repo()
    resolved = resolve(ctx, repo, ctx.params["rev"])
    content_type = ctx.request.headers.get("content-type", "")
    if "json" in content_type:
        payload = ctx.json()
        paths, expand = payload.strings("paths"), payload.boolean("expand")
    else:
        form = parse_qs(ctx.body.decode("utf-8", "replace"), keep_blank_values=True)
        paths, expand = form.get("paths", []), form.get("expand", ["False"])[0].lower() in ("1", "true")
    found = [info for p in paths if (info := views.path_info(resolved.commit.tree, p)) is not None]
    _add_xet_hashes(ctx, found)
    if expand:
        last = views.last_commits(ctx.store, repo, resolved.commit, [item["path"] for item in found])
        for item in found:
            commit = last.get(item["path"])
            if commit is not None:
                item["lastCommit"] = {"id": commit.id, "title": commit.title, "date": commit.date}
    return JSONResponse(found)


def refs(ctx: Ctx) -> Response:
    repo = ctx.repo()
    return JSONResponse(views.refs_json(ctx.store.refs(repo), include_prs=ctx.flag("include_prs")))


def commits(ctx: Ctx) -> Response:
    repo = ctx.repo()
    resolved = _resolve_paged(ctx, repo)
    formatted = "formatted" in ctx.query.getlist("expand[]") + ctx.query.getlist("expand")
    history = [views.commit_json(c, formatted=formatted) for c in ctx.store.history(repo, resolved.commit.id)]
    return paged(ctx, history, min(ctx.hub.page_size, 50), pin=resolved.commit.id)


def auth_check(ctx: Ctx) -> Response:
    """Read access (gate included) is the route's own requirement; `/write` adds write access."""
    if ctx.params.get("write"):
        ctx.writable(ctx.repo())
    return JSONResponse({"ok": True})


# ---- downloads --------------------------------------------------------------------------------------


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, None for the whole file; raises 416 when unsatisfiable."""
    if not header:
        return None
    match = _RANGE_RE.match(header)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # not a single byte range: serve the whole file, as RFC 9110 allows
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    else:
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        raise ApiError(416, f"Range not satisfiable: {header}", headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _iter_file(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def resolve_file(ctx: Ctx) -> Response:
    repo = ctx.repo()
    resolved = resolve(ctx, repo, ctx.params["rev"])
    commit = resolved.commit
    path = ctx.params["path"]
    entry = commit.tree.get(path)
    if entry is None:
        raise entry_not_found(path, commit.id)
    size = entry["size"]
    lfs = entry.get("lfs")
    etag = f'"{lfs["sha256"]}"' if lfs else f'"{entry["oid"]}"'
    filename = path.rsplit("/", 1)[-1]
    headers = {
        "X-Repo-Commit": commit.id,
        "ETag": etag,
        "Accept-Ranges": "bytes",
        **file_headers(filename),
    }
    if lfs:
        headers["X-Linked-Etag"] = etag
        headers["X-Linked-Size"] = str(size)
        headers.update(xet_cas.resolve_headers(ctx, repo, commit.id, lfs))
    byte_range = _parse_range(ctx.request.headers.get("range"), size)
    start, end = byte_range if byte_range else (0, size - 1)
    length = max(end - start + 1, 0)
    headers["Content-Length"] = str(length)
    status = 200
    if byte_range:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if ctx.request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    blob = ctx.store.entry_path(entry)
    if not blob.is_file():
        raise ApiError(500, f"Stored content for {path} is missing")
    return StreamingResponse(_iter_file(str(blob), start, length), status_code=status, headers=headers)
