"""The values the store keeps and hands out: repo ids, commits, tree entries, and its errors.

Commits are immutable once made: `Commit.create` names one by the hash of its content, its date and
a random salt. Tree entries are `{oid, size}` for regular files and carry `lfs {sha256, size,
pointerSize}` for LFS objects, with `oid` the git blob id of the file or of its LFS pointer.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from hubfuse.localhub.fsutil import git_blob_sha1, lfs_pointer, now_iso

REPO_TYPES = ("model", "dataset", "space")
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$", re.ASCII)


class RepoNotFound(Exception):
    pass


class RepoExists(Exception):
    pass


class RevisionNotFound(Exception):
    pass


@dataclass(frozen=True)
class RepoId:
    type: str
    namespace: str
    name: str

    def __post_init__(self) -> None:
        if self.type not in REPO_TYPES:
            raise ValueError(f"invalid repo type: {self.type!r}")
        for part in (self.namespace, self.name):
            if not _SEGMENT_RE.match(part) or part.endswith(".git") or ".." in part:
                raise ValueError(f"invalid repo id: {self.namespace}/{self.name}")

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def url_prefix(self) -> str:
        return URL_PREFIXES[self.type]

    @property
    def key(self) -> str:
        return f"{self.type}s/{self.id}"

    @property
    def folded_key(self) -> str:
        """The key two spellings of one repo share."""
        return self.key.lower()

    @classmethod
    def parse(cls, repo_type: str, repo_id: str) -> RepoId:
        namespace, sep, name = repo_id.partition("/")
        if not sep or "/" in name:
            raise ValueError(f"invalid repo id: {repo_id!r}")
        return cls(repo_type, namespace, name)


@dataclass
class Commit:
    id: str
    parents: list[str]
    tree: dict[str, dict[str, Any]]
    title: str
    message: str
    author: str
    date: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": self.parents,
            "tree": self.tree,
            "title": self.title,
            "message": self.message,
            "author": self.author,
            "date": self.date,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        return cls(
            id=data["id"],
            parents=list(data["parents"]),
            tree=dict(data["tree"]),
            title=data["title"],
            message=data["message"],
            author=data["author"],
            date=data["date"],
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def create(
        cls, *, parents: list[str], tree: dict[str, dict[str, Any]], title: str, message: str, author: str
    ) -> Commit:
        date = now_iso()
        body = {"parents": parents, "tree": tree, "title": title, "message": message, "author": author}
        # A random salt keeps two identical commits made in the same millisecond distinct.
        digest = hashlib.sha1(
            json.dumps({**body, "date": date, "salt": uuid.uuid4().hex}, sort_keys=True).encode()
        )
        return cls(id=digest.hexdigest(), date=date, **body)


@dataclass(frozen=True)
class ResolvedRevision:
    commit: Commit
    kind: str  # "branch", "tag", "pull" or "commit"
    name: str  # branch/tag name, PR number, or the commit id


def regular_entry(data: bytes) -> dict[str, Any]:
    return {"oid": git_blob_sha1(data), "size": len(data)}


def lfs_entry(sha256: str, size: int) -> dict[str, Any]:
    pointer = lfs_pointer(sha256, size)
    return {
        "oid": git_blob_sha1(pointer),
        "size": size,
        "lfs": {"sha256": sha256, "size": size, "pointerSize": len(pointer)},
    }


def empty_refs() -> dict[str, dict[str, str]]:
    return {"branches": {}, "tags": {}, "pulls": {}}
