"""Write routes: repos, settings, preupload, commits, branches and tags, the LFS batch API."""

from __future__ import annotations

import base64
import binascii
import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from hubfuse.localhub import cards, discussions, lfs
from hubfuse.localhub.api_read import resolve
from hubfuse.localhub.apierror import ApiError, bad_request, conflict, forbidden, revision_not_found
from hubfuse.localhub.commits import (
    CommitRequest,
    apply_operations,
    new_commit,
    parse_commit_payload,
    spooled_lines,
)
from hubfuse.localhub.context import Ctx, Hub
from hubfuse.localhub.payload import Payload
from hubfuse.localhub.records import (
    REPO_TYPES,
    Commit,
    RepoExists,
    RepoId,
    RepoNotFound,
    ResolvedRevision,
    RevisionNotFound,
)
from hubfuse.localhub.storage import RepoTxn
from hubfuse.localhub.views import object_id

_REF_NAME_RE = re.compile(r"^(?!refs/)(?!.*\.\.)[A-Za-z0-9._-][A-Za-z0-9._/-]{0,199}$")
STALE_PARENT_MESSAGE = "A commit has happened since. Please refresh and try again."


# ---- repos ------------------------------------------------------------------------------------------


def _repo_type(payload: Payload) -> str:
    repo_type = payload.string("type") or "model"
    if repo_type not in REPO_TYPES:
        raise bad_request(f"Invalid repo type: {repo_type!r}")
    return repo_type


def _repo_from_payload(ctx: Ctx, payload: Payload, owner_default: str) -> RepoId:
    """The repo a create/delete body names, as stored when it exists (ids are case-insensitive)."""
    repo_type = _repo_type(payload)
    name = payload.string("name", required=True)
    organization = payload.string("organization")
    namespace = organization or owner_default
    if "/" in name and not organization:
        namespace, _, name = name.partition("/")
    try:
        repo = RepoId(repo_type, namespace, name)
    except ValueError:
        raise bad_request(f"Invalid repo name: {namespace}/{name}") from None
    return ctx.store.canonical(repo) or repo


def create_repo(ctx: Ctx) -> Response:
    principal = ctx.writer()
    payload = ctx.json()
    repo = _repo_from_payload(ctx, payload, principal.user)
    if not principal.member_of(repo.namespace):
        raise forbidden(
            f'You don\'t have the rights to create a {repo.type} under the namespace "{repo.namespace}"'
        )
    private = payload.boolean("private") or payload.string("visibility") == "private"
    sdk = payload.string("sdk")
    extra = {"sdk": sdk} if repo.type == "space" and sdk else None
    try:
        meta = ctx.store.create_repo(repo, private=private, extra=extra)
    except RepoExists:
        raise conflict(f"You already created this {repo.type} repo", url=ctx.repo_url(repo)) from None
    created = RepoId.parse(repo.type, meta["id"])  # the namespace's existing casing, the name as asked
    return JSONResponse({"url": ctx.repo_url(created), "name": created.id, "id": object_id(created)})


def delete_repo(ctx: Ctx) -> Response:
    principal = ctx.writer()
    repo = _repo_from_payload(ctx, ctx.json(), principal.user)
    ctx.writable(repo)
    try:
        ctx.store.delete_repo(repo)
    except RepoNotFound:
        raise ApiError(404, "Repository not found", code="RepoNotFound") from None
    return JSONResponse({})


def move_repo(ctx: Ctx) -> Response:
    payload = ctx.json()
    repo_type = _repo_type(payload)
    try:
        src = RepoId.parse(repo_type, payload.string("fromRepo", required=True))
        dst = RepoId.parse(repo_type, payload.string("toRepo", required=True))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    src = ctx.store.canonical(src) or src
    ctx.writable(src)
    principal = ctx.writer()
    if not principal.member_of(dst.namespace):
        raise forbidden(f"You don't have the rights to move a repo to {dst.namespace}")
    try:
        ctx.store.move_repo(src, dst)
    except RepoExists:
        raise conflict(f"Repository {dst.id} already exists") from None
    return JSONResponse({"url": ctx.repo_url(dst)})


def update_settings(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    payload = ctx.json()
    gated = payload.data.get("gated")
    if "gated" in payload and gated not in ("auto", "manual", False):
        raise bad_request(f"Invalid gated value: {gated!r}")
    private = payload.boolean("private") if "private" in payload else None
    visibility = payload.string("visibility")
    if visibility is not None and visibility not in ("public", "private"):
        raise bad_request(f"Invalid visibility: {visibility!r}")
    with ctx.store.transaction(repo) as txn:
        meta = txn.meta()
        if "gated" in payload:
            meta["gated"] = gated
        if private is not None:
            meta["private"] = private
        if visibility is not None:
            meta["private"] = visibility == "private"
        txn.save_meta(meta)
    return JSONResponse({"private": meta["private"], "gated": meta["gated"]})


# ---- pushing ----------------------------------------------------------------------------------------


def _check_push(ctx: Ctx, repo: RepoId, resolved: ResolvedRevision, refs: dict[str, dict[str, str]]) -> None:
    """The caller may move this ref: a branch needs repo write access; a PR also accepts its author."""
    principal = ctx.writer()
    if resolved.kind == "pull":
        disc = discussions.load(ctx.store, repo, int(resolved.name))
        if not (ctx.can_write(repo) or disc["author"] == principal.user):
            raise forbidden(f"Only the author of refs/pr/{resolved.name} or a repo writer can push to it")
        if disc["status"] not in ("open", "draft"):
            raise bad_request(
                f"Pull request #{resolved.name} is {disc['status']}: it cannot take new commits"
            )
        return
    if resolved.kind != "branch":
        raise bad_request(
            f"Cannot commit to {resolved.kind} {resolved.name!r}: commit to a branch or a PR ref"
        )
    ctx.writable(repo)


def preupload(ctx: Ctx) -> Response:
    repo = ctx.repo()
    resolved = resolve(ctx, repo, ctx.params["rev"])
    if ctx.flag("create_pr"):
        ctx.writer()
    else:
        _check_push(ctx, repo, resolved, ctx.store.refs(repo))
    payload = ctx.json()
    files = payload.objects("files", required=True)
    tree = resolved.commit.tree
    gitignore = payload.string("gitIgnore")
    if gitignore is None:
        gitignore = _small_text(ctx, tree, ".gitignore")
    # The caller's own `.gitattributes` when it changes that file in the same commit, as on the Hub.
    gitattributes = payload.string("gitAttributes")
    if gitattributes is None:
        gitattributes = _small_text(ctx, tree, ".gitattributes")
    answered = []
    for item in files:
        path, size = item.string("path", required=True), item.integer("size", 0)
        try:
            sample = base64.b64decode(item.string("sample", ""), validate=True)
        except binascii.Error:
            raise bad_request(f"Invalid base64 sample for {path!r}") from None
        mode = lfs.upload_mode(path, size, sample, gitattributes)
        existing = tree.get(path)
        oid = None
        if existing is not None:
            if mode == "lfs" and existing.get("lfs"):
                oid = existing["lfs"]["sha256"]
            elif mode == "regular" and not existing.get("lfs"):
                oid = existing["oid"]
        answered.append(
            {"path": path, "uploadMode": mode, "shouldIgnore": lfs.is_ignored(path, gitignore), "oid": oid}
        )
    return JSONResponse({"files": answered, "commitOid": resolved.commit.id})


def _small_text(ctx: Ctx, tree: dict[str, dict], path: str) -> str | None:
    """A regular file of the revision as text (None when absent, in LFS or over the regular limit)."""
    entry = tree.get(path)
    if entry is None or entry.get("lfs") or entry["size"] > lfs.REGULAR_MAX_BYTES:
        return None
    return ctx.store.read_entry(entry).decode("utf-8", "replace")


def _check_card(ctx: Ctx, request: CommitRequest) -> None:
    """A README.md whose metadata the Hub would refuse is refused here too, whole commit and all."""
    for op in request.operations:
        if op.kind == "file" and op.path == "README.md" and op.entry is not None:
            errors, _ = cards.validate(ctx.store.read_entry(op.entry).decode("utf-8", "replace"))
            if errors:
                raise bad_request(f"Invalid metadata in README.md: {'; '.join(errors)}")


def _stale(head: str, parent: str | None) -> bool:
    return parent is not None and not head.startswith(parent)


def commit(ctx: Ctx) -> Response:
    repo = ctx.repo()
    principal = ctx.writer()
    if ctx.body_file is None:
        raise ApiError(500, "The commit route must spool its body")
    request = parse_commit_payload(spooled_lines(ctx.body_file), ctx.store)
    _check_card(ctx, request)
    revision = ctx.params["rev"]
    create_pr = ctx.flag("create_pr")
    pr_url = None
    with ctx.store.transaction(repo) as txn:
        try:
            resolved = ctx.store.resolve(repo, revision, txn.refs)
        except RevisionNotFound:
            raise revision_not_found(revision) from None
        if create_pr:
            created, pr_num = _commit_as_pr(ctx, txn, resolved, request, principal.user)
            pr_url = f"{ctx.repo_url(repo)}/discussions/{pr_num}"
        else:
            _check_push(ctx, repo, resolved, txn.refs)
            head = resolved.commit
            if _stale(head.id, request.parent_commit):
                raise ApiError(412, STALE_PARENT_MESSAGE)
            tree = apply_operations(ctx.store, repo, head.tree, request.operations)
            created = new_commit(head, tree, request, principal.user)
            txn.write_commit(created)
            table = "pulls" if resolved.kind == "pull" else "branches"
            txn.refs[table][resolved.name] = created.id
            txn.save_refs()
            if resolved.kind == "pull":
                disc = discussions.load(ctx.store, repo, int(resolved.name))
                discussions.add_commit_event(txn, disc, created)
    return JSONResponse(
        {
            "success": True,
            "commitOid": created.id,
            "commitUrl": f"{ctx.repo_url(repo)}/commit/{created.id}",
            "commitMessage": created.title,
            "pullRequestUrl": pr_url,
        }
    )


def _commit_as_pr(
    ctx: Ctx, txn: RepoTxn, resolved: ResolvedRevision, request: CommitRequest, author: str
) -> tuple[Commit, int]:
    """A new commit on top of the branch (or of `parentCommit`), opened as a pull request."""
    if resolved.kind != "branch":
        raise revision_not_found(resolved.name)
    base = resolved.commit
    if request.parent_commit:
        try:
            base = ctx.store.resolve(txn.repo, request.parent_commit, txn.refs).commit
        except RevisionNotFound:
            raise revision_not_found(request.parent_commit) from None
    tree = apply_operations(ctx.store, txn.repo, base.tree, request.operations)
    created = new_commit(base, tree, request, author)
    txn.write_commit(created)
    disc = discussions.create(
        txn,
        author=author,
        title=request.summary,
        description=request.description,
        pull_request=True,
        base_branch=resolved.name,
        base_commit=base.id,
        head_commit=created.id,
    )
    discussions.add_commit_event(txn, disc, created)
    return created, disc["num"]


# ---- branches and tags ------------------------------------------------------------------------------


def _ref_name(name: str) -> str:
    if not _REF_NAME_RE.match(name):
        raise bad_request(f"Invalid ref name: {name!r}")
    return name


def create_branch(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    branch = _ref_name(ctx.params["ref"])
    starting_point = ctx.json().string("startingPoint") or "main"
    with ctx.store.transaction(repo) as txn:
        if branch in txn.refs["branches"]:
            raise conflict(f"Reference refs/heads/{branch} already exists")
        try:
            target = ctx.store.resolve(repo, starting_point, txn.refs).commit
        except RevisionNotFound:
            raise revision_not_found(starting_point) from None
        txn.refs["branches"][branch] = target.id
        txn.save_refs()
    return JSONResponse({})


def delete_branch(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    branch = ctx.params["ref"]
    if branch == "main":
        raise forbidden("The default branch cannot be deleted")
    with ctx.store.transaction(repo) as txn:
        if txn.refs["branches"].pop(branch, None) is None:
            raise revision_not_found(branch)
        txn.save_refs()
    return JSONResponse({})


def create_tag(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    tag = _ref_name(ctx.json().string("tag", ""))
    with ctx.store.transaction(repo) as txn:
        if tag in txn.refs["tags"]:
            raise conflict(f"Tag {tag} already exists")
        try:
            target = ctx.store.resolve(repo, ctx.params["ref"], txn.refs).commit
        except RevisionNotFound:
            raise revision_not_found(ctx.params["ref"]) from None
        txn.refs["tags"][tag] = target.id
        txn.save_refs()
    return JSONResponse({})


def delete_tag(ctx: Ctx) -> Response:
    repo = ctx.repo()
    ctx.writable(repo)
    with ctx.store.transaction(repo) as txn:
        if txn.refs["tags"].pop(ctx.params["ref"], None) is None:
            raise revision_not_found(ctx.params["ref"])
        txn.save_refs()
    return JSONResponse({})


# ---- LFS ---------------------------------------------------------------------------------------------


def lfs_batch(ctx: Ctx) -> Response:
    repo = ctx.repo()
    payload = ctx.json()
    ref = payload.object("ref").string("name")
    if ref:  # no ref means a PR is being opened, which any write token may do
        try:
            resolved = ctx.store.resolve(repo, ref)
        except RevisionNotFound:
            ctx.writable(repo)
        else:
            _check_push(ctx, repo, resolved, ctx.store.refs(repo))
    checked = {
        "operation": payload.string("operation"),
        "transfers": payload.strings("transfers"),
        "objects": payload.array("objects", required=True),
    }
    body = lfs.batch_response(ctx.store, ctx.hub.signer, repo, checked, ctx.endpoint)
    return JSONResponse(body, media_type=lfs.LFS_CONTENT_TYPE)


def duplicate_lfs_files(ctx: Ctx) -> Response:
    """`POST /api/{type}s/{src}/lfs-files/duplicate`: the Hub's server-side copy of LFS objects from
    the repo in the path (which the route lets the caller read, content and gate) into `target`, which
    the caller must be able to write. An object is copied only when the source holds it and the
    `xetHash` named is the object's own; every other entry comes back in `failed`."""
    source = ctx.repo()
    payload = ctx.json()
    target_spec = payload.object("target")
    target_type = target_spec.string("type") or "model"
    if target_type not in REPO_TYPES:
        raise bad_request(f"Invalid target repo type: {target_type!r}")
    try:
        named = RepoId.parse(target_type, target_spec.string("name", required=True))
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    target = ctx.store.canonical(named) or named
    ctx.writable(target)
    duplicated, failed = [], []
    for item in payload.objects("files", required=True):
        sha256, xet_hash = item.string("sha256", "").lower(), item.string("xetHash", "")
        entry = {"sha256": sha256, "filename": item.string("filename", "")}
        if not ctx.store.lfs_linked(source, sha256):
            failed.append({**entry, "error": f"LFS object {sha256} is not in {source.type}s/{source.id}"})
        elif not xet_hash or ctx.store.xet_hash(sha256) != xet_hash:
            failed.append({**entry, "error": f"xetHash {xet_hash!r} is not the Xet hash of {sha256}"})
        else:
            ctx.store.link_lfs(target, sha256)
            duplicated.append(entry)
    return JSONResponse({"duplicated": duplicated, "failed": failed})


def lfs_verify(ctx: Ctx) -> Response:
    repo = ctx.repo()
    payload = ctx.json()
    oid, size = payload.string("oid", ""), payload.integer("size")
    if not ctx.store.lfs_linked(repo, oid) or ctx.store.lfs_path(oid).stat().st_size != size:
        raise ApiError(404, f"LFS object {oid} not found in this repo")
    return JSONResponse({"oid": oid, "size": size}, media_type=lfs.LFS_CONTENT_TYPE)


async def lfs_upload(hub: Hub, request: Request, params: dict[str, str]) -> Response | None:
    """The signed PUT; None when the client went away mid-body (nothing was stored)."""
    try:
        await lfs.receive_upload(hub.store, hub.signer, params["token"], request.stream())
    except ClientDisconnect:
        return None
    return Response(b"", status_code=200, headers={"ETag": '"ok"'})
