"""A file-backed, Hugging Face Hub-compatible server for tests and offline demos.

It speaks the HTTP protocol `huggingface_hub` uses (repos, refs, commits with LFS uploads, pull
requests, discussions, file downloads), plus a loopback-only admin API to inject faults and read a
request log. See `LocalHub` to run one in-process and `hubfuse.localhub.cli` for the `hub` commands.

The server modules (Starlette, uvicorn) load on first use, so importing the CLI group stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubfuse.localhub.auth import add_token

if TYPE_CHECKING:
    from hubfuse.localhub.app import LocalHubApp, create_app
    from hubfuse.localhub.server import LocalHub, serve

__all__ = ["LocalHub", "LocalHubApp", "add_token", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("LocalHub", "serve"):
        from hubfuse.localhub import server

        return getattr(server, name)
    if name in ("LocalHubApp", "create_app"):
        from hubfuse.localhub import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
