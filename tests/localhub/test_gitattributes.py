"""Preupload answers from the repo's own `.gitattributes`, as the Hub does."""

from __future__ import annotations

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.hf_api import RepoFile

from hubfuse.localhub.gitattributes import is_lfs

OWN_RULES = b"""\
*.dat filter=lfs diff=lfs merge=lfs -text
weights/** filter=lfs diff=lfs merge=lfs -text
/top.txt filter=lfs diff=lfs merge=lfs -text
weights/keep.txt -filter
"""


def _lfs_paths(api: HfApi, repo_id: str) -> dict[str, bool]:
    return {
        e.path: e.lfs is not None
        for e in api.list_repo_tree(repo_id, recursive=True)
        if isinstance(e, RepoFile)
    }


def test_files_the_repos_gitattributes_names_go_to_lfs(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=OWN_RULES, path_in_repo=".gitattributes", repo_id=repo_id)
    text = b"plain text, small\n"
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd(path, text)
            for path in (
                "a.dat",
                "deep/b.dat",
                "weights/x/y.txt",
                "weights/keep.txt",
                "top.txt",
                "sub/top.txt",
            )
        ]
        + [CommitOperationAdd("model.safetensors", text)],  # no longer in this repo's rules
        commit_message="files",
    )
    assert _lfs_paths(api, repo_id) == {
        ".gitattributes": False,
        "a.dat": True,
        "deep/b.dat": True,
        "weights/x/y.txt": True,
        "weights/keep.txt": False,
        "top.txt": True,
        "sub/top.txt": False,
        "model.safetensors": False,
    }


def test_default_rules_still_apply_to_a_new_repo(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"text", path_in_repo="w/model.safetensors", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"text", path_in_repo="saved_model/v/variables.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"text", path_in_repo="notes.txt", repo_id=repo_id)
    lfs = _lfs_paths(api, repo_id)
    assert lfs["w/model.safetensors"] and lfs["saved_model/v/variables.txt"] and not lfs["notes.txt"]


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        ("*.bin filter=lfs", "a/b/c.bin", True),
        ("a/*.bin filter=lfs", "a/b/c.bin", False),
        ("a/**/*.bin filter=lfs", "a/b/c.bin", True),
        ("*.bin filter=lfs\n*.bin -filter", "c.bin", False),
        ("*.bin filter=other", "c.bin", False),
        ("# *.bin filter=lfs", "c.bin", False),
        ("file[0-9].txt filter=lfs", "file7.txt", True),
        ("*tfevents* filter=lfs", "runs/events.out.tfevents.1", True),
    ],
)
def test_gitattributes_patterns(rules: str, path: str, expected: bool) -> None:
    assert is_lfs(path, rules) is expected


def test_preupload_takes_the_gitattributes_the_commit_brings(hub, users, repo_id: str) -> None:
    """`gitAttributes` in the preupload body: the `.gitattributes` the caller is about to commit."""
    import base64

    import httpx2

    body = {
        "files": [{"path": "notes.md", "size": 5, "sample": base64.b64encode(b"notes").decode()}],
        "gitAttributes": "*.md filter=lfs diff=lfs merge=lfs -text\n",
    }
    url = f"{hub.endpoint}/api/models/{repo_id}/preupload/main"
    headers = {"Authorization": f"Bearer {users.alice}"}
    (answer,) = httpx2.post(url, json=body, headers=headers).json()["files"]
    assert answer["uploadMode"] == "lfs"
    del body["gitAttributes"]
    (answer,) = httpx2.post(url, json=body, headers=headers).json()["files"]
    assert answer["uploadMode"] == "regular"
