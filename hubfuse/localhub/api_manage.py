"""Repo management routes: super-squash, the repo's LFS files (list, permanent delete), duplicate,
and the storage listing of a user's or an org's repos (`/api/settings/repositories`, `hf repos ls`).

What the Hub does and the local hub does too: a squash leaves one commit with the ref's files and
no parents (other refs keep their history); deleting LFS files with `rewriteHistory` removes every
pointer to them from every ref's history, so they are gone from trees and downloads; a duplicate
is a new repo whose `main` holds the source's `main` files, its LFS objects copied into it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from starlette.responses import JSONResponse, Response

from hubfuse.localhub.apierror import bad_request, conflict, forbidden, revision_not_found, unauthorized
from hubfuse.localhub.context import Ctx
from hubfuse.localhub.paging import paged
from hubfuse.localhub.records import REPO_TYPES, Commit, RepoExists, RepoId, RepoNotFound, RevisionNotFound
from hubfuse.localhub.storage import RepoTxn, Store

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The Hub's schema limits (its OpenAPI description).
SQUASH_MESSAGE_MAX = 500
DELETIONS_MAX = 1000
_REF_TABLES = (("branches", "refs/heads/"), ("tags", "refs/tags/"), ("pulls", "refs/pr/"))


# ---- super-squash ----------------------------------------------------------------------------------


def super_squash(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    principal = ctx.writer()
    ref = ctx.params["ref"]
    message = ctx.json().string("message") or f"Super-squash branch '{ref}'"
    if len(message) > SQUASH_MESSAGE_MAX:
        raise bad_request(f"'message' must be at most {SQUASH_MESSAGE_MAX} characters")
    with ctx.store.transaction(repo) as txn:
        try:
            resolved = ctx.store.resolve(repo, ref, txn.refs)
        except RevisionNotFound:
            raise revision_not_found(ref) from None
        if resolved.kind not in ("branch", "pull"):
            raise bad_request(f"Cannot super-squash {resolved.kind} {ref!r}: only a branch or a PR ref")
        squashed = Commit.create(
            parents=[], tree=resolved.commit.tree, title=message, message="", author=principal.user
        )
        txn.write_commit(squashed)
        txn.refs["pulls" if resolved.kind == "pull" else "branches"][resolved.name] = squashed.id
        txn.save_refs()
    return JSONResponse({"commitId": squashed.id})


# ---- LFS files ----------------------------------------------------------------------------------------


def _ordered_refs(refs: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """(full ref name, head) for every ref: main first, then branches, tags and PRs."""
    ordered = []
    for table, prefix in _REF_TABLES:
        names = sorted(refs[table], key=lambda name: (name != "main", name))
        ordered += [(f"{prefix}{name}", refs[table][name]) for name in names]
    return ordered


def _first_pushes(store: Store, repo: RepoId) -> dict[str, dict[str, Any]]:
    """For each LFS object a commit names: the first path, ref and date it was committed under."""
    found: dict[str, dict[str, Any]] = {}
    for ref, head in _ordered_refs(store.refs(repo)):
        for commit in reversed(store.history(repo, head)):
            for path, entry in sorted(commit.tree.items()):
                lfs = entry.get("lfs")
                if lfs and lfs["sha256"] not in found:
                    found[lfs["sha256"]] = {"filename": path, "ref": ref, "pushedAt": commit.date}
    return found


def list_lfs_files(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    pushes = _first_pushes(ctx.store, repo)
    items = []
    for sha256 in ctx.store.lfs_held(repo):
        push = pushes.get(sha256)
        if push is None:
            continue  # uploaded but never committed: nothing names it
        size = ctx.store.lfs_path(sha256).stat().st_size
        items.append({"fileOid": sha256, "oid": sha256, "size": size, **push})
    items.sort(key=lambda item: (item["pushedAt"], item["filename"]))
    return paged(ctx, items, ctx.hub.page_size)


def _without_objects(store: Store, txn: RepoTxn, doomed: set[str]) -> None:
    """Rewrite every ref's history without the tree entries that point at `doomed` objects."""
    rewritten: dict[str, str] = {}
    for _, head in _ordered_refs(txn.refs):
        stack = [head]
        while stack:  # parents before children, without recursion (histories can be long)
            commit_id = stack[-1]
            if commit_id in rewritten:
                stack.pop()
                continue
            commit = store.commit(txn.repo, commit_id)
            pending = [parent for parent in commit.parents if parent not in rewritten]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            tree = {
                path: entry
                for path, entry in commit.tree.items()
                if not (entry.get("lfs") and entry["lfs"]["sha256"] in doomed)
            }
            parents = [rewritten[parent] for parent in commit.parents]
            if tree == commit.tree and parents == commit.parents:
                rewritten[commit_id] = commit_id
                continue
            created = Commit.create(
                parents=parents, tree=tree, title=commit.title, message=commit.message, author=commit.author
            )
            created = dataclasses.replace(created, date=commit.date, extra=commit.extra)
            txn.write_commit(created)
            rewritten[commit_id] = created.id
    for table, _ in _REF_TABLES:
        for name, head in txn.refs[table].items():
            txn.refs[table][name] = rewritten.get(head, head)
    txn.save_refs()


def delete_lfs_files(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    deletions = ctx.json().object("deletions")
    shas = deletions.strings("sha")
    if not 0 < len(shas) <= DELETIONS_MAX or not all(_SHA256_RE.match(sha) for sha in shas):
        raise bad_request(f"'deletions.sha' must be a list of 1 to {DELETIONS_MAX} sha256 object ids")
    rewrite = deletions.boolean("rewriteHistory", True)
    with ctx.store.transaction(repo) as txn:
        doomed = {sha for sha in shas if ctx.store.lfs_linked(repo, sha)}
        if rewrite and doomed:
            _without_objects(ctx.store, txn, doomed)
        for sha in doomed:
            ctx.store.unlink_lfs(repo, sha)
    return JSONResponse({})


# ---- duplicate ------------------------------------------------------------------------------------------


def duplicate_repo(ctx: Ctx) -> Response:
    """The source (the route's repo, read with its gate) copied into a new repo of the caller's."""
    source = ctx.repo()
    principal = ctx.writer()
    payload = ctx.json()
    try:
        target = RepoId.parse(source.type, payload.string("repository", required=True))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if not principal.member_of(target.namespace):
        raise forbidden(
            f'You don\'t have the rights to create a {target.type} under the namespace "{target.namespace}"'
        )
    visibility = payload.string("visibility")
    if visibility not in (None, "public", "private"):
        raise bad_request(f"Invalid visibility: {visibility!r}")
    # Without a choice, a private source stays private: a duplicate never publishes what was hidden.
    private = visibility == "private" if visibility else bool(ctx.meta.get("private"))
    head = ctx.store.resolve(source, "main").commit
    extra = {"sdk": ctx.meta["sdk"]} if source.type == "space" and ctx.meta.get("sdk") else None
    try:
        meta = ctx.store.create_repo(target, private=private, extra=extra)
    except RepoExists:
        raise conflict(f"You already created this {target.type} repo", url=ctx.repo_url(target)) from None
    created = RepoId.parse(target.type, meta["id"])
    for entry in head.tree.values():
        if entry.get("lfs"):
            ctx.store.link_lfs(created, entry["lfs"]["sha256"])
    with ctx.store.transaction(created) as txn:
        initial = ctx.store.resolve(created, "main", txn.refs).commit
        copied = Commit.create(
            parents=[initial.id],
            tree=dict(head.tree),
            title=f"Duplicate from {source.id}",
            message="",
            author=principal.user,
        )
        txn.write_commit(copied)
        txn.refs["branches"]["main"] = copied.id
        txn.save_refs()
    return JSONResponse({"url": ctx.repo_url(created), "filesCopyPending": False})


# ---- storage listing --------------------------------------------------------------------------------------


def user_repositories(ctx: Ctx) -> Response:
    """`/api/settings/repositories` (the caller's own) or `/api/organizations/{org}/settings/...`."""
    principal = ctx.principal
    if principal is None:
        raise unauthorized()
    namespace = ctx.params.get("org") or principal.user
    if not principal.member_of(namespace):
        raise forbidden(f"You are not a member of {namespace}")
    items = []
    for repo_type in REPO_TYPES:
        for repo, meta in ctx.store.list_repos(repo_type):
            if repo.namespace.lower() != namespace.lower():
                continue
            try:
                head = ctx.store.resolve(repo, "main").commit
            except (RepoNotFound, RevisionNotFound):
                continue  # deleted meanwhile
            items.append(
                {
                    "id": repo.id,
                    "type": repo_type,
                    "updatedAt": head.date,
                    "visibility": "private" if meta.get("private") else "public",
                    "storage": sum(entry["size"] for entry in head.tree.values()),
                }
            )
    total = sum(item["storage"] for item in items)
    for item in items:
        item["storagePercent"] = 100.0 * item["storage"] / total if total else 0.0
    items.sort(key=lambda item: item["updatedAt"], reverse=True)
    return paged(ctx, items, ctx.hub.page_size)
