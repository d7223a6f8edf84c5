"""Commits: PRs as revisions, parent checks, concurrency, deletions, LFS references."""

from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from hubfuse.localhub import LocalHub


def test_create_pr_is_readable_as_a_revision(
    hub: LocalHub, api: HfApi, repo_id: str, users, cache_dir: Path
) -> None:
    weights = os.urandom(5000)
    info = api.create_commit(
        repo_id,
        [
            CommitOperationAdd("config.json", b'{"fusion_config": {}}'),
            CommitOperationAdd("model.safetensors", weights),
        ],
        commit_message="Add fusion_config",
        commit_description="Opened by the test",
        create_pr=True,
    )
    assert info.pr_revision == "refs/pr/1"
    assert info.pr_num == 1
    assert info.pr_url == f"{hub.endpoint}/{repo_id}/discussions/1"
    kwargs = {"endpoint": hub.endpoint, "token": users.alice, "cache_dir": cache_dir, "revision": "refs/pr/1"}
    assert Path(hf_hub_download(repo_id, "config.json", **kwargs)).read_bytes() == b'{"fusion_config": {}}'
    assert Path(hf_hub_download(repo_id, "model.safetensors", **kwargs)).read_bytes() == weights
    assert "config.json" not in api.list_repo_files(repo_id)  # main is untouched
    assert "config.json" in api.list_repo_files(repo_id, revision="refs/pr/1")
    assert api.model_info(repo_id, revision="refs/pr/1").sha == info.oid
    assert api.list_repo_commits(repo_id, revision="refs/pr/1")[0].commit_id == info.oid
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [(r.ref, r.target_commit) for r in refs.pull_requests] == [("refs/pr/1", info.oid)]

    follow_up = api.upload_file(
        path_or_fileobj=b"more", path_in_repo="extra.txt", repo_id=repo_id, revision="refs/pr/1"
    )
    assert api.model_info(repo_id, revision="refs/pr/1").sha == follow_up.oid
    details = api.get_discussion_details(repo_id, 1)
    assert [e.type for e in details.events] == ["comment", "commit", "commit"]
    assert details.events[0].content == "Opened by the test"
    assert "extra.txt" in details.diff


def test_pr_from_parent_commit(api: HfApi, repo_id: str) -> None:
    base = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="later.txt", repo_id=repo_id)
    info = api.create_commit(
        repo_id,
        [CommitOperationAdd("pr.txt", b"pr")],
        commit_message="PR",
        create_pr=True,
        parent_commit=base,
    )
    files = api.list_repo_files(repo_id, revision=info.pr_revision)
    assert "pr.txt" in files and "later.txt" not in files


def test_stale_parent_commit_is_refused(api: HfApi, repo_id: str) -> None:
    parent = api.model_info(repo_id).sha
    api.create_commit(repo_id, [CommitOperationAdd("a.txt", b"a")], commit_message="a", parent_commit=parent)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_commit(
            repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=parent
        )
    assert excinfo.value.response.status_code == 412
    assert "A commit has happened since" in str(excinfo.value)
    assert "b.txt" not in api.list_repo_files(repo_id)
    head = api.model_info(repo_id).sha
    api.create_commit(
        repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="b", parent_commit=head[:7]
    )
    assert "b.txt" in api.list_repo_files(repo_id)


def test_concurrent_commits_all_land(hub: LocalHub, users, repo_id: str) -> None:
    def commit(i: int) -> str:
        client = HfApi(endpoint=hub.endpoint, token=users.alice)
        return client.create_commit(
            repo_id, [CommitOperationAdd(f"file-{i}.txt", str(i).encode())], commit_message=f"commit {i}"
        ).oid

    with ThreadPoolExecutor(max_workers=8) as pool:
        oids = list(pool.map(commit, range(16)))
    api = HfApi(endpoint=hub.endpoint, token=users.alice)
    assert len(set(oids)) == 16
    files = set(api.list_repo_files(repo_id))
    assert {f"file-{i}.txt" for i in range(16)} <= files
    history = api.list_repo_commits(repo_id)
    assert len(history) == 17
    # A linear history: every commit's parent is the previous one, so nothing was overwritten.
    assert {c.commit_id for c in history} >= set(oids)


def test_concurrent_commits_on_one_parent_exactly_one_wins(hub: LocalHub, users, repo_id: str) -> None:
    parent = HfApi(endpoint=hub.endpoint, token=users.alice).model_info(repo_id).sha

    def commit(i: int) -> int:
        client = HfApi(endpoint=hub.endpoint, token=users.alice)
        try:
            client.create_commit(
                repo_id, [CommitOperationAdd(f"f{i}.txt", b"x")], commit_message=str(i), parent_commit=parent
            )
        except HfHubHTTPError as exc:
            return exc.response.status_code
        return 200

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(commit, range(6)))
    assert statuses == [200] + [412] * 5


def test_deletions(api: HfApi, repo_id: str) -> None:
    api.create_commit(
        repo_id,
        [CommitOperationAdd(p, b"x") for p in ("keep.txt", "gone.txt", "dir/a.txt", "dir/sub/b.txt")],
        commit_message="add",
    )
    api.create_commit(
        repo_id,
        [CommitOperationDelete("gone.txt"), CommitOperationDelete("dir/", is_folder=True)],
        commit_message="delete",
    )
    assert api.list_repo_files(repo_id) == [".gitattributes", "keep.txt"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("never-existed.txt", repo_id=repo_id)


def test_deleting_a_folder_path_without_trailing_slash_deletes_the_folder(api: HfApi, repo_id: str) -> None:
    """`CommitOperationDelete("1")` is sent as `deletedFile`; the Hub deletes the folder `1/`."""
    api.create_commit(
        repo_id,
        [CommitOperationAdd(p, b"x") for p in ("1/file_1.md", "1/2/file_1_2.md", "2/file_2.md", "12.md")],
        commit_message="add",
    )
    api.create_commit(repo_id, [CommitOperationDelete("1")], commit_message="delete folder implicitly")
    assert api.list_repo_files(repo_id) == [".gitattributes", "12.md", "2/file_2.md"]
    api.delete_folder("2", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes", "12.md"]
    with pytest.raises(EntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("1")], commit_message="nothing left there")


def test_lfs_file_must_have_been_uploaded(hub: LocalHub, users, repo_id: str) -> None:
    lines = [
        {"key": "header", "value": {"summary": "sneaky", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "ab" * 32, "size": 10}},
    ]
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{repo_id}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    assert "an LFS pointer pointed to a file that does not exist" in response.headers["x-error-message"]
    assert "Offending file: - w.bin" in response.headers["x-error-message"]


def _puts(hub: LocalHub, mark: int) -> list[dict]:
    return [r for r in hub.requests(since=mark) if r["method"] == "PUT"]


def test_lfs_objects_belong_to_repos(
    hub: LocalHub, api: HfApi, users, repo_id: str, classic_lfs: None
) -> None:
    data = os.urandom(4096)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    oid = api.get_paths_info(repo_id, ["w.bin"])[0].lfs.sha256
    other = api.create_repo("alice/other-repo-same-blob", exist_ok=True).repo_id
    # Another repo of alice's holds the object: as on the Hub, this repo must upload it all the same.
    mark = hub.request_stats()["count"]
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=other)
    assert len(_puts(hub, mark)) == 1
    # Once this repo holds it, a second commit of the same bytes uploads nothing.
    mark = hub.request_stats()["count"]
    api.upload_file(path_or_fileobj=data, path_in_repo="again.bin", repo_id=other)
    assert _puts(hub, mark) == []
    # A commit naming an object only some other repo holds is refused, as the Hub refuses it.
    third = api.create_repo("alice/third-repo-no-blob", exist_ok=True).repo_id
    lines = [
        {"key": "header", "value": {"summary": "by oid", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(data)}},
    ]
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{third}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    assert "LFS pointer pointed to a file that does not exist" in response.json()["error"]
    assert "w.bin" not in api.list_repo_files(third)


def test_paths_info_and_tree_carry_the_xet_hash(api: HfApi, repo_id: str, tmp_path: Path) -> None:
    from hubfuse.localhub.xethash import xet_file_hash

    data = os.urandom(70_000)
    (tmp_path / "w.bin").write_bytes(data)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"small", path_in_repo="notes.txt", repo_id=repo_id)
    expected = xet_file_hash(tmp_path / "w.bin")
    info = {f.path: f for f in api.get_paths_info(repo_id, ["w.bin", "notes.txt"])}
    assert info["w.bin"].xet_hash == expected and info["notes.txt"].xet_hash is None
    tree = {f.path: f for f in api.list_repo_tree(repo_id)}
    assert tree["w.bin"].xet_hash == expected and tree["notes.txt"].xet_hash is None


def test_commit_to_a_tag_is_refused(api: HfApi, repo_id: str) -> None:
    api.create_tag(repo_id, tag="v1")
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="v1")
    assert excinfo.value.response.status_code == 400


def test_commit_bodies_past_100_mib_are_taken(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    """Eight inline files just under 10 MiB: a 106 MiB NDJSON body, refused before it was spooled."""
    size = 10 * 1024 * 1024 - 100 * 1024
    operations = [CommitOperationAdd(f"text/{i}.txt", bytes([65 + i]) * size) for i in range(8)]
    hub.clear_requests()
    api.create_commit(repo_id, operations, commit_message="big inline commit")
    (commit_request,) = [r for r in hub.requests() if r["path"].endswith("/commit/main")]
    assert commit_request["bytes_received"] > 100 * 1024 * 1024
    infos = api.get_paths_info(repo_id, [f"text/{i}.txt" for i in range(8)])
    assert [info.size for info in infos] == [size] * 8 and all(info.lfs is None for info in infos)


def test_inline_file_over_10_mib_is_refused_as_on_the_hub(hub: LocalHub, users, repo_id: str) -> None:
    lines = [
        {"key": "header", "value": {"summary": "too big"}},
        {
            "key": "file",
            "value": {
                "path": "big.txt",
                "encoding": "base64",
                "content": base64.b64encode(b"a" * (10 * 1024**2 + 1)).decode(),
            },
        },
    ]
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{repo_id}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    assert "contains files larger than 10 MiB" in response.headers["x-error-message"]


def test_ndjson_files_default_to_utf8_and_deleted_entry_deletes(
    hub: LocalHub, users, api: HfApi, repo_id: str, tmp_path: Path
) -> None:
    """The Hub's commit schema: `encoding` defaults to utf-8; `deletedEntry` names a file or a folder."""
    api.create_commit(
        repo_id, [CommitOperationAdd(p, b"x") for p in ("old.txt", "dir/a.txt")], commit_message="add"
    )

    def post(*values: dict) -> httpx2.Response:
        lines = [{"key": "header", "value": {"summary": "raw"}}, *values]
        return httpx2.post(
            f"{hub.endpoint}/api/models/{repo_id}/commit/main",
            content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
            headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
        )

    response = post(
        {"key": "file", "value": {"path": "plain.txt", "content": "héllo"}},
        {"key": "deletedEntry", "value": {"path": "old.txt"}},
        {"key": "deletedEntry", "value": {"path": "dir"}},
    )
    assert response.status_code == 200, response.text
    assert api.list_repo_files(repo_id) == [".gitattributes", "plain.txt"]
    path = hf_hub_download(repo_id, "plain.txt", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert Path(path).read_bytes() == "héllo".encode()
    assert (
        post({"key": "file", "value": {"path": "b.txt", "content": "x", "encoding": "latin-1"}}).status_code
        == 400
    )
    assert post({"key": "file", "value": {"path": "b.txt", "oldPath": "plain.txt"}}).status_code == 400
