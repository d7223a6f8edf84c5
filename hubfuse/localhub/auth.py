"""Tokens and who may do what.

Tokens live in `<data>/auth.json`:

    {"tokens": {"hf_...": {"user": "alice", "role": "write", "orgs": ["acme"], "createdAt": "..."}}}

`role` is `read` (read public repos and the namespaces' private ones) or `write` (also create repos,
commit, open PRs, comment). The file is re-read whenever it changes, so `hub token add` works
against a running server.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hubfuse.localhub.fsutil import PathLock, atomic_write_json, now_iso, read_json

ROLES = ("read", "write")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$", re.ASCII)


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    orgs: tuple[str, ...]

    @property
    def can_write(self) -> bool:
        return self.role == "write"

    def member_of(self, namespace: str) -> bool:
        folded = namespace.lower()  # names are case-insensitive, as on the Hub
        return folded == self.user.lower() or folded in (org.lower() for org in self.orgs)


def new_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "hf_" + "".join(secrets.choice(alphabet) for _ in range(34))


def validate_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid {kind} name: {name!r}")


class AuthStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._tokens: dict[str, Principal] = {}

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_if_changed(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        tokens: dict[str, Principal] = {}
        if stamp is not None:
            raw = read_json(self.path).get("tokens", {})
            for token, entry in raw.items():
                tokens[token] = Principal(
                    user=entry["user"],
                    role=entry.get("role", "read"),
                    orgs=tuple(entry.get("orgs", ())),
                )
        self._tokens, self._stamp = tokens, stamp

    def lookup(self, token: str) -> Principal | None:
        with self._lock:
            self._reload_if_changed()
            return self._tokens.get(token)

    def knows_user(self, user: str) -> bool:
        """Whether `user` exists here: a user exists once it holds a token (names are case-insensitive)."""
        with self._lock:
            self._reload_if_changed()
            return any(p.user.lower() == user.lower() for p in self._tokens.values())

    def add_token(
        self, user: str, role: str = "write", orgs: Iterable[str] = (), token: str | None = None
    ) -> str:
        validate_name("user", user)
        orgs = list(orgs)
        for org in orgs:
            validate_name("org", org)
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        token = token or new_token()
        with PathLock(self.path.with_name(self.path.name + ".lock")).hold():
            data = read_json(self.path) if self.path.exists() else {}
            data.setdefault("tokens", {})[token] = {
                "user": user,
                "role": role,
                "orgs": orgs,
                "createdAt": now_iso(),
            }
            atomic_write_json(self.path, data, mode=0o600)  # plaintext tokens: the owner's eyes only
        return token


def add_token(data_dir: Path | str, user: str, role: str = "write", orgs: Iterable[str] = ()) -> str:
    """Create a token for `user` in the data dir and return it."""
    path = Path(data_dir) / "auth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return AuthStore(path).add_token(user, role, orgs)
