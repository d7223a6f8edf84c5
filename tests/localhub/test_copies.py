"""Server-side copies between repos: `CommitOperationCopy` with `src_repo_id`, through the real client."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationCopy, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubfuse.localhub import LocalHub


def _puts(hub: LocalHub, mark: int) -> list[dict]:
    return [r for r in hub.requests(since=mark) if r["method"] == "PUT"]


def _copy(src: str, revision: str | None = None) -> CommitOperationCopy:
    return CommitOperationCopy(
        "w.bin", "copied/w.bin", src_repo_id=src, src_repo_type="model", src_revision=revision
    )


def test_cross_repo_copy_moves_no_bytes(hub: LocalHub, api: HfApi, repo_id: str, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    pinned = api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id).oid
    api.upload_file(path_or_fileobj=b"later", path_in_repo="w.bin", repo_id=repo_id)  # main moves on
    target = api.create_repo("acme/copy-target", exist_ok=True).repo_id
    mark = hub.request_stats()["count"]
    api.create_commit(target, [_copy(repo_id, pinned)], commit_message="copy")
    requests = hub.requests(since=mark)
    assert _puts(hub, mark) == [] and not [r for r in requests if "/resolve/" in r["path"]]
    assert [r["status"] for r in requests if r["path"].endswith("/lfs-files/duplicate")] == [200]
    path = api.hf_hub_download(target, "copied/w.bin", cache_dir=str(tmp_path / "dl"))
    assert Path(path).read_bytes() == data  # the pinned revision's bytes, not main's
    # The target holds the object now: its own commits may name it again.
    mark = hub.request_stats()["count"]
    api.upload_file(path_or_fileobj=data, path_in_repo="again.bin", repo_id=target)
    assert _puts(hub, mark) == []


def test_copy_needs_read_on_the_source_and_write_on_the_target(
    hub: LocalHub, api: HfApi, users, repo_id: str
) -> None:
    api.upload_file(path_or_fileobj=os.urandom(20_000), path_in_repo="w.bin", repo_id=repo_id)
    api.update_repo_settings(repo_id, private=True)
    bob = HfApi(endpoint=hub.endpoint, token=users.bob)
    bob_target = bob.create_repo("bob/copy-of-private", exist_ok=True).repo_id
    with pytest.raises(RepositoryNotFoundError):
        bob.create_commit(bob_target, [_copy(repo_id)], commit_message="steal")
    assert "copied/w.bin" not in bob.list_repo_files(bob_target)

    file = api.get_paths_info(repo_id, ["w.bin"])[0]
    body = {
        "target": {"type": "model", "name": bob_target},
        "files": [{"xetHash": file.xet_hash, "sha256": file.lfs.sha256, "filename": "w.bin"}],
    }
    url = f"{hub.endpoint}/api/models/{repo_id}/lfs-files/duplicate"
    as_bob = httpx2.post(url, json=body, headers={"Authorization": f"Bearer {users.bob}"})
    assert as_bob.status_code == 404  # the private source stays invisible
    # Alice reads the source, but bob's repo is not hers to write.
    as_alice = httpx2.post(url, json=body, headers={"Authorization": f"Bearer {users.alice}"})
    assert as_alice.status_code == 403
    read_only = httpx2.post(
        url,
        json={**body, "target": {"type": "model", "name": "acme/copy-target"}},
        headers={"Authorization": f"Bearer {users.alice_read}"},
    )
    assert read_only.status_code == 403


def test_duplicate_answers_failed_for_what_the_source_does_not_hold(
    hub: LocalHub, api: HfApi, users, repo_id: str
) -> None:
    api.upload_file(path_or_fileobj=os.urandom(20_000), path_in_repo="w.bin", repo_id=repo_id)
    file = api.get_paths_info(repo_id, ["w.bin"])[0]
    target = api.create_repo("acme/duplicate-failures", exist_ok=True).repo_id
    files = [
        {"xetHash": file.xet_hash, "sha256": file.lfs.sha256, "filename": "w.bin"},
        {"xetHash": "0" * 64, "sha256": file.lfs.sha256, "filename": "wrong-xet.bin"},
        {"xetHash": file.xet_hash, "sha256": "ab" * 32, "filename": "absent.bin"},
    ]
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{repo_id}/lfs-files/duplicate",
        json={"target": {"type": "model", "name": target}, "files": files},
        headers={"Authorization": f"Bearer {users.alice}"},
    )
    assert response.status_code == 200
    answer = response.json()
    assert [f["filename"] for f in answer["failed"]] == ["wrong-xet.bin", "absent.bin"]
    assert all(f["error"] and f["sha256"] for f in answer["failed"])
    assert [f["filename"] for f in answer["duplicated"]] == ["w.bin"]


def test_a_file_without_xet_hash_cannot_be_copied(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=os.urandom(30_000), path_in_repo="w.bin", repo_id=repo_id)
    oid = api.get_paths_info(repo_id, ["w.bin"])[0].lfs.sha256
    # An object stored before the hub kept Xet hashes: the Hub has such files too.
    next((hub.data_dir / "blobs" / "lfs").glob(f"*/*/{oid}.xet")).unlink()
    assert api.get_paths_info(repo_id, ["w.bin"])[0].xet_hash is None
    target = api.create_repo("acme/copy-no-xet", exist_ok=True).repo_id
    with pytest.raises(ValueError, match="no xet hash"):
        api.create_commit(target, [_copy(repo_id)], commit_message="copy")
    with pytest.raises(HfHubHTTPError):  # and nothing can point at it without an upload
        api.hf_hub_download(target, "copied/w.bin")
