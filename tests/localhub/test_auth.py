"""Who may read and write what, and the errors the client turns refusals into."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

from hubfuse.localhub import LocalHub


def test_write_without_token_is_refused(hub: LocalHub, repo_id: str) -> None:
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(HfHubHTTPError) as excinfo:
        anonymous.create_repo("alice/anonymous")
    assert excinfo.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as excinfo:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert excinfo.value.response.status_code == 401


def test_read_only_token_cannot_write(hub: LocalHub, users, repo_id: str) -> None:
    reader = HfApi(endpoint=hub.endpoint, token=users.alice_read)
    assert reader.whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as excinfo:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert excinfo.value.response.status_code == 403
    assert "read" in str(excinfo.value)
    with pytest.raises(HfHubHTTPError) as excinfo:
        reader.create_repo("alice/from-a-reader")
    assert excinfo.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as excinfo:
        reader.delete_repo(repo_id)
    assert excinfo.value.response.status_code == 403
    assert reader.model_info(repo_id).id == repo_id  # reading is fine


def test_other_users_namespace_is_refused(hub: LocalHub, users, repo_id: str) -> None:
    bob = HfApi(endpoint=hub.endpoint, token=users.bob)
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.create_repo("acme/not-bobs")
    assert excinfo.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.delete_repo(repo_id)
    assert excinfo.value.response.status_code == 403


def test_private_repo(hub: LocalHub, users, api: HfApi, tmp_path: Path) -> None:
    repo = api.create_repo("acme/secret", private=True).repo_id
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo)
    assert api.model_info(repo).private is True
    assert HfApi(endpoint=hub.endpoint, token=users.alice_read).model_info(repo).id == repo

    for token in (False, users.bob):
        outsider = HfApi(endpoint=hub.endpoint, token=token)
        with pytest.raises(RepositoryNotFoundError) as excinfo:
            outsider.model_info(repo)
        assert type(excinfo.value) is RepositoryNotFoundError
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo, "s.txt", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "c")
        with pytest.raises(RepositoryNotFoundError):
            list(outsider.list_repo_tree(repo))
        assert not outsider.repo_exists(repo)
    anonymous = httpx2.get(f"{hub.endpoint}/api/models/{repo}")
    assert (anonymous.status_code, anonymous.headers["x-error-code"]) == (401, "RepoNotFound")
    as_bob = httpx2.get(f"{hub.endpoint}/api/models/{repo}", headers={"Authorization": f"Bearer {users.bob}"})
    assert (as_bob.status_code, as_bob.headers["x-error-code"]) == (404, "RepoNotFound")


def test_gated_repo(hub: LocalHub, users, api: HfApi, repo_id: str, tmp_path: Path) -> None:
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    api.update_repo_settings(repo_id, gated="auto")
    for token in (False, users.bob):
        with pytest.raises(GatedRepoError):
            hf_hub_download(
                repo_id, "config.json", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "c"
            )
        with pytest.raises(GatedRepoError):
            snapshot_download(repo_id, endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "s")
        outsider = HfApi(endpoint=hub.endpoint, token=token)
        assert outsider.model_info(repo_id).gated == "auto"  # metadata stays public, files do not
        assert outsider.repo_exists(repo_id)
    response = httpx2.head(
        f"{hub.endpoint}/{repo_id}/resolve/main/config.json", headers={"Authorization": f"Bearer {users.bob}"}
    )
    assert (response.status_code, response.headers["x-error-code"]) == (403, "GatedRepo")
    with pytest.raises(GatedRepoError):
        HfApi(endpoint=hub.endpoint, token=users.bob).auth_check(repo_id)

    api.grant_access(repo_id, "bob")
    path = hf_hub_download(
        repo_id, "config.json", endpoint=hub.endpoint, token=users.bob, cache_dir=tmp_path / "b"
    )
    assert Path(path).read_bytes() == b"{}"
    hub.grant_access(repo_id, "carol")  # the Python API does the same
    HfApi(endpoint=hub.endpoint, token=hub.add_token("carol", "read")).auth_check(repo_id)


def test_unknown_token_is_refused_everywhere(hub: LocalHub, repo_id: str) -> None:
    bad = HfApi(endpoint=hub.endpoint, token="hf_ThisTokenWasNeverIssued000000")
    with pytest.raises(HfHubHTTPError) as excinfo:
        bad.model_info(repo_id)
    assert excinfo.value.response.status_code == 401
    assert type(excinfo.value) is HfHubHTTPError
    assert "Invalid credentials" in str(excinfo.value)


def test_token_added_while_running_works_at_once(hub: LocalHub) -> None:
    token = hub.add_token("dave", "write")
    api = HfApi(endpoint=hub.endpoint, token=token)
    assert api.whoami()["name"] == "dave"
    assert api.create_repo("dave/fresh").repo_id == "dave/fresh"
