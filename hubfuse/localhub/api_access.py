"""Access requests of gated repos: grant, list by status, accept / reject / cancel (`handle`).

State lives in the repo's meta: `accessRequests` maps a user to `{status, requestId, timestamp}` and
`gatedAccess` lists the accepted users (what the gate checks). Like the Hub, managing requests takes
write access to a gated repo; a request moves only to a status it is not in already; granting access
to a user who has it is refused. A user exists here once they hold a token.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.responses import JSONResponse, Response

from hubfuse.localhub.apierror import ApiError, bad_request
from hubfuse.localhub.context import Ctx
from hubfuse.localhub.fsutil import now_iso
from hubfuse.localhub.paging import paged
from hubfuse.localhub.records import RepoId
from hubfuse.localhub.storage import RepoTxn

STATUSES = ("pending", "accepted", "rejected")
REJECTION_REASON_MAX = 200


def _gated(ctx: Ctx, repo: RepoId) -> dict[str, Any]:
    meta = ctx.writable(repo)
    if not meta.get("gated"):
        raise bad_request(f"Repo {repo.id} is not gated: enable gating in its settings first")
    return meta


def _records(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every request by user; users granted before requests were kept count as accepted."""
    records = {user: dict(record) for user, record in (meta.get("accessRequests") or {}).items()}
    for user in meta.get("gatedAccess") or ():
        records.setdefault(user, {"status": "accepted", "requestId": "", "timestamp": meta["createdAt"]})
    return records


def _save(txn: RepoTxn, meta: dict[str, Any], records: dict[str, dict[str, Any]]) -> None:
    meta["accessRequests"] = records
    meta["gatedAccess"] = sorted(user for user, record in records.items() if record["status"] == "accepted")
    txn.save_meta(meta)


def _record(status: str) -> dict[str, Any]:
    return {"status": status, "requestId": secrets.token_hex(12), "timestamp": now_iso()}


def grant_access(ctx: Ctx) -> Response:
    repo = ctx.repo()
    _gated(ctx, repo)
    user = ctx.json().string("user", "")
    if not user:
        raise bad_request("'user' must be a user name")
    if not ctx.hub.auth.knows_user(user):
        raise ApiError(404, f"User {user} not found")
    with ctx.store.transaction(repo) as txn:
        meta = txn.meta()
        records = _records(meta)
        if records.get(user, {}).get("status") == "accepted":
            raise bad_request(f"User {user} already has access to {repo.id}")
        records[user] = _record("accepted")
        _save(txn, meta, records)
    return JSONResponse({"user": user, "status": "accepted"})


def list_requests(ctx: Ctx) -> Response:
    repo = ctx.repo()
    status = ctx.params["status"]
    meta = _gated(ctx, repo)
    items = [
        {
            "user": {"user": user, "fullname": user, "type": "user"},
            "requestId": record["requestId"],
            "status": record["status"],
            "timestamp": record["timestamp"],
        }
        for user, record in sorted(_records(meta).items())
        if record["status"] == status
    ]
    return paged(ctx, items, ctx.hub.page_size)


def handle_request(ctx: Ctx) -> Response:
    repo = ctx.repo()
    _gated(ctx, repo)
    payload = ctx.json()
    status = payload.string("status", required=True)
    if status not in STATUSES:
        raise bad_request(f"'status' must be one of {', '.join(STATUSES)}, not {status!r}")
    user, request_id = payload.string("user"), payload.string("requestId")
    if (user is None) == (request_id is None):
        raise bad_request("Pass exactly one of 'user' and 'requestId'")
    reason = payload.string("rejectionReason")
    if reason is not None and (status != "rejected" or len(reason) > REJECTION_REASON_MAX):
        raise bad_request(
            f"'rejectionReason' goes with a rejection, {REJECTION_REASON_MAX} characters at most"
        )
    if user is not None and not ctx.hub.auth.knows_user(user):
        raise ApiError(404, f"User {user} not found")
    with ctx.store.transaction(repo) as txn:
        meta = txn.meta()
        records = _records(meta)
        found = (
            user
            if user is not None
            else next(
                (
                    name
                    for name, record in records.items()
                    if request_id and record["requestId"] == request_id
                ),
                None,
            )
        )
        if found is None or found not in records:
            raise ApiError(404, "Access request not found")
        if records[found]["status"] == status:
            raise ApiError(404, f"The access request of {found} is already {status}")
        records[found] = {**records[found], "status": status, "timestamp": now_iso()}
        if reason is not None:
            records[found]["rejectionReason"] = reason
        _save(txn, meta, records)
    return JSONResponse({})
