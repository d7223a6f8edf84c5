"""The JSON documents of the read API, in the shapes `huggingface_hub` parses."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from hubfuse.errors import CheckpointError
from hubfuse.localhub.cards import card_data
from hubfuse.localhub.listing import derived_tags
from hubfuse.localhub.records import Commit, RepoId
from hubfuse.localhub.storage import Store
from hubfuse.safetensors_header import METADATA_KEY, parse_header

_CONFIG_MAX_BYTES = 5 * 1024 * 1024
# Well above real checkpoints (a shard of thousands of tensors has a header of a few hundred kB),
# far below safetensors' own 100 MB: this is parsed for anonymous callers.
SAFETENSORS_HEADER_MAX = 8 * 1024 * 1024
SAFETENSORS_HEADERS_BUDGET = 32 * 1024 * 1024  # all of one commit's headers together
_HEADER_MAX_DIGITS = 20
_HEADER_MAX_DIMS = 16


def object_id(repo: RepoId) -> str:
    return hashlib.sha1(repo.key.encode()).hexdigest()[:24]


def _read_small(store: Store, commit: Commit, path: str) -> bytes | None:
    entry = commit.tree.get(path)
    if entry is None or entry.get("lfs") or entry["size"] > _CONFIG_MAX_BYTES:
        return None
    try:
        return store.read_entry(entry)
    except FileNotFoundError:
        return None


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > _HEADER_MAX_DIGITS:
        raise ValueError("number too long for a safetensors header")
    return int(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} in a safetensors header")


def _bounded(raw: bytes) -> bool:
    """Cheap checks that keep the strict parse below linear time, whatever the file says.

    Offsets and dimensions fit in 64 bits (20 digits) and real tensors have a handful of dimensions;
    a header outside that (huge integers, thousands of dimensions, deep nesting) is not parsed.
    """
    try:
        document = json.loads(raw, parse_int=_small_int, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and all(
        name == METADATA_KEY
        or (isinstance(entry, dict) and len(entry.get("shape") or ()) <= _HEADER_MAX_DIMS)
        for name, entry in document.items()
    )


def _header_length(blob: Path) -> int:
    try:
        with open(blob, "rb") as f:
            return int.from_bytes(f.read(8), "little")
    except OSError:
        return 0


@functools.lru_cache(maxsize=4096)
def _safetensors_parameters(blob: Path) -> dict[str, int] | None:
    """Parameter count per dtype from a safetensors file's header, or None when it cannot be read.

    Blobs are content-addressed, so the answer is cached by path: an anonymous `model_info` pays for a
    header at most once.
    """
    try:
        with open(blob, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            length = int.from_bytes(f.read(8), "little")
            if length > SAFETENSORS_HEADER_MAX or length > file_size - 8:
                return None
            raw = f.read(length)
        if not _bounded(raw):
            return None
        header = parse_header(raw, path=blob, file_size=file_size)
    except (OSError, CheckpointError, ValueError, RecursionError):
        return None
    counts: dict[str, int] = {}
    for tensor in header.tensors:
        counts[tensor.dtype] = counts.get(tensor.dtype, 0) + math.prod(tensor.shape)
    return counts


def safetensors_info(store: Store, commit: Commit) -> dict[str, Any] | None:
    """The `safetensors` summary of repo info: parameters per dtype over every .safetensors file."""
    totals: dict[str, int] = {}
    found = False
    header_bytes = 0
    for path, entry in commit.tree.items():
        if not path.endswith(".safetensors"):
            continue
        blob = store.entry_path(entry)
        header_bytes += _header_length(blob)
        if header_bytes > SAFETENSORS_HEADERS_BUDGET:
            return None
        counts = _safetensors_parameters(blob)
        if counts is None:
            return None
        found = True
        for dtype, count in counts.items():
            totals[dtype] = totals.get(dtype, 0) + count
    return {"parameters": totals, "total": sum(totals.values())} if found else None


def sibling(path: str, entry: dict[str, Any], *, blobs: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"rfilename": path}
    if blobs:
        item["size"] = entry["size"]
        item["blobId"] = entry["oid"]
        if entry.get("lfs"):
            item["lfs"] = dict(entry["lfs"])
    return item


def repo_info(
    store: Store, repo: RepoId, meta: dict[str, Any], commit: Commit, *, blobs: bool, full: bool = True
) -> dict[str, Any]:
    """Repo info as `model_info`/`dataset_info` read it; without `full`, as `list_models` lists it."""
    readme = _read_small(store, commit, "README.md")
    card = card_data(readme) if readme is not None else None
    config = _config(store, commit) if repo.type == "model" else None
    tags = derived_tags(repo.type, card, config)
    if any(path.endswith(".safetensors") for path in commit.tree) and "safetensors" not in tags:
        tags.append("safetensors")
    info: dict[str, Any] = {
        "_id": object_id(repo),
        "id": repo.id,
        "author": repo.namespace,
        "sha": commit.id,
        "lastModified": commit.date,
        "createdAt": meta["createdAt"],
        "private": bool(meta.get("private")),
        "gated": meta.get("gated") or False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": tags,
    }
    if repo.type == "model":
        info["modelId"] = repo.id
        if card:
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card.get(key), str):
                    info[key] = card[key]
        if config is not None:
            info["config"] = config
    if repo.type == "space":
        info["sdk"] = meta.get("sdk", "static")
    if card is not None:
        info["cardData"] = card
    if not full:
        return info
    if repo.type == "model" and (safetensors := safetensors_info(store, commit)) is not None:
        info["safetensors"] = safetensors
    info["siblings"] = [sibling(path, entry, blobs=blobs) for path, entry in sorted(commit.tree.items())]
    info["usedStorage"] = sum(entry["size"] for entry in commit.tree.values())
    if repo.type == "model":
        info["spaces"] = []
    return info


def _config(store: Store, commit: Commit) -> dict[str, Any] | None:
    raw = _read_small(store, commit, "config.json")
    if raw is None:
        return None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def tree_oid(entries: list[tuple[str, str]]) -> str:
    return hashlib.sha1("".join(f"{path}\0{oid}\n" for path, oid in sorted(entries)).encode()).hexdigest()


def tree_listing(
    tree: dict[str, dict[str, Any]], base: str, *, recursive: bool
) -> list[dict[str, Any]] | None:
    """Files and folders under `base` ("" for the root), or None when `base` is not a folder."""
    prefix = f"{base}/" if base else ""
    under = {path: entry for path, entry in tree.items() if path.startswith(prefix)}
    if base and not under:
        return None
    folders: dict[str, list[tuple[str, str]]] = {}
    files: list[dict[str, Any]] = []
    for path, entry in under.items():
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            folder = prefix + "/".join(rest[:depth])
            if depth == 1 or recursive:
                folders.setdefault(folder, [])
        for depth in range(1, len(rest)):
            folder = prefix + "/".join(rest[:depth])
            if folder in folders:
                folders[folder].append((path, entry["oid"]))
        if len(rest) == 1 or recursive:
            files.append(file_json(path, entry))
    listing = [
        {"type": "directory", "oid": tree_oid(children), "size": 0, "path": folder}
        for folder, children in folders.items()
    ]
    listing.extend(files)
    listing.sort(key=lambda item: (item["type"] != "directory", item["path"]))
    return listing


def file_json(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry.get("lfs"):
        lfs = entry["lfs"]
        item["lfs"] = {"oid": lfs["sha256"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
    return item


def path_info(tree: dict[str, dict[str, Any]], path: str) -> dict[str, Any] | None:
    path = path.strip("/")
    if path in tree:
        return file_json(path, tree[path])
    children = [(p, e["oid"]) for p, e in tree.items() if p.startswith(path + "/")]
    if path and children:
        return {"type": "directory", "oid": tree_oid(children), "size": 0, "path": path}
    return None


def last_commits(store: Store, repo: RepoId, head: Commit, paths: list[str]) -> dict[str, Commit]:
    """For each path (file or folder), the newest commit that changed something at or under it."""

    def snapshot(tree: dict[str, dict[str, Any]], path: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((p, e["oid"]) for p, e in tree.items() if p == path or p.startswith(path + "/")))

    found: dict[str, Commit] = {}
    pending = set(paths)
    commit: Commit | None = head
    while commit is not None and pending:
        parent = store.commit(repo, commit.parents[0]) if commit.parents else None
        for path in list(pending):
            if parent is None or snapshot(commit.tree, path) != snapshot(parent.tree, path):
                found[path] = commit
                pending.discard(path)
        commit = parent
    return found


def commit_json(commit: Commit, *, formatted: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": commit.id,
        "title": commit.title,
        "message": commit.message,
        "authors": [{"user": commit.author, "avatar": ""}],
        "date": commit.date,
    }
    if formatted:
        item["formatted"] = {"title": commit.title, "message": commit.message}
    return item


def refs_json(refs: dict[str, dict[str, str]], *, include_prs: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "branches": [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": target}
            for name, target in sorted(refs["branches"].items())
        ],
        "converts": [],
        "tags": [
            {"name": name, "ref": f"refs/tags/{name}", "targetCommit": target}
            for name, target in sorted(refs["tags"].items())
        ],
    }
    if include_prs:
        data["pullRequests"] = [
            {"name": f"refs/pr/{num}", "ref": f"refs/pr/{num}", "targetCommit": target}
            for num, target in sorted(refs["pulls"].items(), key=lambda item: int(item[0]))
        ]
    return data


def whoami(user: str, role: str, orgs: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "user",
        "id": hashlib.sha1(f"user:{user}".encode()).hexdigest()[:24],
        "name": user,
        "fullname": user,
        "email": None,
        "emailVerified": False,
        "canPay": False,
        "isPro": False,
        "periodEnd": None,
        "avatarUrl": "",
        "orgs": [
            {
                "type": "org",
                "id": hashlib.sha1(f"org:{org}".encode()).hexdigest()[:24],
                "name": org,
                "fullname": org,
                "roleInOrg": role,
                "isEnterprise": False,
                "avatarUrl": "",
            }
            for org in orgs
        ],
        "auth": {
            "type": "access_token",
            "accessToken": {"displayName": f"localhub-{role}", "role": role, "createdAt": None},
        },
    }
