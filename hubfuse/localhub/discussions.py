"""Discussions and pull requests: stored per repo, served in the shapes `huggingface_hub` reads.

A pull request's head is the ref `refs/pr/N` in the repo's refs; the discussion remembers the branch it
targets (`base`) and the commit it forked from (`baseCommit`), which is what merge conflicts are
computed against.
"""

from __future__ import annotations

import difflib
import html
import re
import secrets
from pathlib import Path
from typing import Any

from hubfuse.localhub.apierror import ApiError, bad_request, conflict
from hubfuse.localhub.commits import Tree, tree_changes
from hubfuse.localhub.fsutil import atomic_write_json, now_iso, read_json
from hubfuse.localhub.records import Commit, RepoId
from hubfuse.localhub.storage import RepoTxn, Store

_DIFF_MAX_BYTES = 1_000_000


def _dir(store: Store, repo: RepoId) -> Path:
    return store.repo_dir(repo) / "discussions"


def load(store: Store, repo: RepoId, num: int) -> dict[str, Any]:
    try:
        return read_json(_dir(store, repo) / f"{num}.json")
    except FileNotFoundError:
        raise ApiError(404, f"Discussion #{num} not found") from None


def list_all(store: Store, repo: RepoId) -> list[dict[str, Any]]:
    found = []
    for path in _dir(store, repo).glob("*.json"):
        if path.stem.isdigit():
            found.append(read_json(path))
    return sorted(found, key=lambda d: d["num"], reverse=True)


def save(txn: RepoTxn, disc: dict[str, Any]) -> None:
    atomic_write_json(_dir(txn.store, txn.repo) / f"{disc['num']}.json", disc)


def _author(name: str) -> dict[str, Any]:
    return {"name": name, "type": "user", "fullname": name, "avatarUrl": "", "isPro": False, "isHf": False}


def _event(kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": secrets.token_hex(12),
        "type": kind,
        "createdAt": now_iso(),
        "author": _author(author),
        "data": data,
    }


def comment_event(author: str, text: str) -> dict[str, Any]:
    now = now_iso()
    latest = {"raw": text, "html": f"<p>{html.escape(text)}</p>", "updatedAt": now, "author": _author(author)}
    return _event(
        "comment",
        author,
        {
            "edited": False,
            "hidden": False,
            "latest": latest,
            "numEdits": 0,
            "editors": [author],
            "editorAvatarUrls": [],
            "reactions": [],
            "isReport": False,
            "history": [latest],
        },
    )


def create(
    txn: RepoTxn,
    *,
    author: str,
    title: str,
    description: str,
    pull_request: bool,
    base_branch: str = "main",
    base_commit: str | None = None,
    head_commit: str | None = None,
) -> dict[str, Any]:
    if not title.strip():
        raise bad_request("Title must not be empty")
    existing = [int(p.stem) for p in _dir(txn.store, txn.repo).glob("*.json") if p.stem.isdigit()]
    num = max(existing, default=0) + 1
    disc: dict[str, Any] = {
        "num": num,
        "title": title.strip(),
        "status": "open",
        "isPullRequest": pull_request,
        "createdAt": now_iso(),
        "author": author,
        "events": [comment_event(author, description)],
    }
    if pull_request:
        base_head = txn.refs["branches"].get(base_branch)
        if base_head is None:
            raise ApiError(404, f"Invalid rev id: {base_branch}", code="RevisionNotFound")
        disc.update(base=base_branch, baseCommit=base_commit or base_head, mergeCommitId=None)
        txn.refs["pulls"][str(num)] = head_commit or base_commit or base_head
        txn.save_refs()
    save(txn, disc)
    return disc


def add_commit_event(txn: RepoTxn, disc: dict[str, Any], commit: Commit) -> None:
    disc["events"].append(_event("commit", commit.author, {"subject": commit.title, "oid": commit.id}))
    save(txn, disc)


def find_comment(disc: dict[str, Any], comment_id: str) -> dict[str, Any]:
    for event in disc["events"]:
        if event["type"] == "comment" and event["id"] == comment_id:
            return event
    raise ApiError(404, f"Comment {comment_id} not found")


def edit_comment(disc: dict[str, Any], comment_id: str, author: str, content: str) -> dict[str, Any]:
    event = find_comment(disc, comment_id)
    latest = {
        "raw": content,
        "html": f"<p>{html.escape(content)}</p>",
        "updatedAt": now_iso(),
        "author": _author(author),
    }
    data = event["data"]
    data.update(edited=True, latest=latest, numEdits=data.get("numEdits", 0) + 1)
    data["history"].insert(0, latest)
    if author not in data["editors"]:
        data["editors"].append(author)
    return event


def hide_comment(disc: dict[str, Any], comment_id: str) -> dict[str, Any]:
    event = find_comment(disc, comment_id)
    event["data"]["hidden"] = True
    return event


def change_status(disc: dict[str, Any], author: str, status: str, comment: str | None) -> dict[str, Any]:
    if status not in ("open", "closed"):
        raise bad_request("Status must be 'open' or 'closed'")
    if disc["status"] == "merged":
        raise bad_request("This pull request is merged: its status cannot change")
    if comment:
        disc["events"].append(comment_event(author, comment))
    event = _event("status-change", author, {"status": status})
    disc["events"].append(event)
    disc["status"] = status
    return event


def rename(disc: dict[str, Any], author: str, title: str) -> dict[str, Any]:
    if not title.strip():
        raise bad_request("Title must not be empty")
    event = _event("title-change", author, {"from": disc["title"], "to": title.strip()})
    disc["events"].append(event)
    disc["title"] = title.strip()
    return event


def conflicts(store: Store, repo: RepoId, disc: dict[str, Any], refs: dict[str, dict[str, str]]) -> list[str]:
    if not disc.get("isPullRequest") or disc["status"] != "open":
        return []
    base_head = refs["branches"].get(disc["base"])
    pr_head = refs["pulls"].get(str(disc["num"]))
    if base_head is None or pr_head is None:
        return []
    fork = store.commit(repo, disc["baseCommit"]).tree
    ours = tree_changes(fork, store.commit(repo, base_head).tree)
    theirs = tree_changes(fork, store.commit(repo, pr_head).tree)
    return sorted(path for path in theirs if path in ours and ours[path] != theirs[path])


def merge(txn: RepoTxn, disc: dict[str, Any], author: str, comment: str | None) -> Commit:
    """Apply the PR's changes (since it forked) on top of its base branch as one new commit."""
    if not disc.get("isPullRequest"):
        raise bad_request("This discussion is not a pull request")
    if disc["status"] != "open":
        raise bad_request(f"This pull request is {disc['status']}, it cannot be merged")
    store, repo, refs = txn.store, txn.repo, txn.refs
    base_head = refs["branches"].get(disc["base"])
    if base_head is None:
        raise ApiError(404, f"Invalid rev id: {disc['base']}", code="RevisionNotFound")
    files = conflicts(store, repo, disc, refs)
    if files:
        raise conflict(
            f"Merge conflict: the base branch changed {', '.join(files)} since this pull request was opened",
            filesWithConflicts=files,
        )
    pr_head = refs["pulls"][str(disc["num"])]
    base_tree = store.commit(repo, base_head).tree
    changes = tree_changes(store.commit(repo, disc["baseCommit"]).tree, store.commit(repo, pr_head).tree)
    merged: Tree = dict(base_tree)
    for path, entry in changes.items():
        if entry is None:
            merged.pop(path, None)
        else:
            merged[path] = entry
    merge_commit = Commit.create(
        parents=[base_head, pr_head],
        tree=merged,
        title=f"{disc['title']} (#{disc['num']})",
        message=f"Merge refs/pr/{disc['num']} into {disc['base']}",
        author=author,
    )
    txn.write_commit(merge_commit)
    refs["branches"][disc["base"]] = merge_commit.id
    txn.save_refs()
    if comment:
        disc["events"].append(comment_event(author, comment))
    disc["events"].append(_event("status-change", author, {"status": "merged"}))
    disc["status"] = "merged"
    disc["mergeCommitId"] = merge_commit.id
    save(txn, disc)
    return merge_commit


def _text_of(store: Store, entry: dict[str, Any] | None) -> list[str] | None:
    """Lines for the diff: LFS files show as their pointer, binaries as None."""
    if entry is None:
        return []
    if entry.get("lfs"):
        lfs = entry["lfs"]
        return [
            "version https://git-lfs.github.com/spec/v1\n",
            f"oid sha256:{lfs['sha256']}\n",
            f"size {lfs['size']}\n",
        ]
    if entry["size"] > _DIFF_MAX_BYTES:
        return None
    try:
        return store.read_entry(entry).decode("utf-8").splitlines(keepends=True)
    except (UnicodeDecodeError, FileNotFoundError):
        return None


def diff(store: Store, base: Tree, head: Tree) -> str:
    out: list[str] = []
    for path, after in sorted(tree_changes(base, head).items()):
        before = base.get(path)
        out.append(f"diff --git a/{path} b/{path}\n")
        if before is None:
            out.append("new file mode 100644\n")
        elif after is None:
            out.append("deleted file mode 100644\n")
        old_oid = before["oid"] if before else "0" * 40
        new_oid = after["oid"] if after else "0" * 40
        out.append(f"index {old_oid[:7]}..{new_oid[:7]}\n")
        old_lines, new_lines = _text_of(store, before), _text_of(store, after)
        if old_lines is None or new_lines is None:
            out.append(f"Binary files a/{path} and b/{path} differ\n")
            continue
        lines = difflib.unified_diff(
            old_lines,
            new_lines,
            fromfile=f"a/{path}" if before else "/dev/null",
            tofile=f"b/{path}" if after else "/dev/null",
        )
        out.extend(
            line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
        )
    return "".join(out)


def _repo_json(repo: RepoId) -> dict[str, str]:
    return {"name": repo.id, "type": repo.type}


def summary_json(repo: RepoId, disc: dict[str, Any]) -> dict[str, Any]:
    return {
        "num": disc["num"],
        "title": disc["title"],
        "status": disc["status"],
        "isPullRequest": disc["isPullRequest"],
        "createdAt": disc["createdAt"],
        "author": _author(disc["author"]),
        "repo": _repo_json(repo),
        "numComments": sum(1 for e in disc["events"] if e["type"] == "comment"),
        "pinned": False,
        "topReactions": [],
    }


def details_json(
    store: Store, repo: RepoId, disc: dict[str, Any], refs: dict[str, dict[str, str]], *, with_diff: bool
) -> dict[str, Any]:
    data = {
        **summary_json(repo, disc),
        "events": disc["events"],
        "locked": False,
        "collection": "discussions",
    }
    if disc["isPullRequest"]:
        changes: dict[str, Any] = {"base": f"refs/heads/{disc['base']}"}
        if disc.get("mergeCommitId"):
            changes["mergeCommitId"] = disc["mergeCommitId"]
        data["changes"] = changes
        data["filesWithConflicts"] = conflicts(store, repo, disc, refs)
        if with_diff:
            data["diff"] = pr_diff(store, repo, disc, refs)
    return data


def pr_diff(store: Store, repo: RepoId, disc: dict[str, Any], refs: dict[str, dict[str, str]]) -> str:
    """The pull request's changes since it forked from its base, as a unified diff."""
    head = refs["pulls"].get(str(disc["num"]))
    if head is None:
        return ""
    return diff(store, store.commit(repo, disc["baseCommit"]).tree, store.commit(repo, head).tree)


def parse_num(value: str) -> int:
    if not re.fullmatch(r"[1-9]\d*", value):
        raise bad_request(f"Invalid discussion number: {value!r}")
    return int(value)
