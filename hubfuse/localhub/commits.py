"""The NDJSON commit payload and how its operations change a tree."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubfuse.localhub.apierror import ApiError, bad_request
from hubfuse.localhub.lfs import REGULAR_MAX_BYTES
from hubfuse.localhub.payload import Payload
from hubfuse.localhub.records import Commit, RepoId, lfs_entry
from hubfuse.localhub.storage import Store

Tree = dict[str, dict[str, Any]]

_PARENT_RE = re.compile(r"^[0-9a-fA-F]{5,40}$")


# One NDJSON line holds at most one inline file: base64 of 10 MiB, plus its JSON around it.
COMMIT_LINE_MAX = REGULAR_MAX_BYTES * 4 // 3 + 1024 * 1024
TOO_LARGE_MESSAGE = (
    "Your push was rejected because it contains files larger than 10 MiB. Please use"
    " https://git-lfs.github.com/ to store large files. Offending file: - {path}"
)


@dataclass
class Operation:
    kind: str  # "file", "lfsFile", "deletedFile" or "deletedFolder"
    path: str
    entry: dict[str, Any] | None = None  # an inline file, already in the blob store
    oid: str = ""
    size: int | None = None


@dataclass
class CommitRequest:
    summary: str
    description: str
    parent_commit: str | None
    operations: list[Operation]


def validate_path(path: object) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise bad_request(f"Invalid path: {path!r}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise bad_request(f"Invalid path: {path!r}")
    return path


def _file_content(value: Payload, path: str) -> bytes:
    """An inline file's bytes: `encoding` is "utf-8" (the Hub's default) or "base64"."""
    encoding = value.string("encoding", "utf-8")
    content = value.string("content", required=True)
    if encoding == "utf-8":
        try:
            return content.encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request(f"Invalid utf-8 content for {path!r}") from None
    if encoding != "base64":
        raise bad_request(f"Unsupported encoding: {encoding!r}")
    try:
        return base64.b64decode(content, validate=True)
    except binascii.Error:
        raise bad_request(f"Invalid base64 content for {path!r}") from None


def spooled_lines(path: Path) -> Iterator[bytes]:
    """The lines of a spooled NDJSON body, one in memory at a time; a 400 for an oversized one."""
    with open(path, "rb") as f:
        while line := f.readline(COMMIT_LINE_MAX + 1):
            if len(line) > COMMIT_LINE_MAX:
                raise bad_request(TOO_LARGE_MESSAGE.format(path="(a line of the commit payload)"))
            yield line


def parse_commit_payload(lines: Iterable[bytes], store: Store) -> CommitRequest:
    """The commit request; inline files go to the blob store as they are read, not into memory."""
    header: Payload | None = None
    operations: list[Operation] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            raise bad_request(f"Invalid NDJSON line {number}") from None
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or not isinstance(item.get("value"), dict)
        ):
            raise bad_request(
                f"NDJSON line {number} must be an object with a string 'key' and an object 'value'"
            )
        key, value = item["key"], Payload(item["value"])
        if key == "header":
            header = value
        elif key == "file":
            if "oldPath" in value:
                raise bad_request("Moving files ('oldPath') is not supported by this hub")
            path = validate_path(value.data.get("path"))
            content = _file_content(value, path)
            if len(content) > REGULAR_MAX_BYTES:
                raise bad_request(TOO_LARGE_MESSAGE.format(path=path))
            operations.append(Operation("file", path, entry=store.put_regular(content)))
            del content
        elif key == "lfsFile":
            if "oldPath" in value:
                raise bad_request("Moving files ('oldPath') is not supported by this hub")
            if value.string("algo", "sha256") != "sha256":
                raise bad_request(f"Unsupported LFS algo: {value.data.get('algo')!r}")
            operations.append(
                Operation(
                    "lfsFile",
                    validate_path(value.data.get("path")),
                    oid=value.string("oid", "").lower(),
                    size=value.integer("size"),
                )
            )
        elif key in ("deletedFile", "deletedFolder", "deletedEntry"):
            path = value.data.get("path")
            if key == "deletedFolder" and isinstance(path, str):
                path = path.rstrip("/")
            # `deletedEntry` (the Hub's current key) names a file or a folder, like `deletedFile`.
            operations.append(Operation("deletedFile" if key == "deletedEntry" else key, validate_path(path)))
        else:
            raise bad_request(f"Unknown commit operation: {key!r}")
    if header is None:
        raise bad_request("Missing header line in commit payload")
    summary = header.string("summary", "")
    if not summary.strip():
        raise bad_request("Commit summary must not be empty")
    parent = header.string("parentCommit")
    if parent is not None and not _PARENT_RE.match(parent):
        raise bad_request(f"Invalid parentCommit: {parent!r}")
    return CommitRequest(
        summary=summary.strip(),
        description=header.string("description", ""),
        parent_commit=parent.lower() if parent else None,
        operations=operations,
    )


DANGLING_LFS_MESSAGE = (
    "Your push was rejected because an LFS pointer pointed to a file that does not exist. For instance,"
    " this can happen if you used git push --no-verify to push your changes. Offending file: - {files}"
)


def _check_lfs_held(store: Store, repo: RepoId, operations: list[Operation]) -> None:
    """Like the Hub, a commit names only LFS objects its own repo holds (uploaded or duplicated into it)."""
    dangling = [op.path for op in operations if op.kind == "lfsFile" and not store.lfs_linked(repo, op.oid)]
    if dangling:
        raise bad_request(DANGLING_LFS_MESSAGE.format(files=" - ".join(dangling)))


def apply_operations(store: Store, repo: RepoId, tree: Tree, operations: list[Operation]) -> Tree:
    _check_lfs_held(store, repo, operations)
    new_tree = dict(tree)
    for op in operations:
        if op.kind == "file" and op.entry is not None:
            _check_no_dir_clash(new_tree, op.path)
            new_tree[op.path] = op.entry
        elif op.kind == "lfsFile":
            size = store.lfs_path(op.oid).stat().st_size
            if op.size is not None and op.size != size:
                raise bad_request(f"LFS object {op.oid} has size {size}, not {op.size}")
            _check_no_dir_clash(new_tree, op.path)
            new_tree[op.path] = lfs_entry(op.oid, size)
        elif op.kind == "deletedFile" and op.path in new_tree:
            del new_tree[op.path]
        elif op.kind in ("deletedFile", "deletedFolder"):
            # Like the Hub, `deletedFile` naming a folder deletes the folder: the client sends that for
            # `CommitOperationDelete("folder")`, a path without its trailing slash.
            prefix = op.path + "/"
            doomed = [path for path in new_tree if path.startswith(prefix)]
            if not doomed:
                what = "file" if op.kind == "deletedFile" else "folder"
                raise ApiError(404, f"A {what} with this name doesn't exist: {op.path}", code="EntryNotFound")
            for path in doomed:
                del new_tree[path]
    return new_tree


def _check_no_dir_clash(tree: Tree, path: str) -> None:
    prefix = path + "/"
    if any(existing.startswith(prefix) for existing in tree):
        raise bad_request(f"Cannot add file {path!r}: a folder with that name exists")
    parts = path.split("/")
    for depth in range(1, len(parts)):
        if "/".join(parts[:depth]) in tree:
            raise bad_request(f"Cannot add file {path!r}: {'/'.join(parts[:depth])!r} is a file")


def new_commit(parent: Commit | None, tree: Tree, request: CommitRequest, author: str) -> Commit:
    return Commit.create(
        parents=[parent.id] if parent else [],
        tree=tree,
        title=request.summary,
        message=request.description,
        author=author,
    )


def tree_changes(base: Tree, head: Tree) -> dict[str, dict[str, Any] | None]:
    """Paths whose entry differs between two trees: the new entry, or None where it was deleted."""
    changes: dict[str, dict[str, Any] | None] = {}
    for path in base.keys() | head.keys():
        before, after = base.get(path), head.get(path)
        if before != after:
            changes[path] = after
    return changes
