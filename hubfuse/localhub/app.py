"""The ASGI app: routes matched on the raw (still percent-encoded) path, handlers run in a thread pool.

Routing on `scope["raw_path"]` matters: revisions arrive as `refs%2Fpr%2F1` and folder paths as
`a%2Fb`, and a decoded path could not tell those slashes from the separators.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hubfuse.localhub import api_access as access
from hubfuse.localhub import api_discussions as disc
from hubfuse.localhub import api_manage as manage
from hubfuse.localhub import api_read as read
from hubfuse.localhub import api_write as write
from hubfuse.localhub import pages, xet_cas
from hubfuse.localhub.apierror import ApiError, repo_not_found
from hubfuse.localhub.auth import AuthStore
from hubfuse.localhub.context import Access, Ctx, Hub
from hubfuse.localhub.control import ControlMiddleware
from hubfuse.localhub.faults import FaultInjector
from hubfuse.localhub.lfs import UploadSigner
from hubfuse.localhub.payload import read_body, spool_body
from hubfuse.localhub.ratelimit import RateLimiter
from hubfuse.localhub.requestlog import RequestLog
from hubfuse.localhub.routing import Route, authorize, error_response, params, route, run_handler
from hubfuse.localhub.storage import Store
from hubfuse.localmark import LOCALHUB_HEADER

logger = logging.getLogger("hubfuse.localhub")

README_MAX_BODY = 8 * 1024 * 1024
BATCH_MAX_BODY = 16 * 1024 * 1024
# NDJSON commits are spooled to disk and parsed a line at a time: one inline file (at most 10 MiB, as
# on the Hub) is in memory at once, whatever the body's size. The cap bounds the spool on disk.
COMMIT_MAX_BODY = 4 * 1024 * 1024 * 1024

_TYPE = r"(?P<type>models|datasets|spaces)"
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+?)"
_API_REPO = rf"/api/{_TYPE}/{_REPO}"
_GIT_REPO = rf"/(?:(?P<type>datasets|spaces)/)?{_REPO}\.git"
# A repo's pages: never a namespace the API's own paths start with, never a `.git` name.
_PAGE_REPO = (
    r"/(?:(?P<type>datasets|spaces)/)?(?!(?:api|datasets|spaces|_pages|lfs-upload|xet-cas)/)"
    r"(?P<ns>[^/]+)/(?P<name>[^/]+?)(?<!\.git)"
)


def _diff_access(ctx: Ctx) -> Access:
    return Access.CONTENT if ctx.flag("diff") else Access.METADATA


def _auth_check_access(ctx: Ctx) -> Access:
    return Access.METADATA if ctx.params.get("write") else Access.CONTENT


def _access_request_routes() -> list[Route]:
    """A gated repo's access requests: managing them takes write access to the repo."""
    return [
        route("POST", rf"{_API_REPO}/user-access-request/grant", access.grant_access, writer=True),
        route("POST", rf"{_API_REPO}/user-access-request/handle", access.handle_request, writer=True),
        route(
            "GET",
            rf"{_API_REPO}/user-access-request/(?P<status>pending|accepted|rejected)",
            access.list_requests,
            writer=True,
        ),
    ]


def _repo_management_routes() -> list[Route]:
    """Squash, LFS file housekeeping, duplicate, and the storage listing `hf repos ls` reads."""
    return [
        route("GET", r"/api/settings/repositories", manage.user_repositories, Access.NONE),
        route(
            "GET",
            r"/api/organizations/(?P<org>[^/]+)/settings/repositories",
            manage.user_repositories,
            Access.NONE,
        ),
        route("POST", rf"{_API_REPO}/super-squash/(?P<ref>[^/]+)", manage.super_squash, writer=True),
        route("GET", rf"{_API_REPO}/lfs-files", manage.list_lfs_files, writer=True),
        route(
            "POST",
            rf"{_API_REPO}/lfs-files/batch",
            manage.delete_lfs_files,
            writer=True,
            max_body=BATCH_MAX_BODY,
        ),
        # What a duplicate copies is the source's content: reading it takes what a download takes.
        route("POST", rf"{_API_REPO}/duplicate", manage.duplicate_repo, Access.CONTENT, writer=True),
    ]


ROUTES: list[Route] = [
    route("GET", r"/api/whoami-v2", read.whoami, Access.NONE),
    route("POST", r"/api/validate-yaml", read.validate_yaml, Access.NONE, max_body=README_MAX_BODY),
    route("POST", r"/api/repos/create", write.create_repo, Access.NONE, writer=True),
    route("DELETE", r"/api/repos/delete", write.delete_repo, Access.NONE, writer=True),
    route("POST", r"/api/repos/move", write.move_repo, Access.NONE, writer=True),
    route("GET", rf"/api/{_TYPE}", read.list_repos, Access.NONE),
    route("GET", rf"{_API_REPO}", read.repo_info),
    route("GET", rf"{_API_REPO}/revision/(?P<rev>[^/]+)", read.repo_info),
    route("PUT", rf"{_API_REPO}/settings", write.update_settings, writer=True),
    route("GET", rf"{_API_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", read.tree),
    route("POST", rf"{_API_REPO}/paths-info/(?P<rev>[^/]+)", read.paths_info),
    route("GET", rf"{_API_REPO}/refs", read.refs),
    route("GET", rf"{_API_REPO}/commits/(?P<rev>[^/]+)", read.commits),
    route("GET", rf"{_API_REPO}/auth-check(?:/(?P<write>write))?", read.auth_check, _auth_check_access),
    # Xet (xet_cas.py): a download's token takes what a download takes, an upload's a write token.
    route("GET", rf"{_API_REPO}/xet-read-token/(?P<rev>.+)", xet_cas.read_token, Access.CONTENT),
    route("GET", rf"{_API_REPO}/xet-write-token/(?P<rev>.+)", xet_cas.write_token, writer=True),
    route(
        "POST",
        rf"{_API_REPO}/preupload/(?P<rev>[^/]+)",
        write.preupload,
        writer=True,
        max_body=BATCH_MAX_BODY,
    ),
    route(
        "POST",
        rf"{_API_REPO}/commit/(?P<rev>[^/]+)",
        write.commit,
        writer=True,
        max_body=COMMIT_MAX_BODY,
        spool=True,
    ),
    route("POST", rf"{_API_REPO}/branch/(?P<ref>.+)", write.create_branch, writer=True),
    route("DELETE", rf"{_API_REPO}/branch/(?P<ref>.+)", write.delete_branch, writer=True),
    route("POST", rf"{_API_REPO}/tag/(?P<ref>.+)", write.create_tag, writer=True),
    route("DELETE", rf"{_API_REPO}/tag/(?P<ref>.+)", write.delete_tag, writer=True),
    *_access_request_routes(),
    *_repo_management_routes(),
    route("GET", rf"{_API_REPO}/discussions", disc.list_discussions),
    route("POST", rf"{_API_REPO}/discussions", disc.create_discussion, writer=True),
    route("GET", rf"{_API_REPO}/discussions/(?P<num>\d+)", disc.discussion_details, _diff_access),
    route(
        "POST",
        rf"{_API_REPO}/discussions/(?P<num>\d+)/(?P<action>comment|title|status|merge)",
        disc.discussion_action,
        writer=True,
    ),
    route(
        "POST",
        rf"{_API_REPO}/discussions/(?P<num>\d+)/comment/(?P<cid>[^/]+)/(?P<op>edit|hide)",
        disc.comment_change,
        writer=True,
    ),
    # The source repo's content is what a duplicate copies: reading it takes what a download takes.
    route(
        "POST",
        rf"{_API_REPO}/lfs-files/duplicate",
        write.duplicate_lfs_files,
        Access.CONTENT,
        writer=True,
        max_body=BATCH_MAX_BODY,
    ),
    route(
        "POST", rf"{_GIT_REPO}/info/lfs/objects/batch", write.lfs_batch, writer=True, max_body=BATCH_MAX_BODY
    ),
    route("POST", rf"{_GIT_REPO}/info/lfs/objects/verify", write.lfs_verify),
    route(
        "GET HEAD",
        rf"/(?:(?P<type>datasets|spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
        read.resolve_file,
        Access.CONTENT,
    ),
    # The HTML pages, after every API route: a path the API serves is never a page.
    route("GET HEAD", r"/", pages.index, Access.NONE, page=True),
    route("GET HEAD", r"/_pages/style\.css", pages.stylesheet, Access.NONE, page=True),
    route("POST", r"/login", pages.login, Access.NONE, page=True),
    route("POST", r"/logout", pages.logout, Access.NONE, page=True),
    route("GET HEAD", _PAGE_REPO, pages.repo_page, page=True),
    route("GET HEAD", rf"{_PAGE_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", pages.tree_page, page=True),
    route("GET HEAD", rf"{_PAGE_REPO}/blob/(?P<rev>[^/]+)/(?P<path>.+)", pages.blob_page, page=True),
    route("GET HEAD", rf"{_PAGE_REPO}/discussions", pages.discussions_page, page=True),
    route("GET HEAD", rf"{_PAGE_REPO}/discussions/(?P<num>\d+)", pages.discussion_page, page=True),
]
# Paths that name a repo no route can serve (an id without a namespace, like `gpt2`): RepoNotFound.
_REPO_SHAPED_RE = re.compile(rf"^/api/{_TYPE}/|/resolve/")
_UPLOAD_RE = re.compile(r"^/lfs-upload/(?P<token>[A-Za-z0-9_=.-]+)$")


class HubApp:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._dispatch(request)
        if response is not None:
            response.headers[LOCALHUB_HEADER] = "1"
            await response(scope, receive, send)

    async def _dispatch(self, request: Request) -> Response | None:
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        method = request.method
        try:
            if upload := _UPLOAD_RE.match(raw_path):
                if method != "PUT":
                    raise ApiError(405, "Method not allowed")
                return await write.lfs_upload(self.hub, request, upload.groupdict())
            if raw_path.startswith(xet_cas.CAS_PREFIX + "/"):  # CAS tokens, not Hub tokens
                return await xet_cas.dispatch(self.hub, request, raw_path, self._endpoint(request))
            found = self._match(method, raw_path)
            if found is not None and found[0].page:
                page, match = found
                return await pages.serve(
                    self.hub, page, match, request, self._endpoint(request), self._token(request)
                )
            principal = None
            token = self._token(request)
            if token is not None:
                principal = self.hub.auth.lookup(token)
                if principal is None:
                    raise ApiError(401, "Invalid credentials in Authorization header")
            if found is None:
                raise repo_not_found("", authenticated=principal is not None)
            api, match = found
            ctx = Ctx(self.hub, request, params(match), principal, self._endpoint(request))
            # Who may do this is settled before a byte of the body is read.
            redirect = await run_in_threadpool(authorize, api, match, ctx)
            if redirect is not None:
                return redirect
            if api.spool:
                return await self._run_spooled(api, ctx)
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                ctx.body = await read_body(request, api.max_body)
            return await run_in_threadpool(run_handler, api, ctx)
        except ApiError as error:
            return error_response(error)
        except ClientDisconnect:
            return None
        except Exception:
            logger.exception("localhub: unhandled error on %s %s", method, raw_path)
            return error_response(ApiError(500, "Internal server error"))

    async def _run_spooled(self, api: Route, ctx: Ctx) -> Response:
        ctx.body_file = self.hub.store.tmp_path()
        try:
            await spool_body(ctx.request, api.max_body, ctx.body_file)
            return await run_in_threadpool(run_handler, api, ctx)
        finally:
            ctx.body_file.unlink(missing_ok=True)

    @staticmethod
    def _match(method: str, raw_path: str) -> tuple[Route, re.Match[str]] | None:
        """The route and its match; None for a repo-shaped path no route serves (RepoNotFound)."""
        path_matched = False
        for candidate in ROUTES:
            match = candidate.pattern.match(raw_path)
            if match is None:
                continue
            path_matched = True
            if method in candidate.methods:
                return candidate, match
        if path_matched:
            raise ApiError(405, f"Method {method} not allowed on {raw_path}")
        if _REPO_SHAPED_RE.search(raw_path):
            return None
        raise ApiError(404, f"Not found: {method} {raw_path}")

    @staticmethod
    def _token(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else header.strip()

    @staticmethod
    def _endpoint(request: Request) -> str:
        host = request.headers.get("host")
        if not host:
            server = request.scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{request.url.scheme}://{host}"


class LocalHubApp(ControlMiddleware):
    """The whole server: the Hub routes behind the fault/log/admin layer, with handles on its parts."""

    def __init__(self, hub: Hub, *, admin: bool) -> None:
        self.hub = hub
        super().__init__(
            HubApp(hub), admin=admin, faults=FaultInjector(), log=RequestLog(), limiter=RateLimiter()
        )


def create_app(data_dir: Path | str, *, admin: bool = True, page_size: int = 1000) -> LocalHubApp:
    """The ASGI app serving the Hub stored in `data_dir` (created if missing)."""
    root = Path(data_dir)
    store = Store(root)
    hub = Hub(
        store=store,
        auth=AuthStore(store.root / "auth.json"),
        signer=UploadSigner(store.root),
        page_size=page_size,
    )
    return LocalHubApp(hub, admin=admin)


__all__ = ["LocalHubApp", "create_app"]
