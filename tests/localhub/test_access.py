"""One read check for every route: private repos stay invisible, gated content stays gated.

The sweep below names a concrete request for every route of the server and fails when a route has
none, so a new route cannot be added without being checked here.
"""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import GatedRepoError

from hubfuse.localhub import LocalHub
from hubfuse.localhub.app import ROUTES
from hubfuse.localhub.context import Access


def _requests(repo: str) -> list[tuple[str, str]]:
    """A request for every route that names a repo, against `repo`."""
    return [
        ("GET", f"/api/models/{repo}"),
        ("GET", f"/api/models/{repo}/revision/main"),
        ("PUT", f"/api/models/{repo}/settings"),
        ("GET", f"/api/models/{repo}/tree/main"),
        ("POST", f"/api/models/{repo}/paths-info/main"),
        ("GET", f"/api/models/{repo}/refs"),
        ("GET", f"/api/models/{repo}/commits/main"),
        ("GET", f"/api/models/{repo}/auth-check"),
        ("GET", f"/api/models/{repo}/xet-read-token/main"),
        ("GET", f"/api/models/{repo}/xet-write-token/main"),
        ("POST", f"/api/models/{repo}/preupload/main"),
        ("POST", f"/api/models/{repo}/commit/main"),
        ("POST", f"/api/models/{repo}/branch/dev"),
        ("DELETE", f"/api/models/{repo}/branch/dev"),
        ("POST", f"/api/models/{repo}/tag/main"),
        ("DELETE", f"/api/models/{repo}/tag/v1"),
        ("POST", f"/api/models/{repo}/user-access-request/grant"),
        ("POST", f"/api/models/{repo}/user-access-request/handle"),
        ("GET", f"/api/models/{repo}/user-access-request/pending"),
        ("POST", f"/api/models/{repo}/super-squash/main"),
        ("GET", f"/api/models/{repo}/lfs-files"),
        ("POST", f"/api/models/{repo}/lfs-files/batch"),
        ("POST", f"/api/models/{repo}/duplicate"),
        ("GET", f"/api/models/{repo}/discussions"),
        ("POST", f"/api/models/{repo}/discussions"),
        ("GET", f"/api/models/{repo}/discussions/1?diff=1"),
        ("POST", f"/api/models/{repo}/discussions/1/comment"),
        ("POST", f"/api/models/{repo}/discussions/1/comment/abc/edit"),
        ("POST", f"/api/models/{repo}/lfs-files/duplicate"),
        ("POST", f"/{repo}.git/info/lfs/objects/batch"),
        ("POST", f"/{repo}.git/info/lfs/objects/verify"),
        ("GET", f"/{repo}/resolve/main/config.json"),
        ("HEAD", f"/{repo}/resolve/main/config.json"),
    ]


def _page_requests(repo: str) -> list[tuple[str, str]]:
    """A request for every HTML page that names a repo (they answer errors as pages, not JSON)."""
    return [
        ("GET", f"/{repo}"),
        ("GET", f"/{repo}/tree/main"),
        ("GET", f"/{repo}/blob/refs%2Fpr%2F1/config.json"),
        ("GET", f"/{repo}/discussions"),
        ("GET", f"/{repo}/discussions/1"),
    ]


def test_every_repo_route_is_in_the_sweep() -> None:
    swept = _requests("ns/name") + _page_requests("ns/name")
    for route in ROUTES:
        if route.access is Access.NONE:
            continue
        assert any(
            method in route.methods and route.pattern.match(path.partition("?")[0]) for method, path in swept
        ), f"route {route.pattern.pattern} is not covered by the access sweep"


@pytest.fixture
def private_pr_repo(api: HfApi) -> str:
    repo = api.create_repo("acme/private-sweep", private=True, exist_ok=True).repo_id
    api.upload_file(
        path_or_fileobj=b'{"secret": 1}', path_in_repo="config.json", repo_id=repo, create_pr=True
    )
    return repo


def test_private_repo_is_invisible_on_every_route(hub: LocalHub, users, private_pr_repo: str) -> None:
    for token, status in ((None, 401), (users.bob, 404)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path in _requests(private_pr_repo):
            response = httpx2.request(method, f"{hub.endpoint}{path}", headers=headers)
            assert (response.status_code, response.headers.get("x-error-code")) == (status, "RepoNotFound"), (
                method,
                path,
            )
            assert b"secret" not in response.content
        for method, path in _page_requests(private_pr_repo):
            response = httpx2.request(method, f"{hub.endpoint}{path}", headers=headers)
            assert response.status_code == status, (method, path)
            assert b"secret" not in response.content


def test_gated_content_needs_access_on_every_route(hub: LocalHub, users, api: HfApi) -> None:
    repo = api.create_repo("alice/gated-diff", exist_ok=True).repo_id
    api.update_repo_settings(repo, gated="auto")
    api.upload_file(
        path_or_fileobj=b'{"secret": 1}', path_in_repo="config.json", repo_id=repo, create_pr=True
    )
    content_requests = [
        ("GET", f"/api/models/{repo}/discussions/1?diff=1"),
        ("GET", f"/{repo}/resolve/refs%2Fpr%2F1/config.json"),
        ("HEAD", f"/{repo}/resolve/refs%2Fpr%2F1/config.json"),
        ("GET", f"/api/models/{repo}/auth-check"),
        ("POST", f"/api/models/{repo}/lfs-files/duplicate"),
        ("GET", f"/api/models/{repo}/xet-read-token/main"),  # a Xet download's token
        ("POST", f"/api/models/{repo}/duplicate"),
    ]
    for token, status in ((None, 401), (users.bob, 403)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path in content_requests:
            response = httpx2.request(method, f"{hub.endpoint}{path}", headers=headers)
            assert (response.status_code, response.headers.get("x-error-code")) == (status, "GatedRepo"), path
            assert b"secret" not in response.content
        outsider = HfApi(endpoint=hub.endpoint, token=token or False)
        with pytest.raises(GatedRepoError):
            outsider.get_discussion_details(repo, 1)  # the client always asks for the diff
        # Metadata stays public, as on the Hub: the PR itself, without its diff.
        plain = httpx2.get(f"{hub.endpoint}/api/models/{repo}/discussions/1", headers=headers)
        assert plain.status_code == 200 and "diff" not in plain.json()

    api.grant_access(repo, "bob")
    details = HfApi(endpoint=hub.endpoint, token=users.bob).get_discussion_details(repo, 1)
    assert '+{"secret": 1}' in (details.diff or "")
