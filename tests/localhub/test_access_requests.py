"""Access requests of gated repos through the real client, with the Hub's refusals."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

from hubfuse.localhub import LocalHub


def _status(excinfo: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    return excinfo.value.response.status_code


@pytest.fixture
def gated(api: HfApi, repo_id: str) -> str:
    api.update_repo_settings(repo_id, gated="manual")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    return repo_id


def test_access_requests_normal_usage(hub: LocalHub, users, api: HfApi, gated: str, tmp_path) -> None:
    assert list(api.list_accepted_access_requests(gated)) == []
    assert list(api.list_pending_access_requests(gated)) == []
    assert list(api.list_rejected_access_requests(gated)) == []

    def bob_downloads() -> bool:
        url = f"{hub.endpoint}/{gated}/resolve/main/config.json"
        return httpx2.get(url, headers={"Authorization": f"Bearer {users.bob}"}).status_code == 200

    def bob_downloads_with_the_client() -> bool:
        try:
            hf_hub_download(gated, "config.json", endpoint=hub.endpoint, token=users.bob, cache_dir=tmp_path)
        except GatedRepoError:
            return False
        return True

    assert not bob_downloads()
    assert not bob_downloads_with_the_client()
    api.grant_access(gated, "bob")
    assert bob_downloads_with_the_client()
    (request,) = api.list_accepted_access_requests(gated)
    assert (request.username, request.status) == ("bob", "accepted") and request.timestamp is not None
    assert bob_downloads()

    api.cancel_access_request(gated, "bob")
    assert list(api.list_accepted_access_requests(gated)) == []
    assert [r.username for r in api.list_pending_access_requests(gated)] == ["bob"]
    assert not bob_downloads()

    api.reject_access_request(gated, "bob", rejection_reason="not now")
    assert list(api.list_pending_access_requests(gated)) == []
    (rejected,) = api.list_rejected_access_requests(gated)
    assert rejected.username == "bob"

    api.accept_access_request(gated, request_id=rejected.request_id)
    assert [r.username for r in api.list_accepted_access_requests(gated)] == ["bob"]
    assert bob_downloads()


def test_access_request_refusals(hub: LocalHub, users, api: HfApi, gated: str, repo_id: str) -> None:
    api.grant_access(gated, "bob")
    with pytest.raises(HfHubHTTPError) as excinfo:  # a repeated grant is refused, as on the Hub
        api.grant_access(gated, "bob")
    assert _status(excinfo) == 400 and "already has access" in str(excinfo.value)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.accept_access_request(gated, "bob")
    assert _status(excinfo) == 404
    api.reject_access_request(gated, "bob", rejection_reason=None)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.reject_access_request(gated, "bob", rejection_reason=None)
    assert _status(excinfo) == 404
    api.cancel_access_request(gated, "bob")
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.cancel_access_request(gated, "bob")
    assert _status(excinfo) == 404

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.grant_access(gated, "nobody-has-this-name")
    assert _status(excinfo) == 404
    with pytest.raises(HfHubHTTPError) as excinfo:  # bob can read the repo but not manage it
        list(HfApi(endpoint=hub.endpoint, token=users.bob).list_pending_access_requests(gated))
    assert _status(excinfo) == 403
    with pytest.raises(HfHubHTTPError) as excinfo:
        list(HfApi(endpoint=hub.endpoint, token=users.alice_read).list_pending_access_requests(gated))
    assert _status(excinfo) == 403


def test_access_requests_need_a_gated_repo(api: HfApi) -> None:
    repo = api.create_repo("alice/not-gated-requests", exist_ok=True).repo_id
    for call in (lambda: api.grant_access(repo, "bob"), lambda: list(api.list_pending_access_requests(repo))):
        with pytest.raises(HfHubHTTPError) as excinfo:
            call()
        assert _status(excinfo) == 400
