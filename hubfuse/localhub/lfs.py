"""Git LFS: which files go to LFS, the batch API, and the signed one-time upload URLs.

The batch answer's `actions.upload.href` carries its own authorisation (an HMAC over the repo, the
object id, its size, an expiry and a nonce), because the client sends that PUT without the Hub token.
The PUT streams into a temp file while hashing; only a body that arrives whole, with the announced
size and sha256, is renamed into the blob store. Once an upload has landed, its nonce is spent.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from hubfuse.localhub.apierror import ApiError, bad_request
from hubfuse.localhub.gitattributes import is_lfs
from hubfuse.localhub.records import RepoId
from hubfuse.localhub.storage import Store

LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
REGULAR_MAX_BYTES = 10 * 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# The patterns of the Hub's default .gitattributes (see gitattributes.DEFAULT_GITATTRIBUTES).
def upload_mode(path: str, size: int, sample: bytes, gitattributes: str | None) -> str:
    """ "lfs" for what the repo's `.gitattributes` sends to LFS, and for large or binary files."""
    if is_lfs(path, gitattributes):
        return "lfs"
    if size > REGULAR_MAX_BYTES or b"\0" in sample:
        return "lfs"
    return "regular"


def is_ignored(path: str, gitignore: str | None) -> bool:
    if not gitignore:
        return False
    name = path.rsplit("/", 1)[-1]
    ignored = False
    for raw in gitignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        anchored = pattern.startswith("/")
        pattern = pattern.lstrip("/")
        hit = fnmatch.fnmatchcase(path, pattern) or path.startswith(pattern + "/")
        if not anchored and "/" not in pattern:
            hit = (
                hit
                or fnmatch.fnmatchcase(name, pattern)
                or any(fnmatch.fnmatchcase(part, pattern) for part in path.split("/")[:-1])
            )
        if hit:
            ignored = not negate
    return ignored


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadSigner:
    """Issues and checks the self-authorising upload URLs; the key lives in the data dir."""

    def __init__(self, data_dir: Path, ttl_seconds: int = 3600) -> None:
        self.ttl = ttl_seconds
        self.nonce_dir = data_dir / "lfs-nonces"
        self.nonce_dir.mkdir(parents=True, exist_ok=True)
        self.key = self._load_key(data_dir / "secret.key")

    @staticmethod
    def _load_key(path: Path) -> bytes:
        if not path.exists():
            # Hard-linking a complete temp file publishes the key atomically; of two processes racing
            # here the first link wins and the other one reads the winner's key.
            tmp = path.with_name(f".tmp-{path.name}-{secrets.token_hex(8)}")
            tmp.write_bytes(secrets.token_bytes(32).hex().encode())
            os.chmod(tmp, 0o600)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        return path.read_bytes().strip()

    def sign(self, repo: RepoId, oid: str, size: int) -> str:
        payload = {
            "t": repo.type,
            "r": repo.id,
            "o": oid,
            "s": size,
            "e": int(time.time()) + self.ttl,
            "n": secrets.token_hex(16),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())}"

    def verify(self, token: str) -> dict[str, Any]:
        body, _, signature = token.partition(".")
        expected = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        if not signature or not hmac.compare_digest(signature, expected):
            raise ApiError(403, "Invalid upload signature")
        payload = json.loads(_unb64(body))
        if payload["e"] < time.time():
            raise ApiError(403, "Upload URL expired")
        if not re.fullmatch(r"[0-9a-f]{32}", payload["n"]) or (self.nonce_dir / payload["n"]).exists():
            raise ApiError(403, "Upload URL already used")
        return payload

    def spend(self, nonce: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.nonce_dir / nonce, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def batch_response(
    store: Store,
    signer: UploadSigner,
    repo: RepoId,
    payload: dict[str, Any],
    endpoint: str,
) -> dict[str, Any]:
    """The batch answer. Like the Hub, LFS objects belong to repos: an upload is skipped only when
    `repo` itself holds the object. Another repo holding it never counts, whoever may read that repo:
    copying between repos is `lfs-files/duplicate`'s job, on the source repo."""
    if payload.get("operation") != "upload":
        raise ApiError(422, "Only the 'upload' operation is supported (downloads go through /resolve)")
    transfers = payload.get("transfers") or ["basic"]
    if "basic" not in transfers:
        raise ApiError(422, "Only the 'basic' transfer is supported")
    objects = payload.get("objects")
    if not isinstance(objects, list):
        raise bad_request("'objects' must be a list")
    repo_url = f"{endpoint}/{repo.url_prefix}{repo.id}.git"
    answered = []
    for obj in objects:
        oid, size = (
            obj.get("oid") if isinstance(obj, dict) else None,
            obj.get("size") if isinstance(obj, dict) else None,
        )
        if not isinstance(oid, str) or not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
            answered.append(
                {
                    "oid": str(oid),
                    "size": size if isinstance(size, int) else 0,
                    "error": {"code": 422, "message": "Invalid object id or size"},
                }
            )
            continue
        if store.lfs_linked(repo, oid) and store.lfs_path(oid).stat().st_size == size:
            answered.append({"oid": oid, "size": size, "authenticated": True})
            continue
        answered.append(
            {
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {
                        "href": f"{endpoint}/lfs-upload/{signer.sign(repo, oid, size)}",
                        "expires_in": signer.ttl,
                    },
                    "verify": {"href": f"{repo_url}/info/lfs/objects/verify", "expires_in": signer.ttl},
                },
            }
        )
    return {"transfer": "basic", "objects": answered, "hash_algo": "sha256"}


async def receive_upload(
    store: Store, signer: UploadSigner, token: str, chunks: AsyncIterator[bytes]
) -> tuple[RepoId, str]:
    """Stream an upload into the store. Anything short of a whole, verified body leaves nothing behind.

    `chunks` raising (the client went away) propagates after the temp file is removed.
    """
    payload = signer.verify(token)
    repo = RepoId.parse(payload["t"], payload["r"])
    oid, expected_size = payload["o"], payload["s"]
    if not store.exists(repo):
        raise ApiError(404, "Repository not found", code="RepoNotFound")
    tmp = store.tmp_path()
    digest = hashlib.sha256()
    received = 0
    try:
        with open(tmp, "wb") as f:
            async for chunk in chunks:
                received += len(chunk)
                if received > expected_size:
                    raise bad_request(f"Upload is larger than the announced {expected_size} bytes")
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if received != expected_size:
            raise bad_request(f"Upload has {received} bytes, expected {expected_size}")
        if digest.hexdigest() != oid:
            raise bad_request(f"Upload content does not match sha256 {oid}")
        store.install_lfs(tmp, oid)
        store.link_lfs(repo, oid)
        signer.spend(payload["n"])
        return repo, oid
    finally:
        tmp.unlink(missing_ok=True)
