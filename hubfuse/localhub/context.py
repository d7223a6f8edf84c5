"""Per-request context and the access rules every route applies.

Access mirrors the Hub: a private repo is invisible (RepoNotFound: 401 anonymous, 404 otherwise) to
anyone outside its namespace; a gated repo's files answer `GatedRepo` (401 anonymous, 403 otherwise)
to users who were not granted access; writes need a `write` token of the namespace's user or of a
member of its org.

Read access is declared per route (`Access`) and checked by the dispatcher before the handler runs
and before the request body is read, so no route can forget it; `Ctx.check_read` is that one check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from hubfuse.localhub.apierror import ApiError, forbidden, repo_not_found, unauthorized
from hubfuse.localhub.auth import AuthStore, Principal
from hubfuse.localhub.lfs import UploadSigner
from hubfuse.localhub.payload import Payload
from hubfuse.localhub.records import RepoId
from hubfuse.localhub.storage import Store


class Access(Enum):
    """What a route reveals of the repo it names, hence what the caller must be allowed to read."""

    NONE = "none"  # the route names no repo
    METADATA = "metadata"  # the repo exists, its refs, tree, settings: private repos stay invisible
    CONTENT = "content"  # file bytes (downloads, diffs): also needs the gate passed


AccessRule = Access | Callable[["Ctx"], Access]


@dataclass
class Hub:
    store: Store
    auth: AuthStore
    signer: UploadSigner
    page_size: int = 1000


@dataclass
class Ctx:
    hub: Hub
    request: Request
    params: dict[str, str]
    principal: Principal | None
    endpoint: str
    body: bytes = b""
    body_file: Path | None = None  # a spooled route's body, on disk
    meta: dict[str, Any] = field(default_factory=dict)  # the checked repo's meta, for repo routes
    _repo: RepoId | None = None

    @property
    def store(self) -> Store:
        return self.hub.store

    @property
    def query(self) -> QueryParams:
        return self.request.query_params

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true", "yes")

    def json(self) -> Payload:
        return Payload.parse(self.body)

    def repo(self) -> RepoId:
        """The repo the path names, as stored (ids are case-insensitive; the created casing is kept)."""
        if self._repo is None:
            plural = self.params.get("type") or "models"
            try:
                named = RepoId(plural.removesuffix("s"), self.params["ns"], self.params["name"])
            except (ValueError, KeyError):
                raise repo_not_found("", authenticated=self.principal is not None) from None
            self._repo = self.store.canonical(named) or named
        return self._repo

    def repo_url(self, repo: RepoId) -> str:
        return f"{self.endpoint}/{repo.url_prefix}{repo.id}"

    # ---- access ----------------------------------------------------------------------------------

    def check_read(self, repo: RepoId, access: Access) -> dict[str, Any]:
        """The one read check: the repo's meta if the caller may see what `access` reveals."""
        meta = self.readable(repo)
        if access is Access.CONTENT:
            self.check_gate(repo, meta)
        return meta

    def readable(self, repo: RepoId) -> dict[str, Any]:
        """The repo's meta if the caller may see the repo at all."""
        authenticated = self.principal is not None
        if not self.store.exists(repo):
            raise repo_not_found(repo.id, authenticated=authenticated)
        meta = self.store.meta(repo)
        if meta.get("private") and not (self.principal and self.principal.member_of(repo.namespace)):
            raise repo_not_found(repo.id, authenticated=authenticated)
        return meta

    def check_gate(self, repo: RepoId, meta: dict[str, Any]) -> None:
        if not meta.get("gated"):
            return
        principal = self.principal
        if principal and (
            principal.member_of(repo.namespace) or principal.user in meta.get("gatedAccess", [])
        ):
            return
        if principal is None:
            raise ApiError(
                401,
                f"Access to {repo.type} {repo.id} is restricted. You must have access to it and be authenticated"
                " to access it. Please log in.",
                code="GatedRepo",
            )
        raise ApiError(
            403,
            f"Access to {repo.type} {repo.id} is restricted and you are not in the authorized list."
            f" Visit {self.repo_url(repo)} to ask for access.",
            code="GatedRepo",
        )

    def writer(self) -> Principal:
        """The caller, who must hold a write token (to write anywhere at all)."""
        if self.principal is None:
            raise unauthorized(
                "You must be authenticated to perform this action: pass a token with write access."
            )
        if not self.principal.can_write:
            raise forbidden(
                "Your token has the 'read' role: it cannot write. Pass a token with the 'write' role."
            )
        return self.principal

    def writable(self, repo: RepoId) -> dict[str, Any]:
        """The repo's meta if the caller may push to it."""
        meta = self.readable(repo)
        principal = self.writer()
        if not principal.member_of(repo.namespace):
            raise forbidden(
                f"You don't have the rights to write to {repo.id}: {principal.user} is not in {repo.namespace}"
            )
        return meta

    def can_write(self, repo: RepoId) -> bool:
        return bool(self.principal and self.principal.can_write and self.principal.member_of(repo.namespace))
