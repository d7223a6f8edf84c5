"""Discussion and pull request routes."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from hubfuse.localhub import discussions
from hubfuse.localhub.apierror import bad_request, forbidden
from hubfuse.localhub.context import Ctx

_PAGE_SIZE = 50


def list_discussions(ctx: Ctx) -> Response:
    repo = ctx.repo()
    kind = ctx.query.get("type", "all")
    status = ctx.query.get("status", "all")
    author = ctx.query.get("author")
    page_text = ctx.query.get("p", "0") or "0"
    if not page_text.isdigit():
        raise bad_request(f"Invalid page number: {page_text!r}")
    page = int(page_text)
    found = []
    for disc in discussions.list_all(ctx.store, repo):
        if kind == "pull_request" and not disc["isPullRequest"]:
            continue
        if kind == "discussion" and disc["isPullRequest"]:
            continue
        if status == "open" and disc["status"] not in ("open", "draft"):
            continue
        if status == "closed" and disc["status"] not in ("closed", "merged"):
            continue
        if author and disc["author"] != author:
            continue
        found.append(discussions.summary_json(repo, disc))
    start = page * _PAGE_SIZE
    return JSONResponse(
        {
            "discussions": found[start : start + _PAGE_SIZE],
            "count": len(found),
            "start": start,
            "numClosedDiscussions": 0,
        }
    )


def discussion_details(ctx: Ctx) -> Response:
    """With `?diff=1` this returns file content: the route then requires content access (the gate)."""
    repo = ctx.repo()
    disc = discussions.load(ctx.store, repo, discussions.parse_num(ctx.params["num"]))
    details = discussions.details_json(
        ctx.store, repo, disc, ctx.store.refs(repo), with_diff=ctx.flag("diff")
    )
    return JSONResponse(details)


def create_discussion(ctx: Ctx) -> Response:
    repo = ctx.repo()
    principal = ctx.writer()
    payload = ctx.json()
    title = payload.string("title", required=True)
    description = payload.string("description", "")
    with ctx.store.transaction(repo) as txn:
        disc = discussions.create(
            txn,
            author=principal.user,
            title=title,
            description=description,
            pull_request=payload.boolean("pullRequest"),
        )
    return JSONResponse(
        {
            "num": disc["num"],
            "url": f"{ctx.repo_url(repo)}/discussions/{disc['num']}",
            "pullRequest": disc["isPullRequest"],
        }
    )


def discussion_action(ctx: Ctx) -> Response:
    """comment, title, status and merge on one discussion, under the repo lock."""
    repo = ctx.repo()
    principal = ctx.writer()
    action = ctx.params["action"]
    payload = ctx.json()
    num = discussions.parse_num(ctx.params["num"])
    with ctx.store.transaction(repo) as txn:
        disc = discussions.load(ctx.store, repo, num)
        is_author = disc["author"] == principal.user
        if action == "comment":
            text = payload.string("comment", "")
            if not text.strip():
                raise bad_request("'comment' must be a non-empty string")
            event = discussions.comment_event(principal.user, text)
            disc["events"].append(event)
            result: dict[str, Any] = {"newMessage": event}
        elif action == "title":
            if not (is_author or ctx.can_write(repo)):
                raise forbidden("Only the author or a repo writer can rename this discussion")
            result = {"newTitle": discussions.rename(disc, principal.user, payload.string("title", ""))}
        elif action == "status":
            if not (is_author or ctx.can_write(repo)):
                raise forbidden("Only the author or a repo writer can change this discussion's status")
            event = discussions.change_status(
                disc, principal.user, payload.string("status", ""), payload.string("comment")
            )
            result = {"newStatus": event}
        else:  # merge
            ctx.writable(repo)
            merge_commit = discussions.merge(txn, disc, principal.user, payload.string("comment"))
            return JSONResponse({"mergeCommitId": merge_commit.id})
        discussions.save(txn, disc)
    return JSONResponse(result)


def comment_change(ctx: Ctx) -> Response:
    repo = ctx.repo()
    principal = ctx.writer()
    num = discussions.parse_num(ctx.params["num"])
    with ctx.store.transaction(repo) as txn:
        disc = discussions.load(ctx.store, repo, num)
        event = discussions.find_comment(disc, ctx.params["cid"])
        is_comment_author = event["author"]["name"] == principal.user
        if ctx.params["op"] == "edit":
            if not is_comment_author:
                raise forbidden("Only the comment's author can edit it")
            content = ctx.json().string("content", "")
            if not content.strip():
                raise bad_request("'content' must be a non-empty string")
            event = discussions.edit_comment(disc, ctx.params["cid"], principal.user, content)
        else:
            if not (is_comment_author or ctx.can_write(repo)):
                raise forbidden("Only the comment's author or a repo writer can hide it")
            event = discussions.hide_comment(disc, ctx.params["cid"])
        discussions.save(txn, disc)
    return JSONResponse({"updatedComment": event})
