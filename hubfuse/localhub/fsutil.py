"""Atomic file writes, cross-process locks and the small encodings the Hub protocol uses."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar


def now_iso() -> str:
    """The Hub's date format: `%Y-%m-%dT%H:%M:%S.%fZ` with milliseconds, always UTC."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder, fsync, then rename: readers see old or new, never half.

    The temp file is created with `mode` (umask aside), so a secret is never readable by others,
    not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any, *, mode: int = 0o644) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode(), mode=mode)


def read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def install_file(tmp: Path, dest: Path) -> None:
    """Move an already fsynced temp file into place; content-addressed, so an existing dest wins."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        tmp.unlink(missing_ok=True)
        return
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)


class PathLock:
    """A lock that holds across threads (a `threading.Lock`) and across processes (`fcntl.flock`).

    flock alone is per open file description, which would also serialise threads, but the thread lock
    keeps waiting threads off the file descriptor table and makes the intent plain.
    """

    _registry: ClassVar[dict[str, threading.Lock]] = {}
    _registry_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        key = os.path.abspath(path)
        with PathLock._registry_guard:
            self._tlock = PathLock._registry.setdefault(key, threading.Lock())

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._tlock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
