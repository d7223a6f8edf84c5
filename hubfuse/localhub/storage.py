"""The on-disk model: content-addressed blobs, immutable commits, refs, per-repo locks.

Layout under the data dir:

    blobs/git/ab/<sha1>          regular file contents, named by their git blob id
    blobs/lfs/ab/cd/<sha256>     LFS objects
    blobs/lfs/ab/cd/<sha256>.xet the object's Xet file hash (computed once, when the object is stored)
    repos/<type>s/<ns>/<name>/
        meta.json                private, gated, createdAt, gatedAccess
        refs.json                {"branches": {...}, "tags": {...}, "pulls": {"1": <commit>}}
        commits/<id>.json        {id, parents, tree: {path: {oid, size, lfs?}}, title, message, author, date}
        lfs/<sha256>             marker: this repo holds this LFS object (uploaded to it, or duplicated into it)
        discussions/<n>.json
    redirects.json               {"models/old-ns/old-name": "new-ns/new-name"}: where moved repos went (keys lowercase)
    locks/                       lock files (kept outside the repo folders so a delete cannot race them)
    tmp/                         temp files; everything is written there or beside its target, then renamed

Repo ids are case-insensitive, as on the Hub: a repo's folder keeps the casing it was created with and
`Store.canonical` finds it whatever the casing asked for.

LFS objects belong to repos, as on the Hub: a blob is stored once, but a repo may name it in a commit
only when its marker is there (`lfs_linked`); another repo's copy never counts.

Commits and blobs never change once written; `refs.json` and `meta.json` are replaced atomically, and
every read-modify-write of a repo happens inside `Store.transaction`, which holds the repo's lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubfuse.localhub.fsutil import (
    PathLock,
    atomic_write_bytes,
    atomic_write_json,
    install_file,
    now_iso,
    read_json,
)
from hubfuse.localhub.gitattributes import DEFAULT_GITATTRIBUTES
from hubfuse.localhub.records import (
    Commit,
    RepoExists,
    RepoId,
    RepoNotFound,
    ResolvedRevision,
    RevisionNotFound,
    empty_refs,
    regular_entry,
)
from hubfuse.localhub.xethash import xet_file_hash

_HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class RepoTxn:
    """A repo held under its lock: refs read fresh from disk, written back with `save_refs`."""

    def __init__(self, store: Store, repo: RepoId) -> None:
        self.store = store
        self.repo = repo
        self.dir = store.repo_dir(repo)
        if not (self.dir / "meta.json").exists():
            raise RepoNotFound(repo.id)
        self.refs: dict[str, dict[str, str]] = store.refs(repo)

    def write_commit(self, commit: Commit) -> None:
        atomic_write_json(self.dir / "commits" / f"{commit.id}.json", commit.to_json())

    def save_refs(self) -> None:
        atomic_write_json(self.dir / "refs.json", self.refs)

    def meta(self) -> dict[str, Any]:
        return self.store.meta(self.repo)

    def save_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.dir / "meta.json", meta)


def _find_folded(folder: Path, name: str) -> str | None:
    """The entry of `folder` named `name` in any casing (the exact one first)."""
    if (folder / name).is_dir():
        return name
    folded = name.lower()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(folder):
            if entry.name.lower() == folded and entry.is_dir():
                return entry.name
    return None


class Store:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        for sub in ("blobs/git", "blobs/lfs", "repos", "locks", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ---- blobs -------------------------------------------------------------------------------

    def tmp_path(self) -> Path:
        return self.root / "tmp" / uuid.uuid4().hex

    def git_blob_path(self, oid: str) -> Path:
        return self.root / "blobs" / "git" / oid[:2] / oid

    def lfs_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "lfs" / sha256[:2] / sha256[2:4] / sha256

    def put_regular(self, data: bytes) -> dict[str, Any]:
        entry = regular_entry(data)
        path = self.git_blob_path(entry["oid"])
        if not path.exists():
            atomic_write_bytes(path, data)
        return entry

    def has_lfs(self, sha256: str) -> bool:
        return bool(_SHA256_RE.match(sha256)) and self.lfs_path(sha256).is_file()

    def lfs_linked(self, repo: RepoId, sha256: str) -> bool:
        return (
            bool(_SHA256_RE.match(sha256))
            and (self.repo_dir(repo) / "lfs" / sha256).exists()
            and self.has_lfs(sha256)
        )

    def link_lfs(self, repo: RepoId, sha256: str) -> None:
        marker = self.repo_dir(repo) / "lfs" / sha256
        if not marker.exists() and self.repo_dir(repo).exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def unlink_lfs(self, repo: RepoId, sha256: str) -> None:
        """The repo no longer holds the object (the blob stays: other repos may hold it)."""
        if _SHA256_RE.match(sha256):
            (self.repo_dir(repo) / "lfs" / sha256).unlink(missing_ok=True)

    def lfs_held(self, repo: RepoId) -> dict[str, float]:
        """The LFS objects the repo holds, each with the time it came to hold it."""
        held = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.repo_dir(repo) / "lfs"):
                if _SHA256_RE.match(entry.name) and self.has_lfs(entry.name):
                    held[entry.name] = entry.stat().st_mtime
        return held

    def install_lfs(self, tmp: Path, sha256: str, *, xet_hash: str | None = None) -> None:
        """Move a verified upload into the blob store and record its Xet hash (once per object);
        `xet_hash`: the hash already computed from these very bytes."""
        install_file(tmp, self.lfs_path(sha256))
        marker = self._xet_hash_path(sha256)
        if not marker.exists():
            atomic_write_bytes(marker, (xet_hash or xet_file_hash(self.lfs_path(sha256))).encode())

    def _xet_hash_path(self, sha256: str) -> Path:
        return self.lfs_path(sha256).with_suffix(".xet")

    def xet_hash(self, sha256: str) -> str | None:
        """The stored object's Xet file hash; None when it has none (stored before hashes were kept)."""
        if not _SHA256_RE.match(sha256):
            return None
        try:
            return self._xet_hash_path(sha256).read_text().strip() or None
        except FileNotFoundError:
            return None

    def entry_path(self, entry: dict[str, Any]) -> Path:
        lfs = entry.get("lfs")
        return self.lfs_path(lfs["sha256"]) if lfs else self.git_blob_path(entry["oid"])

    def read_entry(self, entry: dict[str, Any]) -> bytes:
        return self.entry_path(entry).read_bytes()

    # ---- repos -------------------------------------------------------------------------------

    def repo_dir(self, repo: RepoId) -> Path:
        return self.root / "repos" / f"{repo.type}s" / repo.namespace / repo.name

    def _repo_lock(self, repo: RepoId) -> PathLock:
        return PathLock(self.root / "locks" / f"{repo.type}s" / repo.namespace / f"{repo.name}.lock")

    def _global_lock(self) -> PathLock:
        return PathLock(self.root / "locks" / "repos.lock")

    def exists(self, repo: RepoId) -> bool:
        return (self.repo_dir(repo) / "meta.json").exists()

    def canonical(self, repo: RepoId) -> RepoId | None:
        """The stored repo `repo` names in any casing, or None when there is none."""
        if self.exists(repo):
            return repo
        namespace = _find_folded(self.root / "repos" / f"{repo.type}s", repo.namespace)
        if namespace is None:
            return None
        name = _find_folded(self.root / "repos" / f"{repo.type}s" / namespace, repo.name)
        if name is None:
            return None
        found = RepoId(repo.type, namespace, name)
        return found if self.exists(found) else None

    def _namespace_casing(self, repo: RepoId) -> RepoId:
        """`repo` under its namespace's existing casing, if the namespace has repos already."""
        namespace = _find_folded(self.root / "repos" / f"{repo.type}s", repo.namespace)
        return RepoId(repo.type, namespace, repo.name) if namespace else repo

    def moved_to(self, repo: RepoId) -> RepoId | None:
        """Where a repo that was moved away from this name went (None when it was not moved)."""
        try:
            target = read_json(self.root / "redirects.json").get(repo.folded_key)
        except FileNotFoundError:
            return None
        return RepoId.parse(repo.type, target) if isinstance(target, str) else None

    def _record_move(self, src: RepoId, dst: RepoId) -> None:
        path = self.root / "redirects.json"
        try:
            redirects = read_json(path)
        except FileNotFoundError:
            redirects = {}
        # Older names of `src` now lead to `dst` too; `dst` is a live repo again, never a redirect.
        for key, target in redirects.items():
            if f"{src.type}s/{target}".lower() == src.folded_key:
                redirects[key] = dst.id
        redirects[src.folded_key] = dst.id
        redirects.pop(dst.folded_key, None)
        atomic_write_json(path, redirects)

    def meta(self, repo: RepoId) -> dict[str, Any]:
        try:
            return read_json(self.repo_dir(repo) / "meta.json")
        except FileNotFoundError:
            raise RepoNotFound(repo.id) from None

    def create_repo(
        self, repo: RepoId, *, private: bool = False, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._global_lock().hold():
            if self.canonical(repo) is not None:
                raise RepoExists(repo.id)
            repo = self._namespace_casing(repo)
            staging = self.root / "tmp" / f"repo-{uuid.uuid4().hex}"
            meta = {
                "type": repo.type,
                "id": repo.id,
                "private": bool(private),
                "gated": False,
                "gatedAccess": [],
                "createdAt": now_iso(),
                **(extra or {}),
            }
            atomic_write_json(staging / "meta.json", meta)
            gitattributes = DEFAULT_GITATTRIBUTES.encode()
            initial = Commit.create(
                parents=[],
                tree={".gitattributes": self.put_regular(gitattributes)},
                title="initial commit",
                message="",
                author="system",
            )
            atomic_write_json(staging / "commits" / f"{initial.id}.json", initial.to_json())
            refs = empty_refs()
            refs["branches"]["main"] = initial.id
            atomic_write_json(staging / "refs.json", refs)
            target = self.repo_dir(repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # leftovers of a crashed delete, never a live repo
            os.replace(staging, target)
            return meta

    def delete_repo(self, repo: RepoId) -> None:
        with self._global_lock().hold(), self._repo_lock(repo).hold():
            if not self.exists(repo):
                raise RepoNotFound(repo.id)
            trash = self.root / "tmp" / f"deleted-{uuid.uuid4().hex}"
            os.replace(self.repo_dir(repo), trash)
            shutil.rmtree(trash, ignore_errors=True)

    def move_repo(self, src: RepoId, dst: RepoId) -> None:
        with self._global_lock().hold(), self._repo_lock(src).hold():
            if not self.exists(src):
                raise RepoNotFound(src.id)
            if self.canonical(dst) not in (None, src):  # a move may change the casing alone
                raise RepoExists(dst.id)
            dst = self._namespace_casing(dst)
            meta = self.meta(src)
            meta["id"] = dst.id
            atomic_write_json(self.repo_dir(src) / "meta.json", meta)
            self.repo_dir(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.repo_dir(src), self.repo_dir(dst))
            if src.folded_key != dst.folded_key:
                self._record_move(src, dst)

    def list_repos(self, repo_type: str) -> list[tuple[RepoId, dict[str, Any]]]:
        base = self.root / "repos" / f"{repo_type}s"
        found = []
        for meta_path in sorted(base.glob("*/*/meta.json")):
            namespace, name = meta_path.parent.parent.name, meta_path.parent.name
            with contextlib.suppress(FileNotFoundError, ValueError):
                found.append((RepoId(repo_type, namespace, name), read_json(meta_path)))
        return found

    @contextlib.contextmanager
    def transaction(self, repo: RepoId) -> Iterator[RepoTxn]:
        with self._repo_lock(repo).hold():
            yield RepoTxn(self, repo)

    # ---- refs and commits ----------------------------------------------------------------------

    def refs(self, repo: RepoId) -> dict[str, dict[str, str]]:
        try:
            refs = read_json(self.repo_dir(repo) / "refs.json")
        except FileNotFoundError:
            raise RepoNotFound(repo.id) from None
        for kind in ("branches", "tags", "pulls"):
            refs.setdefault(kind, {})
        return refs

    def commit(self, repo: RepoId, commit_id: str) -> Commit:
        try:
            return Commit.from_json(read_json(self.repo_dir(repo) / "commits" / f"{commit_id}.json"))
        except FileNotFoundError:
            raise RevisionNotFound(commit_id) from None

    def resolve(
        self, repo: RepoId, revision: str, refs: dict[str, dict[str, str]] | None = None
    ) -> ResolvedRevision:
        if refs is None:
            if not self.exists(repo):
                raise RepoNotFound(repo.id)
            refs = self.refs(repo)
        kind, name, commit_id = self._resolve_name(repo, revision, refs)
        return ResolvedRevision(self.commit(repo, commit_id), kind, name)

    def _resolve_name(
        self, repo: RepoId, revision: str, refs: dict[str, dict[str, str]]
    ) -> tuple[str, str, str]:
        candidates = [
            ("branch", revision, refs["branches"]),
            ("tag", revision, refs["tags"]),
        ]
        if revision.startswith("refs/heads/"):
            candidates.append(("branch", revision.removeprefix("refs/heads/"), refs["branches"]))
        if revision.startswith("refs/tags/"):
            candidates.append(("tag", revision.removeprefix("refs/tags/"), refs["tags"]))
        if m := re.fullmatch(r"refs/pr/(\d+)", revision):
            candidates.append(("pull", m.group(1), refs["pulls"]))
        for kind, name, table in candidates:
            if name in table:
                return kind, name, table[name]
        if _HEX_RE.match(revision):
            commits_dir = self.repo_dir(repo) / "commits"
            if len(revision) == 40 and (commits_dir / f"{revision}.json").exists():
                return "commit", revision, revision
            matches = [p.stem for p in commits_dir.glob(f"{revision}*.json")]
            if len(matches) == 1:
                return "commit", matches[0], matches[0]
        raise RevisionNotFound(revision)

    def history(self, repo: RepoId, head: str) -> list[Commit]:
        """Every commit reachable from `head`, newest first."""
        seen: set[str] = set()
        stack = [head]
        commits: list[Commit] = []
        while stack:
            commit_id = stack.pop()
            if commit_id in seen:
                continue
            seen.add(commit_id)
            commit = self.commit(repo, commit_id)
            commits.append(commit)
            stack.extend(commit.parents)
        commits.sort(key=lambda c: c.date, reverse=True)
        return commits

    def last_modified(self, repo: RepoId) -> str | None:
        refs = self.refs(repo)
        main = refs["branches"].get("main")
        return self.commit(repo, main).date if main else None
