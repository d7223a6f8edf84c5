"""Repo management through the real client: super-squash, LFS files, duplicate, `hf repos ls`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from hubfuse.localhub import LocalHub


def test_super_squash_history_on_branch(api: HfApi, repo_id: str) -> None:
    api.upload_file(repo_id=repo_id, path_in_repo="file.txt", path_or_fileobj=b"content")
    api.upload_file(repo_id=repo_id, path_in_repo="lfs.bin", path_or_fileobj=b"content")
    api.upload_file(repo_id=repo_id, path_in_repo="file.txt", path_or_fileobj=b"another_content")
    api.create_branch(repo_id=repo_id, branch="v0.1")
    api.upload_file(repo_id=repo_id, path_in_repo="file.txt", path_or_fileobj=b"foo", revision="v0.1")
    files_before = api.list_repo_files(repo_id)

    api.super_squash_history(repo_id=repo_id)
    main = api.list_repo_commits(repo_id=repo_id, revision="main")
    branch = api.list_repo_commits(repo_id=repo_id, revision="v0.1")
    assert [c.title for c in main] == ["Super-squash branch 'main' using huggingface_hub"]
    assert len(branch) == 5 and branch[-1].title == "initial commit"
    assert api.list_repo_files(repo_id) == files_before

    api.super_squash_history(repo_id=repo_id, branch="v0.1", commit_message="squashed")
    assert [c.title for c in api.list_repo_commits(repo_id=repo_id, revision="v0.1")] == ["squashed"]


def test_super_squash_a_pr_and_refusals(hub: LocalHub, users, api: HfApi, repo_id: str) -> None:
    pr = api.create_pull_request(repo_id=repo_id, title="squash me")
    for content in (b"one", b"two"):
        api.upload_file(
            repo_id=repo_id, path_in_repo="f.txt", path_or_fileobj=content, revision=pr.git_reference
        )
    api.super_squash_history(repo_id=repo_id, branch=pr.git_reference)
    assert len(api.list_repo_commits(repo_id=repo_id, revision=pr.git_reference)) == 1
    api.create_tag(repo_id, tag="v1")
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.super_squash_history(repo_id=repo_id, branch="v1")
    assert excinfo.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.endpoint, token=users.bob).super_squash_history(repo_id=repo_id)
    assert excinfo.value.response.status_code == 403


def test_list_and_delete_lfs_files(hub: LocalHub, api: HfApi, repo_id: str, tmp_path: Path) -> None:
    api.upload_file(path_or_fileobj=b"LFS content", path_in_repo="lfs_file.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"TXT content", path_in_repo="txt_file.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"LFS content 2", path_in_repo="lfs_file_2.bin", repo_id=repo_id)
    api.create_branch(repo_id=repo_id, branch="my-branch")
    api.upload_file(
        path_or_fileobj=b"LFS content branch",
        path_in_repo="lfs_file_branch.bin",
        repo_id=repo_id,
        revision="my-branch",
    )
    lfs_files = list(api.list_lfs_files(repo_id=repo_id))
    assert {f.filename for f in lfs_files} == {"lfs_file.bin", "lfs_file_2.bin", "lfs_file_branch.bin"}
    on_main = [f for f in lfs_files if f.ref in ("main", "refs/heads/main")]
    assert len(on_main) == 2 and all(f.size > 0 and f.pushed_at is not None for f in on_main)

    api.permanently_delete_lfs_files(repo_id=repo_id, lfs_files=on_main)
    assert [f.filename for f in api.list_lfs_files(repo_id=repo_id)] == ["lfs_file_branch.bin"]
    assert set(api.list_repo_files(repo_id=repo_id)) == {".gitattributes", "txt_file.txt"}
    assert "lfs_file.bin" not in api.list_repo_files(repo_id=repo_id, revision="my-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "lfs_file.bin", endpoint=hub.endpoint, cache_dir=tmp_path)
    old_commits = api.list_repo_commits(repo_id)
    assert all("lfs_file.bin" not in api.list_repo_files(repo_id, revision=c.commit_id) for c in old_commits)


def test_duplicate_repo(hub: LocalHub, users, api: HfApi, repo_id: str, tmp_path: Path) -> None:
    api.upload_file(path_or_fileobj=b"weights", path_in_repo="model.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    bob = HfApi(endpoint=hub.endpoint, token=users.bob)
    url = bob.duplicate_repo(repo_id, to_id="bob/duplicated")
    assert url.repo_id == "bob/duplicated" and url.files_copy_pending is False
    assert bob.list_repo_files("bob/duplicated") == [".gitattributes", "config.json", "model.bin"]
    path = hf_hub_download("bob/duplicated", "model.bin", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"weights"
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.duplicate_repo(repo_id, to_id="bob/duplicated")
    assert excinfo.value.response.status_code == 409
    assert bob.duplicate_repo(repo_id, to_id="bob/duplicated", exist_ok=True).repo_id == "bob/duplicated"
    with pytest.raises(HfHubHTTPError) as excinfo:  # into someone else's namespace
        bob.duplicate_repo(repo_id, to_id="acme/stolen")
    assert excinfo.value.response.status_code == 403

    private = api.create_repo("alice/private-source", private=True, exist_ok=True).repo_id
    with pytest.raises(RepositoryNotFoundError):
        bob.duplicate_repo(private, to_id="bob/leak")
    assert (
        api.duplicate_repo(private, to_id="alice/private-copy", exist_ok=True).repo_id == "alice/private-copy"
    )
    assert api.model_info("alice/private-copy").private is True  # never published by a duplicate


def test_list_user_repos_and_hf_repos_ls(hub: LocalHub, users, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("acme/org-storage", exist_ok=True)
    api.upload_file(path_or_fileobj=b"x" * 100, path_in_repo="a.txt", repo_id="acme/org-storage")
    api.create_repo("alice/storage-data", repo_type="dataset", exist_ok=True)
    mine = {r.id: r for r in api.list_user_repos()}
    assert "alice/storage-data" in mine and mine["alice/storage-data"].type == "dataset"
    assert all(repo.startswith("alice/") for repo in mine)
    org = {r.id: r for r in api.list_user_repos(namespace="acme")}
    assert org["acme/org-storage"].storage >= 100 and org["acme/org-storage"].visibility == "public"
    with pytest.raises(HfHubHTTPError) as excinfo:
        list(HfApi(endpoint=hub.endpoint, token=users.bob).list_user_repos(namespace="acme"))
    assert excinfo.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as excinfo:
        list(HfApi(endpoint=hub.endpoint, token=False).list_user_repos())
    assert excinfo.value.response.status_code == 401

    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": users.alice,
        "HF_HOME": str(tmp_path / "hf-home"),
        "NO_COLOR": "1",
    }
    hf = Path(sys.executable).with_name("hf")
    result = subprocess.run(
        [str(hf), "repos", "ls", "--namespace", "acme", "--limit", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "acme/org-storage" in result.stdout
