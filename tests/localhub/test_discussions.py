"""Discussions and pull requests through the client's community methods."""

from __future__ import annotations

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.community import DiscussionComment, DiscussionStatusChange, DiscussionTitleChange
from huggingface_hub.errors import HfHubHTTPError

from hubfuse.localhub import LocalHub


def _open_pr(api: HfApi, repo_id: str, path: str = "config.json", content: bytes = b"{}") -> int:
    info = api.create_commit(
        repo_id, [CommitOperationAdd(path, content)], commit_message=f"Change {path}", create_pr=True
    )
    assert info.pr_num is not None
    return info.pr_num


def test_list_details_comment_rename_close(api: HfApi, hub: LocalHub, users, repo_id: str) -> None:
    discussion = api.create_discussion(repo_id, "A question", description="Why?")
    assert discussion.num == 1 and not discussion.is_pull_request
    pr_num = _open_pr(api, repo_id)
    assert pr_num == 2

    listed = list(api.get_repo_discussions(repo_id))
    assert [(d.num, d.is_pull_request, d.status) for d in listed] == [(2, True, "open"), (1, False, "open")]
    assert [d.num for d in api.get_repo_discussions(repo_id, discussion_type="pull_request")] == [2]
    assert [d.num for d in api.get_repo_discussions(repo_id, author="alice")] == [2, 1]
    assert list(api.get_repo_discussions(repo_id, author="bob")) == []

    bob = HfApi(endpoint=hub.endpoint, token=users.bob)
    comment = bob.comment_discussion(repo_id, 1, "Because.")
    assert isinstance(comment, DiscussionComment)
    assert comment.content == "Because." and comment.author == "bob"
    edited = bob.edit_discussion_comment(repo_id, 1, comment.id, "Because!")
    assert edited.content == "Because!" and edited.edited

    renamed = api.rename_discussion(repo_id, 1, "A better question")
    assert isinstance(renamed, DiscussionTitleChange) and renamed.old_title == "A question"
    closed = api.change_discussion_status(repo_id, 1, "closed", comment="Answered")
    assert isinstance(closed, DiscussionStatusChange) and closed.new_status == "closed"

    details = api.get_discussion_details(repo_id, 1)
    assert details.title == "A better question"
    assert details.status == "closed"
    assert [e.type for e in details.events] == [
        "comment",
        "comment",
        "title-change",
        "comment",
        "status-change",
    ]
    assert details.events[0].content == "Why?"
    assert details.target_branch is None and details.diff is None
    assert [d.num for d in api.get_repo_discussions(repo_id, discussion_status="open")] == [2]
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.change_discussion_status(repo_id, 2, "closed")  # not bob's PR, not bob's repo
    assert excinfo.value.response.status_code == 403


def test_merge_pull_request(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="untouched.txt", repo_id=repo_id)
    pr_num = _open_pr(api, repo_id, "config.json", b'{"fusion_config": {"a": true}}')
    api.upload_file(
        path_or_fileobj=b"v2", path_in_repo="untouched.txt", repo_id=repo_id
    )  # main moves on elsewhere

    details = api.get_discussion_details(repo_id, pr_num)
    assert details.is_pull_request
    assert details.target_branch == "refs/heads/main"
    assert details.conflicting_files == []
    assert '+{"fusion_config": {"a": true}}' in details.diff
    assert details.merge_commit_oid is None

    api.merge_pull_request(repo_id, pr_num, comment="LGTM")
    merged = api.get_discussion_details(repo_id, pr_num)
    assert merged.status == "merged"
    assert merged.merge_commit_oid == api.model_info(repo_id).sha
    assert merged.events[-1].new_status == "merged"
    files = set(api.list_repo_files(repo_id))
    assert {"config.json", "untouched.txt"} <= files
    assert api.list_repo_commits(repo_id)[0].commit_id == merged.merge_commit_oid
    with pytest.raises(HfHubHTTPError):
        api.merge_pull_request(repo_id, pr_num)


def test_merge_conflict_is_refused(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"base", path_in_repo="shared.txt", repo_id=repo_id)
    pr_num = _open_pr(api, repo_id, "shared.txt", b"from the PR")
    api.upload_file(path_or_fileobj=b"from main", path_in_repo="shared.txt", repo_id=repo_id)
    assert api.get_discussion_details(repo_id, pr_num).conflicting_files == ["shared.txt"]
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.merge_pull_request(repo_id, pr_num)
    assert excinfo.value.response.status_code == 409
    assert "shared.txt" in str(excinfo.value)
    assert api.get_discussion_details(repo_id, pr_num).status == "open"


def test_merge_applies_deletions(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"old", path_in_repo="old.txt", repo_id=repo_id)
    info = api.create_commit(repo_id, [CommitOperationDelete("old.txt")], commit_message="rm", create_pr=True)
    api.merge_pull_request(repo_id, info.pr_num)
    assert "old.txt" not in api.list_repo_files(repo_id)


def test_pr_opened_by_another_user(hub: LocalHub, users, api: HfApi, repo_id: str) -> None:
    bob = HfApi(endpoint=hub.endpoint, token=users.bob)
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert excinfo.value.response.status_code == 403
    info = bob.upload_file(
        path_or_fileobj=b"x" * 20, path_in_repo="x.safetensors", repo_id=repo_id, create_pr=True
    )
    bob.upload_file(path_or_fileobj=b"y", path_in_repo="y.txt", repo_id=repo_id, revision=info.pr_revision)
    with pytest.raises(HfHubHTTPError) as excinfo:
        bob.merge_pull_request(repo_id, info.pr_num)
    assert excinfo.value.response.status_code == 403
    api.merge_pull_request(repo_id, info.pr_num)
    assert {"x.safetensors", "y.txt"} <= set(api.list_repo_files(repo_id))
    pr = api.create_pull_request(repo_id, "Empty PR")
    assert pr.is_pull_request and pr.git_reference == f"refs/pr/{pr.num}"
