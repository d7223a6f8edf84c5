"""Running the local Hub: in a background thread (`LocalHub`), a child process, or the foreground (`serve`)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from hubfuse.localhub.app import LocalHubApp, create_app
from hubfuse.localhub.auth import add_token
from hubfuse.localhub.records import Commit, RepoId
from hubfuse.localhub.storage import Store


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _endpoint(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: LocalHubApp, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="off",
        log_level=log_level,
        access_log=False,
        # Clients pool connections across calls; a long keep-alive makes it unlikely that a request
        # goes out on a connection the server is closing for idleness at that very moment.
        timeout_keep_alive=120,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


async def _serve_until_done(
    server: uvicorn.Server, sock: socket.socket, on_ready: Callable[[], None]
) -> None:
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.005)
    if server.started:
        on_ready()
    await task


def serve(
    data_dir: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    admin: bool = True,
    page_size: int = 1000,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; `on_ready(endpoint)` once it accepts connections."""
    app = create_app(data_dir, admin=admin, page_size=page_size)
    sock = _bind(host, port)
    endpoint = _endpoint(host, sock.getsockname()[1])
    server = _uvicorn_server(app, log_level)
    asyncio.run(_serve_until_done(server, sock, lambda: on_ready(endpoint) if on_ready else None))


class LocalHub:
    """A local Hub on loopback for tests and demos.

        with LocalHub(tmp_path / "hub") as hub:
            token = hub.add_token("alice")
            api = HfApi(endpoint=hub.endpoint, token=token)

    `subprocess=True` runs the server as `python -m hubfuse.localhub serve` in a child process instead
    of a thread of this one; everything else works the same, the admin calls going over HTTP.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin: bool = True,
        page_size: int = 1000,
        subprocess: bool = False,
        log_level: str = "warning",
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.admin = admin
        self.page_size = page_size
        self.use_subprocess = subprocess
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.app: LocalHubApp | None = None
        self._endpoint: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            raise RuntimeError("the local Hub is not running")
        return self._endpoint

    @property
    def running(self) -> bool:
        return self._endpoint is not None

    def start(self) -> LocalHub:
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.use_subprocess:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        self.app = create_app(self.data_dir, admin=self.admin, page_size=self.page_size)
        sock = _bind(self.host, self.port)
        endpoint = _endpoint(self.host, sock.getsockname()[1])
        server = _uvicorn_server(self.app, self.log_level)
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(_serve_until_done(server, sock, ready.set))
            except BaseException as exc:  # reported to start(); a thread has nowhere else to put it
                errors.append(exc)
            finally:
                sock.close()
                ready.set()

        thread = threading.Thread(target=run, name=f"localhub-{endpoint}", daemon=True)
        thread.start()
        if not ready.wait(self.startup_timeout) or not server.started:
            server.should_exit = True
            thread.join(5)
            raise RuntimeError(f"the local Hub did not start: {errors[0] if errors else 'timeout'}")
        self._server, self._thread, self._endpoint = server, thread, endpoint

    def _start_process(self) -> None:
        command = [
            sys.executable, "-m", "hubfuse.localhub", "serve",
            "--data", str(self.data_dir), "--host", self.host, "--port", str(self.port),
            "--page-size", str(self.page_size), "--log-level", self.log_level,
        ]  # fmt: skip
        if not self.admin:
            command.append("--no-admin")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], self.startup_timeout)
        line = process.stdout.readline().strip() if ready else ""
        if not line.startswith("http"):
            process.kill()
            process.wait()
            raise RuntimeError(f"the local Hub process did not start (first output: {line!r})")
        self._process, self._endpoint = process, line

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(5)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
        self._server = self._thread = self._process = None
        self._endpoint = None
        self.app = None

    # ---- users and repos -------------------------------------------------------------------------

    def add_token(self, user: str, role: str = "write", orgs: Iterable[str] = ()) -> str:
        """A new token for `user` (the server picks it up at once) ."""
        return add_token(self.data_dir, user, role, orgs)

    def grant_access(self, repo_id: str, user: str, repo_type: str = "model") -> None:
        """Let `user` download the files of gated repo `repo_id`."""
        store = Store(self.data_dir)
        repo = RepoId.parse(repo_type, repo_id)
        with store.transaction(repo) as txn:
            meta = txn.meta()
            if user not in meta.setdefault("gatedAccess", []):
                meta["gatedAccess"].append(user)
            txn.save_meta(meta)

    def put_legacy_file(self, repo_id: str, path: str, data: bytes, repo_type: str = "model") -> str:
        """Commit `data` at `path` straight into the store, past every check the server makes.

        For tests: this is how a repo holding content from before a check existed looks (the real Hub
        has cards older than its metadata validation). Returns the new commit id.
        """
        store = Store(self.data_dir)
        repo = RepoId.parse(repo_type, repo_id)
        with store.transaction(repo) as txn:
            head = store.resolve(repo, "main", txn.refs).commit
            created = Commit.create(
                parents=[head.id],
                tree={**head.tree, path: store.put_regular(data)},
                title=f"Upload {path} (legacy)",
                message="",
                author="legacy",
            )
            txn.write_commit(created)
            txn.refs["branches"]["main"] = created.id
            txn.save_refs()
        return created.id

    # ---- admin API -------------------------------------------------------------------------------

    def _admin(self, method: str, what: str, payload: Any = None, query: str = "") -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            f"{self.endpoint}/_localhub/{what}{query}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(
                f"admin API {method} /_localhub/{what} failed: HTTP {exc.code} {detail}"
            ) from None

    def set_faults(self, rules: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace the fault rules (see `hubfuse.localhub.faults` for their format)."""
        return self._admin("PUT", "faults", {"rules": list(rules)})["rules"]

    def add_faults(self, *rules: dict[str, Any]) -> list[dict[str, Any]]:
        return self._admin("POST", "faults", {"rules": list(rules)})["rules"]

    def faults(self) -> list[dict[str, Any]]:
        return self._admin("GET", "faults")["rules"]

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Logged requests: {seq, time, method, path, raw_path, query, status, bytes_sent, bytes_received,
        duration_ms, fault}; status 0 means the connection was dropped."""
        return self._admin("GET", "requests", query=f"?since={since}")["requests"]

    def request_stats(self) -> dict[str, int]:
        log = self._admin("GET", "requests", query="?summary=1")
        return {"count": log["count"], "bytes_sent": log["bytes_sent"]}

    def clear_requests(self) -> None:
        self._admin("DELETE", "requests")

    def set_rate_limit(self, limit: int | None, window: int = 300) -> None:
        """Answer 429 past `limit` requests per token per `window` seconds (None: no limit)."""
        if limit is None:
            self._admin("DELETE", "ratelimit")
        else:
            self._admin("PUT", "ratelimit", {"limit": limit, "window": window})
