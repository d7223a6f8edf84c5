"""Every call hubfuse makes to a Hub, through the real `huggingface_hub` client.

One `Hub` object per run: it resolves endpoint and token the way huggingface_hub's own CLI does
(`HF_ENDPOINT`, `HF_TOKEN`, then the stored login), retries what is safe to retry with bounded
backoff, counts requests against an optional budget, and turns client errors into hubfuse
errors with one line and an exit code. Nothing else in hubfuse imports `HfApi`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hubfuse import settings, strictjson
from hubfuse.errors import (
    AuthError,
    BudgetExhaustedError,
    CheckpointError,
    HubUnavailableError,
)
from hubfuse.hub_errors import first_line, is_transient, retry_after_s, translate_error
from hubfuse.localmark import LOCALHUB_HEADER
from hubfuse.log import clean_token, log, register_secret

OFFICIAL_ENDPOINT = "https://huggingface.co"
T = TypeVar("T")


def _configure_client(endpoint: str) -> None:
    """Module-level client settings that must agree with this run's endpoint."""
    from huggingface_hub import constants

    # Xet stays the client's choice, as against the Hub: the local hub speaks it too. A server that
    # speaks only classic LFS takes the client's own switch, HF_HUB_DISABLE_XET=1.
    # ModelCard.validate / push_to_hub read the module-level endpoint, not HfApi(endpoint=).
    constants.ENDPOINT = endpoint.rstrip("/")
    constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"
    quiet = settings.on_ci() or not _stderr_is_tty()
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _stderr_is_tty() -> bool:
    import sys

    return sys.stderr.isatty()


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            attempts=settings.RETRIES.value(),
            base_delay_s=settings.RETRY_BASE.value(),
        )


class RequestBudget:
    """An upper bound on Hub API calls for a run; `None` means unbounded."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0

    def spend(self, what: str) -> None:
        if self.limit is not None and self.used >= self.limit:
            raise BudgetExhaustedError(f"request budget of {self.limit} calls used up before {what}")
        self.used += 1


class Hub:
    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
    ) -> None:
        from huggingface_hub import HfApi, get_token

        self.endpoint = (endpoint or settings.HF_ENDPOINT.value() or OFFICIAL_ENDPOINT).rstrip("/")
        given = token or settings.HF_TOKEN.value()
        register_secret(given)  # before anything can fail: the raw value's forms are secret too
        # Cleaned as huggingface_hub cleans HF_TOKEN (a trailing newline from `echo` or a file).
        self.token = clean_token(given) or get_token()
        register_secret(self.token)
        _configure_client(self.endpoint)
        self.api = HfApi(endpoint=self.endpoint, token=self.token)
        self.retry = retry or RetryPolicy.from_env()
        self.budget = budget or RequestBudget(None)
        self._user: str | None = None
        self._role: str | None = None
        self.bytes_read = 0  # by read_range

    # -- plumbing --------------------------------------------------------------------------

    def call(self, what: str, func: Callable[[], T], *, retry: bool = True) -> T:
        """Run one client call; retry transient failures with jittered exponential backoff.

        Each HTTP request is retried at one layer: here, or by the client itself. `retry=False`
        where every request of `func` goes through the client's own per-request retries
        (`http_backoff`: pagination, preupload, LFS) or must not be replayed blindly (a commit);
        wrapping those here too would send a failing request 6 x HUBFUSE_RETRIES times."""
        attempts = self.retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            self.budget.spend(what)
            try:
                return func()
            except Exception as exc:
                if not retry or not is_transient(exc) or attempt == attempts:
                    raise translate_error(exc, what) from exc
                delay = retry_after_s(exc)
                if delay is None:
                    delay = self.retry.base_delay_s * 2 ** (attempt - 1) * (0.5 + random.random())
                delay = min(delay, self.retry.max_delay_s)
                log.warning(f"{what}: {first_line(exc)}; retry {attempt}/{attempts - 1} in {delay:.1f}s")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def repo_url(self, repo_id: str, repo_type: str = "model") -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def is_local_hub(self) -> bool:
        """Whether the endpoint is hubfuse's own local hub, which names itself in a header of every
        answer; one anonymous HEAD request, none for the Hub itself."""
        import httpx2
        from huggingface_hub.utils import get_session

        if self.endpoint == OFFICIAL_ENDPOINT:
            return False
        try:
            response = get_session().head(f"{self.endpoint}/", timeout=10)
        except (httpx2.HTTPError, ConnectionError):  # ConnectionError: huggingface_hub's offline mode
            return False
        return LOCALHUB_HEADER in response.headers

    # -- identity --------------------------------------------------------------------------

    def whoami(self) -> str:
        if self._user is None:
            if not self.token:
                raise AuthError("no Hub token: set HF_TOKEN (a token with write access for publishing)")
            info = self.call("whoami", lambda: self.api.whoami())
            self._user = str(info["name"])
            self._role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
        return self._user

    def require_write_token(self) -> None:
        """Fail early on a token that cannot write at all; finer permissions show at the write."""
        self.whoami()
        if self._role == "read":
            raise AuthError("this token is read-only: publishing needs a token with write access")

    # -- read side -------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str | None, repo_type: str = "model") -> Any:
        """repo_info at `revision` (None: the default branch); `.sha` is the commit to pin."""
        return self.call(
            f"{repo_id}@{revision or 'main'}",
            lambda: self.api.repo_info(repo_id, revision=revision, repo_type=repo_type, files_metadata=False),
        )

    def info_or_none(self, repo_id: str, repo_type: str = "model") -> Any | None:
        """repo_info of the default branch, or None if there is no such repo (visible to us)."""
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        def fetch() -> Any | None:
            try:
                return self.api.repo_info(repo_id, repo_type=repo_type)
            except GatedRepoError:
                raise
            except RepositoryNotFoundError:
                return None

        return self.call(f"info {repo_id}", fetch)

    def exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.info_or_none(repo_id, repo_type) is not None

    def download(self, repo_id: str, sha: str, patterns: Iterable[str], repo_type: str = "model") -> Path:
        """The files of `repo_id` at commit `sha` matching `patterns`, in the standard HF cache.

        A second call for the same sha finds everything cached and downloads nothing.
        """
        from huggingface_hub import snapshot_download

        cached = self._cached_snapshot(repo_id, sha, list(patterns), repo_type)
        if cached is not None:
            return cached
        path = self.call(
            f"download {repo_id}@{sha[:12]}",
            lambda: snapshot_download(
                repo_id,
                revision=sha,
                repo_type=repo_type,
                allow_patterns=list(patterns),
                endpoint=self.endpoint,
                token=self.token,
            ),
        )
        _write_complete_marker(Path(path), list(patterns), repo_type)
        return Path(path)

    def _cached_snapshot(self, repo_id: str, sha: str, patterns: list[str], repo_type: str) -> Path | None:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        folder = (
            Path(constants.HF_HUB_CACHE)
            / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
            / "snapshots"
            / sha
        )
        return folder if _complete_marker_matches(folder, patterns, repo_type) else None

    def read_text(
        self,
        repo_id: str,
        sha: str,
        filename: str,
        repo_type: str = "model",
        *,
        max_bytes: int = strictjson.MAX_BYTES,
    ) -> str | None:
        """A small text file at a pinned commit, or None if the repo has no such file: one GET,
        refused (exit 2) past `max_bytes` from its Content-Length, else once that many bytes came."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import get_session, hf_raise_for_status

        url = hf_hub_url(repo_id, filename, revision=sha, repo_type=repo_type, endpoint=self.endpoint)
        where = f"{repo_id}@{sha[:12]}/{filename}"
        too_large = f"{where}: is over the {max_bytes}-byte limit of every file hubfuse reads whole"

        def fetch() -> str | None:
            with get_session().stream(
                "GET", url, headers=self.api._build_hf_headers(), follow_redirects=True
            ) as response:
                try:
                    hf_raise_for_status(response)
                except EntryNotFoundError:
                    return None
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise CheckpointError(too_large)
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise CheckpointError(too_large)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CheckpointError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

        return self.call(f"read {where}", fetch)

    def list_files(self, repo_id: str, sha: str, repo_type: str = "model") -> list[Any]:
        """Every file at commit `sha` (RepoFile: path, size, lfs with its sha256), no content."""
        from huggingface_hub.hf_api import RepoFile

        return self.call(
            f"list files of {repo_id}@{sha[:12]}",
            lambda: [
                entry
                for entry in self.api.list_repo_tree(
                    repo_id, revision=sha, recursive=True, repo_type=repo_type
                )
                if isinstance(entry, RepoFile)
            ],
            retry=False,  # the client retries each page (paginate: http_backoff)
        )

    def read_range(
        self, repo_id: str, sha: str, filename: str, start: int, end: int, repo_type: str = "model"
    ) -> bytes:
        """Bytes `start` to `end` (exclusive) of a file at commit `sha`: one HTTP range request.

        A server that ignores the range gets its answer cut off after `end - start` bytes, never
        read whole.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import get_session, hf_raise_for_status

        url = hf_hub_url(repo_id, filename, revision=sha, repo_type=repo_type, endpoint=self.endpoint)
        headers = {**self.api._build_hf_headers(), "Range": f"bytes={start}-{end - 1}"}
        wanted = end - start

        def fetch() -> bytes:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True) as response:
                hf_raise_for_status(response)
                if response.status_code != 206 and start != 0:
                    raise HubUnavailableError(
                        f"{self.endpoint} ignored a range request for {filename}: targeted mode needs ranges"
                    )
                data = bytearray()
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) >= wanted:
                        break
            if len(data) < wanted:
                raise HubUnavailableError(f"{repo_id}/{filename}: short read ({len(data)} of {wanted} bytes)")
            self.bytes_read += wanted
            return bytes(data[:wanted])

        if wanted <= 0:
            return b""
        return self.call(f"read {repo_id}/{filename}@{sha[:12]} bytes {start}-{end}", fetch)

    def last_commit_authors(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Who wrote the head commit of the default branch."""
        commits = self.call(
            f"commits of {repo_id}", lambda: self.api.list_repo_commits(repo_id, repo_type=repo_type)
        )
        return list(commits[0].authors) if commits else []

    def file_last_changed_by(self, repo_id: str, sha: str, path: str, repo_type: str = "model") -> list[str]:
        """Who wrote the commit that last changed `path` as of commit `sha` ([]: no such file).

        Two requests: the file's last commit (paths-info), then the first page of the history
        from that commit, never the whole history.
        """
        from huggingface_hub.utils import get_session, hf_raise_for_status

        infos = self.call(
            f"last commit of {repo_id}/{path}",
            lambda: self.api.get_paths_info(repo_id, [path], revision=sha, expand=True, repo_type=repo_type),
        )
        last = next(
            (i.last_commit for i in infos if i.path == path and getattr(i, "last_commit", None)), None
        )
        if last is None:
            return []
        url = f"{self.endpoint}/api/{repo_type}s/{repo_id}/commits/{last.oid}"

        def fetch() -> list[str]:
            response = get_session().get(url, headers=self.api._build_hf_headers(), timeout=30)
            hf_raise_for_status(response)
            page = response.json()
            first = page[0] if isinstance(page, list) and page else {}
            if not isinstance(first, dict) or first.get("id") != last.oid:
                return []
            return [str(a.get("user")) for a in first.get("authors", []) if isinstance(a, dict)]

        return self.call(f"author of {repo_id}@{last.oid[:12]}", fetch)

    def pull_requests(
        self, repo_id: str, *, author: str | None = None, repo_type: str = "model"
    ) -> list[Any]:
        return self.call(
            f"list pull requests of {repo_id}",
            lambda: list(
                self.api.get_repo_discussions(
                    repo_id, author=author, discussion_type="pull_request", repo_type=repo_type
                )
            ),
        )

    def discussion_details(self, repo_id: str, num: int, repo_type: str = "model") -> Any:
        return self.call(
            f"{repo_id} discussion #{num}",
            lambda: self.api.get_discussion_details(repo_id, num, repo_type=repo_type),
        )

    def list_models(
        self, *, author: str | None = None, search: str | None = None, expand: list[str] | None = None
    ) -> list[Any]:
        """Every model matching, all pages (the client follows the `Link` headers)."""
        return self.call(
            f"list models (author={author}, search={search})",
            lambda: list(self.api.list_models(author=author, search=search, expand=expand)),  # type: ignore[arg-type]
            retry=False,  # the client retries each page (paginate: http_backoff)
        )

    # -- write side ------------------------------------------------------------------------

    def commit(
        self,
        repo_id: str,
        operations: list[Any],
        *,
        message: str,
        description: str,
        parent: str | None,
        create_pr: bool = False,
        revision: str | None = None,
        repo_type: str = "model",
    ) -> Any:
        """One atomic commit. Not retried here: the caller checks whether it landed first."""
        return self.call(
            f"commit to {repo_id}",
            lambda: self.api.create_commit(
                repo_id,
                operations,
                commit_message=message,
                commit_description=description,
                parent_commit=parent,
                create_pr=create_pr,
                revision=revision,
                repo_type=repo_type,
            ),
            retry=False,
        )

    def preupload(self, repo_id: str, additions: list[Any], repo_type: str = "model") -> None:
        """Upload the LFS files of `additions` now, ahead of the commit that will reference them."""
        self.call(
            f"upload to {repo_id}",
            lambda: self.api.preupload_lfs_files(repo_id, additions, repo_type=repo_type),
            retry=False,  # the client retries each request (preupload, LFS batch and PUT, Xet token)
        )

    def create_repo(
        self, repo_id: str, *, private: bool = False, repo_type: str = "model", exist_ok: bool = True
    ) -> None:
        """With `exist_ok=False` a repo that already exists is a ConflictError: it is not ours."""
        self.call(
            f"create {repo_id}",
            lambda: self.api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=exist_ok),
        )

    def delete_repo(self, repo_id: str, repo_type: str = "model") -> None:
        self.call(
            f"delete {repo_id}", lambda: self.api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)
        )

    def close(self, repo_id: str, num: int, comment: str | None = None, repo_type: str = "model") -> None:
        self.call(
            f"close {repo_id}#{num}",
            lambda: self.api.change_discussion_status(
                repo_id, num, "closed", comment=comment, repo_type=repo_type
            ),
        )


_MARKER = ".hubfuse-complete.json"


def _marker_path(snapshot: Path) -> Path:
    # Beside the snapshot, not inside it: the snapshot folder holds only the repo's files.
    return snapshot.parent / f"{snapshot.name}{_MARKER}"


def _write_complete_marker(snapshot: Path, patterns: list[str], repo_type: str) -> None:
    import json

    _marker_path(snapshot).write_text(json.dumps({"patterns": sorted(patterns), "repo_type": repo_type}))


def _complete_marker_matches(snapshot: Path, patterns: list[str], repo_type: str) -> bool:
    import json

    marker = _marker_path(snapshot)
    if not snapshot.is_dir() or not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not (set(patterns) <= set(recorded.get("patterns", ())) and recorded.get("repo_type") == repo_type):
        return False
    # Cache cleanups remove blobs and leave dangling links behind.
    return all(path.exists() for path in snapshot.rglob("*"))
